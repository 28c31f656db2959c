"""The agents (one `sdnctl controller` per node bridge, and one for the fabric switch): started,
asked to reload, waited for, stopped."""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from sdn import proc
from sdn.lab import nodes as N
from sdn.lab import supervise
from sdn.lab import topology as T
from sdn.lab.base import SYNC_TIMEOUT, LabError, NotRealized, settle, spawn_daemon

if TYPE_CHECKING:
    from sdn.lab.lab import Lab


class LabAgents:
    def __init__(self, lab: Lab):
        self.lab = lab

    def write_manifests(self) -> None:
        self.lab.state.write_manifests(T.sort_docs(self.lab.docs))

    def _controller_specs(self) -> dict[str, dict]:
        """name -> how to run that agent: the bridges it controls and where it runs."""
        out = {}
        for name, info in sorted(self.lab.record["nodes"].items()):
            out[name] = {"netns": info["netns"], "bridges": [f"{name}/{N.BRIDGE}=unix:{info['rundir']}/db.sock"],
                         "listen": f"unix:{info['openflow']}", "nodes": [name],
                         "control": str(Path(info["rundir"]) / "control.sock")}
        fab = self.lab.record.get("fabric")
        if fab:
            out[N.FABRIC_BRIDGE] = {"netns": fab["netns"],
                                    "bridges": [f"{N.FABRIC_BRIDGE}/{N.FABRIC_BRIDGE}=unix:{fab['rundir']}/db.sock"],
                                    "listen": f"unix:{fab['openflow']}", "nodes": [N.FABRIC_BRIDGE],
                                    "control": str(Path(fab["rundir"]) / "control.sock")}
        return out

    def _controller_argv(self, spec: dict) -> list[str]:
        argv = [sys.executable, "-m", "sdn.cli", "controller", "-f", str(self.lab.state.manifests_path),
                "--listen", spec["listen"], "--control", spec["control"]]
        for b in spec["bridges"]:
            argv += ["--bridge", b]
        if self.lab.record.get("enforce") == "fabric":
            argv += ["--enforce", "fabric"]
        return argv

    def start_controllers(self, only: list[str] | None = None) -> None:
        self.lab.state.logs.mkdir(parents=True, exist_ok=True)
        for name, spec in self._controller_specs().items():
            if only is not None and name not in only:
                continue
            log = self.lab.state.logs / f"controller-{name}.log"
            argv = ["ip", "netns", "exec", spec["netns"]] + self._controller_argv(spec)
            pid = spawn_daemon(argv, log, self.lab.state.dir / f"controller-{name}.pid")
            self.lab.record["controllers"][name] = {"pid": pid, "control": spec["control"], "log": str(log),
                                                "netns": spec["netns"], "nodes": spec["nodes"], "argv": argv}
            self.lab.save()
            self.lab.log(f"agent for {name}: pid {pid}")

    def _expected_ports(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {n: set() for n in self.lab.record["nodes"]}
        for key, rec in self.lab.record["pods"].items():
            if rec.get("ip") and not rec.get("deleting") and rec["node"] in out:
                out[rec["node"]].add(key)
        return out

    def sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Every agent reloads the manifests; wait until each bridge realized them, with the
        port map of exactly the pods plugged into it."""
        from sdn.switch.control import ControlError, request
        expected = self._expected_ports()
        deadline = time.monotonic() + timeout

        def one(name: str, ctl: dict) -> None:
            last = ""
            reloaded = False
            pid = None
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"agent {name} did not realize the change within {timeout:.0f}s: {last}"
                                   f"{self._log_tail(ctl['log'])}")
                now = supervise.current_pid(self.lab.state, name, ctl)
                if now != pid:  # a restarted agent reads the manifests afresh; ask it anyway
                    pid, reloaded = now, False
                if not (pid and proc.alive(pid)):
                    if self.lab.record.get("phase") != "ready" or supervise.supervisor_pid(self.lab.state) is None:
                        raise LabError(f"agent {name} (pid {pid}) is not running{self._log_tail(ctl['log'])}")
                    last = f"agent {name} (pid {pid}) is not running; waiting for the supervisor to restart it"
                    time.sleep(0.1)
                    continue
                try:
                    if not reloaded:  # once: later port changes recompile by themselves
                        rel = request(ctl["control"], "reload", timeout=min(left, 30))
                        if rel.get("error"):
                            raise LabError(f"agent {name} cannot use the lab's manifests: {rel['error']}")
                        reloaded = True
                    ok = True
                    for node in ctl["nodes"]:
                        if node not in expected:
                            continue
                        prog = request(ctl["control"], "program", node=node, timeout=min(left, 30))
                        have = set(prog.get("ports") or {})
                        if have != expected[node]:
                            ok = False
                            last = (f"{node}: waiting for the port map (plugged {sorted(expected[node] - have)} "
                                    f"not seen yet, {sorted(have - expected[node])} still there)")
                    if not ok:
                        time.sleep(0.05)
                        continue
                    gen = request(ctl["control"], "status", timeout=min(left, 30))["generation"]
                    w = request(ctl["control"], "wait", generation=gen, timeout=max(0.1, min(left, 30)))
                    if w.get("realized"):
                        return
                    last = f"generation {gen} not realized yet"
                except ControlError as e:
                    last = str(e)
                    time.sleep(0.1)

        jobs = sorted(self.lab.record["controllers"].items())
        results = settle([partial(one, n, c) for n, c in jobs])
        failed = {n: str(e) for (n, _), e in zip(jobs, results) if e is not None}
        if failed:
            raise NotRealized(sorted(n for (n, _), e in zip(jobs, results) if e is None), failed)

    @staticmethod
    def _log_tail(path: str, lines: int = 12) -> str:
        try:
            text = Path(path).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {path}:\n" + "\n".join(text) if text else ""

    def kill_controller(self, name: str, ctl: dict) -> None:
        """Stop an agent on purpose (its live pid: the supervisor may have restarted it)."""
        pid = supervise.current_pid(self.lab.state, name, ctl)
        if pid and proc.alive(pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                cmd = b""
            if str(self.lab.state.dir).encode() in cmd:
                proc.terminate([pid], timeout=5.0)
