"""The benchmark scenarios have the published shapes (at a tiny scale), are deterministic by
seed, and the runner writes results.md (tiny scale, a few seconds)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from benchmarks import scenarios as S
from sdn.policy.model import EGRESS, INGRESS


def _fingerprint(sc: S.Scenario) -> tuple:
    c = sc.cluster
    return (tuple(sorted(c.namespaces.items())), tuple(sorted(c.pods.items())),
            tuple(sorted(c.nodes.items())), tuple(sorted(c.policies.items())), tuple(sc.events))


@pytest.mark.parametrize("name", sorted(S.BUILDERS))
def test_deterministic_by_seed(name):
    a, b = S.build(name, 0.01, seed=3, events=3), S.build(name, 0.01, seed=3, events=3)
    assert _fingerprint(a) == _fingerprint(b)
    c = S.build(name, 0.01, seed=4, events=3)
    assert _fingerprint(a) != _fingerprint(c)


@pytest.mark.parametrize("name", sorted(S.BUILDERS))
def test_pods_placed_on_their_nodes_cidr(name):
    sc = S.build(name, 0.01, events=2)
    c = sc.cluster
    ips = [ip for p in c.pods.values() for ip in p.ips]
    assert len(ips) == len(set(ips)) == len(c.pods)
    for p in c.pods.values():
        assert p.node in c.nodes
        net = c.nodes[p.node].pod_cidrs[0].rsplit(".", 1)[0]
        assert p.ip.rsplit(".", 1)[0] == net
    assert sc.focus_node in c.nodes
    for ev in sc.events:
        assert ev.pod in c.pods and ev.labels != c.pods[ev.pod].labels


def test_s1_shape():
    sc = S.s1(0.004, events=3)  # 100 namespaces
    c = sc.cluster
    assert len(c.namespaces) == 100
    assert len(c.pods) == 400 and len(c.policies) == 300
    per_ns = Counter(p.namespace for p in c.pods.values())
    assert set(per_ns.values()) == {4}
    names = Counter(name for (_, _, name) in c.policies)
    assert names == {"default-deny-all": 100, "np-1": 100, "np-2": 100}
    assert all(p.policy_types == {INGRESS, EGRESS} for p in c.policies.values())
    assert all(c.pods[e.pod].node == sc.focus_node for e in sc.events)
    assert sc.shape == {"namespaces": 25_000, "pods": 100_000, "policies": 75_000, "nodes": 1_000}
    assert S.s1(0.004).counts()["nodes"] == 4  # 100 pods per node


def test_s2_shape():
    c = S.s2(0.02).cluster  # 200 pods, 200 policies
    assert len(c.namespaces) == 1 and len(c.pods) == 200 and len(c.policies) == 200
    pol = next(iter(c.policies.values()))
    assert all(pol.pod_selector.matches(p.labels) for p in c.pods.values())


def test_s3_shape():
    sc = S.s3(0.05)  # 12 namespaces x 10 pods, 20 policies each
    c = sc.cluster
    assert len(c.namespaces) == 12 and len(c.pods) == 120 and len(c.policies) == 240
    pol = c.policies[("v1", "s3-0000", "np-00")]
    (rule,) = pol.ingress
    kinds = Counter("ip" if p.ip_block else "pod+ns" if p.pod_selector else "ns" for p in rule.peers)
    assert kinds == {"ns": 5, "pod+ns": 5, "ip": 5}
    ranges = [p for p in rule.ports if p.end_port is not None]
    assert len(rule.ports) == 10 and len(ranges) == 5
    local = [p for p in c.pods.values() if p.namespace == "s3-0000" and pol.pod_selector.matches(p.labels)]
    assert len(local) == 10
    assert sc.shape == {"namespaces": 240, "pods": 2_400, "policies": 4_800, "nodes": 24}


def test_s4_growth_with_and_without_policies():
    with_pol, new = S.s4_growth(100, True)
    without, new2 = S.s4_growth(100, False)
    assert len(with_pol.pods) == len(without.pods) == 100
    assert len(with_pol.policies) == 200 and not without.policies
    assert new == new2 and new.key not in with_pol.pods
    assert new.ip not in {p.ip for p in with_pol.pods.values()}


def test_s5_shape():
    sc = S.s5(0.1, events=3)  # 10 namespaces x 50 pods, 10 allow policies + 10 mesh
    c = sc.cluster
    assert len(c.pods) == 500 and len(c.nodes) == 10
    assert Counter(p.node for p in c.pods.values()).most_common(1)[0][1] == 50
    fe = [p for p in c.pods.values() if p.namespace == "frontend"]
    assert {p.node for p in fe} == {sc.focus_node}
    allows = [p for (_, ns, name), p in c.policies.items() if name.startswith("allow-")]
    assert len(allows) == 10
    local = [p for p in fe if allows[0].pod_selector.matches(p.labels)]
    assert len(local) == 20
    (rule,) = allows[0].ingress
    assert len(rule.ports) == 5 and any(p.ip_block and p.ip_block.excepts for p in rule.peers)
    mesh = [p for (_, _, name), p in c.policies.items() if name == "mesh"]
    assert len(mesh) == len(c.namespaces)
    m = mesh[0]
    assert m.ingress[0].peers[0].pod_selector == m.pod_selector  # self-referencing


def test_runner_writes_results(tmp_path):
    from benchmarks.__main__ import main

    out = tmp_path / "res"
    rc = main(["--quick", "--only", "S1,S5", "--scales", "S1=0.004,S5=0.06", "--events", "2",
               "--out", str(out), "--quiet", "--no-plots", "--timeout", "60", "--no-switch"])
    assert rc == 0
    md = (out / "results.md").read_text()
    assert "## Targets\n" in md and "S5: flows per node at most 1/30" in md
    data = json.loads((out / "results.json").read_text())
    s5 = data["results"]["S5"]
    assert not s5["errors"] and not s5.get("timed_out")
    node = s5["stages"]["node"]
    assert node["flows"]["rule"] < node["cross_product"]
    assert data["results"]["S1"]["stages"]["events"]["n"] == 2
    assert "switch" not in data["results"]["S1"]["stages"]  # --no-switch: said so, not silently missing
    assert data["meta"]["controller_install"] == {"skipped": "not run (--no-switch)"}
    assert "not run (--no-switch" in md
