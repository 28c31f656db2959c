"""The lab's supervisor: a dead agent is started again, as a DaemonSet's restart policy
(`Always`) has the kubelet do on a real node.

One small process per lab (`python -m sdn.lab.supervise --state-dir STATE`), started by `lab
up` once the lab is ready, detached so that it outlives the CLI, stopped first by `lab down`
(before the agents, so that nothing restarts them while the lab goes away). Every
`POLL_SECONDS` it reads the lab record (read only: lab.json belongs to the lab commands) and
looks at each agent listed in record["controllers"] (file mode: `sdnctl controller` per node
bridge; kubernetes mode: the agent of deploy/daemonset.yaml per node). One found dead is
started again with the argv the lab recorded, after a back-off that doubles with each crash
in a row (`BACKOFF_FIRST`, 2x, ... at most `BACKOFF_MAX` seconds: the kubelet's
CrashLoopBackOff, scaled down to a lab) and is forgiven once an agent ran `BACKOFF_RESET`
seconds. It never gives up, as a DaemonSet never does.

What it did is in STATE/supervisor.json, written only by the supervisor:

    {"pid": 1234, "agents": {"node-1": {"origin": 111, "pid": 222, "restarts": 1, ...}}}

"origin" is the pid the lab recorded for that agent; an entry counts only while the lab
record still names that pid (a node removed and added again starts from 0). The lab asks
`current()` for an agent's live pid and restart count.

The lab and the supervisor share one lock (STATE/supervise.lock): the lab holds it while it
stops an agent on purpose (`holding()`), the supervisor while it checks the record again and
restarts one, so an agent the lab just removed is never brought back.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sdn import proc
from sdn.lab.state import State

POLL_SECONDS = 0.2
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
BACKOFF_RESET = 30.0
FILE = "supervisor.json"
PIDFILE = "supervisor.pid"
LOCK = "supervise.lock"


def backoff(crashes: int) -> float:
    """Seconds to wait before restarting an agent that crashed `crashes` times in a row
    (1: the first crash)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, crashes - 1))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def holding(state: State) -> Iterator[None]:
    """The supervisor does not restart anything while this is held."""
    state.dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def view(state: State) -> dict[str, Any]:
    """What the supervisor wrote (empty when it never ran)."""
    try:
        return json.loads((state.dir / FILE).read_text())
    except (OSError, ValueError):
        return {}


def current(state: State, name: str, ctl: dict, seen: dict[str, Any] | None = None) -> dict[str, Any]:
    """The agent `name` now: {"pid": its live pid (a restarted one's), "restarts": n}."""
    entry = ((seen if seen is not None else view(state)).get("agents") or {}).get(name)
    if entry and entry.get("origin") == ctl.get("pid"):
        return {"pid": entry["pid"], "restarts": entry.get("restarts", 0),
                "last_restart": entry.get("last_restart")}
    return {"pid": ctl.get("pid"), "restarts": 0, "last_restart": None}


def current_pid(state: State, name: str, ctl: dict) -> int | None:
    return current(state, name, ctl)["pid"]


def supervisor_pid(state: State) -> int | None:
    """The supervisor's pid while it runs (its command line names the state directory)."""
    pid = proc.read_pidfile(state.dir / PIDFILE)
    if pid and proc.alive(pid) and _names(pid, state):
        return pid
    return None


def _names(pid: int, state: State) -> bool:
    try:
        return str(state.dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def start(state: State) -> int:
    """Start the lab's supervisor (detached); returns its pid."""
    state.logs.mkdir(parents=True, exist_ok=True)
    return proc.spawn_daemon([sys.executable, "-m", "sdn.lab.supervise", "--state-dir", str(state.dir)],
                             state.logs / "supervisor.log", state.dir / PIDFILE)


def stop(state: State) -> int | None:
    """Stop the supervisor (returns its pid, None if none ran); holds the lock, so no restart
    is under way when it dies."""
    pid = supervisor_pid(state)
    if pid is None:
        return None
    with holding(state):
        proc.terminate([pid], timeout=5.0)
    return pid


class Supervisor:
    """The loop: `tick()` once per POLL_SECONDS until the lab is gone."""

    def __init__(self, state: State, log=print):
        self.state = state
        self.log = log
        self.agents: dict[str, dict[str, Any]] = view(state).get("agents") or {}

    def _write(self) -> None:
        path = self.state.dir / FILE
        tmp = path.with_name(f".{FILE}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "agents": self.agents}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def tick(self) -> bool:
        """One look at every agent; False once the lab is gone."""
        record = self.state.load()
        if record is None or record.get("corrupt"):
            return False
        if record.get("phase") != "ready":
            return True
        controllers = record.get("controllers") or {}
        changed = False
        for name in [n for n in self.agents if n not in controllers]:
            del self.agents[name]
            changed = True
        now = time.monotonic()
        for name, ctl in controllers.items():
            e = self.agents.get(name)
            if e is None or e.get("origin") != ctl.get("pid"):
                e = self.agents[name] = {"origin": ctl.get("pid"), "pid": ctl.get("pid"), "restarts": 0,
                                         "crashes": 0, "last_restart": None}
                changed = True
            e.setdefault("_since", now)
            if proc.alive(e["pid"]):
                if e["crashes"] and now - e["_since"] >= BACKOFF_RESET:
                    e["crashes"] = 0
                    changed = True
                continue
            if "_due" not in e:
                e["crashes"] += 1
                e["_due"] = now + backoff(e["crashes"])
                self.log(f"{_now()} agent {name} (pid {e['pid']}) is not running; restart in "
                         f"{backoff(e['crashes']):.1f}s (crash {e['crashes']} in a row)")
            if now < e["_due"]:
                continue
            pid = self._restart(name, ctl)
            if pid is None:
                continue
            e.pop("_due", None)
            e.update(pid=pid, restarts=e["restarts"] + 1, last_restart=_now(), _since=time.monotonic())
            changed = True
            self.log(f"{_now()} agent {name} restarted: pid {pid} (restart {e['restarts']})")
        if changed:
            saved = self.agents
            self.agents = {n: {k: v for k, v in e.items() if not k.startswith("_")} for n, e in saved.items()}
            self._write()
            self.agents = saved
        return True

    def _restart(self, name: str, ctl: dict) -> int | None:
        """Start the agent again unless the lab removed it meanwhile (checked under the lock)."""
        with holding(self.state):
            record = self.state.load() or {}
            now = (record.get("controllers") or {}).get(name)
            if record.get("phase") != "ready" or now is None or now.get("pid") != ctl.get("pid"):
                return None
            try:
                return proc.spawn_daemon(list(ctl["argv"]), Path(ctl["log"]),
                                         self.state.dir / f"supervised-{name}.pid")
            except (proc.ProcessError, OSError) as e:
                self.log(f"{_now()} agent {name}: restart failed: {e}")
                return None

    def run(self) -> None:
        while self.tick():
            time.sleep(POLL_SECONDS)
        self.log(f"{_now()} the lab is gone; the supervisor stops")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    Supervisor(State(args.state_dir), log=lambda m: print(m, flush=True)).run()


if __name__ == "__main__":
    main()
