"""The compiled tables on a real ovs-vswitchd: `sdnctl compile` output loads with
`ovs-ofctl add-flows`, dumps back to the same flows, and OVS's own ofproto/trace gives the
semantic evaluator's verdict, SCTP included (the kernel here has no SCTP sockets, so this is
where SCTP is checked against OVS)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from click.testing import CliRunner

from flows.flow import diff, parse_flows
from sdn.cli import main
from sdn.compile import compile_cluster
from sdn.layout import GATEWAY_MAC, TUNNEL_OFPORT, pod_mac
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_documents
from tests.conftest import OvsFactory
from tests.e2e_cases import ALL_CASES, expected_matrix, replay

# A sample across features: isolation, selectors, named ports, egress, ipBlock, SCTP, UDP.
SAMPLE = ["default-deny-ingress-sctp", "sctp-only-policy-isolates", "named-port-ingress",
          "named-port-egress", "ipblock-except", "udp-only-rule-blocks-tcp", "pod-and-namespace",
          "endport-sctp", "beta-absent-versus-empty-lists", "alpha-isolation"]
CASES = {c.name: c for c in ALL_CASES}
NODES = {"node-1": 1, "node-2": 2}


@pytest.fixture(scope="module")
def ovs_factory_module(tmp_path_factory):
    factory = OvsFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def switch(ovs_factory_module):
    ovs = ovs_factory_module(bridges=NODES)
    for node in NODES:
        ovs.vsctl("add-port", node, f"tun{NODES[node]}", "--", "set", "interface", f"tun{NODES[node]}",
                  "type=vxlan", "options:remote_ip=flow", f"ofport_request={TUNNEL_OFPORT}")
    return ovs


def _plug(ovs, compiled):
    """Internal ports at the ofports the offline layout assigned."""
    for node in NODES:
        have = set(ovs.vsctl("list-ports", node).split())
        for _key, ofport in compiled.layout.ofports[node].items():
            name = f"p{NODES[node]}x{ofport}"
            if name not in have:
                ovs.add_internal_port(node, name, ofport_request=ofport)


def _trace_connection(ovs, compiled, src, dst, port, proto):
    layout = compiled.layout
    sn, dn = layout.node_of(src), layout.node_of(dst)
    l4 = proto.lower()
    flow = (f"{l4},in_port={layout.ofports[sn][src.key]},dl_src={pod_mac(src)},dl_dst={GATEWAY_MAC},"
            f"nw_src={src.ip},nw_dst={dst.ip},{l4}_src=40000,{l4}_dst={port}")
    first = ovs.trace(sn, flow, ct_next="trk,new")
    if sn == dn:
        return first.openflow_outputs == [layout.ofports[dn][dst.key]]
    if first.openflow_outputs != [TUNNEL_OFPORT]:
        return False
    flow2 = (f"{l4},in_port={TUNNEL_OFPORT},dl_src={pod_mac(src)},dl_dst={GATEWAY_MAC},"
             f"nw_src={src.ip},nw_dst={dst.ip},{l4}_src=40000,{l4}_dst={port}")
    second = ovs.trace(dn, flow2, ct_next="trk,new")
    return second.openflow_outputs == [layout.ofports[dn][dst.key]]


@pytest.mark.parametrize("name", SAMPLE)
def test_ofproto_trace_agrees_with_evaluator(switch, name, tmp_path):
    case = CASES[name]
    runner = CliRunner()
    for index, step, docs in replay(case):
        cluster, _ = load_documents(docs)
        compiled = compile_cluster(cluster)
        _plug(switch, compiled)
        for node in NODES:
            manifest = tmp_path / f"step{index}-{node}.yaml"
            manifest.write_text(yaml.safe_dump_all(docs))
            out = runner.invoke(main, ["compile", "-f", str(manifest), "--node", node])
            assert out.exit_code == 0, out.output
            switch.replace_flows(node, out.output)  # comments and all, as a user would
            installed = parse_flows(switch.dump_flows(node))
            assert diff(installed, compiled.programs[node].flows).empty
        pods = sorted(cluster.pods.values(), key=lambda p: p.key)
        cells = [(s, d, pr) for pr in step.probes for s in pods for d in pods if s is not d]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda c, compiled=compiled: _trace_connection(switch, compiled, c[0], c[1], c[2].port, c[2].protocol), cells))
        wrong = []
        for (s, d, pr), ovs_verdict in zip(cells, got):
            judged = evaluate(cluster, s, d, pr.port, pr.protocol).allowed
            want = expected_matrix(pr, pods)[(s.key, d.key)]
            if not ovs_verdict == judged == want:
                wrong.append(f"step {index} {s.key}->{d.key} {pr.port}/{pr.protocol}: ovs={ovs_verdict} "
                             f"evaluator={judged} expected={want}")
        assert not wrong, "\n".join(wrong[:20])
