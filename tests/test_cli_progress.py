"""Progress lines: on a terminal, long work (loading, compiling, `lab up`) shows what it is
doing on stderr, and erases it when done; nothing when stderr is piped; nothing with -q."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = str(ROOT / "examples")
SDNCTL = [sys.executable, "-m", "sdn.cli"]


def on_a_terminal(*args: str, env: dict | None = None) -> tuple[int, str, bytes]:
    """Run sdnctl with stderr on a pseudo-terminal: (exit status, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*SDNCTL, *args], stdout=subprocess.PIPE, stderr=slave, cwd=ROOT,
                            env=dict(os.environ, **(env or {})))
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read().decode()
    os.close(master)
    return proc.wait(), out, seen


def test_compile_shows_progress_on_a_terminal_and_erases_it():
    code, out, tty = on_a_terminal("compile", "-f", EXAMPLES, "--node", "node-1")
    assert code == 0 and out.startswith("# sdnctl compile: node node-1")
    assert b"loading " in tty and b"compiling node node-1 (1 of 1)" in tty
    assert tty.endswith(b"\x1b[2K")  # the status line is erased at the end


def test_no_progress_when_piped_or_quiet():
    proc = subprocess.run([*SDNCTL, "compile", "-f", EXAMPLES, "--node", "node-1"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0 and proc.stderr == ""
    code, out, tty = on_a_terminal("-q", "compile", "-f", EXAMPLES, "--node", "node-1")
    assert code == 0 and tty == b"" and out.startswith("# sdnctl compile")


@pytest.mark.ovs
def test_lab_up_shows_its_pods_coming_up(tmp_path):
    state = f"/run/sdnlab-p{os.getpid()}"
    try:
        code, out, tty = on_a_terminal("lab", "--state-dir", state, "up", "-f", EXAMPLES)
        assert code == 0 and out.startswith("lab up: 2 node(s)"), tty[-500:]
        # the line shows the latest step (10 refreshes a second): some pod, some agent
        assert re.search(rb"pod [xyz]/[abc]: 10\.244\.\d\.\d+ on node-\d, serving", tty), tty
        assert re.search(rb"agent for node-\d: pid \d+", tty) and tty.endswith(b"\x1b[2K"), tty
    finally:
        subprocess.run([*SDNCTL, "lab", "--state-dir", state, "down"], capture_output=True, cwd=ROOT)
