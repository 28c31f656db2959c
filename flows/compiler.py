"""Rules -> OpenFlow tables for one bridge, from scratch or incrementally.

Each rule becomes a conjunction of up to three clauses (peer addresses, applied-to addresses,
ports), so its flow count is |peers| + |targets| + |port matches| + 1, never their product; a
rule whose product is no bigger than that sum is written as plain flows instead, and a rule
with only the applied-to dimension needs no conjunction at all. Clause flows equal in table,
priority and match are shared and carry one conjunction action per rule. Priorities and conj
ids: see flows/priorities.py.

`BridgeCompiler` keeps what each rule contributed, so an update (rules added, changed or
removed; pods isolated or not) touches only the flows of those rules and returns the flow
difference. `compile_bridge` is the same compiler fed everything at once.
"""

from __future__ import annotations

from bisect import insort
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

from flows import pipeline as P
from flows.base_flows import pipeline_flows
from flows.fields import FieldRef, full_mask
from flows.flow import Conjunction, Flow, FlowDiff, GotoTable, Load, Match
from flows.ir import EGRESS, INGRESS, Bridge, Isolation, PortRange, Rule, RuleId
from flows.matches import address_match, families, port_matches
from flows.priorities import (
    CompileError, Levels, assign_conj_ids, assign_priorities, level_of, priority_of,
    probe_conj_id, provably_disjoint, stable_hash,
)

Key = tuple  # (table, priority, match)


@dataclass(frozen=True)
class RuleInfo:
    """What the compiler did with one rule: where it lives."""

    id: RuleId
    conj_id: int
    table: int
    priority: int
    cookie: int
    description: str = ""
    active: bool = True
    digest: str = ""  # of the rule as compiled here: tells an unchanged rule on the next compile
    # A rule matching exactly what another rule of the bridge matches (same direction,
    # applied-to addresses, peers and ports) has no flows of its own: it is enforced by the
    # flows of that rule (the first in rule order), whose id this names.
    same_as: RuleId | None = None


@dataclass(frozen=True)
class Program:
    """The compiled tables of one bridge, with the index that names every flow's origin."""

    bridge: str
    flows: tuple[Flow, ...]
    rules: tuple[RuleInfo, ...] = ()
    defaults: tuple[tuple[int, Isolation], ...] = ()  # (cookie, isolation)

    def by_conj(self) -> dict[int, RuleInfo]:
        out = {r.conj_id: r for r in self.rules if r.same_as is not None}
        out.update((r.conj_id, r) for r in self.rules if r.same_as is None)
        return out

    def by_cookie(self) -> dict[int, RuleInfo]:
        out = {r.cookie: r for r in self.rules if r.same_as is not None}
        out.update((r.cookie, r) for r in self.rules if r.same_as is None)
        return out

    def aliases(self) -> dict[RuleId, list[RuleId]]:
        """Rules enforced by another rule's flows, by that rule."""
        out: dict[RuleId, list[RuleId]] = defaultdict(list)
        for r in self.rules:
            if r.same_as is not None:
                out[r.same_as].append(r.id)
        return dict(out)

    def priorities(self) -> dict[RuleId, int]:
        return {r.id: r.priority for r in self.rules}

    def render(self) -> str:
        return "".join(f.render() + "\n" for f in sorted_flows(self.flows))


def sorted_flows(flows: Iterable[Flow]) -> list[Flow]:
    """ovs-ofctl-like order: by table, highest priority first, then match."""
    def key(f: Flow) -> tuple:
        k = f.sort_key()
        return (k[0], -k[1], k[2], k[3])
    return sorted(flows, key=key)


def rule_cookie(rid: RuleId) -> int:
    return P.cookie(P.KIND_RULE, stable_hash(f"{rid.policy}|{rid.direction}|{rid.index}", 48))


def default_cookie(iso: Isolation) -> int:
    return P.cookie(P.KIND_DEFAULT, stable_hash(f"{iso.direction}|{iso.address}", 48))


CLAUSE_COOKIE = P.cookie(P.KIND_CLAUSE)


def _describe(rule: Rule) -> str:
    peers = "any" if rule.peers is None else f"{len(rule.peers)} cidr(s)"
    ports = "any" if rule.ports is None else ",".join(str(p) for p in rule.ports)
    return f"{len(rule.targets)} pod address(es) {'from' if rule.direction == INGRESS else 'to'} {peers} on {ports}"


def scope_rule(bridge: Bridge, rule: Rule, local: frozenset[str] | None = None) -> Rule | None:
    """The part of a rule a bridge enforces, or None: in host mode the rule cut down to the
    applied-to pods plugged in here; in fabric mode the whole rule; on a fabric-node bridge
    nothing. Peers are normalised to the targets' address families (see normal_peers)."""
    if bridge.mode == "fabric-node":
        return None
    t = rule.targets
    if bridge.mode != "fabric":
        t = t & (bridge.local_addresses if local is None else local)
        if not t:
            return None
    peers = normal_peers(rule.peers, families(t))
    if t == rule.targets and peers == rule.peers:
        return rule
    return Rule(rule.id, frozenset(t), peers, rule.ports)


_FULL = {4: "0.0.0.0/0", 6: "::/0"}


def normal_peers(peers: tuple[str, ...] | None, fams: set[int]) -> tuple[str, ...] | None:
    """Peers that can meet the targets: a source and a destination share an address family,
    so peers of another family never match (kept out: as clause flows they would only cost
    flows); peers that are the whole address space of every target family are no constraint
    at all (None), which keeps every flow of a small rule carrying each of its dimensions."""
    if peers is None:
        return None
    kept = tuple(p for p in peers if (6 if ":" in p else 4) in fams)
    if fams and all(_FULL[f] in kept for f in fams):
        return None
    return kept


def scope_rules(bridge: Bridge, rules: Sequence[Rule], isolation: Sequence[Isolation]
                ) -> tuple[list[Rule], list[Isolation]]:
    """The rules and isolations a bridge enforces (see scope_rule)."""
    if bridge.mode == "fabric-node":
        return [], []
    local = bridge.local_addresses
    kept = [s for s in (scope_rule(bridge, r, local) for r in rules) if s is not None]
    if bridge.mode == "fabric":
        return kept, list(isolation)
    return kept, [i for i in isolation if i.address in local]


@dataclass
class _Placed:
    rule: Rule  # as scoped to this bridge
    conj_id: int
    priority: int
    hard: list[Key] = field(default_factory=list)
    clauses: list[tuple[Key, Conjunction]] = field(default_factory=list)
    kind: str = ""  # encoding(): "conj" or "plain"
    n_dims: int = 0

    def info(self) -> RuleInfo:
        table = P.INGRESS_RULE if self.rule.direction == INGRESS else P.EGRESS_RULE
        return RuleInfo(self.rule.id, self.conj_id, table, self.priority, rule_cookie(self.rule.id),
                        _describe(self.rule), not self.rule.matches_nothing, rule_digest(self.rule))


def rule_digest(rule: Rule) -> str:
    """A short hash of what a rule matches (not of its identity)."""
    text = repr((sorted(rule.targets), rule.peers, None if rule.ports is None else sorted(rule.ports)))
    return f"{stable_hash(text, 48):012x}"


def rule_dims(rule: Rule) -> list[list[tuple[Match, ...]]]:
    """The matches of each dimension of a rule, in clause order: peers (if any), applied-to
    addresses, ports (if any)."""
    tside, pside = ("dst", "src") if rule.direction == INGRESS else ("src", "dst")
    dims: list[list[tuple[Match, ...]]] = []
    if rule.peers is not None:
        dims.append([address_match(c, pside) for c in rule.peers])
    dims.append([address_match(t, tside) for t in sorted(rule.targets)])
    if rule.ports is not None:
        dims.append(_port_matches(rule.ports, tuple(sorted(families(rule.targets)))))
    return dims


@lru_cache(maxsize=1 << 14)
def _port_matches(ports: tuple[PortRange, ...], fams: tuple[int, ...]) -> list[tuple[Match, ...]]:
    """port_matches, remembered (the same port lists recur across policies); callers must
    not change the list."""
    return port_matches(ports, fams)


def encoding(rule: Rule, dims: list[list]) -> str:
    """"conj" when a conjunction is the smaller encoding, else "plain" (the cross product, or
    one flow per pod for a rule with only applied-to addresses)."""
    if rule.matches_nothing or len(dims) == 1:
        return "plain"
    return "plain" if _product(dims) <= sum(len(d) for d in dims) + 1 else "conj"


class BridgeCompiler:
    """The tables of one bridge, kept up to date rule by rule."""

    def __init__(self, bridge: Bridge, previous: Program | None = None):
        self.bridge = bridge
        self._hint_prio = previous.priorities() if previous else {}
        self._hint_conj = {r.id: r.conj_id for r in previous.rules} if previous else {}
        self._hint_digest = {r.id: r.digest for r in previous.rules} if previous else {}
        self._levels = {EGRESS: Levels(), INGRESS: Levels()}
        self._all_rules: dict[RuleId, Rule] = {}  # unscoped, as given
        self._all_isolation: dict[tuple[str, str], Isolation] = {}
        self._placed: dict[RuleId, _Placed] = {}
        # Identical rules (same signature once scoped) share one placement: the first in rule
        # order is placed, the others are aliases of it (10k policies selecting the same pods
        # with the same peers are one set of flows, not 10k priority levels).
        self._members: dict[tuple, list[RuleId]] = {}  # signature -> rule ids, in order
        self._sig_of: dict[RuleId, tuple] = {}
        self._aliases: dict[RuleId, Rule] = {}  # scoped rules placed through another one
        self._conj_used: set[int] = set()
        self._pipeline: dict[Key, Flow] = {}
        self._defaults: dict[Key, tuple[Flow, Isolation]] = {}
        self._default_of: dict[tuple[str, str], Key] = {}  # (direction, address) -> flow key
        self._hard: dict[Key, Flow] = {}
        self._clauses: dict[Key, set[Conjunction]] = defaultdict(set)
        self._built: dict[Key, Flow] = {}  # clause flows as last built (dropped on change)
        self._local = bridge.local_addresses
        self._set_pipeline()

    # ---- reading -------------------------------------------------------------------------

    def flow(self, key: Key) -> Flow | None:
        if key in self._hard:
            return self._hard[key]
        conjs = self._clauses.get(key)
        if conjs:
            f = self._built.get(key)
            if f is None:
                f = self._built[key] = Flow(key[0], key[1], key[2], tuple(sorted(conjs, key=_conj_order)),
                                            CLAUSE_COOKIE)
            return f
        if key in self._defaults:
            return self._defaults[key][0]
        return self._pipeline.get(key)

    def keys(self) -> set[Key]:
        return set(self._pipeline) | set(self._defaults) | set(self._hard) | {
            k for k, v in self._clauses.items() if v}

    def program(self) -> Program:
        flows = [self.flow(k) for k in self.keys()]
        infos = [p.info() for p in self._placed.values()]
        for rid, s in self._aliases.items():
            lead = self._placed[self._members[self._sig_of[rid]][0]]
            infos.append(RuleInfo(rid, lead.conj_id, lead.info().table, lead.priority, rule_cookie(rid),
                                  _describe(s), not s.matches_nothing, rule_digest(s), lead.rule.id))
        rules = sorted(infos, key=lambda i: i.id)
        defaults = sorted(((f.cookie, iso) for f, iso in self._defaults.values()),
                          key=lambda d: (d[1].direction, d[1].address))
        return Program(self.bridge.name, tuple(sorted_flows(flows)), tuple(rules), tuple(defaults))

    def __len__(self) -> int:
        return len(self.keys())

    # ---- changing ------------------------------------------------------------------------

    def _toucher(self, before: dict[Key, Flow | None] | None):
        """A function recording the state of a flow key before its first change."""
        if before is None:
            return lambda key: None

        def touch(key: Key) -> None:
            if key not in before:
                before[key] = self.flow(key)
        return touch

    def update(self, upsert: Iterable[Rule] = (), delete: Iterable[RuleId] = (),
               isolate: Iterable[Isolation] = (), unisolate: Iterable[tuple[str, str]] = (),
               diff: bool = True) -> FlowDiff | None:
        """Apply rule and isolation changes (rules as computed for the whole cluster; this
        compiler scopes them). Returns the flow difference (None with diff=False)."""
        before: dict[Key, Flow | None] | None = {} if diff else None
        touch = self._toucher(before)
        changed: list[Rule] = []
        gone: list[RuleId] = []
        for rid in delete:
            self._all_rules.pop(rid, None)
            gone.append(rid)
        for rule in upsert:
            self._all_rules[rule.id] = rule
            changed.append(rule)
        upserted = {r.id for r in changed}
        self._replace(changed, touch, [rid for rid in gone if rid not in upserted])
        for key in unisolate:
            self._all_isolation.pop(key, None)
            self._set_default(key, None, touch)
        for iso in isolate:
            key = (iso.direction, iso.address)
            self._all_isolation[key] = iso
            if key in self._default_of or self._enforces(iso):  # most are other bridges' pods
                self._set_default(key, iso, touch)
        return None if before is None else self._diff(before)

    def set_bridge(self, bridge: Bridge) -> FlowDiff:
        """A new bridge description (ports, routes): the pipeline flows change, and rules and
        isolations of pods that arrived or left are rescoped."""
        before: dict[Key, Flow | None] = {}
        touch = self._toucher(before)
        old_local, old_mode = self._local, self.bridge.mode
        self.bridge, self._local = bridge, bridge.local_addresses
        for k in list(self._pipeline):
            touch(k)
        self._pipeline.clear()
        self._set_pipeline(touch)
        moved = old_local ^ self._local
        if moved or old_mode != bridge.mode:
            rescope = [r for r in self._all_rules.values()
                       if old_mode != bridge.mode or not r.targets.isdisjoint(moved)]
            self._replace(rescope, touch)
            for key, iso in self._all_isolation.items():
                if old_mode != bridge.mode or iso.address in moved:
                    self._set_default(key, iso, touch)
        return self._diff(before)

    # ---- internals -----------------------------------------------------------------------

    def _diff(self, before: dict[Key, Flow | None]) -> FlowDiff:
        add, modify, delete = [], [], []
        for key, old in before.items():
            new = self.flow(key)
            if old is None and new is not None:
                add.append(new)
            elif old is not None and new is None:
                delete.append(old)
            elif old is not None and new != old:
                modify.append(new)
        return FlowDiff(tuple(sorted(add)), tuple(sorted(modify)), tuple(sorted(delete)))

    def _set_pipeline(self, touch=None) -> None:
        for f in pipeline_flows(self.bridge, self.bridge.mode != "fabric-node"):
            P.check_flow(f)
            if touch:
                touch(f.key)
            self._pipeline[f.key] = f

    def _enforces(self, iso: Isolation) -> bool:
        if self.bridge.mode == "fabric":
            return True
        return self.bridge.mode == "host" and iso.address in self._local

    def _set_default(self, key: tuple[str, str], iso: Isolation | None, touch) -> None:
        """The default-deny flow of one (direction, address): present while it is isolated and
        enforced on this bridge."""
        old = self._default_of.pop(key, None)
        if old is not None:
            touch(old)
            del self._defaults[old]
        if iso is None or not self._enforces(iso):
            return
        direction, address = key
        side = "src" if direction == EGRESS else "dst"
        table = P.EGRESS_DEFAULT if direction == EGRESS else P.INGRESS_DEFAULT
        f = Flow(table, 200, address_match(address, side), (), default_cookie(iso))
        P.check_flow(f)
        touch(f.key)
        self._defaults[f.key] = (f, iso)
        self._default_of[key] = f.key

    def _leave(self, rid: RuleId) -> None:
        """Take a rule out of its group of identical rules (placement untouched)."""
        sig = self._sig_of.pop(rid)
        members = self._members[sig]
        members.remove(rid)
        if not members:
            del self._members[sig]
        self._aliases.pop(rid, None)

    def _replace(self, rules: Sequence[Rule], touch, deleted: Sequence[RuleId] = ()) -> None:
        """(Re)place rules (and take out `deleted` ones): scoped anew; unchanged ones stay as
        they are; changed ones keep their level and conj id when still valid; a rule identical
        to another one becomes its alias, the first of a group in rule order being placed."""
        # rule id -> (scoped rule, (priority, conj id) it held or inherits, or None)
        scoped: dict[RuleId, tuple[Rule, tuple[int, int] | None]] = {}
        # Changed rules leave their level and conj id now but keep their flows until it is
        # known whether they get the same priority, conj id and encoding back: then only the
        # flows that differ change (one peer more is one clause flow, not the whole rule).
        retired: dict[RuleId, _Placed] = {}
        work = [(rid, None) for rid in deleted] + [(rule.id, rule) for rule in rules]
        for rid, rule in work:
            s = None if rule is None else scope_rule(self.bridge, rule, self._local)
            sig = None if s is None else _signature(s)
            if rid in self._aliases:
                if sig == self._sig_of[rid]:
                    self._aliases[rid] = s
                    continue
                self._leave(rid)
                prev = None
            else:
                old = self._placed.get(rid)
                if old is not None and s == old.rule:
                    continue
                pending = scoped.pop(rid, None)
                prev = (old.priority, old.conj_id) if old else (pending[1] if pending else None)
                promoted = False
                if rid in self._sig_of:  # it leads its group: the next member takes over
                    old_sig = self._sig_of[rid]
                    self._leave(rid)
                    members = self._members.get(old_sig)
                    if members:
                        nxt = members[0]
                        scoped[nxt] = (self._aliases.pop(nxt), prev)
                        promoted = True
                if old is not None:
                    if promoted or s is None:
                        self._unplace(rid, touch)
                    else:
                        self._retire(rid)
                        retired[rid] = old
                if promoted:
                    prev = None
            if s is None:
                continue
            members = self._members.get(sig)
            if members and members[0] < rid:  # an alias of the group's first rule
                insort(members, rid)
                self._sig_of[rid] = sig
                self._aliases[rid] = s
                if rid in retired:
                    self._drop_flows(retired.pop(rid), touch)
                continue
            if members:  # it comes first: the group's placement passes to it
                lead = members[0]
                placed = self._placed.get(lead)
                if placed is not None:
                    prev = (placed.priority, placed.conj_id)
                    self._aliases[lead] = placed.rule
                    self._unplace(lead, touch)
                else:
                    lead_rule, prev = scoped.pop(lead)
                    self._aliases[lead] = lead_rule
                members.insert(0, rid)
            else:
                self._members[sig] = [rid]
            self._sig_of[rid] = sig
            scoped[rid] = (s, prev)
        for rid in [r for r in retired if r not in scoped]:
            self._drop_flows(retired.pop(rid), touch)
        scoped = list(scoped.values())
        if not scoped:
            return
        # Priorities: earlier placements and hints of unchanged rules first, then hints of
        # changed rules, then the rest (each group in rule order).
        dims = {s.id: rule_dims(s) for s, _ in scoped}
        kinds = {s.id: encoding(s, dims[s.id]) for s, _ in scoped}

        def order(item):
            s, prev = item
            unchanged = prev is not None or self._hint_digest.get(s.id) == rule_digest(s)
            return (0 if unchanged else 1, s.id)

        scoped.sort(key=order)
        prios: dict[RuleId, int] = {}
        pending = []
        for s, prev in scoped:
            prio = prev[0] if prev else self._hint_prio.get(s.id)
            levels = self._levels[s.direction]
            if prio is not None and levels.fits(level_of(prio), s):
                levels.place(level_of(prio), s)
                prios[s.id] = prio
            else:
                pending.append(s)
        for s in pending:
            levels = self._levels[s.direction]
            level = levels.choose(s)
            levels.place(level, s)
            prios[s.id] = priority_of(level)
        # Conj ids: the earlier or hinted one if free, else a probed hash.
        conj: dict[RuleId, int] = {}
        for s, prev in scoped:
            cid = prev[1] if prev else self._hint_conj.get(s.id)
            if cid is not None and cid not in self._conj_used:
                conj[s.id] = cid
                self._conj_used.add(cid)
        for s, _ in scoped:
            if s.id not in conj:
                conj[s.id] = probe_conj_id(s.id, self._conj_used)
                self._conj_used.add(conj[s.id])
        # Retired rules that come back differently lose their flows first (another rule may
        # take over their keys); the others are patched in place.
        patch: dict[RuleId, _Placed] = {}
        for s, _ in scoped:
            old = retired.get(s.id)
            if old is None:
                continue
            if ((prios[s.id], conj[s.id], kinds[s.id], len(dims[s.id]))
                    == (old.priority, old.conj_id, old.kind, old.n_dims)
                    and not s.matches_nothing and not old.rule.matches_nothing):
                patch[s.id] = old
            else:
                self._drop_flows(old, touch)
        for s, _ in sorted(scoped, key=lambda x: x[0].id):
            placed = _Placed(s, conj[s.id], prios[s.id])
            old = patch.get(s.id)
            if old is None:
                self._emit(placed, dims[s.id], kinds[s.id], touch)
            else:
                self._patch(old, placed, dims[s.id], kinds[s.id], touch)

    def _retire(self, rid: RuleId) -> _Placed | None:
        """Take a rule out of its level and conj id; its flows stay (see _drop_flows)."""
        placed = self._placed.pop(rid, None)
        if placed is not None:
            self._levels[placed.rule.direction].remove(level_of(placed.priority), placed.rule)
            self._conj_used.discard(placed.conj_id)
        return placed

    def _unplace(self, rid: RuleId, touch) -> None:
        placed = self._retire(rid)
        if placed is not None:
            self._drop_flows(placed, touch)

    def _drop_flows(self, placed: _Placed, touch) -> None:
        for key in placed.hard:
            touch(key)
            del self._hard[key]
        for key, c in placed.clauses:
            touch(key)
            self._built.pop(key, None)
            conjs = self._clauses[key]
            conjs.discard(c)
            if not conjs:
                del self._clauses[key]

    def _patch(self, old: _Placed, placed: _Placed, dims: list[list[tuple[Match, ...]]], kind: str,
               touch) -> None:
        """Turn `old`'s flows into those `_emit(placed, ...)` would write, touching only the
        flows that differ (same priority, conj id, encoding and number of dimensions)."""
        rule, cid, prio = placed.rule, placed.conj_id, placed.priority
        placed.kind, placed.n_dims = kind, len(dims)
        self._placed[rule.id] = placed
        table = P.INGRESS_RULE if rule.direction == INGRESS else P.EGRESS_RULE
        if kind == "plain":
            nxt = P.CONNTRACK_COMMIT if rule.direction == INGRESS else P.INGRESS_RULE
            reg = P.REG_INGRESS_CONJ if rule.direction == INGRESS else P.REG_EGRESS_CONJ
            allow = (Load(cid, FieldRef(reg)), GotoTable(nxt))
            cookie = rule_cookie(rule.id)
            want = {}
            for m in (dims[0] if len(dims) == 1 else _combinations(dims)):
                f = Flow(table, prio, m, allow, cookie)
                want[f.key] = f
            have = set(old.hard)
            for key in have - want.keys():
                touch(key)
                del self._hard[key]
            for key in want.keys() - have:
                f = want[key]
                P.check_flow(f)
                if key in self._hard or self._clauses.get(key) or key in self._pipeline:
                    raise CompileError(f"flow of {rule.id} collides with another flow: {f}")
                touch(key)
                self._hard[key] = f
            placed.hard = list(want)
            return
        n = len(dims)
        conjs = [Conjunction(cid, k, n) for k in range(1, n + 1)]
        # dims are canonical (flows.matches), so (table, priority, match) is the flow's key
        clauses = [((table, prio, m), conjs[k]) for k, dim in enumerate(dims) for m in dim]
        want_c, have_c = set(clauses), set(old.clauses)
        for key, c in have_c - want_c:
            touch(key)
            self._built.pop(key, None)
            conjs = self._clauses[key]
            conjs.discard(c)
            if not conjs:
                del self._clauses[key]
        for key, c in want_c - have_c:
            if key in self._hard:
                raise CompileError(f"clause flow of {rule.id} collides with a rule flow: "
                                   f"{Flow(table, prio, key[2])}")
            touch(key)
            self._built.pop(key, None)
            self._clauses[key].add(c)
        placed.clauses = clauses
        placed.hard = old.hard  # the conj_id flow: same priority, conj id and cookie

    def _emit(self, placed: _Placed, dims: list[list[tuple[Match, ...]]], kind: str, touch) -> None:
        rule, cid, prio = placed.rule, placed.conj_id, placed.priority
        placed.kind, placed.n_dims = kind, len(dims)
        self._placed[rule.id] = placed
        if rule.matches_nothing:
            return
        table = P.INGRESS_RULE if rule.direction == INGRESS else P.EGRESS_RULE
        nxt = P.CONNTRACK_COMMIT if rule.direction == INGRESS else P.INGRESS_RULE
        reg = P.REG_INGRESS_CONJ if rule.direction == INGRESS else P.REG_EGRESS_CONJ
        cookie = rule_cookie(rule.id)
        allow = (Load(cid, FieldRef(reg)), GotoTable(nxt))

        def hard(f: Flow) -> None:
            P.check_flow(f)
            if f.key in self._hard or self._clauses.get(f.key) or f.key in self._pipeline:
                raise CompileError(f"flow of {rule.id} collides with another flow: {f}")
            touch(f.key)
            self._hard[f.key] = f
            placed.hard.append(f.key)

        if kind == "plain":
            # One dimension, or a product no bigger than the conjunction: plain flows.
            for m in (dims[0] if len(dims) == 1 else _combinations(dims)):
                hard(Flow(table, prio, m, allow, cookie))
            return
        n = len(dims)
        hard_keys, clauses, built = self._hard, self._clauses, self._built
        for k, dim in enumerate(dims, 1):
            c = Conjunction(cid, k, n)
            for m in dim:
                key = (table, prio, m)  # dims are canonical (flows.matches): the flow's key
                if key in hard_keys:
                    raise CompileError(f"clause flow of {rule.id} collides with a rule flow: "
                                       f"{Flow(table, prio, m)}")
                touch(key)
                built.pop(key, None)
                clauses[key].add(c)
                placed.clauses.append((key, c))
        hard(Flow(table, prio, (Match("conj_id", cid),), allow, cookie))


def _signature(rule: Rule) -> tuple:
    """What a scoped rule matches, without its identity: rules with equal signatures are
    interchangeable on the bridge."""
    return (rule.direction, rule.targets, rule.peers, rule.ports)


def _conj_order(c: Conjunction) -> tuple[int, int, int]:
    """Conjunction's own order (its fields in turn), as a key: faster than its __lt__."""
    return (c.id, c.clause, c.n_clauses)


def _product(dims: list[list]) -> int:
    n = 1
    for d in dims:
        n *= len(d)
    return n


def _combinations(dims: list[list[tuple[Match, ...]]]) -> list[tuple[Match, ...]]:
    """Every combination of one match per dimension, merged; combinations that cannot match
    (an IPv4 address with an IPv6 port match) are left out. The matches of one dimension are
    disjoint, so the combined flows are too."""
    out: list[dict[str, Match]] = [{}]
    for dim in dims:
        nxt = []
        for partial in out:
            for match in dim:
                merged = dict(partial)
                if all(merged.setdefault(m.field, m) == m for m in match):
                    nxt.append(merged)
        out = nxt
    return [tuple(m.values()) for m in out]


def compile_bridge(bridge: Bridge, rules: Sequence[Rule], isolation: Sequence[Isolation],
                   previous: Program | None = None) -> Program:
    """Compile the tables of one bridge. `previous` (the last program installed on it) keeps
    priorities and conj ids of unchanged rules stable; without it the result depends on the
    input alone, byte for byte."""
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise CompileError("duplicate rule ids")
    compiler = BridgeCompiler(bridge, previous)
    compiler.update(upsert=rules, isolate=isolation, diff=False)
    return compiler.program()


def cross_product_count(rules: Sequence[Rule]) -> int:
    """How many flows the naive encoding (one flow per peer x target x port match) needs."""
    total = 0
    for r in rules:
        if r.matches_nothing:
            continue
        peers = 1 if r.peers is None else len(r.peers)
        ports = 1 if r.ports is None else len(port_matches(r.ports, families(r.targets)))
        total += peers * len(r.targets) * ports
    return total


__all__ = ["Program", "RuleInfo", "CompileError", "BridgeCompiler", "compile_bridge", "scope_rule",
           "scope_rules", "assign_priorities", "assign_conj_ids", "provably_disjoint", "port_matches",
           "address_match", "cross_product_count", "sorted_flows", "full_mask", "stable_hash"]
