"""The incremental path, checked against the from-scratch one: every upstream e2e case is
replayed as a stream of object changes through `sdn.engine.Engine`. After each step
- the incrementally kept rules and isolations equal `cluster_rules` of the same cluster;
- the flow differences the engine returned, applied to the tables it had, give exactly the
  tables it has now (what a switch would hold);
- those tables, simulated across the bridges, give the evaluator's verdict for every pair."""

from __future__ import annotations

import pytest

from flows.flow import Flow
from sdn.compile import Compiled
from sdn.engine import Engine
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_documents, object_key, parse_object
from sdn.policy.rules import cluster_rules
from sdn.verify import ClusterSimulator
from tests.e2e_cases import ALL_CASES, base_cluster, replay
from tests.switch_support import apply_flow_diff


def objects(docs):
    out = {}
    for d in docs:
        obj = parse_object(d, "<test>")
        if obj is not None:
            out[object_key(obj)] = obj
    return out


def installed(engine: Engine) -> dict[str, dict[tuple, Flow]]:
    return {n: {f.key: f for f in p.flows} for n, p in engine.programs().items()}


@pytest.mark.parametrize("enforce", ["host", "fabric"])
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_incremental_engine_matches_fresh_compile(case, enforce):
    cluster, _ = load_documents(base_cluster())
    engine = Engine(cluster, enforce=enforce)
    switch = installed(engine)
    before = objects(base_cluster())
    for index, step, docs in replay(case):
        now = objects(docs)
        upserts = [o for k, o in now.items() if before.get(k) != o]
        deletes = [o for k, o in before.items() if k not in now]
        diffs = engine.apply(upserts, deletes)
        before = now
        for node, d in diffs.items():
            apply_flow_diff(switch.setdefault(node, {}), d, node)
        assert switch == installed(engine), f"step {index}: applying the diffs does not give the tables"

        fresh, _ = load_documents(docs)
        rules, isolation = cluster_rules(fresh)
        assert sorted(engine.ruleset.all_rules(), key=lambda r: r.id) == sorted(rules, key=lambda r: r.id)
        assert engine.ruleset.all_isolation() == isolation

        compiled = Compiled(engine.cluster, engine.layout, rules, isolation, engine.programs(), enforce)
        sim = ClusterSimulator(compiled)
        pods = sorted(engine.cluster.pods.values(), key=lambda p: p.key)
        wrong = []
        for probe in step.probes:
            for src in pods:
                for dst in pods:
                    if src is dst:
                        continue
                    want = evaluate(engine.cluster, src, dst, probe.port, probe.protocol).allowed
                    got = sim.connect(src, dst, probe.port, probe.protocol).delivered
                    if got != want:
                        wrong.append(f"step {index} {src.key}->{dst.key} {probe.port}/{probe.protocol}: flows={got} evaluator={want}")
        assert not wrong, "\n".join(wrong[:20])


def test_a_label_change_touches_only_the_policies_it_can_affect():
    cluster, _ = load_documents(base_cluster() + [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "p", "namespace": "x"},
         "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "q", "namespace": "z"},
         "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}},
    ])
    engine = Engine(cluster)
    pod = cluster.pods["y/b"]
    relabelled = type(pod)(pod.namespace, pod.name, (("pod", "zz"),), pod.node, pod.ips, pod.ports)
    engine.apply([relabelled])
    assert engine.last_delta.policies == set()  # no policy of y, none selects namespaces
    pod = engine.cluster.pods["x/c"]
    engine.apply([type(pod)(pod.namespace, pod.name, (("pod", "b"),), pod.node, pod.ips, pod.ports)])
    assert engine.last_delta.policies == {"x/p"}


def test_peer_sets_follow_pods_that_flip_labels_and_reuse_addresses():
    """A selector spanning every namespace keeps one address set that pods join and leave by
    their labels; an address held by two pods at once (one leaving, one arriving in the same
    batch, or both present) stays in the set while either still matches."""
    from sdn.policy.model import (
        Cluster,
        LabelSelector,
        Namespace,
        Node,
        Peer,
        Pod,
        Policy,
        PolicyRule,
    )

    def mesh(on: bool) -> tuple:
        return (("mesh", "on" if on else "off"),)

    on = LabelSelector(mesh(True))
    cluster = Cluster(nodes={"n1": Node("n1", (), ("10.1.0.0/24",), ("192.168.0.1",))})
    for ns in ("a", "b"):
        cluster.namespaces[ns] = Namespace(ns)
        cluster.policies[("v1", ns, "mesh")] = Policy(ns, "mesh", on, ingress=(PolicyRule(
            peers=(Peer(pod_selector=on, namespace_selector=LabelSelector()),)),))
    pods = [Pod(ns, f"p{i}", mesh(i % 2 == 0), "n1", (f"10.1.0.{10 + 5 * j + i}",))
            for j, ns in enumerate(("a", "b")) for i in range(4)]
    for p in pods:
        cluster.pods[p.key] = p
    engine = Engine(cluster)

    def check(step: str) -> None:
        rules, isolation = cluster_rules(engine.cluster)
        assert sorted(engine.ruleset.all_rules(), key=lambda r: r.id) == sorted(rules, key=lambda r: r.id), step
        assert engine.ruleset.all_isolation() == isolation, step

    a0, b1 = cluster.pods["a/p0"], cluster.pods["b/p1"]
    engine.apply([Pod("b", "p1", mesh(True), "n1", b1.ips)])
    check("b/p1 joins")
    engine.apply([Pod("a", "p0", mesh(False), "n1", a0.ips)])
    check("a/p0 leaves")
    # a/p1 (not matching) takes over b/p1's address while b/p1 still holds it and matches
    engine.apply([Pod("a", "p1", mesh(False), "n1", b1.ips)])
    check("a/p1 holds b/p1's address")
    engine.apply([], [engine.cluster.pods["a/p1"]])
    check("a/p1 gone, b/p1 keeps the address in the set")
    # one batch: a new matching pod arrives with the address of a matching pod that leaves
    engine.apply([Pod("a", "p9", mesh(True), "n1", b1.ips)], [engine.cluster.pods["b/p1"]])
    check("address handed over in one batch")
    engine.apply([Pod("a", "p9", mesh(True), "n1", ("10.1.0.99",))])
    check("address changed")
    engine.apply([Namespace("b", (("team", "x"),))])
    check("namespace relabelled")
    engine.apply([Pod("b", "p2", mesh(False), "n1", engine.cluster.pods["b/p2"].ips)])
    check("b/p2 leaves after the namespace change")
