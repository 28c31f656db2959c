"""Existing connections after a policy change (flows/recheck.py), through the simulator with
one conntrack kept across the change: a connection the new tables deny is cut in both
directions; one they still allow passes and is committed again; unjudged ones (the node's own)
stay; `keep` keeps today's behaviour. Real traffic: tests/test_lab_conntrack.py."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import pipeline as P
from flows.compiler import BridgeCompiler, compile_bridge
from flows.ir import Bridge, Gateway, Isolation, PodPort, PortRange, Rule, RuleId
from flows.recheck import LABEL_GENERATION, default_token, generation, rule_token
from flows.simulate import Conntrack, Packet, Simulator
from sdn.compile import compile_cluster
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_documents
from sdn.verify import ClusterSimulator
from tests.strategies import changed, clusters, probe_pool

GW = Gateway(2, "0a:58:a9:fe:00:02", ("10.244.1.1",))
A = PodPort("x/a", 10, "0a:58:0a:f4:01:02", ("10.244.1.2", "fd00::2"))
B = PodPort("x/b", 11, "0a:58:0a:f4:01:03", ("10.244.1.3", "fd00::3"))
BRIDGE = Bridge("br-sdn", (A, B), (), (1,), "0a:58:a9:fe:00:01", "host", GW)
ISOLATED = [Isolation("ingress", "10.244.1.3", ("x/web",)), Isolation("ingress", "fd00::3", ("x/web",))]


def web(index: int = 0, port: int = 80, name: str = "x/web") -> Rule:
    return Rule(RuleId(name, "ingress", index), frozenset({"10.244.1.3", "fd00::3"}),
                ("10.244.1.2/32", "fd00::2/128"), tuple(PortRange(p, port) for p in ("tcp", "udp", "sctp")))


def pkt(proto: str, src: PodPort, dst: PodPort, port: int, v6: bool = False, sport: int = 40000) -> Packet:
    i = 1 if v6 else 0
    return Packet.l4(proto, in_port=src.ofport, src_mac=src.mac, src_ip=src.ips[i], dst_ip=dst.ips[i],
                     dst_port=port, src_port=sport)


def reply_of(p: Packet, sender: PodPort) -> Packet:
    r = p.reply()
    r.fields.update(in_port=sender.ofport, dl_src=int(sender.mac.replace(":", ""), 16))
    return r


class Node:
    """One bridge whose tables change under a conntrack that stays."""

    def __init__(self, rules, bridge: Bridge = BRIDGE):
        self.compiler = BridgeCompiler(bridge)
        self.compiler.update(upsert=rules, isolate=ISOLATED, diff=False)
        self.ct = Conntrack()

    def change(self, **kw) -> None:
        self.compiler.update(**kw)

    def send(self, p: Packet):
        return Simulator(self.compiler.program().flows).run(p, self.ct)


@pytest.mark.parametrize("proto", ["tcp", "udp", "sctp"])
@pytest.mark.parametrize("v6", [False, True])
def test_a_connection_the_change_denies_is_cut_both_ways(proto, v6):
    node = Node([web()])
    opening = pkt(proto, A, B, 80, v6)
    assert node.send(opening).outputs == [11]
    assert node.send(reply_of(opening, B)).outputs == [10]
    node.change(delete=[web().id])
    assert node.send(opening).dropped  # the client's next packet
    assert node.send(reply_of(opening, B)).dropped  # the server's next packet
    assert node.send(opening).dropped  # and it stays cut


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_reply_first_after_the_change_is_judged_as_its_connection(proto):
    node = Node([web()])
    opening = pkt(proto, A, B, 80)
    node.send(opening)
    node.change(upsert=[web(1, 81)])  # an added rule: the generation changes, 80 still allowed
    answer = node.send(reply_of(opening, B))
    assert answer.outputs == [10] and answer.committed
    assert answer.hit(P.INGRESS_RULE).flow.priority > 0  # judged on its opening direction
    gen = node.compiler.generation()
    assert (node.ct.label(opening, P.CT_ZONE) >> LABEL_GENERATION.start) & 0xFFFFFFFF == gen
    fresh = node.send(opening)
    assert fresh.outputs == [11] and fresh.hit(P.INGRESS_RULE) is None  # current: no judging


def test_a_connection_still_allowed_by_another_rule_survives():
    node = Node([web(), web(name="x/also")])
    opening = pkt("tcp", A, B, 80)
    node.send(opening)
    node.change(delete=[web().id])  # the rule its label names is gone, the other one allows
    assert node.send(reply_of(opening, B)).outputs == [10]
    assert node.send(opening).outputs == [11]


def test_the_same_tables_keep_the_generation():
    node = Node([web()])
    before = node.compiler.generation()
    diff = node.compiler.update(upsert=[web()])
    assert node.compiler.generation() == before and len(diff) == 0
    other = Node([web()])
    assert other.compiler.generation() == before  # a restarted controller: the same value


def test_a_port_narrowed_in_the_same_rule_cuts_the_old_port():
    node = Node([web()])
    opening = pkt("udp", A, B, 80)
    node.send(opening)
    node.change(upsert=[web(0, 81)])  # same rule id and conj id, another port
    assert node.send(opening).dropped


def test_the_nodes_own_connections_are_never_judged_again():
    node = Node([web()])
    from_node = Packet.l4("tcp", in_port=2, src_ip="10.244.1.1", dst_ip="10.244.1.3", dst_port=10250)
    assert node.send(from_node).outputs == [11]
    node.change(delete=[web().id])
    assert node.send(from_node).outputs == [11]
    assert node.send(reply_of(from_node, B)).outputs == [2]


def test_keep_lets_established_connections_skip_the_rule_tables():
    node = Node([web()], dataclasses.replace(BRIDGE, existing_connections="keep"))
    opening = pkt("tcp", A, B, 80)
    node.send(opening)
    node.change(delete=[web().id])
    assert node.send(opening).outputs == [11]
    assert node.send(reply_of(opening, B)).outputs == [10]
    assert node.send(pkt("tcp", A, B, 80, sport=40001)).dropped  # new ones are judged
    assert not any(f.table == P.CONNTRACK_RECHECK for f in node.compiler.program().flows)


def test_every_flow_fits_its_table():
    for mode in ("enforce", "keep"):
        for f in compile_bridge(dataclasses.replace(BRIDGE, existing_connections=mode), [web()], ISOLATED).flows:
            P.check_flow(f)


def test_the_recheck_flows_survive_text_and_wire():
    from flows.flow import parse_flow
    from flows.wire import decode_instructions, decode_match, encode_instructions, encode_match
    for f in compile_bridge(BRIDGE, [web()], ISOLATED).flows:
        if f.table not in (P.CONNTRACK_RECHECK, P.CONNTRACK_COMMIT):
            continue
        assert parse_flow(f.render()) == f
        assert decode_match(encode_match(f.match))[0] == f.match
        assert decode_instructions(encode_instructions(f.actions)) == f.actions


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          print_blob=True)
@given(g=clusters(), data=st.data())
def test_after_any_change_an_established_connection_meets_the_new_verdict(g, data):
    """Generated clusters and one change (a policy replaced, added or removed, a rule's ports or
    peers, a relabelled pod or namespace), compiled with the hints a live controller keeps:
    every connection the old tables allowed, kept in the bridges' conntrack, is delivered after
    the change exactly when the evaluator allows it under the new objects, whichever direction
    speaks first; and a cut connection stays cut."""
    what, g2 = data.draw(changed(g), label="change")
    (a, _), (b, _) = load_documents(g.documents()), load_documents(g2.documents())
    before = compile_cluster(a)
    after = compile_cluster(b, previous=before.programs)
    old, new = ClusterSimulator(before), ClusterSimulator(after)
    probes = data.draw(st.lists(st.sampled_from(probe_pool(g.documents() + g2.documents())), min_size=1,
                                max_size=3, unique=True), label="probes")
    pods = [p for p in sorted(a.pods.values(), key=lambda p: p.key) if p.ips]
    problems = []
    for port, proto in probes:
        for src in pods:
            for dst in pods:
                tracks: dict = {}
                if src is dst or not old.connect(src, dst, port, proto, tracks=tracks).delivered:
                    continue
                want = evaluate(b, b.pods[src.key], b.pods[dst.key], port, proto).allowed
                answer_first = copy.deepcopy(tracks)
                path = new.connect(src, dst, port, proto, tracks=tracks)
                if path.delivered != want or (want and not path.reply_delivered):
                    problems.append(f"{src.key} -> {dst.key} {port}/{proto}: opening side delivered "
                                    f"{path.delivered}, reply {path.reply_delivered}, evaluator {want}")
                answered, _ = new.answer(src, dst, port, proto, answer_first)
                if answered != want:
                    problems.append(f"{src.key} -> {dst.key} {port}/{proto}: the reply first delivered "
                                    f"{answered}, evaluator {want}")
                if not want and new.connect(src, dst, port, proto, tracks=answer_first).delivered:
                    problems.append(f"{src.key} -> {dst.key} {port}/{proto}: cut, then through again")
    assert not problems, f"after '{what}':\n" + "\n".join(problems[:15])


def _generation_of(program) -> int:
    """The generation recomputed from what a program holds (its placed rules and defaults)."""
    tokens = 0
    for r in program.rules:
        if r.same_as is None:
            tokens ^= rule_token(f"{r.id.direction}|{r.priority}|{r.conj_id}|{r.digest}")
    for _, iso in program.defaults:
        tokens ^= default_token((iso.direction, iso.address))
    return generation(tokens)


def test_the_generation_follows_every_change_incrementally():
    node = Node([web()])
    steps = [{"upsert": [web(1, 81)]}, {"upsert": [web(0, 82)]}, {"upsert": [web(name="x/same")]},
             {"delete": [web().id]}, {"unisolate": [("ingress", "fd00::3")]},
             {"isolate": [Isolation("egress", "10.244.1.2", ("x/out",))]}, {"delete": [web(1, 81).id]}]
    seen = {node.compiler.generation()}
    for step in steps:
        node.change(**step)
        assert node.compiler.generation() == _generation_of(node.compiler.program()), step
        seen.add(node.compiler.generation())
    assert len(seen) == len(steps) + 1  # each step changed what the judging tables hold


def test_a_bad_existing_connections_setting_is_refused_everywhere(tmp_path):
    from click.testing import CliRunner

    from sdn.cli import main
    from sdn.k8s.settings import SettingsError, parse_settings
    from sdn.lab.lab import Lab, LabError
    from sdn.lab.state import State
    from sdn.switch.desired import LiveCompiler

    assert parse_settings({"existingConnections": "keep"}).existing_connections == "keep"
    with pytest.raises(SettingsError, match=r"sdn\.yaml: existingConnections: must be enforce or keep"):
        parse_settings({"existingConnections": "drop"}, "sdn.yaml")
    res = CliRunner().invoke(main, ["controller", "-f", str(tmp_path), "--bridge", "n=unix:/nowhere",
                                    "--existing-connections", "drop"])
    assert res.exit_code == 2 and "--existing-connections" in res.output
    with pytest.raises(LabError, match="--existing-connections must be enforce or keep") as e:
        Lab(State(tmp_path / "lab")).up_docs([], existing_connections="drop")
    assert e.value.exit_code == 2 and not (tmp_path / "lab").exists()
    with pytest.raises(ValueError, match="--existing-connections"):
        LiveCompiler("host", "drop")
