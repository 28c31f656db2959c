"""What a pipeline flow of a node bridge is for, in words: the paths through the gateway port
(the node's own traffic, what it forwards, Services and their translated replies), through the
tunnel, to pods and out of the cluster. `sdnctl trace` shows it beside each flow a packet hits;
flows that are a policy's (rules, clauses, default denies) are named by their rule instead."""

from __future__ import annotations

from flows import pipeline as P
from flows.flow import Flow, Load, Output
from flows.ir import Bridge


def _outputs(flow: Flow) -> list[int]:
    return [a.port for a in flow.actions if isinstance(a, Output)]


def _loads(flow: Flow, field: str) -> list[int]:
    return [a.value for a in flow.actions if isinstance(a, Load) and a.dst.field == field]


def role(flow: Flow, bridge: Bridge) -> str:
    """The flow's job on `bridge` ("" for a policy's own flows and the plain pipeline steps)."""
    gw = bridge.gateway if bridge.mode == "host" else None
    fields = {m.field: m for m in flow.match}
    in_port = fields["in_port"].value if "in_port" in fields else None
    pods = {p.ofport: p.pod for p in bridge.pods}
    if flow.table == P.CLASSIFIER:
        if gw is not None and in_port == gw.ofport:
            if P.FROM_NODE in _loads(flow, P.REG_FROM):
                return "gateway: from the node itself (always allowed)"
            if P.FROM_GATEWAY in _loads(flow, P.REG_FROM):
                return "gateway: forwarded by the node (judged like any peer)"
            return "gateway: the node's ARP (proxy answer)"
        if in_port in bridge.uplinks:
            return "from another node (tunnel)" if bridge.mode == "host" else "from the fabric"
        if in_port in pods:
            return f"from pod {pods[in_port]}"
        return ""
    if flow.table == P.CONNTRACK_STATE and gw is not None:
        if "ct_mark" in fields:
            return "reply of a gateway connection: back to the node (kube-proxy untranslates)"
        if P.REG_FROM in fields:
            return "new from the node: not judged"
        if any(f in fields for f in ("nw_dst", "ipv6_dst")) and flow.priority == 165:
            return "to a Service: to the node's kube-proxy unjudged, judged once translated"
    if flow.table == P.CONNTRACK_COMMIT and P.REG_FROM in fields:
        return "commit, marked as a gateway connection (ct_mark=1)"
    if flow.table == P.OUTPUT:
        outs = _outputs(flow)
        if gw is not None and gw.ofport in outs:
            if P.REG_TO_GATEWAY in fields:
                return "to the gateway: a reply the node must untranslate"
            return "to the gateway: the node, or outside the cluster (masqueraded by the node)"
        if gw is not None and in_port == gw.ofport and not outs:
            return "never back out of the gateway"
        for port in outs:
            if port in pods:
                return f"to pod {pods[port]}"
            route = next((r for r in bridge.routes if r.ofport == port), None)
            if route is not None:
                return f"to node {route.via} (tunnel)" if route.tunnel_dst else f"to {route.via}"
    return ""
