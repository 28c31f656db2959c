"""`sdnctl trace --live` on bridges the controller programmed: OVS's own ofproto/trace, from the
source pod's real port through the tunnel to the destination's node, gives the semantic
evaluator's verdict (and the hand-written upstream expectation) for every pod pair and probe
of a sample of the e2e suite, and names the rule that decided."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_documents
from tests.conftest import OvsFactory
from tests.e2e_cases import CASES_BY_NAME, NODES, expected_matrix, node_of, pod_ip, pod_keys, replay
from tests.switch_support import Controller, add_tunnel, plug_internal, write_manifests

pytestmark = pytest.mark.ovs

SAMPLE = ["default-deny-ingress-sctp", "named-port-ingress", "named-port-egress", "ipblock-except",
          "pod-and-namespace", "endport-sctp", "alpha-isolation"]


@pytest.fixture(scope="module")
def cluster_lab(tmp_path_factory):
    """Both nodes of the e2e model as two bridges of one ovs-vswitchd, each with its pods and a
    tunnel port; one controller programs both."""
    factory = OvsFactory(tmp_path_factory)
    ctl = None
    try:
        ovs = factory()
        for i, node in enumerate(NODES, 1):
            ovs.add_bridge(node, dpid=0x5D1000 + i)
            add_tunnel(ovs, node, f"tun{i}", 1, dst_port=4788 + i)
        for key in pod_keys():
            plug_internal(ovs, node_of(key), "p" + key.replace("/", ""), key, pod_ip(key))
        manifests = tmp_path_factory.mktemp("manifests")
        first = next(iter(replay(CASES_BY_NAME[SAMPLE[0]])))[2]
        write_manifests(manifests, first)
        ctl = Controller(manifests, {f"{node}/{node}": ovs.db_remote for node in NODES})
        ctl.start()
        ctl.wait_in_sync()
        yield ctl, manifests
    finally:
        if ctl is not None:
            ctl.close()
        factory.close()


@pytest.mark.parametrize("name", SAMPLE)
def test_live_trace_agrees_with_the_evaluator(cluster_lab, name):
    ctl, manifests = cluster_lab
    for index, step, docs in replay(CASES_BY_NAME[name]):
        write_manifests(manifests, docs)
        ctl.reload_and_wait()
        cluster, _ = load_documents(docs)
        pods = sorted(cluster.pods.values(), key=lambda p: p.key)
        cells = [(s, d, pr) for pr in step.probes for s in pods for d in pods if s is not d]

        def trace(cell):
            s, d, pr = cell
            return ctl.ask("trace", **{"from": s.key, "to": d.key, "port": f"{pr.port}/{pr.protocol}"})

        with ThreadPoolExecutor(6) as pool:
            docs_out = list(pool.map(trace, cells))
        wrong = []
        for (s, d, pr), doc in zip(cells, docs_out):
            live = doc["verdict"] == "allowed"
            judged = evaluate(cluster, s, d, pr.port, pr.protocol).allowed
            want = expected_matrix(pr, pods)[(s.key, d.key)]
            if not live == judged == want:
                wrong.append(f"{name} step {index} {s.key}->{d.key} {pr.port}/{pr.protocol}: ovs={live} "
                             f"evaluator={judged} expected={want}")
            if live and node_of(s.key) != node_of(d.key):
                assert [h["node"] for h in doc["hops"]] == [node_of(s.key), node_of(d.key)]
            if live and judged and (s.key, d.key) and doc["decided_by"]:
                assert all(line.startswith("allowed by") for line in doc["decided_by"]), doc["decided_by"]
        assert not wrong, "\n".join(wrong[:20])
