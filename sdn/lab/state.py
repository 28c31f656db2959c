"""The lab's state directory: what exists, so that `lab down` can remove it after a crash.

Layout of STATE (default /run/sdn-lab, or $SDN_LAB_DIR, or `sdnctl lab --state-dir`):

    lab.json          the record: prefix, enforce mode, nodes, pods, controllers, phase.
                      Written (atomically) BEFORE each thing is made, so a crash at any
                      point leaves a record that names everything that may exist.
    cluster.yaml      the lab's objects as manifests, with the real pod IPs filled in as
                      status.podIP and every pod's spec.nodeName: what the controllers read.
    lock              flock: one lab command at a time changes the lab.
    nodes/NODE/       that node's private Open vSwitch (database, sockets, pid files, logs).
    fabric/           the fabric switch's Open vSwitch (enforce fabric).
    ipam/             the CNI plugin's address reservations.
    logs/             controllers and pod servers.

Every network namespace the lab makes is called PREFIX-...; PREFIX is "sdnlab" for the
default state directory and "sdnl" + a hash of the path for any other, so two labs (the two
e2e test modules run in parallel) never share a name, and `lab down` can also sweep
namespaces by name when the record is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sdn.sources.guard import EMPTY_PODS, EMPTY_POLICIES, declarations

DEFAULT_STATE_DIR = "/run/sdn-lab"
DEFAULT_PREFIX = "sdnlab"
ENV_STATE_DIR = "SDN_LAB_DIR"
RECORD = "lab.json"
MANIFESTS = "cluster.yaml"
SEQ = "probe-seq"


def default_state_dir() -> Path:
    return Path(os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)


def prefix_for(state_dir: Path | str) -> str:
    """The name prefix of a lab: fixed for the default directory, else derived from the path
    (stable: `lab down` recomputes it without reading anything)."""
    path = os.path.abspath(os.fspath(state_dir))
    if path == DEFAULT_STATE_DIR:
        return DEFAULT_PREFIX
    return "sdnl" + hashlib.blake2b(path.encode(), digest_size=3).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class State:
    """The state directory of one lab."""

    def __init__(self, directory: Path | str | None = None):
        self.dir = Path(os.path.abspath(os.fspath(directory or default_state_dir())))
        self.prefix = prefix_for(self.dir)

    # -- paths
    @property
    def record_path(self) -> Path:
        return self.dir / RECORD

    @property
    def manifests_path(self) -> Path:
        return self.dir / MANIFESTS

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def ipam_dir(self) -> Path:
        return self.dir / "ipam"

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    @property
    def fabric_dir(self) -> Path:
        return self.dir / "fabric"

    # -- the record
    def exists(self) -> bool:
        return self.record_path.exists()

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"corrupt": True}

    def save(self, record: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # -- manifests
    def read_manifests(self) -> list[dict]:
        try:
            text = self.manifests_path.read_text()
        except FileNotFoundError:
            return []
        return [d for d in yaml.safe_load_all(text) if d and d not in (EMPTY_POLICIES, EMPTY_PODS)]

    def write_manifests(self, docs: list[dict]) -> None:
        """One atomic file: a controller never sees half an update. A lab without policies
        or pods says so with an explicitly empty list, which the controller's file source
        asks for before it lets every policy or pod go (docs/controller.md)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        docs = docs + declarations(docs)
        text = "# The lab's objects (sdnctl lab): real pod IPs and nodes filled in.\n"
        text += yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
        _atomic_write(self.manifests_path, text)

    # -- one command at a time
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def next_probe_ports(self, count: int, lo: int = 20000, hi: int = 32000) -> int:
        """A base source port for one probe sweep: sweeps rotate through [lo, hi) so no
        5-tuple is reused while the switches may still track it (a reused UDP 5-tuple of an
        allowed connection would pass as established after a policy change)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / SEQ
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 32).decode().strip()
            base = int(raw) if raw.isdigit() else lo
            if base < lo or base + count > hi:
                base = lo
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(base + count).encode())
            return base
        finally:
            os.close(fd)
