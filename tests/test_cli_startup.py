"""sdnctl starts quietly and imports only what a command needs: --help and the offline
commands never load os-ken, eventlet, the Kubernetes client or OVSDB; no command prints a
warning (eventlet's dnspython used to print CryptographyDeprecationWarning on every start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cli_startup

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = str(ROOT / "examples")
SERVICE_LIBS = ("eventlet", "os_ken", "kubernetes", "ovs", "prometheus_client", "dns", "cryptography")


def imported(*args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run `python -X importtime -m sdn.cli ARGS`; the top-level packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sdn.cli", *args], cwd=ROOT,
                          capture_output=True, text=True)
    mods = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}
    return mods, proc


def test_help_imports_only_click_and_the_cli():
    mods, proc = imported("--help")
    assert proc.returncode == 0 and "compile" in proc.stdout and "lab" in proc.stdout
    assert not mods & {*SERVICE_LIBS, "rich", "yaml", "flows", "netaddr"}, sorted(mods)


@pytest.mark.parametrize("args", [
    ["compile", "-f", EXAMPLES, "--node", "node-1"],
    ["flows", "show", "-f", EXAMPLES, "--node", "node-1"],
    ["trace", "-f", EXAMPLES, "--from", "y/b", "--to", "x/a", "--port", "80"],
    ["policy", "explain", "-f", EXAMPLES, "x/a"],
])
def test_offline_commands_do_not_load_the_service_libraries(args):
    mods, proc = imported(*args)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert not mods & set(SERVICE_LIBS), sorted(mods & set(SERVICE_LIBS))


@pytest.mark.parametrize("args", [["--help"], ["agent", "--help"], ["controller", "--help"], ["lab", "--help"],
                                  ["status", "--help"], ["flows", "diff", "--help"],
                                  ["compile", "-f", EXAMPLES, "--node", "node-1"]])
def test_no_command_prints_a_warning(args):
    proc = subprocess.run([*cli_startup.sdnctl(), *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_the_service_side_imports_without_warnings():
    # What the controller, the agent and the lab load when they run, in a fresh interpreter
    # whose warning filters are Python's defaults.
    proc = subprocess.run([sys.executable, "-c", "import sdn.switch.controller, sdn.agent, sdn.lab.lab, "
                           "sdn.switch.app"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_the_benchmark_measures_start_up_against_the_target():
    st = cli_startup.measure(runs=2)
    assert len(st["help"]["seconds"]) == 2 and len(st["compile"]["seconds"]) == 2
    (row,) = cli_startup.target_rows({"cli_startup": st})
    assert row["status"] in ("met", "missed") and "sdnctl compile" in row["measured"]
    (missing,) = cli_startup.target_rows({})
    assert missing["status"] == "not measured"
