"""A node bridge's gateway port into the node's own stack (flows/base_flows.py), through the
simulator: the node reaches its pods, isolated or not (Kubernetes: traffic from a pod's own
node is always allowed); anything else the node forwards is judged like any peer; pods reach
the node and every address no route knows; replies pass; nothing goes back out of the
gateway it came in on."""

from __future__ import annotations

from flows import pipeline as P
from flows.compiler import compile_bridge
from flows.ir import Bridge, Gateway, Isolation, PodPort, Route, Rule, RuleId
from flows.simulate import Conntrack, Packet, Simulator

GW = Gateway(2, "0a:58:a9:fe:00:02", ("10.244.1.1", "192.168.50.11"))
A = PodPort("x/a", 10, "0a:58:0a:f4:01:02", ("10.244.1.2",))
B = PodPort("x/b", 11, "0a:58:0a:f4:01:03", ("10.244.1.3",))
BRIDGE = Bridge("br-sdn", (A, B), (Route("10.244.2.0/24", 1, "192.168.50.12", "node-2"),), (1,),
                "0a:58:a9:fe:00:01", "host", GW)
# x/a isolated for ingress, nothing allowed but from 192.0.2.0/24; x/b isolated for egress
ISOLATION = [Isolation("ingress", "10.244.1.2", ("x/deny",)), Isolation("egress", "10.244.1.3", ("x/deny",))]
RULES = [Rule(RuleId("x/deny", "ingress", 0), frozenset({"10.244.1.2"}), ("192.0.2.0/24",))]


def sim() -> Simulator:
    return Simulator(compile_bridge(BRIDGE, RULES, ISOLATION).flows)


def test_every_flow_fits_its_table():
    for f in compile_bridge(BRIDGE, RULES, ISOLATION).flows:
        P.check_flow(f)


def test_the_node_reaches_an_isolated_pod_and_the_reply_goes_back():
    s, ct = sim(), Conntrack()
    out = s.run(Packet.l4("tcp", in_port=2, src_ip="10.244.1.1", dst_ip="10.244.1.2", dst_port=80), ct)
    assert out.outputs == [10] and out.committed
    assert out.hit(P.INGRESS_RULE) is None  # never judged: the node's own traffic
    request = Packet.l4("tcp", in_port=2, src_ip="10.244.1.1", dst_ip="10.244.1.2", dst_port=80)
    answer = request.reply()
    answer.fields.update(in_port=10, dl_src=int(A.mac.replace(":", ""), 16))
    reply = s.run(answer, ct)
    assert reply.outputs == [2]  # towards the node
    by_internal_ip = s.run(Packet.l4("udp", in_port=2, src_ip="192.168.50.11", dst_ip="10.244.1.2", dst_port=53),
                           Conntrack())
    assert by_internal_ip.outputs == [10]


def test_what_the_node_forwards_is_judged_like_any_peer():
    s = sim()
    outside = s.run(Packet.l4("tcp", in_port=2, src_ip="198.51.100.7", dst_ip="10.244.1.2", dst_port=80),
                    Conntrack())
    assert outside.dropped  # x/a admits 192.0.2.0/24 only
    allowed = s.run(Packet.l4("tcp", in_port=2, src_ip="192.0.2.9", dst_ip="10.244.1.2", dst_port=80), Conntrack())
    assert allowed.outputs == [10]


def test_pods_reach_the_node_and_unknown_addresses_through_the_gateway():
    s = sim()
    to_node = s.run(Packet.l4("tcp", in_port=10, src_mac=A.mac, src_ip="10.244.1.2", dst_ip="10.244.1.1", dst_port=10250),
                    Conntrack())
    assert to_node.outputs == [2]
    assert to_node.packet.get("dl_dst") == int("0a58a9fe0002", 16)
    beyond = s.run(Packet.l4("udp", in_port=10, src_mac=A.mac, src_ip="10.244.1.2", dst_ip="203.0.113.5", dst_port=53), Conntrack())
    assert beyond.outputs == [2]
    remote = s.run(Packet.l4("tcp", in_port=10, src_mac=A.mac, src_ip="10.244.1.2", dst_ip="10.244.2.9", dst_port=80), Conntrack())
    assert remote.outputs == [1]  # other nodes' pods: the tunnel, as before
    # an egress-isolated pod reaches no address beyond the node's stack without a rule
    isolated = s.run(Packet.l4("tcp", in_port=11, src_mac=B.mac, src_ip="10.244.1.3", dst_ip="203.0.113.5", dst_port=80),
                     Conntrack())
    assert isolated.dropped


def test_nothing_goes_back_out_of_the_gateway_and_pods_cannot_pose_as_the_node():
    s = sim()
    loop = s.run(Packet.l4("tcp", in_port=2, src_ip="198.51.100.7", dst_ip="203.0.113.5", dst_port=80), Conntrack())
    assert loop.dropped
    spoof = s.run(Packet.l4("tcp", in_port=10, src_mac=A.mac, src_ip="10.244.1.1", dst_ip="10.244.1.3", dst_port=80), Conntrack())
    assert spoof.dropped  # the spoof guard: a pod sends only from its own address


def test_without_a_gateway_nothing_changes():
    plain = Bridge("br-sdn", (A, B), BRIDGE.routes, (1,), "0a:58:a9:fe:00:01", "host")
    flows = compile_bridge(plain, RULES, ISOLATION).flows
    assert not [f for f in flows if "output:2" in str(f) or "reg0=0x2" in str(f)]
    out = Simulator(flows).run(Packet.l4("tcp", in_port=10, src_mac=A.mac, src_ip="10.244.1.2", dst_ip="10.244.1.1",
                                         dst_port=80), Conntrack())
    assert out.dropped


SVC_BRIDGE = Bridge("br-sdn", (A, B), BRIDGE.routes, (1,), "0a:58:a9:fe:00:01", "host",
                    Gateway(2, GW.mac, GW.addresses, ("10.96.0.0/16",)))


def test_a_service_connection_is_judged_once_translated_and_its_replies_are_untranslated():
    """x/b -> ClusterIP 10.96.0.10:80, which the node's kube-proxy translates to x/a:8080: the
    first leg goes to the node unjudged; the translated packet comes back through the gateway
    and meets x/b's egress and x/a's ingress rules (x/a admits 192.0.2.0/24 only: denied);
    with a rule for x/b it passes, and x/a's reply goes back to the node to be untranslated."""
    def run(rules, isolation):
        s, ct = Simulator(compile_bridge(SVC_BRIDGE, rules, isolation).flows), Conntrack()
        first = s.run(Packet.l4("tcp", in_port=11, src_mac=B.mac, src_ip="10.244.1.3", dst_ip="10.96.0.10",
                                dst_port=80, src_port=41000), ct)
        translated = s.run(Packet.l4("tcp", in_port=2, src_ip="10.244.1.3", dst_ip="10.244.1.2", dst_port=8080,
                                     src_port=41000), ct)
        return s, ct, first, translated
    ingress_only = [i for i in ISOLATION if i.direction == "ingress"]
    _, _, first, denied = run(RULES, ingress_only)
    assert first.outputs == [2] and first.hit(P.EGRESS_RULE) is None  # to kube-proxy, not judged
    assert denied.dropped and denied.hit(P.INGRESS_DEFAULT) is not None
    allow_b = Rule(RuleId("x/deny", "ingress", 1), frozenset({"10.244.1.2"}), ("10.244.1.3/32",))
    s, ct, _, allowed = run(RULES + [allow_b], ingress_only)
    assert allowed.outputs == [10] and allowed.committed
    reply = s.run(Packet.l4("tcp", in_port=10, src_mac=A.mac, src_ip="10.244.1.2", dst_ip="10.244.1.3",
                            dst_port=41000, src_port=8080), ct)
    assert reply.outputs == [2]  # back to the node, which untranslates it
    untranslated = s.run(Packet.l4("tcp", in_port=2, src_ip="10.96.0.10", dst_ip="10.244.1.3", dst_port=41000,
                                   src_port=80), ct)
    assert untranslated.outputs == [11]
    # x/b egress-isolated without a rule: its translated connection is refused at the source
    _, _, first, refused = run(RULES + [allow_b], ISOLATION)
    assert first.outputs == [2] and refused.dropped and refused.hit(P.EGRESS_DEFAULT) is not None
