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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flows import pipeline as P
from flows.compiler import Program
from flows.flow import Load
from flows.ir import Bridge, Gateway, PodPort
from flows.roles import role
from sdn.layout import FABRIC, FABRIC_UPLINK_OFPORT, GATEWAY_MAC, GATEWAY_PORT_MAC
from sdn.ovs.instance import OvsInstance
from sdn.ovs.trace import TraceResult, split_actions
from sdn.policy.evaluate import evaluate, evaluate_address
from sdn.policy.model import EGRESS, INGRESS, Cluster, Pod, parse_port
from sdn.switch.desired import Desired
from sdn.switch.ovsdb import BridgeView

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


def _endpoint(cluster: Cluster, ref: str) -> tuple[Pod | None, str | None]:
    """A pod by NS/NAME or one of its addresses, else an address that is no pod's."""
    try:
        addr = ipaddress.ip_address(ref)
    except ValueError:
        pod = cluster.pods.get(ref)
        if pod is None:
            raise LiveTraceError(f"pod {ref} is not in the controller's manifests") from None
        if not pod.ips:
            raise LiveTraceError(f"pod {ref} has no IP") from None
        return pod, None
    pod = next((p for p in cluster.pods.values() if any(ipaddress.ip_address(i) == addr for i in p.ips)), None)
    return (pod, None) if pod is not None else (None, str(addr))


def _gateway(program: Program) -> tuple[int | None, tuple[str, ...]]:
    """The bridge's gateway ofport and the node's own addresses, from its classifier flows."""
    ofport, own = None, []
    for f in program.flows:
        if f.table != P.CLASSIFIER:
            continue
        loads = [a.value for a in f.actions if isinstance(a, Load) and a.dst.field == P.REG_FROM]
        if P.FROM_NODE in loads or P.FROM_GATEWAY in loads:
            in_port = f.get("in_port")
            ofport = None if in_port is None else in_port.value
            src = f.get("nw_src")
            if src is not None and P.FROM_NODE in loads:
                own.append(str(ipaddress.IPv4Address(src.value)))
    return ofport, tuple(own)


def _role(place: NodePlace, table: int, priority: int | None, cookie: int, match: str) -> str:
    """The role of the program's flow a trace step hit (flows/roles.py), where the bridge has a
    gateway port."""
    gw_port, own = _gateway(place.program)
    if gw_port is None or P.cookie_kind(cookie) != P.KIND_PIPELINE:
        return ""
    same = [f for f in place.program.flows if f.table == table and f.priority == priority]
    exact = [f for f in same if f.render(cookie=False).split(",", 2)[-1].partition(" actions=")[0] == match]
    flow = (exact or same)[0] if len(exact) == 1 or len(same) == 1 else None
    if flow is None:
        return ""
    pods = tuple(PodPort(k, ofport, mac, ()) for k, (ofport, mac) in sorted(place.ports.items()))
    uplinks = (place.tunnel_ofport,) if place.tunnel_ofport is not None else ()
    bridge = Bridge(place.bridge, pods, (), uplinks, GATEWAY_MAC, "host", Gateway(gw_port, GATEWAY_PORT_MAC, own))
    return role(flow, bridge)


def trace_connection(cluster: Cluster, places: dict[str, NodePlace], names: dict[str, str],
                     src_key: str, dst_key: str, port_text: str) -> dict:
    """Run the connection through the live bridges; a JSON-able account like `sdnctl trace`.
    The packet follows tunnels to the destination's node and fabric links through the fabric
    switch, as the offline trace does. Either end may be an address that is no pod's (a node,
    a host outside the cluster): from one, the packet enters the pod's node by its gateway port
    (another node's address: by its tunnel port); to one, it is delivered when the rule tables
    commit it (where it goes then: the outputs)."""
    from sdn.layout import build_layout
    fabric_ports = build_layout(cluster).fabric_ports() if FABRIC in places else {}
    src, src_addr = _endpoint(cluster, src_key)
    dst, dst_addr = _endpoint(cluster, dst_key)
    if src is None and dst is None:
        raise LiveTraceError("--from and --to are both addresses of no pod: NetworkPolicy judges only traffic of pods")
    try:
        port, proto = parse_port(port_text, dst)
    except ValueError as e:
        raise LiveTraceError(f"port {port_text}: {e}") from None
    dst_place = next((p for p in places.values() if dst is not None and dst.key in p.ports), None)
    notes = []
    if src is not None:
        src_node = next((n for n, p in places.items() if src.key in p.ports), None)
        if src_node is None:
            raise LiveTraceError(f"pod {src.key} is not plugged into any controlled bridge")
        place = places[src_node]
        in_port, mac = place.ports[src.key]
        src_ip = src.ips[0]
    elif dst is not None:
        if dst_place is None:
            raise LiveTraceError(f"pod {dst.key} is not plugged into any controlled bridge")
        place, src_ip = dst_place, str(src_addr)
        gw_port, _ = _gateway(place.program)
        other_nodes = {p.address for p in places.values() if p is not place}
        if gw_port is not None and src_ip not in other_nodes:
            in_port, mac = gw_port, GATEWAY_PORT_MAC
            notes.append(f"{src_ip} enters {place.node}'s bridge by its gateway port")
        else:
            in_port, mac = place.tunnel_ofport or 0, GATEWAY_MAC
            notes.append(f"{src_ip} enters {place.node}'s bridge by its tunnel port")
    family = ipaddress.ip_address(src_ip).version
    if dst is not None:
        dst_ip = next((ip for ip in dst.ips if ipaddress.ip_address(ip).version == family), None)
        if dst_ip is None:
            raise LiveTraceError(f"{dst.key} has no IPv{family} address")
    else:
        dst_ip = str(dst_addr)
        if ipaddress.ip_address(dst_ip).version != family:
            raise LiveTraceError(f"{src_ip} and {dst_ip} are of different IP families")
    by_address = {p.address: n for n, p in places.items()}
    # Bridges reachable by patch ports share one ovs-vswitchd (one run directory); bridges of
    # different nodes may have the same name (every lab node has br-sdn).
    by_bridge = {(p.ovs_rundir, p.bridge): p for p in places.values()}
    hops, decided_by = [], []
    delivered = False
    for _ in range(MAX_HOPS + 2):
        ovs = OvsInstance(Path(place.ovs_rundir), netns=None, create_netns=False)
        result = ovs.trace(place.bridge, _packet(proto, in_port, mac, src_ip, dst_ip, port))
        steps: list[dict[str, Any]] = []
        for s in result.steps:
            owner = by_bridge.get((place.ovs_rundir, s.bridge), place)  # a patch port continues into another bridge
            entry: dict[str, Any] = {"table": s.table, "name": P.BY_ID[s.table].name if s.table in P.BY_ID else "",
                     "bridge": s.bridge or place.bridge, "node": owner.node,
                     "priority": s.priority, "cookie": f"{s.cookie:#x}", "match": s.match, "actions": s.actions,
                     "miss": s.miss}
            entry.update(annotate(owner.program, s.table, s.cookie, s.match, names))
            what = _role(owner, s.table, s.priority, s.cookie, s.match) if owner.node != FABRIC else ""
            if what:
                entry["role"] = what
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
        if dst_place is not None and dst is not None and any(
                e["node"] == dst_place.node and f"output:{dst_place.ports[dst.key][0]}" in split_actions(e["actions"])
                for e in steps):
            delivered = True
            break
        if dst is None and any(e["table"] == P.CONNTRACK_COMMIT and e["priority"] and not e["miss"] for e in steps):
            delivered = True  # the rule tables let it out; outputs say where it went
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
    if src is not None and dst is not None:
        verdict = evaluate(cluster, src, dst, port, proto)
    elif src is not None:
        verdict = evaluate_address(cluster, src, dst_ip, EGRESS, port, proto)
    elif dst is not None:
        verdict = evaluate_address(cluster, dst, src_ip, INGRESS, port, proto)
        if dst_place is not None and src_ip in _gateway(dst_place.program)[1]:
            verdict = replace(verdict, allowed=True)
            notes.append(f"{src_ip} is {dst.key}'s own node: always allowed (Kubernetes)")
    fmt = lambda refs: [f"{r.policy} {r.direction.lower()}[{r.index}]" for r in refs]  # noqa: E731
    return {
        "from": src.key if src is not None else src_ip, "to": dst.key if dst is not None else dst_ip,
        "port": port, "protocol": proto, "live": True,
        "verdict": "allowed" if delivered else "denied",
        "evaluator": "allowed" if verdict.allowed else "denied",
        "agree": delivered == verdict.allowed,
        "decided_by": decided_by, "notes": notes,
        "egress": {"isolated": verdict.egress.isolated, "allowed_by": fmt(verdict.egress.allowed_by)},
        "ingress": {"isolated": verdict.ingress.isolated, "allowed_by": fmt(verdict.ingress.allowed_by)},
        "hops": hops,
    }


def node_place(desired: Desired | None, node: str, view: BridgeView | None,
               ovs_rundir: str | None) -> NodePlace | None:
    """What a live trace needs of a node's bridge, or None while it has no program, no OVS
    run directory or no OVSDB view."""
    if desired is None or node not in desired.bridges or view is None or ovs_rundir is None:
        return None
    bridge = desired.bridges[node]
    return NodePlace(node, bridge.name, desired.programs[node], ovs_rundir, desired.addresses.get(node, ""),
                     {p.pod: (p.ofport, p.mac) for p in bridge.pods}, view.tunnel_ofport)


def trace_compiled(desired: Desired | None, places: dict[str, NodePlace], src: str, dst: str, port: str) -> dict:
    """A new connection src -> dst:port through the live bridges of a compile."""
    if desired is None or desired.cluster is None:
        raise KeyError("nothing compiled yet")
    names = {ip: p.key for p in desired.cluster.pods.values() for ip in p.ips}
    return trace_connection(desired.cluster, places, names, src, dst, port)
