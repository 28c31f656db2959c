"""`sdnctl trace --live`: the same question as `sdnctl trace` (may a new connection from pod
A reach pod B on port P?), answered by OVS's `ofproto/trace` on the real bridges, with the
policy rule named behind every flow the packet hit.

The packet starts at the source pod's real port (ofport and MAC from OVSDB). If the bridge
sends it to the tunnel, the trace continues on the bridge of the node the tunnel destination
names, entering by that bridge's tunnel port; bridges joined by patch ports (a fabric switch
in the same ovs-vswitchd) are followed by OVS itself. The connection is delivered when the
destination pod's port on its bridge is output to. Conntrack state after each recirculation
is OVS's default for a trace, trk|new: a new connection.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows import pipeline as P
from flows.compiler import Program
from sdn.layout import FABRIC, FABRIC_UPLINK_OFPORT, GATEWAY_MAC
from sdn.ovs.instance import OvsInstance
from sdn.ovs.trace import TraceResult, split_actions
from sdn.policy.evaluate import evaluate
from sdn.policy.model import Cluster, Pod, parse_port

MAX_HOPS = 4


@dataclass
class NodePlace:
    """What the trace needs of one node's bridge."""

    node: str
    bridge: str
    program: Program
    ovs_rundir: str
    address: str  # the node's tunnel address
    ports: dict[str, tuple[int, str]]  # pod -> (ofport, mac)
    tunnel_ofport: int | None


class LiveTraceError(RuntimeError):
    pass


def _traced_pod(cluster: Cluster, key: str) -> Pod:
    pod = cluster.pods.get(key)
    if pod is None:
        raise LiveTraceError(f"pod {key} is not in the controller's manifests")
    if not pod.ips:
        raise LiveTraceError(f"pod {key} has no IP")
    return pod


def _packet(proto: str, in_port: int, mac: str, src_ip: str, dst_ip: str, port: int) -> str:
    l4 = proto.lower()
    v6 = ipaddress.ip_address(src_ip).version == 6
    base = f"{l4}6" if v6 else l4
    addr = "ipv6" if v6 else "nw"
    return (f"{base},in_port={in_port},dl_src={mac},dl_dst={GATEWAY_MAC},{addr}_src={src_ip},"
            f"{addr}_dst={dst_ip},{l4}_src=40000,{l4}_dst={port}")


def annotate(program: Program, table: int, cookie: int, match: str, names: dict[str, str]) -> dict:
    """Which rule, default deny or pipeline part a traced flow belongs to."""
    kind = P.cookie_kind(cookie)
    out: dict = {}
    if kind == P.KIND_RULE:
        m = re.search(r"conj_id=(\d+)", match)
        info = program.by_conj().get(int(m.group(1))) if m else None
        info = info or program.by_cookie().get(cookie)
        if info is not None:
            out.update(rule=str(info.id), policy=info.id.policy, conj_id=info.conj_id)
    elif kind == P.KIND_DEFAULT:
        iso = dict(program.defaults).get(cookie)
        if iso is not None:
            out["default_deny"] = {"pod": names.get(iso.address, iso.address), "direction": iso.direction,
                                   "policies": list(iso.policies)}
    elif kind == P.KIND_PIPELINE:
        out["pipeline"] = True
    elif cookie:
        out["foreign"] = True
    return out


def _tun_dst(result: TraceResult) -> str | None:
    for s in result.steps:
        for act in split_actions(s.actions):
            m = re.match(r"(?:set_field|load):([0-9.]+|0x[0-9a-f]+)->(?:tun_dst|NXM_NX_TUN_IPV4_DST\[\])", act)
            if m:
                v = m.group(1)
                return str(ipaddress.IPv4Address(int(v, 16))) if v.startswith("0x") else v
    return None


def _outputs(actions: str, in_port: int) -> list[int]:
    """The ports a flow's actions output to (IN_PORT: back where the packet came from, as the
    fabric switch does for two pods of one node)."""
    return [in_port if a == "IN_PORT" else int(a[7:]) for a in split_actions(actions)
            if a == "IN_PORT" or (a.startswith("output:") and a[7:].isdigit())]


def _fabric_hop(place: NodePlace, outputs: list[int], places: dict[str, NodePlace],
                fabric_ports: dict[str, int]) -> tuple[NodePlace, int] | None:
    """Where a packet goes next over a fabric link of its own (a veth between two ovs-vswitchd,
    as in the lab; a patch port in one ovs-vswitchd is followed by OVS itself): from a node
    bridge's uplink into the fabric switch by that node's port, from the fabric switch by a
    node's port into that node's bridge by its uplink. None when it does not leave that way."""
    fabric = places.get(FABRIC)
    if fabric is None or len(outputs) != 1:
        return None
    if place.node == FABRIC:
        node = next((n for n, p in fabric_ports.items() if p == outputs[0]), None)
        nxt = places.get(node) if node else None
        return None if nxt is None or nxt.ovs_rundir == place.ovs_rundir else (nxt, FABRIC_UPLINK_OFPORT)
    if outputs == [FABRIC_UPLINK_OFPORT] and place.node in fabric_ports and fabric.ovs_rundir != place.ovs_rundir:
        return fabric, fabric_ports[place.node]
    return None


def trace_connection(cluster: Cluster, places: dict[str, NodePlace], names: dict[str, str],
                     src_key: str, dst_key: str, port_text: str) -> dict:
    """Run the connection through the live bridges; a JSON-able account like `sdnctl trace`.
    The packet follows tunnels to the destination's node and fabric links through the fabric
    switch, as the offline trace does."""
    from sdn.layout import build_layout
    fabric_ports = build_layout(cluster).fabric_ports() if FABRIC in places else {}
    src, dst = _traced_pod(cluster, src_key), _traced_pod(cluster, dst_key)
    try:
        port, proto = parse_port(port_text, dst)
    except ValueError as e:
        raise LiveTraceError(f"port {port_text}: {e}") from None
    src_node = next((n for n, p in places.items() if src.key in p.ports), None)
    if src_node is None:
        raise LiveTraceError(f"pod {src.key} is not plugged into any controlled bridge")
    family = ipaddress.ip_address(src.ips[0]).version
    dst_ip = next((ip for ip in dst.ips if ipaddress.ip_address(ip).version == family), None)
    if dst_ip is None:
        raise LiveTraceError(f"{dst.key} has no IPv{family} address")
    by_address = {p.address: n for n, p in places.items()}
    # Bridges reachable by patch ports share one ovs-vswitchd (one run directory); bridges of
    # different nodes may have the same name (every lab node has br-sdn).
    by_bridge = {(p.ovs_rundir, p.bridge): p for p in places.values()}
    dst_place = next((p for p in places.values() if dst.key in p.ports), None)
    place = places[src_node]
    in_port, mac = place.ports[src.key]
    hops, decided_by = [], []
    delivered = False
    for _ in range(MAX_HOPS + 2):
        ovs = OvsInstance(Path(place.ovs_rundir), netns=None, create_netns=False)
        result = ovs.trace(place.bridge, _packet(proto, in_port, mac, src.ips[0], dst_ip, port))
        steps: list[dict[str, Any]] = []
        for s in result.steps:
            owner = by_bridge.get((place.ovs_rundir, s.bridge), place)  # a patch port continues into another bridge
            entry: dict[str, Any] = {"table": s.table, "name": P.BY_ID[s.table].name if s.table in P.BY_ID else "",
                     "bridge": s.bridge or place.bridge, "node": owner.node,
                     "priority": s.priority, "cookie": f"{s.cookie:#x}", "match": s.match, "actions": s.actions,
                     "miss": s.miss}
            entry.update(annotate(owner.program, s.table, s.cookie, s.match, names))
            if "rule" in entry:
                decided_by.append(f"allowed by {entry['rule']} on {owner.node}")
            if "default_deny" in entry:
                d = entry["default_deny"]
                decided_by.append(f"dropped by the {d['direction']} default deny of {d['pod']} "
                                  f"(isolated by {', '.join(d['policies'])}) on {owner.node}")
            steps.append(entry)
        outputs = result.openflow_outputs
        hops.append({"node": place.node, "bridge": place.bridge, "outputs": outputs, "steps": steps,
                     "datapath_actions": result.all_datapath_actions})
        if dst_place is not None and any(
                e["node"] == dst_place.node and f"output:{dst_place.ports[dst.key][0]}" in split_actions(e["actions"])
                for e in steps):
            delivered = True
            break
        here = [o for e in steps if e["node"] == place.node for o in _outputs(e["actions"], in_port)]
        hop = _fabric_hop(place, here, places, fabric_ports)
        if hop is not None:
            place, in_port = hop
            continue
        if place.tunnel_ofport is None or here != [place.tunnel_ofport]:
            break
        nxt = by_address.get(_tun_dst(result) or "")
        tunnel = None if nxt is None else places[nxt].tunnel_ofport
        if nxt is None or tunnel is None:
            break
        place, in_port = places[nxt], tunnel
    verdict = evaluate(cluster, src, dst, port, proto)
    fmt = lambda refs: [f"{r.policy} {r.direction.lower()}[{r.index}]" for r in refs]  # noqa: E731
    return {
        "from": src.key, "to": dst.key, "port": port, "protocol": proto, "live": True,
        "verdict": "allowed" if delivered else "denied",
        "evaluator": "allowed" if verdict.allowed else "denied",
        "agree": delivered == verdict.allowed,
        "decided_by": decided_by,
        "egress": {"isolated": verdict.egress.isolated, "allowed_by": fmt(verdict.egress.allowed_by)},
        "ingress": {"isolated": verdict.ingress.isolated, "allowed_by": fmt(verdict.ingress.allowed_by)},
        "hops": hops,
    }
