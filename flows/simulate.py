"""A packet simulator for a set of tables: OpenFlow 1.3 lookup with conjunctive matches and
connection tracking, after ovs-fields(7) and ovs-actions(7).

Lookup, as OVS does it: the highest-priority ordinary flow that matches is the candidate;
conjunctive clause flows of higher priority are examined first, one priority at a time, and a
conjunction whose clauses all matched sends the lookup to its `conj_id` flow. Where OVS leaves
the result undefined (two ordinary flows of one priority, or two complete conjunctions at one
priority, matching the same packet) the simulator raises `Ambiguous`: the compiler must never
produce that.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from flows.fields import CT_BITS, ETH_ARP, ETH_IP, ETH_IPV6, FIELDS, FieldRef, full_mask, parse_mac
from flows.flow import CT, Conjunction, Flow, GotoTable, InPort, Load, Move, Output

MAX_STEPS = 64


def ct_state_flags(text: str) -> int:
    """ct_state bits from ofproto/trace's --ct-next spelling: flags separated by commas or
    spaces (ovs-vswitchd(8)); '|' and '+' are accepted too."""
    names = [t for t in re.split(r"[\s,|+]+", text) if t]
    return sum(CT_BITS[n] for n in set(names))


class Ambiguous(RuntimeError):
    """The packet hits a case OVS does not define."""


@dataclass
class Packet:
    fields: dict[str, int]

    @classmethod
    def l4(cls, protocol: str, *, in_port: int, src_ip: str, dst_ip: str, dst_port: int,
           src_port: int = 40000, src_mac: str = "00:00:00:00:00:00",
           dst_mac: str = "00:00:00:00:00:00") -> Packet:
        """A TCP, UDP or SCTP packet (IPv4 or IPv6 by the addresses); "icmp": an ICMP (ICMPv6)
        message, which has no ports."""
        src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
        f = {"in_port": in_port, "dl_src": parse_mac(src_mac), "dl_dst": parse_mac(dst_mac)}
        if protocol.lower() == "icmp":
            f["nw_proto"] = 1 if src.version == 4 else 58
        else:
            f.update(nw_proto={"tcp": 6, "udp": 17, "sctp": 132}[protocol.lower()], tp_src=src_port,
                     tp_dst=dst_port)
        if src.version == 4:
            f.update(dl_type=ETH_IP, nw_src=int(src), nw_dst=int(dst))
        else:
            f.update(dl_type=ETH_IPV6, ipv6_src=int(src), ipv6_dst=int(dst))
        return cls(f)

    @classmethod
    def arp_request(cls, *, in_port: int, src_mac: str, src_ip: str, target_ip: str) -> Packet:
        mac = parse_mac(src_mac)
        return cls({"in_port": in_port, "dl_src": mac, "dl_dst": full_mask(48), "dl_type": ETH_ARP,
                    "arp_op": 1, "arp_sha": mac, "arp_spa": int(ipaddress.ip_address(src_ip)),
                    "arp_tha": 0, "arp_tpa": int(ipaddress.ip_address(target_ip))})

    def get(self, name: str) -> int | None:
        if name in self.fields:
            return self.fields[name]
        if name.startswith("reg") or name in ("ct_state", "ct_zone", "ct_mark", "ct_label",
                                               "conj_id", "tun_dst", "tun_id"):
            return 0
        return None

    def copy(self) -> Packet:
        return Packet(dict(self.fields))

    def reply(self) -> Packet:
        """The same connection's packet in the other direction (addresses and ports swapped)."""
        f = dict(self.fields)
        for a, b in (("nw_src", "nw_dst"), ("ipv6_src", "ipv6_dst"), ("tp_src", "tp_dst"),
                     ("dl_src", "dl_dst")):
            if a in f:
                f[a], f[b] = f[b], f[a]
        for k in [k for k in f if k.startswith(("reg", "ct_")) or k == "conj_id"]:
            del f[k]
        return Packet(f)


def matches(flow: Flow, packet: Packet) -> bool:
    for m in flow.match:
        value = packet.get(m.field)
        if value is None or not m.hits(value):
            return False
    return True


def _conn_key(p: Packet, zone: int) -> tuple:
    src = p.get("nw_src") if p.get("dl_type") == ETH_IP else p.get("ipv6_src")
    dst = p.get("nw_dst") if p.get("dl_type") == ETH_IP else p.get("ipv6_dst")
    return (zone, p.get("dl_type"), p.get("nw_proto"), src, dst, p.get("tp_src"), p.get("tp_dst"))


def _reverse(key: tuple) -> tuple:
    zone, dl, proto, src, dst, sp, dp = key
    return (zone, dl, proto, dst, src, dp, sp)


@dataclass
class Conntrack:
    """Committed connections by zone and 5-tuple, with the ct_label and ct_mark given at
    commit."""

    entries: dict[tuple, int] = field(default_factory=dict)
    marks: dict[tuple, int] = field(default_factory=dict)

    def state(self, packet: Packet, zone: int) -> int:
        key = _conn_key(packet, zone)
        if key in self.entries:
            return CT_BITS["trk"] | CT_BITS["est"]
        if _reverse(key) in self.entries:
            return CT_BITS["trk"] | CT_BITS["est"] | CT_BITS["rpl"]
        return CT_BITS["trk"] | CT_BITS["new"]

    def label(self, packet: Packet, zone: int) -> int:
        key = _conn_key(packet, zone)
        return self.entries.get(key, self.entries.get(_reverse(key), 0))

    def mark(self, packet: Packet, zone: int) -> int:
        key = _conn_key(packet, zone)
        return self.marks.get(key, self.marks.get(_reverse(key), 0))

    def commit(self, packet: Packet, zone: int, label: int, mark: int = 0) -> None:
        key = _conn_key(packet, zone)
        if _reverse(key) not in self.entries:
            self.entries[key] = label
            self.marks[key] = mark


@dataclass(frozen=True)
class Step:
    table: int
    flow: Flow | None  # None: no flow matched (table miss without a miss flow: drop)
    clauses: tuple[Flow, ...] = ()  # the clause flows of the conjunction that matched


@dataclass
class Result:
    steps: list[Step]
    outputs: list[int]
    packet: Packet
    committed: bool = False

    @property
    def dropped(self) -> bool:
        return not self.outputs

    def hit(self, table: int) -> Step | None:
        for s in self.steps:
            if s.table == table:
                return s
        return None


def _set_bits(packet: Packet, ref: FieldRef, value: int) -> None:
    width_mask = full_mask(ref.width) << ref.start
    old = packet.get(ref.field) or 0
    packet.fields[ref.field] = (old & ~width_mask) | ((value << ref.start) & width_mask)


def _get_bits(packet: Packet, ref: FieldRef) -> int:
    return ((packet.get(ref.field) or 0) >> ref.start) & full_mask(ref.width)


class Simulator:
    """Runs packets through a fixed set of flows."""

    def __init__(self, flows: Iterable[Flow]):
        self.hard: dict[int, list[Flow]] = defaultdict(list)
        self.soft: dict[int, list[Flow]] = defaultdict(list)
        for f in flows:
            (self.soft if f.conjunctions else self.hard)[f.table].append(f)
        for d in (self.hard, self.soft):
            for lst in d.values():
                lst.sort(key=lambda f: -f.priority)

    def _hard_lookup(self, table: int, packet: Packet) -> Flow | None:
        best = None
        for f in self.hard.get(table, ()):
            if best is not None and f.priority < best.priority:
                break
            if matches(f, packet):
                if best is not None:
                    raise Ambiguous(f"two flows of priority {f.priority} match in table {table}:"
                                    f"\n  {best}\n  {f}")
                best = f
        return best

    def lookup(self, table: int, packet: Packet) -> Step:
        hard = self._hard_lookup(table, packet)
        floor = hard.priority if hard else -1
        by_prio: dict[int, list[Flow]] = defaultdict(list)
        for f in self.soft.get(table, ()):
            if f.priority <= floor:
                break
            if matches(f, packet):
                by_prio[f.priority].append(f)
        for prio in sorted(by_prio, reverse=True):
            seen: dict[int, set[int]] = defaultdict(set)
            need: dict[int, int] = {}
            used: dict[int, list[Flow]] = defaultdict(list)
            for f in by_prio[prio]:
                for c in f.conjunctions:
                    seen[c.id].add(c.clause)
                    need[c.id] = c.n_clauses
                    used[c.id].append(f)
            complete = [cid for cid in seen if len(seen[cid]) == need[cid]]
            if len(complete) > 1:
                raise Ambiguous(f"conjunctions {sorted(complete)} both match at priority {prio} "
                                f"in table {table}")
            if complete:
                cid = complete[0]
                probe = packet.copy()
                probe.fields["conj_id"] = cid
                target = self._hard_lookup(table, probe)
                if target is not None and target.get("conj_id") is not None:
                    return Step(table, target, tuple(used[cid]))
        return Step(table, hard)

    def run(self, packet: Packet, conntrack: Conntrack | None = None,
            ct_next: list[str] | None = None, table: int = 0) -> Result:
        """Run packet from `table`. Conntrack state after each ct() comes from `conntrack`
        (default: a fresh, empty one) or, like ofproto/trace's --ct-next, from `ct_next`."""
        conntrack = conntrack if conntrack is not None else Conntrack()
        ct_next = list(ct_next or [])
        pkt = packet.copy()
        steps: list[Step] = []
        outputs: list[int] = []
        committed = False
        next_table: int | None = table
        while next_table is not None:
            if len(steps) > MAX_STEPS:
                raise RuntimeError("pipeline loop")
            step = self.lookup(next_table, pkt)
            steps.append(step)
            next_table = None
            if step.flow is None:
                break
            for act in step.flow.actions:
                if isinstance(act, GotoTable):
                    next_table = act.table
                elif isinstance(act, Output):
                    outputs.append(act.port)
                elif isinstance(act, InPort):
                    outputs.append(pkt.fields["in_port"])  # every Packet has one (l4, arp_request)
                elif isinstance(act, Load):
                    _set_bits(pkt, act.dst, act.value)
                elif isinstance(act, Move):
                    _set_bits(pkt, act.dst, _get_bits(pkt, act.src))
                elif isinstance(act, CT):
                    if act.commit:
                        label_pkt = pkt.copy()
                        label_pkt.fields["ct_label"] = conntrack.label(pkt, act.zone)
                        label_pkt.fields["ct_mark"] = conntrack.mark(pkt, act.zone)
                        for sub in act.exec:
                            if isinstance(sub, Load):
                                _set_bits(label_pkt, sub.dst, sub.value)
                            elif isinstance(sub, Move):
                                _set_bits(label_pkt, sub.dst, _get_bits(label_pkt, sub.src))
                        conntrack.commit(pkt, act.zone, label_pkt.fields["ct_label"],
                                         label_pkt.fields["ct_mark"])
                        committed = True
                    if act.table is not None:
                        if ct_next:
                            state = ct_state_flags(ct_next.pop(0))
                        else:
                            state = conntrack.state(pkt, act.zone)
                        pkt.fields["ct_state"] = state
                        pkt.fields["ct_zone"] = act.zone
                        pkt.fields["ct_label"] = conntrack.label(pkt, act.zone)
                        pkt.fields["ct_mark"] = conntrack.mark(pkt, act.zone)
                        next_table = act.table
                elif isinstance(act, Conjunction):
                    raise RuntimeError("conjunction action executed")
        return Result(steps, outputs, pkt, committed)


__all__ = ["FIELDS", "Ambiguous", "Conntrack", "Packet", "Result", "Simulator", "Step", "matches"]
