"""Follow a connection between two pods through the compiled bridges of a cluster, with the
flow simulator: from the source pod's port, through the tunnel to the destination's node, to
the destination pod's port; then its reply back. This is what the flows say, to be compared
with what the semantic evaluator says."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from flows import pipeline as P
from flows.simulate import Conntrack, Packet, Result, Simulator
from sdn.compile import Compiled
from sdn.layout import FABRIC, FABRIC_UPLINK_OFPORT, GATEWAY_MAC, TUNNEL_OFPORT, pod_mac
from sdn.policy.model import Pod


@dataclass
class Hop:
    node: str
    result: Result


@dataclass
class Path:
    delivered: bool
    hops: list[Hop]
    reply_delivered: bool | None = None
    reply_hops: list[Hop] = field(default_factory=list)


class ClusterSimulator:
    """Simulators for every bridge of a compiled cluster (node bridges, and the fabric switch in
    fabric mode), with per-bridge connection tracking, joined by the tunnel and fabric links."""

    def __init__(self, compiled: Compiled):
        self.compiled = compiled
        self.sims = {n: Simulator(p.flows) for n, p in compiled.programs.items()}
        self.by_address = {info.address: n for n, info in compiled.layout.nodes.items()}
        self.fabric_ports = compiled.layout.fabric_ports()
        self.node_by_fabric_port = {p: n for n, p in self.fabric_ports.items()}

    def _next(self, bridge: str, result: Result) -> tuple[str, int] | None:
        """Where a packet that left `bridge` arrives: (bridge, in_port), or None."""
        if len(result.outputs) != 1:
            return None
        out = result.outputs[0]
        if bridge == FABRIC:
            node = self.node_by_fabric_port.get(out)
            return None if node is None else (node, FABRIC_UPLINK_OFPORT)
        if self.compiled.enforce == "fabric" and out == FABRIC_UPLINK_OFPORT:
            return FABRIC, self.fabric_ports[bridge]
        if out == TUNNEL_OFPORT:
            node = self.by_address.get(str(ipaddress.IPv4Address(result.packet.get("tun_dst"))))
            return None if node is None else (node, TUNNEL_OFPORT)
        return None

    def _walk(self, bridge: str, packet: Packet, dst: Pod, tracks: dict[str, Conntrack]) -> tuple[bool, list[Hop]]:
        hops: list[Hop] = []
        dst_node = self.compiled.layout.node_of(dst)
        dst_port = self.compiled.layout.ofports[dst_node][dst.key]
        for _ in range(6):
            if bridge not in self.sims:
                return False, hops
            result = self.sims[bridge].run(packet, tracks.setdefault(bridge, Conntrack()))
            hops.append(Hop(bridge, result))
            if bridge == dst_node and result.outputs == [dst_port]:
                return True, hops
            nxt = self._next(bridge, result)
            if nxt is None:
                return False, hops
            bridge, in_port = nxt
            f = {k: v for k, v in result.packet.fields.items()
                 if not (k.startswith(("reg", "ct_")) or k in ("conj_id", "tun_dst"))}
            f["in_port"] = in_port
            packet = Packet(f)
        return False, hops

    def connect(self, src: Pod, dst: Pod, port: int, protocol: str, family: int = 4,
                src_port: int = 40000) -> Path:
        """A new connection from src to dst:port/protocol, and, if it got through, its reply."""
        layout = self.compiled.layout
        src_node, dst_node = layout.node_of(src), layout.node_of(dst)
        src_ip = next(ip for ip in src.ips if (":" in ip) == (family == 6))
        dst_ip = next(ip for ip in dst.ips if (":" in ip) == (family == 6))
        tracks: dict[str, Conntrack] = {}
        pkt = Packet.l4(protocol, in_port=layout.ofports[src_node][src.key], src_ip=src_ip,
                        dst_ip=dst_ip, dst_port=port, src_port=src_port, src_mac=pod_mac(src),
                        dst_mac=GATEWAY_MAC)
        ok, hops = self._walk(src_node, pkt, dst, tracks)
        path = Path(ok, hops)
        if ok:
            rep = Packet.l4(protocol, in_port=layout.ofports[dst_node][dst.key], src_ip=dst_ip,
                            dst_ip=src_ip, dst_port=src_port, src_port=port, src_mac=pod_mac(dst),
                            dst_mac=GATEWAY_MAC)
            path.reply_delivered, path.reply_hops = self._walk(dst_node, rep, src, tracks)
        return path

    def _follow(self, bridge: str, packet: Packet, tracks: dict[str, Conntrack]) -> list[Hop]:
        """A packet through the bridges until it leaves them (or is dropped): the hops."""
        hops: list[Hop] = []
        for _ in range(6):
            result = self.sims[bridge].run(packet, tracks.setdefault(bridge, Conntrack()))
            hops.append(Hop(bridge, result))
            nxt = self._next(bridge, result)
            if nxt is None:
                return hops
            bridge, in_port = nxt
            f = {k: v for k, v in result.packet.fields.items()
                 if not (k.startswith(("reg", "ct_")) or k in ("conj_id", "tun_dst"))}
            f["in_port"] = in_port
            packet = Packet(f)
        return hops

    def to_address(self, src: Pod, address: str, port: int, protocol: str, src_port: int = 40000) -> Path:
        """A new connection from a pod to an address that is no pod's (a node, a host outside the
        cluster). `delivered` means the rule tables let it pass (it was committed to connection
        tracking); where it went after that is in the last hop's outputs."""
        layout = self.compiled.layout
        src_node = layout.node_of(src)
        family = ipaddress.ip_address(address).version
        src_ip = next(ip for ip in src.ips if ipaddress.ip_address(ip).version == family)
        pkt = Packet.l4(protocol, in_port=layout.ofports[src_node][src.key], src_ip=src_ip, dst_ip=address,
                        dst_port=port, src_port=src_port, src_mac=pod_mac(src), dst_mac=GATEWAY_MAC)
        hops = self._follow(src_node, pkt, {})
        return Path(committed(hops), hops)

    def from_address(self, address: str, dst: Pod, port: int, protocol: str, src_port: int = 40000) -> Path:
        """A new connection from an address that is no pod's to a pod. It enters where traffic
        from outside the node enters these tables: the destination node's gateway port when its
        bridge has one (the node itself, or a host outside the cluster it routes), else its
        tunnel port (another node's address, or no gateway), or the fabric switch from another
        node's link (fabric mode)."""
        layout = self.compiled.layout
        dst_node = layout.node_of(dst)
        family = ipaddress.ip_address(address).version
        dst_ip = next(ip for ip in dst.ips if ipaddress.ip_address(ip).version == family)
        bridge, in_port = dst_node, TUNNEL_OFPORT
        gw = self.compiled.gateways.get(dst_node)
        other_nodes = {n.address for name, n in layout.nodes.items() if name != dst_node}
        if gw is not None and address not in other_nodes:
            in_port = gw.ofport
        if self.compiled.enforce == "fabric":
            others = [p for n, p in sorted(self.fabric_ports.items()) if n != dst_node]
            bridge, in_port = FABRIC, (others or [self.fabric_ports[dst_node]])[0]
        pkt = Packet.l4(protocol, in_port=in_port, src_ip=address, dst_ip=dst_ip, dst_port=port,
                        src_port=src_port, src_mac=GATEWAY_MAC, dst_mac=pod_mac(dst))
        ok, hops = self._walk(bridge, pkt, dst, {})
        return Path(ok, hops)


def committed(hops: list[Hop]) -> bool:
    """Whether a new connection passed the rule tables: it was committed to connection tracking."""
    return any(s.table == P.CONNTRACK_COMMIT and s.flow is not None and s.flow.priority > 0
               for h in hops for s in h.result.steps)
