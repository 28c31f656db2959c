"""Fabric mode's way into each node's own stack (docs/pipeline.md "The gateway port in fabric
mode"). A fabric-node bridge only guards and delivers; the fabric switch judges, so what the
node's gateway port gives its bridge goes up to the fabric (marked by its destination MAC),
and the fabric sends down what is for the node's stack: replies of the connections that came
from there (so kube-proxy can undo its translation), and every address that is no pod's.

Only these flows know the marks; the rule tables stay the same."""

from __future__ import annotations

from flows import pipeline as P
from flows.addrset import parse_cidr
from flows.fields import ETH_ARP, ETH_IP, ETH_IPV6, FieldRef, parse_mac, parse_value
from flows.flow import CT, Flow, GotoTable, InPort, Load, Match, Move, Output
from flows.ir import Bridge
from flows.matches import address_match

_LOW16 = 0xFFFF


def _both(*matches: tuple[Match, ...]) -> list[Match]:
    return list(dict.fromkeys(m for ms in matches for m in ms))


def _st(text: str) -> Match:
    return Match("ct_state", *parse_value("ct_state", text))


def fabric_node_flows(bridge: Bridge, uplink: int) -> list[Flow]:
    """A fabric-node bridge with a gateway port: the port's packets up the uplink (ARP answered
    here), what the fabric marks for the node's stack out of the port."""
    gwp = bridge.gateway
    if gwp is None:
        return []
    out: list[Flow] = []

    def add(table: int, prio: int, match: list, actions: list) -> None:
        out.append(Flow(table, prio, tuple(match), tuple(actions), P.cookie(P.KIND_PIPELINE, table)))

    gw = parse_mac(bridge.gateway_mac)
    add(P.CLASSIFIER, 210, [Match("in_port", uplink), Match("dl_dst", parse_mac(P.MAC_TO_GATEWAY))],
        [Load(1, FieldRef(P.REG_TO_GATEWAY)), GotoTable(P.OUTPUT)])
    add(P.CLASSIFIER, 205, [Match("in_port", gwp.ofport), Match("dl_type", ETH_ARP)], [GotoTable(P.ARP_RESPONDER)])
    add(P.CLASSIFIER, 200, [Match("in_port", gwp.ofport)],
        [Load(P.FROM_GATEWAY, FieldRef(P.REG_FROM)), GotoTable(P.OUTPUT)])
    for dl in (ETH_IP, ETH_IPV6):
        add(P.OUTPUT, 300, [Match(P.REG_FROM, P.FROM_GATEWAY), Match("dl_type", dl)],
            [Load(parse_mac(P.MAC_FROM_GATEWAY), FieldRef("dl_dst")), Output(uplink)])
        add(P.OUTPUT, 250, [Match(P.REG_TO_GATEWAY, 1), Match("dl_type", dl)],
            [Load(gw, FieldRef("dl_src")), Load(parse_mac(gwp.mac), FieldRef("dl_dst")), Output(gwp.ofport)])
    # the node's own addresses (in its pod CIDR, which the fabric routes here): the node
    for addr in gwp.addresses:
        add(P.OUTPUT, 240, list(address_match(addr, "dst")),
            [Load(gw, FieldRef("dl_src")), Load(parse_mac(gwp.mac), FieldRef("dl_dst")), Output(gwp.ofport)])
    return out


def fabric_flows(bridge: Bridge) -> list[Flow]:
    """The fabric switch's side, for every node behind a link that has a gateway port."""
    if not bridge.node_gateways:
        return []
    out: list[Flow] = []

    def add(table: int, prio: int, match: list, actions: tuple | list = ()) -> None:
        out.append(Flow(table, prio, tuple(match), tuple(actions), P.cookie(P.KIND_PIPELINE, table)))

    from_gw = Match("dl_dst", parse_mac(P.MAC_FROM_GATEWAY))
    to_gw = Load(parse_mac(P.MAC_TO_GATEWAY), FieldRef("dl_dst"))
    services: list[str] = []
    for ng in bridge.node_gateways:
        # the node to its own pods: always allowed (as on a host-mode bridge)
        for addr in ng.addresses:
            for cidr in ng.pod_cidrs:
                if parse_cidr(addr)[0] != parse_cidr(cidr)[0]:
                    continue
                add(P.CLASSIFIER, 210, [Match("in_port", ng.link), from_gw,
                                        *_both(address_match(addr, "src"), address_match(cidr, "dst"))],
                    [Load(P.FROM_NODE, FieldRef(P.REG_FROM)), GotoTable(P.CONNTRACK)])
        # anything else the node's stack sends (what it forwards, what kube-proxy translated):
        # judged like any peer
        add(P.CLASSIFIER, 205, [Match("in_port", ng.link), from_gw],
            [Load(P.FROM_GATEWAY, FieldRef(P.REG_FROM)), GotoTable(P.CONNTRACK)])
        # replies of its connections back down its link; whatever is no pod's goes to the stack
        # of the node it came from, but never back to the stack that sent it
        add(P.OUTPUT, 251, [Match("in_port", ng.link), Match(P.REG_TO_GATEWAY, ng.link)], [to_gw, InPort()])
        add(P.OUTPUT, 250, [Match(P.REG_TO_GATEWAY, ng.link)], [to_gw, Output(ng.link)])
        for dl in (ETH_IP, ETH_IPV6):
            add(P.OUTPUT, 1, [Match("in_port", ng.link), Match("dl_type", dl)], [to_gw, InPort()])
        services += [c for c in ng.service_cidrs if c not in services]
    for came in (P.FROM_NODE, P.FROM_GATEWAY):
        add(P.OUTPUT, 2, [Match(P.REG_FROM, came)])
    add(P.CONNTRACK_STATE, 195, [_st("+est+rpl+trk"), Match("ct_mark", P.CT_MARK_GATEWAY, _LOW16)],
        [Move(FieldRef("ct_mark", 16, 31), FieldRef(P.REG_TO_GATEWAY, 0, 15)), GotoTable(P.OUTPUT)])
    add(P.CONNTRACK_STATE, 170, [_st("+new+trk"), Match(P.REG_FROM, P.FROM_NODE)], [GotoTable(P.CONNTRACK_COMMIT)])
    for cidr in services:
        add(P.CONNTRACK_STATE, 165, [_st("+new+trk"), *address_match(cidr, "dst")], [GotoTable(P.CONNTRACK_COMMIT)])
    label = [Move(FieldRef(P.REG_EGRESS_CONJ), FieldRef("ct_label", 0, 31)),
             Move(FieldRef(P.REG_INGRESS_CONJ), FieldRef("ct_label", 32, 63))]
    mark = [Move(FieldRef("in_port", 0, 15), FieldRef("ct_mark", 16, 31)),
            Load(P.CT_MARK_GATEWAY, FieldRef("ct_mark", 0, 15))]
    for dl in (ETH_IP, ETH_IPV6):
        for came in (P.FROM_NODE, P.FROM_GATEWAY):
            add(P.CONNTRACK_COMMIT, 210, [_st("+new+trk"), Match("dl_type", dl), Match(P.REG_FROM, came)],
                [CT(zone=P.CT_ZONE, commit=True, exec=(*label, *mark)), GotoTable(P.OUTPUT)])
    return out
