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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from flows import pipeline as P
from flows.base_flows import GENERATION_TABLES, generation_flows, pipeline_flows
from flows.bulk import gc_paused
from flows.encoding import cross_product_count, encoding, rule_dims, signature
from flows.fields import full_mask
from flows.flow import Flow, FlowDiff, sorted_by_key
from flows.ir import EGRESS, INGRESS, Bridge, Isolation, Rule, RuleId
from flows.matches import address_match, port_matches
from flows.priorities import (
    CompileError,
    Levels,
    assign_conj_ids,
    assign_priorities,
    level_of,
    place_in_levels,
    provably_disjoint,
    stable_hash,
    take_conj_ids,
)
from flows.program import (
    Program,
    RuleInfo,
    default_cookie,
    describe_rule,
    rule_cookie,
    rule_digest,
    sorted_flows,
)
from flows.recheck import KEEP, default_token, generation
from flows.scope import scope_rule, scope_rules
from flows.table import Joining, Key, Placed, RuleFlows


class _Pending(NamedTuple):
    """A group's lead waiting for placement: its scoped rule, and the (priority, conj id) it
    held or inherits from the lead it replaces (None: none to keep)."""

    rule: Rule
    slot: tuple[int, int] | None


@dataclass
class _Batch:
    """What one `_replace` has in hand: pending leads in the order they came, and changed
    rules out of their level and conj id whose flows are still installed."""

    pending: dict[RuleId, _Pending] = field(default_factory=dict)
    retired: dict[RuleId, Placed] = field(default_factory=dict)


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
        self._pipeline_generation: int | None = None
        self._tokens = 0  # XOR of the judging tables' tokens: their generation (flows/recheck.py)
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
        flows = [f for f in map(self.flow, self.keys()) if f is not None]
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
        self._set_pipeline(touch)
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
        self._set_pipeline(touch)
        return self._diff(before)

    # ---- internals -----------------------------------------------------------------------

    def _diff(self, before: dict[Key, Flow | None]) -> FlowDiff:
        add: list[Flow] = []
        modify: list[Flow] = []
        delete: list[Flow] = []
        for key, old in before.items():
            new = self.flow(key)
            if old is None and new is not None:
                add.append(new)
            elif old is not None and new is None:
                delete.append(old)
            elif old is not None and new is not None and new != old:
                modify.append(new)
        return FlowDiff(sorted_by_key(add), sorted_by_key(modify), sorted_by_key(delete))

    def generation(self) -> int | None:
        """The judging tables' generation (flows/recheck.py); None with `keep`."""
        return None if self.bridge.existing_connections == KEEP else generation(self._tokens)

    def _set_pipeline(self, touch=None) -> None:
        """The pipeline flows when there are none; when the judging tables' generation changed,
        the flows that carry it (in the same bundle as the change)."""
        gen, enforce = self.generation(), self.bridge.mode != "fabric-node"
        if self._pipeline and (self._pipeline_generation == gen or not enforce):
            return
        if self._pipeline:
            new = generation_flows(self.bridge, gen)
            for k in [k for k in self._pipeline if k[0] in GENERATION_TABLES]:
                if touch:
                    touch(k)
                del self._pipeline[k]
        else:
            new = pipeline_flows(self.bridge, enforce, gen)
        self._pipeline_generation = gen
        for f in new:
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
            self._tokens ^= default_token(key)
        if iso is None or not self._enforces(iso):
            return
        self._tokens ^= default_token(key)
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

    # ---- replacing rules ----------------------------------------------------------------
    #
    # A batch of changed rules goes through two steps. `_regroup` takes each rule out of where
    # it was (an alias, the lead of a group, or a rule placed alone) and puts its new scoped
    # version into the group of its signature: as an alias (nothing to place) or as a lead,
    # pending placement with the (priority, conj id) slot it held or inherits. `_place` then
    # gives every pending lead a priority and conj id and writes its flows, patching the
    # flows a changed rule had when it keeps its slot and encoding.

    def _replace(self, rules: Sequence[Rule], touch, deleted: Sequence[RuleId] = ()) -> None:
        """(Re)place rules (and take out `deleted` ones): scoped anew; unchanged ones stay as
        they are; changed ones keep their level and conj id when still valid; a rule identical
        to another one becomes its alias, the first of a group in rule order being placed."""
        batch = _Batch()
        for rid in deleted:
            self._regroup(rid, None, batch, touch)
        for rule in rules:
            self._regroup(rule.id, scope_rule(self.bridge, rule, self._local), batch, touch)
        for rid in [r for r in batch.retired if r not in batch.pending]:
            self._flows.drop(batch.retired.pop(rid), touch)
        if batch.pending:
            self._place(list(batch.pending.values()), batch.retired, touch)

    def _regroup(self, rid: RuleId, scoped: Rule | None, batch: _Batch, touch) -> None:
        """Move rule `rid` to where its scoped version belongs (None: off this bridge)."""
        sig = None if scoped is None else signature(scoped)
        slot: tuple[int, int] | None
        if rid in self._aliases:
            if scoped is not None and sig == self._sig_of[rid]:  # still an alias of the same group
                self._aliases[rid] = scoped
                return
            self._leave(rid)
            slot = None
        else:
            old = self._placed.get(rid)
            if old is not None and scoped == old.rule:
                return
            slot = self._vacate(rid, old, scoped is None, batch, touch)
        if scoped is not None and sig is not None:
            self._join(rid, scoped, sig, slot, batch, touch)

    def _vacate(self, rid: RuleId, old: Placed | None, gone: bool, batch: _Batch, touch
                ) -> tuple[int, int] | None:
        """Take a rule that is not an alias out of its group and placement. Returns the slot it
        may keep, or None when the next member of its group took it over (that member is then
        pending). A changed rule's flows stay, retired, until `_place` knows whether it keeps
        its slot and encoding (then only the flows that differ change)."""
        earlier = batch.pending.pop(rid, None)  # pending already in this batch
        slot = (old.priority, old.conj_id) if old else (earlier.slot if earlier else None)
        successor = None
        if rid in self._sig_of:  # it leads its group: the next member takes over
            sig = self._sig_of[rid]
            self._leave(rid)
            members = self._members.get(sig)
            if members:
                successor = members[0]
                batch.pending[successor] = _Pending(self._aliases.pop(successor), slot)
        if old is not None:
            if successor is not None or gone:
                self._unplace(rid, touch)
            else:
                self._retire(rid)
                batch.retired[rid] = old
        return None if successor is not None else slot

    def _join(self, rid: RuleId, scoped: Rule, sig: tuple, slot: tuple[int, int] | None,
              batch: _Batch, touch) -> None:
        """Put a rule into the group of its signature: an alias when a rule earlier in rule
        order leads it, else the group's lead (taking over the slot of the lead it displaces),
        pending placement."""
        members = self._members.get(sig)
        self._sig_of[rid] = sig
        if members and members[0] < rid:
            insort(members, rid)
            self._aliases[rid] = scoped
            if rid in batch.retired:
                self._flows.drop(batch.retired.pop(rid), touch)
            return
        if members:
            lead = members[0]
            placed = self._placed.get(lead)
            if placed is not None:
                slot = (placed.priority, placed.conj_id)
                self._aliases[lead] = placed.rule
                self._unplace(lead, touch)
            else:
                displaced = batch.pending.pop(lead)
                slot = displaced.slot
                self._aliases[lead] = displaced.rule
            members.insert(0, rid)
        else:
            self._members[sig] = [rid]
        batch.pending[rid] = _Pending(scoped, slot)

    def _place(self, pending: list[_Pending], retired: dict[RuleId, Placed], touch) -> None:
        """Give pending leads a priority and conj id and write their flows. Slots are kept
        while valid: the one a rule held or inherits, else its hint; unchanged rules (a slot,
        or a hint whose digest matches) are served first, each group in rule order. A retired
        rule that comes back with its slot, encoding and number of dimensions is patched (every
        patch takes out before anything is put in); otherwise it loses its flows first
        (another rule may take over their keys)."""
        def unchanged_first(p: _Pending) -> tuple:
            hint = self._hint_digest.get(p.rule.id)
            unchanged = p.slot is not None or (hint is not None and hint == rule_digest(p.rule))
            return (0 if unchanged else 1, p.rule.id)

        pending = sorted(pending, key=unchanged_first)
        prios = place_in_levels(lambda rule: self._levels[rule.direction], [
            (p.rule, p.slot[0] if p.slot else self._hint_prio.get(p.rule.id)) for p in pending])
        conjs = take_conj_ids(self._conj_used, [
            (p.rule.id, p.slot[1] if p.slot else self._hint_conj.get(p.rule.id)) for p in pending])
        dims = {p.rule.id: rule_dims(p.rule, (retired[p.rule.id].rule, retired[p.rule.id].dims)
                                     if p.rule.id in retired else None) for p in pending}
        kinds = {p.rule.id: encoding(p.rule, dims[p.rule.id]) for p in pending}
        placements = {p.rule.id: Placed(p.rule, conjs[p.rule.id], prios[p.rule.id]) for p in pending}
        joining: dict[RuleId, Joining] = {}
        for p in pending:
            rid, old = p.rule.id, retired.get(p.rule.id)
            if old is None:
                continue
            if ((prios[rid], conjs[rid], kinds[rid], len(dims[rid]))
                    == (old.priority, old.conj_id, old.kind, old.n_dims)
                    and not p.rule.matches_nothing and not old.rule.matches_nothing):
                joining[rid] = self._flows.patch_out(old, placements[rid], dims[rid], kinds[rid], touch)
            else:
                self._flows.drop(old, touch)
        for rid in sorted(placements):
            placed = self._placed[rid] = placements[rid]
            self._tokens ^= placed.set_token()
            if rid in joining:
                self._flows.patch_in(placed, joining[rid], touch)
            else:
                self._flows.emit(placed, dims[rid], kinds[rid], touch)

    def _retire(self, rid: RuleId) -> Placed | None:
        """Take a rule out of its level and conj id; its flows stay (see `_vacate`)."""
        placed = self._placed.pop(rid, None)
        if placed is not None:
            self._tokens ^= placed.token
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


__all__ = [
    "BridgeCompiler",
    "CompileError",
    "Program",
    "RuleInfo",
    "address_match",
    "assign_conj_ids",
    "assign_priorities",
    "compile_bridge",
    "cross_product_count",
    "full_mask",
    "port_matches",
    "provably_disjoint",
    "scope_rule",
    "scope_rules",
    "sorted_flows",
    "stable_hash",
]
