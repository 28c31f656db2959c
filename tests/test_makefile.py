"""What `make demo` and `make test` install and what they leave alone: the demo installs only
what it needs, nothing stops or reconfigures a service, the README says what each installs,
and the lab runs beside an Open vSwitch that already runs on the host."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdn.ovs.instance import OvsInstance

ROOT = Path(__file__).resolve().parent.parent


def packages(target: str) -> list[str]:
    """The apt packages a deps target checks (make -n prints the recipe without running it)."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return re.search(r"for pkg in ([^;]+);", out).group(1).split()


def test_the_demo_installs_only_what_it_needs():
    demo = packages("demo-deps")
    assert demo == ["openvswitch-switch", "iproute2", "ethtool"]
    test = packages("system-deps")
    assert set(demo) < set(test) and {"vagrant", "ruby", "shellcheck", "ovn-central"} <= set(test) - set(demo)
    recipe = subprocess.run(["make", "-s", "--no-print-directory", "-p", "-n", "demo-root"], cwd=ROOT,
                            capture_output=True, text=True).stdout
    demo_rule = re.search(r"^demo: (.*)$", recipe, re.M).group(1).split()
    assert "system-deps" not in demo_rule and "demo-deps" in demo_rule


def test_nothing_stops_or_reconfigures_a_service():
    text = "\n".join(line for line in (ROOT / "Makefile").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    for word in ("systemctl", "service ", "ovs-ctl", "/etc/init.d", "policy-rc.d", "update-rc.d"):
        assert word not in text, word


def test_the_readme_says_what_each_command_installs():
    readme = (ROOT / "README.md").read_text()
    table = {}
    for line in readme.split("## What the commands install", 1)[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`make "):
            table[cells[0].strip("`")] = set(re.findall(r"`([a-z0-9.-]+)`", cells[1]))
    assert set(packages("demo-deps")) <= table["make demo"]
    assert "what `make demo` installs" in readme  # the make test row builds on the demo's
    assert set(packages("system-deps")) <= table["make test"] | table["make demo"]
    assert not {"vagrant", "ovn-central", "ovn-host", "shellcheck"} & table["make demo"]


@pytest.mark.ovs
def test_the_lab_runs_beside_an_open_vswitch_already_running_on_the_host(tmp_path):
    """An ovs-vswitchd with a netdev bridge in the host's own namespace (as a system service
    would run it) keeps running, untouched, while a lab comes up beside it, proves its
    matrix, and goes away."""
    if os.geteuid() != 0:
        pytest.fail("needs root", pytrace=False)
    host = OvsInstance(tmp_path / "host-ovs", netns=None, create_netns=False)
    tap_existed = Path("/sys/class/net/ovs-netdev").exists()  # the netdev datapath's device
    state = f"/run/sdnlab-c{os.getpid()}"
    sdnctl = [sys.executable, "-m", "sdn.cli", "lab", "--state-dir", state]
    try:
        host.start()
        host.add_bridge("br-host", dpid=0xAB)
        pid = host.vswitchd_pidfile.read_text().strip()
        up = subprocess.run([*sdnctl, "up", "-f", str(ROOT / "examples")], capture_output=True, text=True, cwd=ROOT)
        assert up.returncode == 0, up.stderr
        matrix = subprocess.run([*sdnctl, "matrix", "--check", "-o", "json"], capture_output=True, text=True, cwd=ROOT)
        assert matrix.returncode == 0 and json.loads(matrix.stdout)["matrices"][0]["agree"], matrix.stdout[-500:]
        down = subprocess.run([*sdnctl, "down"], capture_output=True, text=True, cwd=ROOT)
        assert down.returncode == 0, down.stderr
        assert host.vswitchd_pidfile.read_text().strip() == pid and Path(f"/proc/{pid}").exists()
        assert host.vsctl("list-br").split() == ["br-host"]
    finally:
        subprocess.run([*sdnctl, "down"], capture_output=True, cwd=ROOT)
        host.stop()
        if not tap_existed:
            subprocess.run(["ip", "link", "del", "ovs-netdev"], capture_output=True)
