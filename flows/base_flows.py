"""The fixed part of a bridge's tables: classifier, spoof guard, ARP responder, connection
tracking, table-miss flows, commit and output. Only these flows know ofports."""

from __future__ import annotations

import ipaddress

from flows import pipeline as P
from flows.addrset import parse_cidr
from flows.fabric_gateway import fabric_flows, fabric_node_flows
from flows.fields import ETH_ARP, ETH_IP, ETH_IPV6, FieldRef, parse_mac, parse_value
from flows.flow import CT, Flow, GotoTable, InPort, Load, Match, Move, Output
from flows.ir import Bridge
from flows.matches import address_match


def _reg(name: str, start: int = 0, end: int | None = None) -> FieldRef:
    return FieldRef(name, start, end)


def pipeline_flows(bridge: Bridge, enforce: bool) -> list[Flow]:
    ck = lambda table: P.cookie(P.KIND_PIPELINE, table)  # noqa: E731
    gw = parse_mac(bridge.gateway_mac)
    after_guard = P.CONNTRACK if enforce else P.OUTPUT
    out: list[Flow] = []
    add = lambda t, prio, match, actions=(): out.append(Flow(t, prio, tuple(match), tuple(actions), ck(t)))  # noqa: E731

    for pod in bridge.pods:
        add(P.CLASSIFIER, 200, [Match("in_port", pod.ofport)],
            [Load(1, _reg(P.REG_FROM)), GotoTable(P.SPOOFGUARD)])
        mac = parse_mac(pod.mac)
        for ip in pod.ips:
            family, first, _ = parse_cidr(ip)
            if family == 4:
                add(P.SPOOFGUARD, 200, [Match("in_port", pod.ofport), Match("dl_src", mac),
                                        *address_match(ip, "src")], [GotoTable(after_guard)])
                add(P.SPOOFGUARD, 200, [Match("in_port", pod.ofport), Match("dl_src", mac),
                                        Match("dl_type", ETH_ARP),
                                        Match("arp_spa", first),
                                        Match("arp_sha", mac)], [GotoTable(P.ARP_RESPONDER)])
            else:
                add(P.SPOOFGUARD, 200, [Match("in_port", pod.ofport), Match("dl_src", mac),
                                        *address_match(ip, "src")], [GotoTable(after_guard)])
    for port in bridge.uplinks:
        add(P.CLASSIFIER, 200, [Match("in_port", port)], [GotoTable(after_guard)])
    gwp = bridge.gateway if bridge.mode == "host" else None
    if gwp is not None:
        # The node's own stack: its addresses are the node (always allowed, below); anything
        # else it forwards (an outside client it routes) is judged like any peer. Its ARP
        # requests for pod addresses get the proxy answer.
        for ip in gwp.addresses:
            add(P.CLASSIFIER, 210, [Match("in_port", gwp.ofport), *address_match(ip, "src")],
                [Load(P.FROM_NODE, _reg(P.REG_FROM)), GotoTable(after_guard)])
        add(P.CLASSIFIER, 205, [Match("in_port", gwp.ofport), Match("dl_type", ETH_ARP)],
            [GotoTable(P.ARP_RESPONDER)])
        add(P.CLASSIFIER, 200, [Match("in_port", gwp.ofport)],
            [Load(P.FROM_GATEWAY, _reg(P.REG_FROM)), GotoTable(after_guard)])
    add(P.CLASSIFIER, 0, [])
    add(P.SPOOFGUARD, 0, [])

    # Proxy ARP: answer every request with the gateway MAC (swap addresses via reg4).
    ref = FieldRef
    add(P.ARP_RESPONDER, 200, [Match("dl_type", ETH_ARP), Match("arp_op", 1)], [
        Move(ref("dl_src"), ref("dl_dst")), Load(gw, ref("dl_src")),
        Load(2, ref("arp_op")), Move(ref("arp_sha"), ref("arp_tha")), Load(gw, ref("arp_sha")),
        Move(ref("arp_tpa"), _reg(P.REG_SCRATCH)), Move(ref("arp_spa"), ref("arp_tpa")),
        Move(_reg(P.REG_SCRATCH), ref("arp_spa")), InPort()])
    add(P.ARP_RESPONDER, 0, [])

    if enforce:
        for dl in (ETH_IP, ETH_IPV6):
            add(P.CONNTRACK, 200, [Match("dl_type", dl)], [CT(zone=P.CT_ZONE, table=P.CONNTRACK_STATE)])
        add(P.CONNTRACK, 0, [])
        st = lambda text: Match("ct_state", *_ct(text))  # noqa: E731
        add(P.CONNTRACK_STATE, 200, [st("+inv+trk")])
        add(P.CONNTRACK_STATE, 190, [st("+est+trk")], [GotoTable(P.OUTPUT)])
        add(P.CONNTRACK_STATE, 180, [st("+rel+trk")], [GotoTable(P.OUTPUT)])
        if gwp is not None:
            # Replies of connections that came in through the gateway (what the node's service
            # proxy translated, what it forwards) go back to it, so it can undo its translation.
            add(P.CONNTRACK_STATE, 195, [st("+est+rpl+trk"), Match("ct_mark", P.CT_MARK_GATEWAY)],
                [Load(1, _reg(P.REG_TO_GATEWAY)), GotoTable(P.OUTPUT)])
            add(P.CONNTRACK_STATE, 170, [st("+new+trk"), Match(P.REG_FROM, P.FROM_NODE)],
                [GotoTable(P.CONNTRACK_COMMIT)])
            for cidr in gwp.service_cidrs:
                add(P.CONNTRACK_STATE, 165, [st("+new+trk"), *address_match(cidr, "dst")],
                    [GotoTable(P.CONNTRACK_COMMIT)])
        add(P.CONNTRACK_STATE, 0, [], [GotoTable(P.EGRESS_RULE)])
        add(P.EGRESS_RULE, 0, [], [GotoTable(P.EGRESS_DEFAULT)])
        add(P.EGRESS_DEFAULT, 0, [], [GotoTable(P.INGRESS_RULE)])
        add(P.INGRESS_RULE, 0, [], [GotoTable(P.INGRESS_DEFAULT)])
        add(P.INGRESS_DEFAULT, 0, [], [GotoTable(P.CONNTRACK_COMMIT)])
        label = [Move(_reg(P.REG_EGRESS_CONJ), FieldRef("ct_label", 0, 31)),
                 Move(_reg(P.REG_INGRESS_CONJ), FieldRef("ct_label", 32, 63))]
        for dl in (ETH_IP, ETH_IPV6):
            add(P.CONNTRACK_COMMIT, 200, [st("+new+trk"), Match("dl_type", dl)],
                [CT(zone=P.CT_ZONE, commit=True, exec=tuple(label)), GotoTable(P.OUTPUT)])
            if gwp is not None:
                for came in (P.FROM_NODE, P.FROM_GATEWAY):
                    add(P.CONNTRACK_COMMIT, 210, [st("+new+trk"), Match("dl_type", dl), Match(P.REG_FROM, came)],
                        [CT(zone=P.CT_ZONE, commit=True,
                            exec=(*label, Load(P.CT_MARK_GATEWAY, FieldRef("ct_mark")))), GotoTable(P.OUTPUT)])
        add(P.CONNTRACK_COMMIT, 0, [], [GotoTable(P.OUTPUT)])
        if bridge.mode == "fabric":
            out += fabric_flows(bridge)

    routes = bridge.routes
    if bridge.mode == "fabric-node" and routes:
        # Every pod packet goes to the fabric; what comes back is only delivered locally
        # (never routed back, which could loop).
        up = routes[0].ofport
        for dl in (ETH_IP, ETH_IPV6):
            add(P.OUTPUT, 300, [Match(P.REG_FROM, 1), Match("dl_type", dl)], [Output(up)])
        out += fabric_node_flows(bridge, up)
        routes = ()
    for pod in bridge.pods:
        for ip in pod.ips:
            add(P.OUTPUT, 200, address_match(ip, "dst"),
                [Load(gw, FieldRef("dl_src")), Load(parse_mac(pod.mac), FieldRef("dl_dst")),
                 Output(pod.ofport)])
    for route in routes:
        acts = []
        if route.tunnel_dst:
            acts.append(Load(int(ipaddress.ip_address(route.tunnel_dst)), FieldRef("tun_dst")))
        if route.ofport in bridge.uplinks and not route.tunnel_dst:
            # Hairpin back out of the port a packet came in on needs IN_PORT (OpenFlow drops
            # output to the ingress port).
            add(P.OUTPUT, 110, [Match("in_port", route.ofport), *address_match(route.cidr, "dst")],
                [InPort()])
        add(P.OUTPUT, 100, address_match(route.cidr, "dst"), acts + [Output(route.ofport)])
    if gwp is not None:
        add(P.OUTPUT, 250, [Match(P.REG_TO_GATEWAY, 1), Match("dl_type", ETH_IP)],
            [Load(gw, FieldRef("dl_src")), Load(parse_mac(gwp.mac), FieldRef("dl_dst")), Output(gwp.ofport)])
        # Every other address is the node's business (itself, the world beyond it); never
        # back out of the gateway a packet came in on.
        add(P.OUTPUT, 2, [Match("in_port", gwp.ofport)])
        for dl in (ETH_IP, ETH_IPV6):
            add(P.OUTPUT, 1, [Match("dl_type", dl)],
                [Load(gw, FieldRef("dl_src")), Load(parse_mac(gwp.mac), FieldRef("dl_dst")), Output(gwp.ofport)])
    add(P.OUTPUT, 0, [])
    return out


def _ct(text: str):
    return parse_value("ct_state", text)
