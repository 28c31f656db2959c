"""Tearing a lab down, also after a crash: what the record names, then a sweep by the lab's name
prefix and state path."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sdn import proc
from sdn.lab import nodes as N
from sdn.lab.base import LabError
from sdn.lab.dns import remove_resolv_conf
from sdn.ovs.instance import OvsInstance, del_netns, netns_exists, netns_list

if TYPE_CHECKING:
    from sdn.lab.lab import Lab


class LabTeardown:
    def __init__(self, lab: Lab):
        self.lab = lab

    def our_netns(self) -> list[str]:
        try:
            names = netns_list()
        except Exception:  # noqa: BLE001 - no namespaces to list: none of ours either
            return []
        return [n for n in names if n.startswith((self.lab.prefix + "-", self.lab.prefix + "_"))]

    def our_processes(self) -> list[int]:
        """Live processes whose command line names the state directory (daemons, agents),
        except this process and its ancestors."""
        mine = {os.getpid()}
        pid = os.getpid()
        for _ in range(64):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                pid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
            if pid <= 1:
                break
            mine.add(pid)
        needle = str(self.lab.state.dir).encode()
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) in mine:
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            for arg in cmd.split(b"\0"):
                if arg == needle or arg.startswith(needle + b"/") or (b"=" + needle + b"/") in arg \
                        or (b":" + needle + b"/") in arg:
                    if proc.alive(int(d.name)):
                        found.append(int(d.name))
                    break
        return found

    def down(self) -> dict:
        with self.lab.state.locked() if self._lock_quickly() else contextlib.nullcontext():
            return self.remove()

    def _lock_quickly(self) -> bool:
        """Take the lock unless a hung command holds it for long (down must always work)."""
        import fcntl
        self.lab.state.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lab.state.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for _ in range(100):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    return True
                except BlockingIOError:
                    time.sleep(0.1)
            self.lab.log("another lab command holds the lock; tearing down anyway")
            return False
        finally:
            os.close(fd)

    def remove(self) -> dict:
        """Everything the record names, then the sweep; the caller holds the lock (or gave up on it)."""
        record = self.lab.state.load() or {}
        if record.get("corrupt"):
            record = {}
        removed: dict[str, list] = {"processes": [], "netns": [], "files": []}
        errors: list[str] = []
        # 0. the supervisor: nothing may restart an agent from here on
        from sdn.lab import supervise
        try:
            pid = supervise.stop(self.lab.state)
            if pid:
                removed["processes"].append(pid)
        except Exception as e:  # noqa: BLE001
            errors.append(f"supervisor: {e}")
        # 1. agents first: they would otherwise reconnect and log errors while we tear down
        for name, ctl in (record.get("controllers") or {}).items():
            try:
                pid = supervise.current_pid(self.lab.state, name, ctl)
                if pid and proc.alive(pid):
                    self.lab.agents.kill_controller(name, ctl)
                    removed["processes"].append(pid)
            except Exception as e:  # noqa: BLE001
                errors.append(f"agent {name}: {e}")
        # 1b. kubernetes mode: kubelet stand-ins (they would recreate pods), kube-proxies, the
        # control plane; the pods the kubelets ran
        if "kubernetes" in record:
            from sdn.lab.kube import KubeMode
            from sdn.lab.kube_objects import kubelet_record
            self.lab.record = record
            try:
                KubeMode(self.lab).stop_daemons()
            except Exception as e:  # noqa: BLE001
                errors.append(f"control plane: {e}")
            for info in (record.get("nodes") or {}).values():
                for key, rec in kubelet_record(Path(info["rundir"])).items():
                    record.setdefault("pods", {}).setdefault(key, rec)
        # 2. pods: their namespaces (servers die with them; the veths go with the node's)
        for key, rec in (record.get("pods") or {}).items():
            try:
                if rec.get("server_pid") and proc.alive(rec["server_pid"]) and self.lab.plugging.pid_in_netns(rec["server_pid"], rec["netns"]):
                    proc.terminate([rec["server_pid"]], timeout=2.0)
                if netns_exists(rec["netns"]):
                    del_netns(rec["netns"], timeout=2.0)
                    removed["netns"].append(rec["netns"])
                if remove_resolv_conf(rec["netns"]):
                    removed["files"].append(f"/etc/netns/{rec['netns']}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"pod {key}: {e}")
        # 3. switches: daemons by their pid files, then their namespaces
        switches = [(n, i) for n, i in (record.get("nodes") or {}).items()]
        if record.get("fabric"):
            switches.append((N.FABRIC_BRIDGE, record["fabric"]))
        for name, info in switches:
            try:
                if netns_exists(info["netns"]):
                    removed["netns"].append(info["netns"])
                OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True).stop()
                if netns_exists(info["netns"]):
                    del_netns(info["netns"])
            except Exception as e:  # noqa: BLE001
                errors.append(f"{name}: {e}")
        # 4. daemons a crash left without a record: the nodes' rundirs under the state dir
        for rundir in list(self.lab.state.dir.glob("nodes/*")) + [self.lab.state.fabric_dir]:
            if (rundir / "ovs-vswitchd.pid").exists() or (rundir / "ovsdb-server.pid").exists():
                try:
                    OvsInstance(rundir, netns=None, create_netns=False).stop()
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{rundir}: {e}")
        # 5. sweep: anything still alive that names the state dir, any namespace with our prefix
        procs = self.our_processes()
        if procs:
            try:
                proc.terminate(procs, timeout=3.0)
                removed["processes"].extend(procs)
            except Exception as e:  # noqa: BLE001
                errors.append(f"processes {procs}: {e}")
        for ns in sorted(self.our_netns(), key=lambda n: (n.endswith("_underlay"), n)):
            try:
                del_netns(ns, timeout=2.0)
                removed["netns"].append(ns)
            except Exception as e:  # noqa: BLE001
                errors.append(f"netns {ns}: {e}")
        # 6. the state directory itself
        if self.lab.state.dir.exists():
            shutil.rmtree(self.lab.state.dir, ignore_errors=True)
            removed["files"].append(str(self.lab.state.dir))
        removed["netns"] = sorted(set(removed["netns"]))
        removed["processes"] = sorted(set(removed["processes"]))
        if errors:
            raise LabError("lab down incomplete:\n  " + "\n  ".join(errors))
        return removed
