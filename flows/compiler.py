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
from typing import Iterable, Sequence

from flows import pipeline as P
from flows.base_flows import pipeline_flows
from flows.bulk import gc_paused
from flows.encoding import encoding, rule_dims, signature
from flows.fields import full_mask
from flows.flow import Flow, FlowDiff, sorted_by_key
from flows.ir import EGRESS, INGRESS, Bridge, Isolation, Rule, RuleId
from flows.matches import address_match, families, port_matches
from flows.priorities import (
    CompileError, Levels, assign_conj_ids, assign_priorities, level_of, priority_of,
    probe_conj_id, provably_disjoint, stable_hash,
)
from flows.program import (
    Program, RuleInfo, default_cookie, describe_rule, rule_cookie, rule_digest, sorted_flows,
)
from flows.scope import scope_rule, scope_rules
from flows.table import Key, Placed, RuleFlows


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
        self._placed: dict[RuleId, Placed] = {}
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
        self._flows = RuleFlows(self._pipeline)
        self._local = bridge.local_addresses
        self._set_pipeline()

    # ---- reading -------------------------------------------------------------------------

    def flow(self, key: Key) -> Flow | None:
        f = self._flows.flow(key)
        if f is not None:
            return f
        if key in self._defaults:
            return self._defaults[key][0]
        return self._pipeline.get(key)

    def keys(self) -> set[Key]:
        return self._flows.keys() | self._pipeline.keys() | self._defaults.keys()

    @gc_paused()
    def program(self) -> Program:
        flows = [self.flow(k) for k in self.keys()]
        infos = [p.info() for p in self._placed.values()]
        for rid, s in self._aliases.items():
            lead = self._placed[self._members[self._sig_of[rid]][0]]
            infos.append(RuleInfo(rid, lead.conj_id, lead.table, lead.priority, rule_cookie(rid),
                                  describe_rule(s), not s.matches_nothing, rule_digest(s), lead.rule.id))
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
            return None

        def touch(key: Key) -> None:
            if key not in before:
                before[key] = self.flow(key)
        return touch

    @gc_paused()
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
        every = self.bridge.mode == "fabric"
        local = self._local if self.bridge.mode == "host" else frozenset()
        everything, default_of = self._all_isolation, self._default_of
        for iso in isolate:
            key = (iso.direction, iso.address)
            everything[key] = iso
            if every or iso.address in local or key in default_of:  # most are other bridges' pods
                self._set_default(key, iso, touch)
        return None if before is None else self._diff(before)

    @gc_paused()
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
        return FlowDiff(sorted_by_key(add), sorted_by_key(modify), sorted_by_key(delete))

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
            if touch:
                touch(old)
            del self._defaults[old]
        if iso is None or not self._enforces(iso):
            return
        direction, address = key
        side = "src" if direction == EGRESS else "dst"
        table = P.EGRESS_DEFAULT if direction == EGRESS else P.INGRESS_DEFAULT
        f = Flow(table, 200, address_match(address, side), (), default_cookie(iso))
        P.check_flow(f)
        if touch:
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
        retired: dict[RuleId, Placed] = {}
        work = [(rid, None) for rid in deleted] + [(rule.id, rule) for rule in rules]
        for rid, rule in work:
            s = None if rule is None else scope_rule(self.bridge, rule, self._local)
            sig = None if s is None else signature(s)
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
                    self._flows.drop(retired.pop(rid), touch)
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
            self._flows.drop(retired.pop(rid), touch)
        scoped = list(scoped.values())
        if not scoped:
            return
        # Priorities: earlier placements and hints of unchanged rules first, then hints of
        # changed rules, then the rest (each group in rule order).
        dims = {s.id: rule_dims(s, (retired[s.id].rule, retired[s.id].dims) if s.id in retired else None)
                for s, _ in scoped}
        kinds = {s.id: encoding(s, dims[s.id]) for s, _ in scoped}

        def order(item):
            s, prev = item
            hint = self._hint_digest.get(s.id)
            unchanged = prev is not None or (hint is not None and hint == rule_digest(s))
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
        patch: dict[RuleId, Placed] = {}
        for s, _ in scoped:
            old = retired.get(s.id)
            if old is None:
                continue
            if ((prios[s.id], conj[s.id], kinds[s.id], len(dims[s.id]))
                    == (old.priority, old.conj_id, old.kind, old.n_dims)
                    and not s.matches_nothing and not old.rule.matches_nothing):
                patch[s.id] = old
            else:
                self._flows.drop(old, touch)
        for s, _ in sorted(scoped, key=lambda x: x[0].id):
            placed = self._placed[s.id] = Placed(s, conj[s.id], prios[s.id])
            old = patch.get(s.id)
            if old is None:
                self._flows.emit(placed, dims[s.id], kinds[s.id], touch)
            else:
                self._flows.patch(old, placed, dims[s.id], kinds[s.id], touch)

    def _retire(self, rid: RuleId) -> Placed | None:
        """Take a rule out of its level and conj id; its flows stay (see _drop_flows)."""
        placed = self._placed.pop(rid, None)
        if placed is not None:
            self._levels[placed.rule.direction].remove(level_of(placed.priority), placed.rule)
            self._conj_used.discard(placed.conj_id)
        return placed

    def _unplace(self, rid: RuleId, touch) -> None:
        placed = self._retire(rid)
        if placed is not None:
            self._flows.drop(placed, touch)

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
