"""The lab: bring nodes, pods and agents up from manifests, change them, probe them, tear down.

Everything the lab makes is recorded in its state directory (sdn/lab/state.py) before it is
made, so `down` can remove it after any crash; `down` also sweeps namespaces and processes by
the lab's name prefix and state path, for what a crash left unrecorded.

The agents are `sdnctl controller` processes (sdn/switch), one per node bridge -- and one for
the fabric switch with `--enforce fabric` -- each running inside its node's namespace as the
DaemonSet would on a node, reading the lab's manifests (STATE/cluster.yaml) and its node's
OVSDB. A change is: rewrite cluster.yaml (one atomic rename), ask every agent to `reload`,
and wait through its control socket until its bridge realized the new generation, with every
pod plugged into it in the port map the flows were compiled from.

`Lab` is the record (this file) and its rooms, one job each: bringing up (bringup.py), pods in
file mode (plugging.py), the agents (agents.py), changes (change.py), questions such as status
and probe matrices (questions.py) and tearing down (teardown.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdn.lab.agents import LabAgents
from sdn.lab.base import PROBE_TIMEOUT, SYNC_TIMEOUT, LabError, NoLab
from sdn.lab.bringup import LabBringup
from sdn.lab.change import LabChange
from sdn.lab.plugging import LabPlugging
from sdn.lab.questions import LabQuestions
from sdn.lab.state import State
from sdn.lab.teardown import LabTeardown
from sdn.ovs.instance import OvsInstance

if TYPE_CHECKING:
    from sdn.lab.kube import KubeMode
    from sdn.policy.model import Cluster

__all__ = ["Lab", "LabError", "NoLab"]


class Lab:
    def __init__(self, state: State | None = None, *, log: Callable[[str], None] | None = None):
        self.state = state or State()
        self.prefix = self.state.prefix
        self.log = log or (lambda msg: None)
        self.rec_lock = threading.RLock()
        self.record: dict[str, Any] = {}
        self.docs: list[dict] = []  # file mode: the documents the agents read (cluster.yaml)
        self.bringup = LabBringup(self)
        self.plugging = LabPlugging(self)
        self.agents = LabAgents(self)
        self.changes = LabChange(self)
        self.questions = LabQuestions(self)
        self.teardown = LabTeardown(self)

    def save(self) -> None:
        with self.rec_lock:
            self.state.save(self.record)

    def load(self) -> dict:
        record = self.state.load()
        if record is None:
            raise NoLab(f"no lab is running (state {self.state.dir}); start one with `sdnctl lab up -f CLUSTER.yaml`")
        if record.get("corrupt"):
            raise LabError(f"the lab record {self.state.record_path} is unreadable: run `sdnctl lab down`")
        self.record = record
        return record

    def require_ready(self) -> dict:
        record = self.load()
        if record.get("phase") != "ready":
            raise LabError(f"the lab is not ready (phase {record.get('phase')!r}): a `lab up` failed or "
                           f"is still running; `sdnctl lab down` removes it")
        return record

    def ovs(self, node: str) -> OvsInstance:
        info = self.record["nodes"][node]
        return OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True)

    def fabric_ovs(self) -> OvsInstance:
        info = self.record["fabric"]
        return OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True)

    # ------------------------------------------------------------------ what the CLI and tests use
    def up(self, paths: list[str], enforce: str = "host", tunnel: str = "vxlan",
           timeout: float = SYNC_TIMEOUT, kubernetes: bool = False) -> dict:
        return self.bringup.up(paths, enforce, tunnel, timeout, kubernetes)

    def up_docs(self, docs: list[dict], enforce: str = "host", tunnel: str = "vxlan",
                timeout: float = SYNC_TIMEOUT, kubernetes: bool = False) -> dict:
        return self.bringup.up_docs(docs, enforce, tunnel, timeout, kubernetes)

    def cluster_cidr(self) -> str:
        return self.bringup.cluster_cidr()

    def apply(self, paths: list[str], timeout: float = SYNC_TIMEOUT) -> list[str]:
        return self.changes.apply(paths, timeout)

    def apply_docs(self, docs: list[dict], timeout: float = SYNC_TIMEOUT) -> list[str]:
        return self.changes.apply_docs(docs, timeout)

    def delete(self, paths: list[str], timeout: float = SYNC_TIMEOUT, ignore_not_found: bool = False) -> list[str]:
        return self.changes.delete(paths, timeout, ignore_not_found)

    def delete_docs(self, docs: list[dict], timeout: float = SYNC_TIMEOUT,
                    ignore_not_found: bool = False) -> list[str]:
        return self.changes.delete_docs(docs, timeout, ignore_not_found)

    def change(self, apply: Sequence[dict] = (), delete: Sequence[dict] = (), timeout: float = SYNC_TIMEOUT,
               ignore_not_found: bool = False) -> list[str]:
        return self.changes.change(apply, delete, timeout, ignore_not_found)

    def kube(self) -> KubeMode:
        return self.questions.kube()

    def documents(self) -> list[dict]:
        return self.questions.documents()

    def ipam_dirs(self) -> list[Path]:
        return self.questions.ipam_dirs()

    def pods(self) -> list[dict]:
        return self.questions.pods()

    def cluster(self) -> Cluster:
        return self.questions.cluster()

    def matrix(self, probes: list[tuple[int, str]], timeout: float = PROBE_TIMEOUT,
               pods: list[str] | None = None) -> dict:
        return self.questions.matrix(probes, timeout, pods)

    def trace(self, probes: list[tuple[int, str]], pods: list[str] | None = None) -> dict:
        return self.questions.trace(probes, pods)

    def purge_datapath(self) -> None:
        self.questions.purge_datapath()

    def status(self) -> dict:
        return self.questions.status()

    def down(self) -> dict:
        return self.teardown.down()
