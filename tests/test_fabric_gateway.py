"""Fabric mode's gateway ports (flows/fabric_gateway.py), through the simulator: two fabric-node
bridges and the fabric switch, packets carried between them as the links would. The node
reaches its own pods, isolated or not; another node is judged like any address; pods reach the
world beyond their node through it, judged on the fabric; a Service connection is judged once
translated, and its replies go back to the node that translated it."""

from __future__ import annotations

from flows import pipeline as P
from flows.compiler import compile_bridge
from flows.fields import parse_mac
from flows.ir import Bridge, Gateway, Isolation, NodeGateway, PodPort, Route, Rule, RuleId
from flows.simulate import Conntrack, Packet, Simulator

MAC = "0a:58:a9:fe:00:01"
UPLINK, GW_PORT = 2, 3
LINKS = {"node-1": 100, "node-2": 101}
A = PodPort("x/a", 10, "0a:58:0a:f4:01:02", ("10.244.1.2",))
C = PodPort("y/c", 10, "0a:58:0a:f4:02:02", ("10.244.2.2",))
GWS = {"node-1": Gateway(GW_PORT, "0a:58:a9:fe:00:02", ("10.244.1.1", "192.168.50.11")),
       "node-2": Gateway(GW_PORT, "0a:58:a9:fe:00:02", ("10.244.2.1", "192.168.50.12"))}
NODES = {n: Bridge("br-sdn", (pod,), (Route("0.0.0.0/0", UPLINK, None, "fabric"),), (UPLINK,), MAC,
                   "fabric-node", GWS[n]) for n, pod in (("node-1", A), ("node-2", C))}
FABRIC = Bridge("fabric", (), (Route("10.244.1.0/24", 100, None, "node-1"), Route("10.244.2.0/24", 101, None, "node-2")),
                (100, 101), MAC, "fabric",
                node_gateways=(NodeGateway(100, "node-1", GWS["node-1"].addresses, ("10.244.1.0/24",), ("10.96.0.0/16",)),
                               NodeGateway(101, "node-2", GWS["node-2"].addresses, ("10.244.2.0/24",), ("10.96.0.0/16",))))
DENY_A = [Isolation("ingress", "10.244.1.2", ("x/deny",))]


class Cluster:
    """The three bridges, one conntrack (the fabric's: node bridges track nothing)."""

    def __init__(self, rules=(), isolation=()):
        self.nodes = {n: Simulator(compile_bridge(b, [], []).flows) for n, b in NODES.items()}
        self.fabric = Simulator(compile_bridge(FABRIC, list(rules), list(isolation)).flows)
        self.ct = Conntrack()

    def send(self, node: str, packet: Packet) -> tuple[str, int] | None:
        """A packet entering `node`'s bridge -> where it leaves the cluster: (node, ofport) of a
        pod or gateway port, or None (dropped)."""
        out = self.nodes[node].run(packet)
        if out.outputs != [UPLINK]:
            return (node, out.outputs[0]) if out.outputs else None
        up = out.packet.copy()
        up.fields = {k: v for k, v in up.fields.items() if not k.startswith(("reg", "ct_"))}
        up.fields["in_port"] = LINKS[node]
        fab = self.fabric.run(up, self.ct)
        if not fab.outputs:
            return None
        down_node = next(n for n, link in LINKS.items() if link == fab.outputs[0])
        down = fab.packet.copy()
        down.fields = {k: v for k, v in down.fields.items() if not k.startswith(("reg", "ct_", "conj"))}
        down.fields["in_port"] = UPLINK
        last = self.nodes[down_node].run(down)
        return (down_node, last.outputs[0]) if last.outputs else None


def tcp(src: str, dst: str, port: int = 80, in_port: int = GW_PORT, sport: int = 40000, mac: str = "00:00:00:00:00:00"):
    return Packet.l4("tcp", in_port=in_port, src_ip=src, dst_ip=dst, dst_port=port, src_port=sport, src_mac=mac,
                     dst_mac=MAC)


def test_every_flow_fits_its_table():
    for b in (*NODES.values(), FABRIC):
        for f in compile_bridge(b, [], DENY_A if b is FABRIC else []).flows:
            P.check_flow(f)


def test_the_node_reaches_its_own_isolated_pod_and_the_reply_goes_back_to_it():
    c = Cluster(isolation=DENY_A)
    assert c.send("node-1", tcp("10.244.1.1", "10.244.1.2")) == ("node-1", A.ofport)
    assert c.send("node-1", tcp("10.244.1.2", "10.244.1.1", sport=80, port=40000, in_port=A.ofport,
                                mac=A.mac)) == ("node-1", GW_PORT)
    assert c.send("node-1", tcp("192.168.50.11", "10.244.1.2", sport=40001)) == ("node-1", A.ofport)


def test_another_node_is_judged_like_any_address():
    assert Cluster(isolation=DENY_A).send("node-2", tcp("10.244.2.1", "10.244.1.2")) is None
    allow = Rule(RuleId("x/deny", "ingress", 0), frozenset({"10.244.1.2"}), ("10.244.2.1/32",))
    assert Cluster([allow], DENY_A).send("node-2", tcp("10.244.2.1", "10.244.1.2")) == ("node-1", A.ofport)


def test_pods_reach_the_world_through_their_own_node_judged_on_the_fabric():
    c = Cluster()
    out = tcp("10.244.1.2", "203.0.113.5", in_port=A.ofport, mac=A.mac)
    assert c.send("node-1", out) == ("node-1", GW_PORT)
    back = tcp("203.0.113.5", "10.244.1.2", port=40000, sport=80)  # un-masqueraded by the node
    assert c.send("node-1", back) == ("node-1", A.ofport)
    isolated = Cluster(isolation=[Isolation("egress", "10.244.1.2", ("x/deny",))])
    assert isolated.send("node-1", out) is None


def test_pods_reach_their_node_whose_address_is_in_their_pod_cidr():
    c = Cluster()
    assert c.send("node-1", tcp("10.244.1.2", "10.244.1.1", port=10250, in_port=A.ofport, mac=A.mac)) \
        == ("node-1", GW_PORT)
    assert c.send("node-1", tcp("10.244.1.1", "10.244.1.2", port=40000, sport=10250)) == ("node-1", A.ofport)
    assert c.send("node-2", tcp("10.244.2.2", "10.244.1.1", port=10250, in_port=C.ofport, mac=C.mac)) \
        == ("node-1", GW_PORT)  # another node's gateway address: that node


def test_nothing_loops_back_into_the_stack_that_sent_it():
    assert Cluster().send("node-1", tcp("198.51.100.7", "10.244.1.77")) is None


def test_a_service_connection_is_judged_once_translated_and_replies_go_to_the_translating_node():
    """y/c (node-2) -> ClusterIP 10.96.0.10:80, translated by node-2's kube-proxy to x/a:8080
    (node-1), which admits only 10.244.2.0/24."""
    allow = Rule(RuleId("x/deny", "ingress", 0), frozenset({"10.244.1.2"}), ("10.244.2.0/24",))
    c = Cluster([allow], DENY_A)
    assert c.send("node-2", tcp("10.244.2.2", "10.96.0.10", in_port=C.ofport, mac=C.mac, sport=41000)) \
        == ("node-2", GW_PORT)  # to kube-proxy, unjudged
    assert c.send("node-2", tcp("10.244.2.2", "10.244.1.2", port=8080, sport=41000)) == ("node-1", A.ofport)
    assert c.send("node-1", tcp("10.244.1.2", "10.244.2.2", port=41000, sport=8080, in_port=A.ofport, mac=A.mac)) \
        == ("node-2", GW_PORT)  # back to node-2, which untranslates it
    assert c.send("node-2", tcp("10.96.0.10", "10.244.2.2", port=41000, sport=80)) == ("node-2", C.ofport)
    denied = Cluster([], DENY_A)
    denied.send("node-2", tcp("10.244.2.2", "10.96.0.10", in_port=C.ofport, mac=C.mac, sport=41000))
    assert denied.send("node-2", tcp("10.244.2.2", "10.244.1.2", port=8080, sport=41000)) is None


def test_without_gateways_the_fabric_program_is_unchanged():
    plain = Bridge("fabric", (), FABRIC.routes, FABRIC.uplinks, MAC, "fabric")
    flows = {str(f) for f in compile_bridge(plain, [], DENY_A).flows}
    marked = {str(f) for f in compile_bridge(FABRIC, [], DENY_A).flows}
    assert flows < marked
    assert not any(P.MAC_FROM_GATEWAY in f or P.MAC_TO_GATEWAY in f for f in flows)
    assert parse_mac(P.MAC_TO_GATEWAY) != parse_mac(P.MAC_FROM_GATEWAY)
