"""Follow a connection between two pods through the compiled bridges of a cluster, with the
flow simulator: from the source pod's port, through the tunnel to the destination's node, to
the destination pod's port; then its reply back. This is what the flows say, to be compared
with what the semantic evaluator says."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from flows.simulate import Conntrack, Packet, Result, Simulator
from sdn.compile import Compiled
from sdn.layout import GATEWAY_MAC, TUNNEL_OFPORT, pod_mac
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
    """Simulators for every node of a compiled cluster, with per-node connection tracking."""

    def __init__(self, compiled: Compiled):
        self.compiled = compiled
        self.sims = {n: Simulator(p.flows) for n, p in compiled.programs.items()}
        self.by_address = {info.address: n for n, info in compiled.layout.nodes.items()}

    def _walk(self, node: str, packet: Packet, dst: Pod, tracks: dict[str, Conntrack]) -> tuple[bool, list[Hop]]:
        hops: list[Hop] = []
        for _ in range(4):
            result = self.sims[node].run(packet, tracks.setdefault(node, Conntrack()))
            hops.append(Hop(node, result))
            dst_port = self.compiled.layout.ofports[node].get(dst.key)
            if dst_port is not None and result.outputs == [dst_port] and self.compiled.layout.node_of(dst) == node:
                return True, hops
            if result.outputs != [TUNNEL_OFPORT]:
                return False, hops
            tun = result.packet.get("tun_dst")
            nxt = self.by_address.get(str(ipaddress.IPv4Address(tun)))
            if nxt is None or nxt not in self.sims:
                return False, hops
            f = dict(result.packet.fields)
            for k in [k for k in f if k.startswith("reg") or k.startswith("ct_") or k in ("conj_id", "tun_dst")]:
                del f[k]
            f["in_port"] = TUNNEL_OFPORT
            packet, node = Packet(f), nxt
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
