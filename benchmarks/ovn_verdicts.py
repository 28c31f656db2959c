"""Verdict agreement for the OVN comparison (benchmarks/ovn.py): pairs of one node's pods on a
few ports, each new connection traced with `ofproto/trace` on OVN's br-int and on our bridge
(every recirculation resumed as trk,new), and judged by the semantic evaluator
(sdn.policy.evaluate) and our flow simulator (flows.simulate); all four must agree."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from benchmarks.ovn_daemons import BRIDGE as OVN_BRIDGE
from flows.ir import EGRESS, INGRESS

DENIED_PROBE = ("tcp", 1)  # a port no scenario opens: the closed-port probe


def probes(bridge, rules, cluster, rng: random.Random, pairs: int) -> list[tuple]:
    """(src PodPort, dst PodPort, protocol, port) for up to `pairs` pairs of the node's pods, half
    of them pairs an ingress rule lets in: a port a rule opens to dst (or from src), the
    closed-port probe, and UDP 53."""
    pods = [p for p in bridge.pods if p.pod in cluster.pods]
    if len(pods) < 2:
        return []
    by_ip = {ip: p for p in pods for ip in p.ips}
    opened: dict[tuple[str, str], list[tuple[str, int]]] = {}
    admitted: dict[tuple[int, int], list[tuple[str, int]]] = {}  # pairs an ingress rule lets in, on its ports
    index = {p.pod: i for i, p in enumerate(pods)}
    for r in rules:
        if r.matches_nothing:
            continue
        local = [by_ip[a] for a in r.targets if a in by_ip]
        ports = [(pr.protocol, sum(pr.bounds) // 2) for pr in r.ports or ()]
        for t in local:
            opened.setdefault((t.pod, r.direction), []).extend(ports)
        if local and r.direction == INGRESS:
            srcs = [p for p in pods if r.peers is None or any(ip in r.peer_set for ip in p.ips)]
            for d in local:
                for s in srcs:
                    if s is not d:
                        admitted.setdefault((index[s.pod], index[d.pod]), []).extend(ports or [("tcp", 80)])
    every = [(i, j) for i in range(len(pods)) for j in range(len(pods)) if i != j]
    first = rng.sample(sorted(admitted), min(pairs // 2, len(admitted)))
    taken = set(first)
    chosen = first + rng.sample([x for x in every if x not in taken], min(pairs - len(first), len(every) - len(first)))
    out = []
    for i, j in chosen:
        s, d = pods[i], pods[j]
        probes = {DENIED_PROBE, ("udp", 53)}
        if (i, j) in admitted:
            probes.add(rng.choice(sorted(admitted[(i, j)])))
        for key in ((d.pod, INGRESS), (s.pod, EGRESS)):
            if opened.get(key):
                probes.add(rng.choice(sorted(opened[key])))
        out += [(s, d, proto, port) for proto, port in sorted(probes)]
    return out


def verdicts(probes, cluster, ovn, ours, ovn_ofport: dict, prog, bridge, our_bridge: str) -> dict:
    """Trace and judge each probe (see the module doc): `ovn` an OvnStack, `ours` the
    OvsInstance holding `our_bridge` with `prog` installed, `ovn_ofport` pod -> its br-int port."""
    from flows.simulate import Conntrack, Packet, Simulator
    from sdn.policy.evaluate import evaluate

    sim = Simulator(prog.flows)

    def one(p):
        s, d, proto, port = p
        src, dst = s.ips[0], d.ips[0]
        l4 = f"{proto},nw_src={src},nw_dst={dst},nw_ttl=64,{proto}_src=40000,{proto}_dst={port}"
        t_ovn = ovn.ovs.trace(OVN_BRIDGE, f"in_port={ovn_ofport[s.pod]},dl_src={s.mac},dl_dst={d.mac},{l4}",
                              ct_next=["trk,new"] * 4)
        t_ours = ours.trace(our_bridge, f"in_port={s.ofport},dl_src={s.mac},dl_dst={bridge.gateway_mac},{l4}",
                            ct_next=["trk,new"] * 2)
        pkt = Packet.l4(proto, in_port=s.ofport, src_ip=src, dst_ip=dst, dst_port=port,
                        src_mac=s.mac, dst_mac=bridge.gateway_mac)
        return {"src": s.pod, "dst": d.pod, "probe": f"{port}/{proto.upper()}",
                "ovn": t_ovn.output_ports == [ovn_ofport[d.pod]],
                "ours": t_ours.openflow_outputs == [d.ofport],
                "simulated": sim.run(pkt, Conntrack()).outputs == [d.ofport],
                "evaluator": evaluate(cluster, cluster.pods[s.pod], cluster.pods[d.pod], port, proto).allowed}

    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(one, probes))
    agree = [r for r in rows if r["ovn"] == r["ours"] == r["simulated"] == r["evaluator"]]
    disagree = [r for r in rows if r not in agree]
    return {"probes": len(rows), "pairs": len({(r["src"], r["dst"]) for r in rows}), "agree": len(agree),
            "disagree": len(disagree), "allowed": sum(r["evaluator"] for r in rows),
            "denied": sum(not r["evaluator"] for r in rows), "disagreements": disagree[:20]}


__all__ = ["DENIED_PROBE", "probes", "verdicts"]
