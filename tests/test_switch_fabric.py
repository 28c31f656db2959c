"""`sdnctl controller --enforce fabric`: node bridges only guard and deliver, the bridge of node
`fabric` judges every rule. On one ovs-vswitchd (node bridges patched to the fabric switch,
ports found by their OVSDB roles) the controller installs exactly what `sdnctl compile
--enforce fabric` compiles, and ofproto/trace through the three bridges gives the evaluator's
verdict for every pod pair."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from flows.flow import parse_flow, parse_flows
from sdn.compile import compile_cluster
from sdn.layout import FABRIC, FABRIC_UPLINK_OFPORT, FIRST_FABRIC_OFPORT
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_documents
from tests.conftest import OvsFactory
from tests.e2e_cases import (
    ALL_CASES,
    CASES_BY_NAME,
    NODES,
    expected_matrix,
    node_of,
    pod_ip,
    pod_keys,
    replay,
)
from tests.switch_support import Controller, plug_internal, write_manifests

pytestmark = pytest.mark.ovs

SAMPLE = ["default-deny-ingress-sctp", "named-port-ingress", "ipblock-except", "pod-and-namespace",
          "beta-default-deny-with-v1-policy"]
if os.environ.get("SDN_FABRIC_ALL"):  # the whole suite, in order, on one controller
    SAMPLE = [c.name for c in ALL_CASES]


def _patch(ovs, bridge: str, port: str, peer: str, ofport: int, **ids: str) -> None:
    args = ["add-port", bridge, port, "--", "set", "interface", port, "type=patch", f"options:peer={peer}",
            f"ofport_request={ofport}"] + [f"external_ids:{k.replace('_', '-')}={v}" for k, v in ids.items()]
    ovs.vsctl(*args)


@pytest.fixture(scope="module")
def fabric_lab(tmp_path_factory):
    factory = OvsFactory(tmp_path_factory)
    ctl = None
    try:
        ovs = factory()
        ovs.add_bridge(FABRIC, dpid=0xFAB)
        for i, node in enumerate(sorted(NODES)):
            ovs.add_bridge(node, dpid=0x5D2000 + i)
            _patch(ovs, node, f"up{i}", f"n{i}", FABRIC_UPLINK_OFPORT, sdn_role="fabric-uplink")
            _patch(ovs, FABRIC, f"n{i}", f"up{i}", FIRST_FABRIC_OFPORT + i, sdn_role="fabric-link", sdn_node=node)
        for key in pod_keys():
            plug_internal(ovs, node_of(key), "p" + key.replace("/", ""), key, pod_ip(key))
        manifests = tmp_path_factory.mktemp("manifests")
        write_manifests(manifests, next(iter(replay(CASES_BY_NAME[SAMPLE[0]])))[2])
        nodes = {f"{n}/{n}": ovs.db_remote for n in [*NODES, FABRIC]}
        ctl = Controller(manifests, nodes, extra=["--enforce", "fabric"])
        ctl.start()
        ctl.wait_in_sync()
        yield ovs, ctl, manifests
    finally:
        if ctl is not None:
            ctl.close()
        factory.close()


def _ofports(ovs, node: str) -> dict[str, int]:
    return {k: int(ovs.vsctl("get", "interface", "p" + k.replace("/", ""), "ofport").strip())
            for k in pod_keys() if node_of(k) == node}


@pytest.mark.parametrize("name", SAMPLE)
def test_fabric_tables_and_verdicts(fabric_lab, name):
    ovs, ctl, manifests = fabric_lab
    for index, step, docs in replay(CASES_BY_NAME[name]):
        write_manifests(manifests, docs)
        ctl.reload_and_wait()
        cluster, _ = load_documents(docs)
        compiled = compile_cluster(cluster, port_maps={n: _ofports(ovs, n) for n in NODES}, enforce="fabric")
        for bridge in [*NODES, FABRIC]:
            installed = set(parse_flows(ovs.dump_flows(bridge)))
            program = {parse_flow(f) for f in ctl.ask("program", node=bridge)["program"]["flows"]}
            assert installed == program, bridge
            if index == 0 and name == SAMPLE[0]:  # no earlier program to keep priorities from
                assert installed == set(compiled.programs[bridge].flows), bridge
        for node in NODES:  # the rule tables are on the fabric switch only
            assert not {f.table for f in parse_flows(ovs.dump_flows(node))} & {20, 30, 40, 50}
        pods = sorted(cluster.pods.values(), key=lambda p: p.key)
        cells = [(s, d, pr) for pr in step.probes for s in pods for d in pods if s is not d]
        with ThreadPoolExecutor(6) as pool:
            out = list(pool.map(lambda c: ctl.ask("trace", **{"from": c[0].key, "to": c[1].key,
                                                             "port": f"{c[2].port}/{c[2].protocol}"}), cells))
        wrong = []
        for (s, d, pr), doc in zip(cells, out):
            live = doc["verdict"] == "allowed"
            judged = evaluate(cluster, s, d, pr.port, pr.protocol).allowed
            want = expected_matrix(pr, pods)[(s.key, d.key)]
            if not live == judged == want:
                wrong.append(f"{name} step {index} {s.key}->{d.key} {pr.port}/{pr.protocol}: ovs={live} "
                             f"evaluator={judged} expected={want}")
            if live:
                assert FABRIC in {e["node"] for e in doc["hops"][0]["steps"]}, "judged on the fabric switch"
        assert not wrong, "\n".join(wrong[:20])
