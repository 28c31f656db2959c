"""Helpers for the controller tests: a controller subprocess, pods plugged into a private OVS
the way a CNI would record them, an ovs-vswitchd restart. Everything started here is stopped
by its owner's teardown, also when a test fails."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sdn.layout import pod_mac
from sdn.ovs.instance import OvsInstance
from sdn.proc import alive as _alive
from sdn.proc import read_pidfile as _read_pidfile
from sdn.sources.guard import declarations
from sdn.switch.control import ControlError, request

REPO = Path(__file__).resolve().parent.parent


def pod_external_ids(key: str, ip: str, mac: str) -> dict[str, str]:
    return {"k8s.pod": key, "attached-mac": mac, "ip": ip}


def plug_internal(ovs: OvsInstance, bridge: str, port: str, key: str, ip: str, mac: str | None = None,
                  ofport: int | None = None) -> int:
    """A pod as an internal port (enough for flow-level tests and ofproto/trace)."""
    from sdn.policy.model import Pod
    mac = mac or pod_mac(Pod(key.split("/")[0], key.split("/")[1], ips=(ip,)))
    return ovs.add_internal_port(bridge, port, ofport_request=ofport,
                                 external_ids=pod_external_ids(key, ip, mac))


def node_bridge(factory, bridge: str, dpid: int, pods: dict[str, str]) -> OvsInstance:
    """A private OVS with one node's bridge: its tunnel on ofport 1 and an internal port per
    pod ("ns/name" -> address), as the CNI plugin would have plugged them."""
    ovs = factory()
    ovs.add_bridge(bridge, dpid=dpid)
    add_tunnel(ovs, bridge, "tun0", 1)
    for key, ip in pods.items():
        plug_internal(ovs, bridge, "p" + key.replace("/", ""), key, ip)
    return ovs


def add_tunnel(ovs: OvsInstance, bridge: str, name: str, ofport: int = 1, dst_port: int = 4789) -> None:
    """A flow-based VXLAN port. Two bridges of one ovs-vswitchd need different `dst_port`s
    (OVS refuses a second tunnel port with the same configuration)."""
    ovs.vsctl("add-port", bridge, name, "--", "set", "interface", name, "type=vxlan",
              "options:remote_ip=flow", "options:key=flow", f"options:dst_port={dst_port}",
              f"ofport_request={ofport}")
    got = ovs.ofport(name)
    if got != ofport:
        raise RuntimeError(f"tunnel port {name} got ofport {got}, not {ofport}")


def write_manifests(directory: Path, docs: list[dict], name: str = "cluster.yaml") -> Path:
    """Write docs atomically (a reader never sees half a file), saying so when having no
    policy or no pod is meant (sdn.sources.guard)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(yaml.safe_dump_all(docs + declarations(docs)))
    os.replace(tmp, path)
    return path


def kill_vswitchd(ovs: OvsInstance) -> None:
    """SIGKILL ovs-vswitchd: its flows die with it; ovsdb-server stays."""
    pid = ovs.vswitchd_pid
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    ovs.vswitchd_pidfile.unlink(missing_ok=True)


def restart_vswitchd(ovs: OvsInstance) -> None:
    """Kill ovs-vswitchd (its flows die with it) and start it again on the same database."""
    kill_vswitchd(ovs)
    start_vswitchd(ovs)


def start_vswitchd(ovs: OvsInstance) -> None:
    ovs.run("ovs-vswitchd", ovs.db_remote, f"--pidfile={ovs.vswitchd_pidfile}",
            f"--log-file={ovs.vswitchd_log}", "-vconsole:off", "--detach", in_netns=True)
    deadline = time.monotonic() + 15
    while not ovs._vswitchd_ready():
        if time.monotonic() > deadline:
            raise RuntimeError("ovs-vswitchd did not come back")
        time.sleep(0.05)


class Controller:
    """`sdnctl controller` as a subprocess with private sockets."""

    def __init__(self, manifests: Path, nodes: dict[str, str], extra: list[str] | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="sdnsw"))  # $TMPDIR (short: unix socket paths)
        self.manifests = manifests
        self.nodes = nodes  # "node-1" or "node-1/br" -> OVSDB remote
        self.extra = extra or []
        self.listen = f"unix:{self.dir}/of.sock"
        self.control = str(self.dir / "ctl.sock")
        self.log = self.dir / "controller.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Controller:
        args = [sys.executable, "-m", "sdn.cli", "controller", "-f", str(self.manifests),
                "--listen", self.listen, "--control", self.control, "--poll", "0.2", *self.extra]
        for node, remote in self.nodes.items():
            args += ["--bridge", f"{node}={remote}"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 20
        while True:
            try:
                request(self.control, "status", timeout=5)
                return self
            except ControlError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"controller did not start:\n{self.log_text()}") from None
                time.sleep(0.05)

    def ask(self, cmd: str, **args) -> dict:
        return request(self.control, cmd, **args)

    def status(self) -> dict:
        return self.ask("status")

    def bridge(self, node: str) -> dict:
        return next(b for b in self.status()["bridges"] if b["node"] == node)

    def wait_in_sync(self, timeout: float = 30.0, generation: int | None = None) -> dict:
        """Until every bridge realized the current (or given) generation and is in sync."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            gen = st["generation"] if generation is None else generation
            if st["in_sync"] and all(b["realized_generation"] >= gen for b in st["bridges"] if b["desired_flows"]):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"not in sync after {timeout}s: {st}\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def reload_and_wait(self, timeout: float = 30.0) -> dict:
        gen = self.ask("reload")["generation"]
        self.ask("wait", generation=gen, timeout=timeout)
        return self.wait_in_sync(timeout, gen)

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def signal(self, sig: int) -> int:
        """Send sig and wait for the exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        finally:
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def pid_alive(pidfile: Path) -> bool:
    pid = _read_pidfile(pidfile)
    return pid is not None and _alive(pid)


def apply_flow_diff(table: dict, d, where: str = "") -> None:
    """Apply a FlowDiff to a table of flows by key, as a switch would, failing on a delete or
    modify of a flow not there and on an add of a flow already there."""
    for f in d.delete:
        assert table.pop(f.key, None) is not None, f"{where}: deleted a flow not installed: {f}"
    for f in d.modify:
        assert f.key in table, f"{where}: modified a flow not installed: {f}"
        table[f.key] = f
    for f in d.add:
        assert f.key not in table, f"{where}: added a flow already installed: {f}"
        table[f.key] = f
