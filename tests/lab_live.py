"""Checks of the live commands against a lab (used by tests/test_lab_host.py and
tests/test_lab_fabric.py): `sdnctl` finds the lab's agents without --control, and a live trace
of every pod pair agrees with the semantic evaluator and with the offline trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from sdn.cli_locate import lab_trace, running_lab
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_paths
from tests.e2e_cases import base_cluster

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_POLICIES = list(yaml.safe_load_all((REPO / "examples/policies.yaml").read_text()))


def sdnctl(state_dir: str, *args: str) -> subprocess.CompletedProcess:
    """The real command as a user runs it after `make demo KEEP=1`: no --control, the lab's
    state directory from the environment; no node agent socket on this machine."""
    env = {k: v for k, v in os.environ.items() if k != "SDN_CONTROL"}
    env["SDN_LAB_DIR"] = state_dir
    return subprocess.run([sys.executable, "-m", "sdn.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def with_example_policies(replayer) -> None:
    replayer.goto(base_cluster() + EXAMPLE_POLICIES)


def check_live_commands_and_trace(replayer, monkeypatch) -> None:
    """With the example policies: the live commands find the lab, and the live trace of every
    pod pair agrees with the evaluator; the lab back to the base cluster afterwards."""
    with_example_policies(replayer)
    try:
        check_live_commands_find_the_lab(replayer)
        check_live_trace_of_every_pair(replayer, monkeypatch)
    finally:
        replayer.goto(base_cluster())


def check_live_trace_of_every_pair(replayer, monkeypatch) -> None:
    state_dir = str(replayer.lab.state.dir)
    monkeypatch.setenv("SDN_LAB_DIR", state_dir)
    lab = running_lab()
    assert lab is not None and set(lab.controls) >= {"node-1", "node-2"}
    cluster, _ = load_paths([lab.manifests])
    keys = sorted(k for k, p in cluster.pods.items() if p.ips)
    wrong = []
    for port, proto in ((80, "TCP"), (81, "UDP")):
        for s in keys:
            for d in keys:
                if s == d:
                    continue
                doc = lab_trace(lab, s, d, f"{port}/{proto}")
                want = evaluate(cluster, cluster.pods[s], cluster.pods[d], port, proto).allowed
                if (doc["verdict"] == "allowed") != want or not doc["agree"]:
                    wrong.append(f"{s} -> {d} {port}/{proto}: live {doc['verdict']}, evaluator {want}")
    assert not wrong, "\n".join(wrong)
    # the command itself, across nodes, names the deciding rule
    out = sdnctl(state_dir, "trace", "--live", "--from", "y/b", "--to", "x/a", "--port", "80", "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "allowed" and doc["agree"]
    assert any(line.startswith("allowed by x/allow-web ingress[0]") for line in doc["decided_by"])


def check_live_commands_find_the_lab(replayer) -> None:
    state_dir = str(replayer.lab.state.dir)
    out = sdnctl(state_dir, "flows", "show", "--node", "node-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("node node-1, bridge br-sdn")
    out = sdnctl(state_dir, "flows", "show", "--node", "node-1", "--pod", "x/a", "-o", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["live"], out.stderr
    out = sdnctl(state_dir, "flows", "diff", "--node", "node-2")
    assert (out.returncode, out.stdout) == (0, "# node-2 (br-sdn): in sync, nothing to add, modify or delete\n")
    out = sdnctl(state_dir, "flows", "diff", "--node", "node-7")
    assert out.returncode == 2 and "node-7" in out.stderr and "node-1" in out.stderr
    out = sdnctl(state_dir, "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    agents = json.loads(out.stdout)["agents"]
    assert {"node-1", "node-2"} <= set(agents) and all(a["in_sync"] for a in agents.values())
    out = sdnctl(state_dir, "policy", "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)["nodes"]
    for n in nodes:
        assert {(p["namespace"], p["name"]) for p in n["policies"]} == {
            ("x", "default-deny"), ("x", "allow-web"), ("y", "egress-to-x")}
        assert all(p["realized"] for p in n["policies"]), n
    text = sdnctl(state_dir, "policy", "status", "-n", "y").stdout
    assert "node node-1 (lab " in text and "egress-to-x" in text and "allow-web" not in text
    # the pods answer HTTP: curl from y/b to x/a (allowed on 80 by x/allow-web)
    record = replayer.lab.state.load()
    out = subprocess.run(["ip", "netns", "exec", record["pods"]["y/b"]["netns"], "curl", "-sS", "--max-time", "5",
                          f"http://{record['pods']['x/a']['ip']}/"], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "x/a\n"), out.stderr
    # no lab in the state directory: exit 3, saying where it looked
    out = sdnctl(state_dir + "-none", "status")
    assert out.returncode == 3 and "no lab is up" in out.stderr


SNIFF = """
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
s.bind(("eth0", 0)); s.settimeout(0.2)
end = time.time() + {seconds}
print("ready", flush=True)
while time.time() < end:
    try:
        data, addr = s.recvfrom(2048)
    except (socket.timeout, OSError):
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        eth = struct.unpack("!H", data[12:14])[0]
        icmp = data[54] if eth == 0x86dd and data[20] == 58 else -1
        dst = socket.inet_ntop(socket.AF_INET6, data[38:54]) if eth == 0x86dd else "-"
        print(f"{{len(data)}} {{eth:#x}} {{icmp}} {{dst}}", flush=True)
"""


def _counters(rundir: str, ofport: int) -> tuple[int, int]:
    """(packets in from that port at the classifier, packets the spoof guard dropped)."""
    import re
    dump = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", f"unix:{rundir}/br-sdn.mgmt"],
                          capture_output=True, text=True, check=True).stdout
    def packets(table: int, rest: str) -> int:
        return sum(int(re.search(r"n_packets=(\d+)", line).group(1)) for line in dump.splitlines()
                   if f" table={table}," in line and rest in line)
    return packets(0, f"priority=200,in_port={ofport} "), packets(10, "priority=0 actions=drop")


def check_spoofguard_drops_are_router_solicitations(replayer) -> None:
    """What `make demo` says about the packets dropped at the spoof guard before any probe: the
    pods' kernels send IPv6 router solicitations (and, as IPv6 comes up, MLD reports and DAD
    neighbor solicitations) from addresses the spoof guard does not pass. Restart IPv6 in one
    pod, capture what it sends, and count what the bridge dropped."""
    import time

    from sdn.switch.control import request
    record = replayer.lab.state.load()
    pod = record["pods"]["x/a"]
    node = record["nodes"][pod["node"]]
    ofport = request(record["controllers"][pod["node"]]["control"], "program", node=pod["node"])["ports"]["x/a"]
    before = _counters(node["rundir"], ofport)
    sniff = subprocess.Popen(["ip", "netns", "exec", pod["netns"], sys.executable, "-c", SNIFF.format(seconds=6)],
                             stdout=subprocess.PIPE, text=True)
    assert sniff.stdout.readline().strip() == "ready"
    for v in ("1", "0"):
        subprocess.run(["ip", "netns", "exec", pod["netns"], "sysctl", "-q", "-w",
                        f"net.ipv6.conf.eth0.disable_ipv6={v}"], check=True)
    frames = [line.split() for line in sniff.stdout]
    sniff.wait(timeout=10)
    time.sleep(2)  # flow statistics follow the datapath's with a delay
    after = _counters(node["rundir"], ofport)
    ipv6 = [f for f in frames if f[1] == "0x86dd"]
    assert ["70", "0x86dd", "133", "ff02::2"] in ipv6, frames  # a router solicitation
    # every frame the pod sent reached the bridge (an ARP refresh of the gateway may be among
    # them), and at least its IPv6 ones were dropped by the spoof guard (other pods' router
    # solicitations on the node may add to that counter)
    assert after[0] - before[0] >= len(frames), (before, after, frames)
    assert after[1] - before[1] >= len(ipv6), (before, after, frames)
