"""Process helpers shared by the lab, the control plane and the OVS instances: is a pid alive,
stop pids (TERM, then KILL), read a pid file, start a detached daemon, the tail of a log."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path


class ProcessError(RuntimeError):
    """A process did not start, or did not stop."""


def proc_state(pid: int) -> str | None:
    """Kernel state letter of ``pid`` (None if gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) S ..." -- comm may contain spaces/parens, so split at the last ')'
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every pid is gone or `timeout` passed; returns the survivors."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if pids:
            time.sleep(0.02)
    return [p for p in pids if alive(p)]


def terminate(pids: Iterable[int], timeout: float = 5.0) -> None:
    """SIGTERM ``pids``, wait up to ``timeout``, then SIGKILL the survivors."""
    pids = [p for p in pids if alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    left = wait_gone(pids, timeout)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = wait_gone(left, 5.0)
    if left:
        raise ProcessError(f"processes {left} survived SIGKILL")


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def tail(path: Path | str, lines: int = 25) -> str:
    """The last lines of a log, or a word saying there is none."""
    try:
        content = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: no log)"
    return "\n".join(content[-lines:]) or f"({path}: empty)"


def socket_ready(path: Path | str) -> bool:
    """Whether a unix socket at `path` accepts a connection (its daemon is serving)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def remove_stale_socket(path: str) -> None:
    """Remove a unix socket file left by a killed process, so a new listener can bind it; an
    OSError if the file is no socket or a process still answers on it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left by a killed process
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another controller is running (it answers on this socket)")


_SPAWN = """
import os, sys
pidfile, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if os.fork():
    os._exit(0)
os.setsid()
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.dup2(fd, 1)
os.dup2(fd, 2)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(pidfile + ".tmp", pidfile)
os.execvp(argv[0], argv)
"""


def spawn_daemon(argv: list[str], log: Path, pidfile: Path, timeout: float = 10.0,
                 env: dict[str, str] | None = None) -> int:
    """Start `argv` detached (double fork, new session, output appended to `log`): it outlives
    this process and is nobody's zombie. Returns its pid (`ip netns exec` and `nsenter` exec,
    so the pid is the program's)."""
    pidfile.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-c", _SPAWN, str(pidfile), str(log), *argv], check=True,
                   timeout=timeout, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pidfile(pidfile)
        if pid is not None:
            return pid
        time.sleep(0.01)
    raise ProcessError(f"{argv[0]} did not start (no pid in {pidfile})")
