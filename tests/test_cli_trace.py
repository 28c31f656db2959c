"""`sdnctl trace` for addresses and ICMP, and `flows show --pod`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.flow import parse_flows
from sdn.compile import compile_cluster
from sdn.layout import pod_mac
from sdn.policy.evaluate import evaluate, evaluate_address
from sdn.policy.manifests import load_paths
from sdn.policy.model import EGRESS, INGRESS
from sdn.verify import ClusterSimulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = str(ROOT / "examples")
CLUSTER, _ = load_paths([EXAMPLES])
PODS = sorted(CLUSTER.pods)
# Node addresses, an outside host, and one address inside y/egress-to-x's except (10.244.2.0/24)
# and one inside its cidr but outside the except.
ADDRESSES = ["192.168.50.11", "192.168.50.12", "8.8.8.8", "10.244.2.200", "10.244.3.7"]


def sdnctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdn.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_address_verdicts_of_the_flows_agree_with_the_evaluator_everywhere():
    for enforce in ("host", "fabric"):
        sim = ClusterSimulator(compile_cluster(CLUSTER, enforce=enforce))
        for key in PODS:
            pod = CLUSTER.pods[key]
            for addr in ADDRESSES:
                for port, proto in ((80, "TCP"), (81, "UDP"), (81, "TCP"), (0, "ICMP")):
                    out = sim.to_address(pod, addr, port, proto.lower()).delivered
                    assert out == evaluate_address(CLUSTER, pod, addr, EGRESS, port, proto).allowed, \
                        (enforce, key, addr, port, proto)
                    back = sim.from_address(addr, pod, port, proto.lower()).delivered
                    assert back == evaluate_address(CLUSTER, pod, addr, INGRESS, port, proto).allowed, \
                        (enforce, addr, key, port, proto)


def test_icmp_between_pods_agrees_with_the_evaluator_everywhere():
    for enforce in ("host", "fabric"):
        sim = ClusterSimulator(compile_cluster(CLUSTER, enforce=enforce))
        for s in PODS:
            for d in PODS:
                if s == d:
                    continue  # a pod reaching itself never leaves it (and is never judged)
                src, dst = CLUSTER.pods[s], CLUSTER.pods[d]
                assert sim.connect(src, dst, 0, "icmp").delivered == evaluate(CLUSTER, src, dst, 0, "ICMP").allowed


def test_trace_to_an_outside_address_says_what_is_judged_and_where_it_goes():
    proc = sdnctl("trace", "-f", EXAMPLES, "--from", "y/c", "--to", "10.244.2.200", "--port", "81/UDP", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # y/egress-to-x allows UDP to 10.244.0.0/16 except 10.244.2.0/24: this address is excepted
    assert (doc["verdict"], doc["evaluator"], doc["agree"]) == ("denied", "denied", True)
    assert doc["to"] == "10.244.2.200 (no pod's address)" and doc["egress"]["isolated"]
    assert any("only the egress of y/c is judged" in n for n in doc["notes"])
    doc = json.loads(sdnctl("trace", "-f", EXAMPLES, "--from", "y/c", "--to", "10.244.3.7", "--port", "81/UDP",
                            "-o", "json").stdout)
    assert doc["verdict"] == "allowed" and doc["egress"]["allowed_by"] == ["y/egress-to-x egress[1]"]
    assert any("has no route for 10.244.3.7" in n for n in doc["notes"])


def test_trace_from_a_node_address_names_the_node():
    proc = sdnctl("trace", "-f", EXAMPLES, "--from", "192.168.50.12", "--to", "x/a", "--port", "80")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first == "192.168.50.12 (node node-2) -> x/a 80/TCP: DENIED"
    assert "dropped by the ingress default deny of x/a" in proc.stdout


def test_a_pod_address_is_the_pod():
    by_name = json.loads(sdnctl("trace", "-f", EXAMPLES, "--from", "y/b", "--to", "x/a", "--port", "80",
                                "-o", "json").stdout)
    by_ip = json.loads(sdnctl("trace", "-f", EXAMPLES, "--from", CLUSTER.pods["y/b"].ips[0], "--to",
                              CLUSTER.pods["x/a"].ips[0], "--port", "80", "-o", "json").stdout)
    assert by_ip == by_name and by_ip["from"] == "y/b"


def test_trace_says_plainly_that_icmp_is_not_judged_by_networkpolicy():
    proc = sdnctl("trace", "-f", EXAMPLES, "--from", "y/b", "--to", "x/a", "--port", "icmp")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "y/b -> x/a ICMP: DENIED"
    assert "note: ICMP is not judged by NetworkPolicy" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--from", "1.2.3.4", "--to", "5.6.7.8", "--port", "80"], "both addresses of no pod"),
    (["--from", "x/a", "--to", "5.6.7.8", "--port", "serve-80-tcp"], "named port"),
    (["--from", "x/a", "--to", "fd00::1", "--port", "80"], "different IP families"),
    (["--from", "x/a", "--to", "y/b", "--port", "80/ICMPX"], "unknown protocol"),
])
def test_trace_rejects_what_it_cannot_answer(args, message):
    proc = sdnctl("trace", "-f", EXAMPLES, *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr


def test_flows_show_pod_keeps_the_flows_of_that_pod():
    proc = sdnctl("flows", "show", "-f", EXAMPLES, "--node", "node-1", "--pod", "a", "-n", "x", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    flows = [f["flow"] for t in doc["tables"] for g in t["groups"] for f in g["flows"]]
    assert flows
    pod = CLUSTER.pods["x/a"]
    full = compile_cluster(CLUSTER, ["node-1"])
    ofport = full.layout.ofports["node-1"]["x/a"]
    for text in flows:
        assert parse_flows(text)  # a real flow, as ovs-ofctl writes it
        mentions = (pod.ips[0] in text or f"in_port={ofport}" in text or f"output:{ofport}" in text
                    or pod_mac(pod) in text or "conj_id=" in text or "conjunction(" in text)
        assert mentions, text
    assert not any(ip in " ".join(flows) for p in ("x/c",) for ip in CLUSTER.pods[p].ips)
    # every flow of the program that names x/a's address is there
    mine = [f.render() for f in full.programs["node-1"].flows if f"={pod.ips[0]}," in f.render() + ","]
    assert set(mine) <= set(flows)
    text = sdnctl("flows", "show", "-f", EXAMPLES, "--node", "node-1", "--pod", "x/a").stdout
    assert text.splitlines()[0].endswith(f"; {len(set(flows))} concern x/a")  # a flow of two rules shows twice
    proc = sdnctl("flows", "show", "-f", EXAMPLES, "--node", "node-1", "--pod", "x/nope")
    assert proc.returncode == 2 and "x/nope" in proc.stderr


def test_trace_with_gateways_shows_the_node_the_outside_and_services_with_their_roles():
    """--gateway gives each node bridge its gateway port (as `lab up` and the agent make it):
    the pod's own node reaches it though it is isolated; another node's address comes through
    the tunnel and is judged; an outside address leaves through the gateway; a ClusterIP goes to
    kube-proxy unjudged. Each pipeline flow hit says what it is for."""
    def trace(*args: str) -> dict:
        proc = sdnctl("trace", "-f", EXAMPLES, "--gateway", "--service-cidr", "10.96.0.0/16", *args, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def roles(doc: dict) -> list[str]:
        return [s["role"] for h in doc["hops"] for s in h["steps"] if s.get("role")]
    own = trace("--from", "192.168.50.11", "--to", "x/a", "--port", "80")  # x/a is isolated, on node-1
    assert (own["verdict"], own["evaluator"], own["agree"]) == ("allowed", "allowed", True)
    assert "gateway: from the node itself (always allowed)" in roles(own)
    assert "new from the node: not judged" in roles(own)
    assert any("x/a's own node: always allowed" in n for n in own["notes"])
    other = trace("--from", "192.168.50.12", "--to", "x/a", "--port", "80")
    assert (other["verdict"], other["agree"]) == ("denied", True)
    assert "from another node (tunnel)" in roles(other)
    out = trace("--from", "x/a", "--to", "192.168.50.253", "--port", "80")
    assert out["verdict"] == "allowed" and out["hops"][-1]["outputs"] == [2]
    assert roles(out)[-1] == "to the gateway: the node, or outside the cluster (masqueraded by the node)"
    svc = trace("--from", "y/c", "--to", "10.96.0.80", "--port", "8080")  # y/c's egress allows only x
    assert (svc["verdict"], svc["agree"]) == ("allowed", True)
    assert "to a Service: to the node's kube-proxy unjudged, judged once translated" in roles(svc)
    blocked = trace("--from", "y/c", "--to", "192.168.50.253", "--port", "80")
    assert (blocked["verdict"], blocked["agree"]) == ("denied", True)
    bad = sdnctl("trace", "-f", EXAMPLES, "--gateway", "--enforce", "fabric", "--from", "x/a", "--to", "y/a",
                 "--port", "80")
    assert bad.returncode == 2 and "host-mode" in bad.stderr
    bad = sdnctl("trace", "-f", EXAMPLES, "--service-cidr", "10.96.0.0/33", "--from", "x/a", "--to", "y/a",
                 "--port", "80")
    assert bad.returncode == 2 and "--service-cidr 10.96.0.0/33: not a CIDR" in bad.stderr
