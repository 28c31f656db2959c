"""Rules -> OpenFlow tables for one bridge.

Each rule becomes a conjunction of up to three clauses (peer addresses, applied-to addresses,
ports), so its flow count is |peers| + |targets| + |port matches| + 1, never their product. A
rule with only the applied-to dimension needs no conjunction. Clause flows equal in table,
priority and match are shared and carry one conjunction action per rule.

Priorities: OVS leaves overlapping conjunctions at one priority undefined (ovs-fields(7),
"Conjunctive match fields"), so every rule gets a priority level of its own unless it is
provably disjoint (applied-to, peers or ports) from every rule already at that level; disjoint
rules share a level, and with it their address and port flows.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from flows import pipeline as P
from flows.fields import ETH_ARP, ETH_IP, ETH_IPV6, FieldRef, full_mask, parse_mac
from flows.flow import CT, Conjunction, Flow, GotoTable, InPort, Load, Match, Move, Output
from flows.ir import EGRESS, INGRESS, Bridge, Isolation, PortRange, Rule, RuleId
from flows.ports import merge_ranges, range_to_masks

RULE_PRIORITY_TOP = 60000
RULE_PRIORITY_FLOOR = 1000
SHARE_CANDIDATES = 8  # levels tried for sharing before taking a fresh one


class CompileError(ValueError):
    pass


@dataclass(frozen=True)
class RuleInfo:
    """What the compiler did with one rule: where it lives and how many flows it owns."""

    id: RuleId
    conj_id: int
    table: int
    priority: int
    cookie: int
    description: str = ""
    active: bool = True


@dataclass(frozen=True)
class Program:
    """The compiled tables of one bridge, with the index that names every flow's origin."""

    bridge: str
    flows: tuple[Flow, ...]
    rules: tuple[RuleInfo, ...] = ()
    defaults: tuple[tuple[int, Isolation], ...] = ()  # (cookie, isolation)

    def by_conj(self) -> dict[int, RuleInfo]:
        return {r.conj_id: r for r in self.rules}

    def by_cookie(self) -> dict[int, RuleInfo]:
        return {r.cookie: r for r in self.rules}

    def priorities(self) -> dict[RuleId, int]:
        return {r.id: r.priority for r in self.rules}

    def render(self) -> str:
        return "".join(f.render() + "\n" for f in sorted_flows(self.flows))


def sorted_flows(flows: Iterable[Flow]) -> list[Flow]:
    """ovs-ofctl-like order: by table, highest priority first, then match."""
    return sorted(flows, key=lambda f: (f.table, -f.priority, f.match, f.actions_text))


def stable_hash(text: str, bits: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") & (
        (1 << bits) - 1)


# ---- addresses and ports as matches --------------------------------------------------------

def _net(text: str) -> ipaddress._BaseNetwork:
    return ipaddress.ip_network(text, strict=False)


def address_match(cidr: str, side: str) -> tuple[Match, ...]:
    """Match an address or CIDR as source (side 'src') or destination ('dst')."""
    net = _net(cidr)
    if net.version == 4:
        dl, name, bits = ETH_IP, f"nw_{side}", 32
    else:
        dl, name, bits = ETH_IPV6, f"ipv6_{side}", 128
    mask = None if net.prefixlen == bits else int(net.netmask)
    if net.prefixlen == 0:
        return (Match("dl_type", dl),)
    return (Match("dl_type", dl), Match(name, int(net.network_address), mask))


def port_matches(ports: Sequence[PortRange], families: Iterable[int] = (4,)) -> list[tuple[Match, ...]]:
    """Minimal value/mask matches for a rule's ports, per protocol and address family."""
    by_proto: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p in ports:
        by_proto[p.protocol].append(p.bounds)
    out = []
    for fam in sorted(set(families)):
        dl = ETH_IP if fam == 4 else ETH_IPV6
        for proto in sorted(by_proto):
            base = (Match("dl_type", dl), Match("nw_proto", {"tcp": 6, "udp": 17, "sctp": 132}[proto]))
            segments = merge_ranges(by_proto[proto])
            if segments == [(0, 65535)]:
                out.append(base)
                continue
            for lo, hi in segments:
                for value, mask in range_to_masks(lo, hi):
                    m = None if mask == 0xFFFF else mask
                    out.append(base + (Match("tp_dst", value, m),))
    return out


def _families(addresses: Iterable[str]) -> set[int]:
    return {_net(a).version for a in addresses}


# ---- priority levels -----------------------------------------------------------------------

def _ports_disjoint(a: Sequence[PortRange], b: Sequence[PortRange]) -> bool:
    for x in a:
        for y in b:
            if x.protocol == y.protocol:
                (a0, a1), (b0, b1) = x.bounds, y.bounds
                if a0 <= b1 and b0 <= a1:
                    return False
    return True


def provably_disjoint(a: Rule, b: Rule) -> bool:
    """True if no packet can match both rules (so they may share a priority)."""
    if a.targets.isdisjoint(b.targets):
        return True
    if a.peers is not None and b.peers is not None and not (a.peer_set & b.peer_set):
        return True
    if a.ports is not None and b.ports is not None and _ports_disjoint(a.ports, b.ports):
        return True
    return False


class _Levels:
    """Priority levels of one table; each level holds rules that are pairwise disjoint."""

    def __init__(self, n_levels: int):
        self.n_levels = n_levels
        self.at: dict[int, dict[str, list[Rule]]] = defaultdict(lambda: defaultdict(list))
        self.high_water: dict[str, int] = {}
        self.by_targets: dict[frozenset[str], list[int]] = defaultdict(list)

    def fits(self, level: int, rule: Rule) -> bool:
        if not 0 <= level < self.n_levels:
            return False
        index = self.at.get(level)
        if not index:
            return True
        seen: set[int] = set()
        for t in rule.targets:
            for other in index.get(t, ()):
                if id(other) not in seen:
                    seen.add(id(other))
                    if not provably_disjoint(rule, other):
                        return False
        return True

    def place(self, level: int, rule: Rule) -> None:
        index = self.at[level]
        for t in rule.targets:
            index[t].append(rule)
            if self.high_water.get(t, 0) <= level:
                self.high_water[t] = level + 1
        lv = self.by_targets[rule.targets]
        if level not in lv:
            lv.append(level)

    def choose(self, rule: Rule) -> int:
        for level in sorted(self.by_targets.get(rule.targets, ()))[:SHARE_CANDIDATES]:
            if self.fits(level, rule):
                return level
        level = max((self.high_water.get(t, 0) for t in rule.targets), default=0)
        if level >= self.n_levels:
            raise CompileError(
                f"more than {self.n_levels} overlapping rules in one table; cannot give each "
                f"its own priority (rule {rule.id})")
        return level


def assign_priorities(rules: Sequence[Rule], hint: dict[RuleId, int] | None = None) -> dict[RuleId, int]:
    """Priority per rule of one table. Rules keep their hinted priority while it stays valid,
    so unchanged rules keep their flows across recompiles."""
    n_levels = RULE_PRIORITY_TOP - RULE_PRIORITY_FLOOR + 1
    levels = _Levels(n_levels)
    out: dict[RuleId, int] = {}
    pending = []
    for rule in sorted(rules, key=lambda r: r.id):
        prio = (hint or {}).get(rule.id)
        level = None if prio is None else RULE_PRIORITY_TOP - prio
        if level is not None and levels.fits(level, rule):
            levels.place(level, rule)
            out[rule.id] = prio
        else:
            pending.append(rule)
    for rule in pending:
        level = levels.choose(rule)
        levels.place(level, rule)
        out[rule.id] = RULE_PRIORITY_TOP - level
    return out


def assign_conj_ids(ids: Iterable[RuleId], hint: dict[RuleId, int] | None = None) -> dict[RuleId, int]:
    """A 32-bit conj id per rule, unique on the bridge: a hash of the rule's identity, probed
    on collision in a stable order."""
    out: dict[RuleId, int] = {}
    used: set[int] = set()
    ordered = sorted(set(ids))
    for rid in ordered:
        cid = (hint or {}).get(rid)
        if cid is not None and cid not in used:
            out[rid] = cid
            used.add(cid)
    for rid in ordered:
        if rid in out:
            continue
        cid = stable_hash(str(rid), 32) or 1
        while cid in used or cid == 0:
            cid = (cid + 1) & 0xFFFFFFFF
        out[rid] = cid
        used.add(cid)
    return out


# ---- the pipeline --------------------------------------------------------------------------

def _reg(name: str, start: int = 0, end: int | None = None) -> FieldRef:
    return FieldRef(name, start, end)


def _pipeline_flows(bridge: Bridge, enforce: bool) -> list[Flow]:
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
            net = _net(ip)
            if net.version == 4:
                add(P.SPOOFGUARD, 200, [Match("in_port", pod.ofport), Match("dl_src", mac),
                                        *address_match(ip, "src")], [GotoTable(after_guard)])
                add(P.SPOOFGUARD, 200, [Match("in_port", pod.ofport), Match("dl_src", mac),
                                        Match("dl_type", ETH_ARP),
                                        Match("arp_spa", int(net.network_address)),
                                        Match("arp_sha", mac)], [GotoTable(P.ARP_RESPONDER)])
            else:
                add(P.SPOOFGUARD, 200, [Match("in_port", pod.ofport), Match("dl_src", mac),
                                        *address_match(ip, "src")], [GotoTable(after_guard)])
    for port in bridge.uplinks:
        add(P.CLASSIFIER, 200, [Match("in_port", port)], [GotoTable(after_guard)])
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
        add(P.CONNTRACK_COMMIT, 0, [], [GotoTable(P.OUTPUT)])

    routes = bridge.routes
    if bridge.mode == "fabric-node" and routes:
        # Every pod packet goes to the fabric; what comes back is only delivered locally
        # (never routed back, which could loop).
        up = routes[0].ofport
        for dl in (ETH_IP, ETH_IPV6):
            add(P.OUTPUT, 300, [Match(P.REG_FROM, 1), Match("dl_type", dl)], [Output(up)])
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
    add(P.OUTPUT, 0, [])
    return out


def _ct(text: str):
    from flows.fields import parse_value
    return parse_value("ct_state", text)


def _rule_flows(rules: Sequence[Rule], prios: dict[RuleId, int], conj: dict[RuleId, int]
                ) -> tuple[list[Flow], list[RuleInfo]]:
    clause: dict[tuple, set[Conjunction]] = defaultdict(set)
    hard: dict[tuple, Flow] = {}
    infos: list[RuleInfo] = []
    for rule in rules:
        table = P.INGRESS_RULE if rule.direction == INGRESS else P.EGRESS_RULE
        nxt = P.CONNTRACK_COMMIT if rule.direction == INGRESS else P.INGRESS_RULE
        reg = P.REG_INGRESS_CONJ if rule.direction == INGRESS else P.REG_EGRESS_CONJ
        tside, pside = ("dst", "src") if rule.direction == INGRESS else ("src", "dst")
        cid, prio = conj[rule.id], prios[rule.id]
        rcookie = P.cookie(P.KIND_RULE, stable_hash(f"{rule.id.policy}|{rule.id.direction}|{rule.id.index}", 48))
        infos.append(RuleInfo(rule.id, cid, table, prio, rcookie, _describe(rule), not rule.matches_nothing))
        if rule.matches_nothing:
            continue
        allow = (Load(cid, _reg(reg)), GotoTable(nxt))
        dims: list[list[tuple[Match, ...]]] = []
        if rule.peers is not None:
            dims.append([address_match(c, pside) for c in rule.peers])
        dims.append([address_match(t, tside) for t in sorted(rule.targets)])
        if rule.ports is not None:
            dims.append(port_matches(rule.ports, _families(rule.targets)))
        if len(dims) == 1:
            for m in dims[0]:
                f = Flow(table, prio, m, allow, rcookie)
                if f.key in hard:
                    raise CompileError(f"two single-dimension rules collide on {f}")
                hard[f.key] = f
            continue
        n = len(dims)
        for k, dim in enumerate(dims, 1):
            for m in dim:
                clause[(table, prio, Flow(table, prio, m).match)].add(Conjunction(cid, k, n))
        f = Flow(table, prio, (Match("conj_id", cid),), allow, rcookie)
        hard[f.key] = f
    flows = list(hard.values())
    ccookie = P.cookie(P.KIND_CLAUSE)
    for (table, prio, match), conjs in clause.items():
        if (table, prio, match) in hard:
            raise CompileError(f"clause flow collides with a rule flow: table {table} priority {prio}")
        flows.append(Flow(table, prio, match, tuple(sorted(conjs)), ccookie))
    return flows, infos


def _describe(rule: Rule) -> str:
    peers = "any" if rule.peers is None else f"{len(rule.peers)} cidr(s)"
    ports = "any" if rule.ports is None else ",".join(str(p) for p in rule.ports)
    return f"{len(rule.targets)} pod address(es) {'from' if rule.direction == INGRESS else 'to'} {peers} on {ports}"


def _default_flows(isolation: Sequence[Isolation]) -> tuple[list[Flow], list[tuple[int, Isolation]]]:
    flows, index = [], []
    for iso in isolation:
        c = P.cookie(P.KIND_DEFAULT, stable_hash(f"{iso.direction}|{iso.address}", 48))
        if iso.direction == EGRESS:
            flows.append(Flow(P.EGRESS_DEFAULT, 200, address_match(iso.address, "src"), (), c))
        else:
            flows.append(Flow(P.INGRESS_DEFAULT, 200, address_match(iso.address, "dst"), (), c))
        index.append((c, iso))
    return flows, index


def scope_rules(bridge: Bridge, rules: Sequence[Rule], isolation: Sequence[Isolation]
                ) -> tuple[list[Rule], list[Isolation]]:
    """The rules and isolations a bridge enforces: in host mode those whose applied-to pods are
    plugged in here (targets cut down to them); in fabric mode all; on a fabric-node bridge
    none."""
    if bridge.mode == "fabric":
        return list(rules), list(isolation)
    if bridge.mode == "fabric-node":
        return [], []
    local = bridge.local_addresses
    kept = []
    for r in rules:
        t = r.targets & local
        if t:
            kept.append(r if t == r.targets else Rule(r.id, frozenset(t), r.peers, r.ports))
    return kept, [i for i in isolation if i.address in local]


def compile_bridge(bridge: Bridge, rules: Sequence[Rule], isolation: Sequence[Isolation],
                   previous: Program | None = None) -> Program:
    """Compile the tables of one bridge. `previous` (the last program installed on it) keeps
    priorities and conj ids of unchanged rules stable; without it the result depends on the
    input alone, byte for byte."""
    rules, isolation = scope_rules(bridge, rules, isolation)
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise CompileError("duplicate rule ids")
    hint_prio = previous.priorities() if previous else None
    hint_conj = {r.id: r.conj_id for r in previous.rules} if previous else None
    prios: dict[RuleId, int] = {}
    for direction in (EGRESS, INGRESS):
        prios.update(assign_priorities([r for r in rules if r.direction == direction], hint_prio))
    conj = assign_conj_ids(ids, hint_conj)
    enforce = bridge.mode != "fabric-node"
    flows = _pipeline_flows(bridge, enforce)
    rflows, infos = _rule_flows(rules, prios, conj)
    dflows, dindex = _default_flows(sorted(isolation))
    flows += rflows + dflows
    for f in flows:
        P.check_flow(f)
    return Program(bridge.name, tuple(sorted_flows(flows)), tuple(sorted(infos, key=lambda i: i.id)),
                   tuple(dindex))


def cross_product_count(rules: Sequence[Rule]) -> int:
    """How many flows the naive encoding (one flow per peer x target x port match) needs."""
    total = 0
    for r in rules:
        if r.matches_nothing:
            continue
        peers = 1 if r.peers is None else len(r.peers)
        ports = 1 if r.ports is None else len(port_matches(r.ports, _families(r.targets)))
        total += peers * len(r.targets) * ports
    return total


__all__ = ["Program", "RuleInfo", "CompileError", "compile_bridge", "scope_rules",
           "assign_priorities", "assign_conj_ids", "provably_disjoint", "port_matches",
           "address_match", "cross_product_count", "sorted_flows", "full_mask"]
