"""The upstream e2e suite, through the compiled flows: for every case, step, probe and ordered
pod pair, in host mode (each node judges its own pods; tunnel between nodes) and in fabric mode
(one fabric switch judges everything with the same rule tables), the flow simulator delivers a new
connection exactly when the semantic evaluator allows it and the hand-written expectation says
so; and every connection that gets through has its reply delivered."""

from __future__ import annotations

import pytest

from sdn.compile import compile_cluster
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_documents
from sdn.verify import ClusterSimulator
from tests.e2e_cases import ALL_CASES, expected_matrix, replay


@pytest.mark.parametrize("enforce", ["host", "fabric"])
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_flows_match_semantics(case, enforce):
    previous = None
    for index, step, docs in replay(case):
        cluster, _ = load_documents(docs)
        compiled = compile_cluster(cluster, previous=previous, enforce=enforce)
        previous = compiled.programs
        sim = ClusterSimulator(compiled)
        pods = sorted(cluster.pods.values(), key=lambda p: p.key)
        problems = []
        for probe in step.probes:
            want = expected_matrix(probe, pods)
            for src in pods:
                for dst in pods:
                    if src is dst:
                        continue  # a pod reaching itself never crosses the bridge
                    judged = evaluate(cluster, src, dst, probe.port, probe.protocol).allowed
                    path = sim.connect(src, dst, probe.port, probe.protocol)
                    if not (path.delivered == judged == want[(src.key, dst.key)]):
                        problems.append(f"step {index} {probe.port}/{probe.protocol} {src.key}->{dst.key}: "
                                        f"flows={path.delivered} evaluator={judged} expected={want[(src.key, dst.key)]}")
                    if path.delivered and not path.reply_delivered:
                        problems.append(f"step {index} {probe.port}/{probe.protocol} {src.key}->{dst.key}: reply dropped")
        assert not problems, "\n".join(problems[:20])
