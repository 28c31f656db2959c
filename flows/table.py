"""The flows placed rules put into the rule tables, kept per flow key so rules can come and go.

A rule written as plain flows owns its flows; a rule written as a conjunction adds one
conjunction action per clause to clause flows it shares with every other rule of its priority
that matches the same addresses or ports. What a placed rule contributed is recomputed from its
dimensions (flows.encoding.rule_dims) when it leaves, so nothing per clause action is stored
beyond the action itself: S3 puts ~320k conjunction actions on ~24k clause flows of one bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from flows import pipeline as P
from flows.encoding import Dims, combinations
from flows.fields import FieldRef
from flows.flow import Conjunction, Flow, GotoTable, Load, Match
from flows.ir import INGRESS, Rule
from flows.priorities import CompileError
from flows.program import CLAUSE_COOKIE, RuleInfo, describe_rule, rule_cookie, rule_digest
from flows.recheck import rule_token

Key = tuple  # (table, priority, match)
Touch = Callable[[Key], None] | None  # records a key's flow before its first change (or None)
_EMPTY: dict = {}


@dataclass
class Placed:
    """A rule as placed on one bridge: its priority, conj id, and how it is written."""

    rule: Rule  # as scoped to this bridge
    conj_id: int
    priority: int
    hard: list[Key] = field(default_factory=list)  # plain flows, or the conj_id flow
    dims: Dims = field(default_factory=list)  # clause matches per dimension (conjunctions)
    kind: str = ""  # encoding(): "conj" or "plain"
    n_dims: int = 0
    token: int = 0  # its share of the rule tables' generation (flows/recheck.py)

    @property
    def table(self) -> int:
        return P.INGRESS_RULE if self.rule.direction == INGRESS else P.EGRESS_RULE

    def info(self) -> RuleInfo:
        return RuleInfo(self.rule.id, self.conj_id, self.table, self.priority, rule_cookie(self.rule.id),
                        describe_rule(self.rule), not self.rule.matches_nothing, rule_digest(self.rule))

    def set_token(self) -> int:
        """Its share of the rule tables' generation: what it matches, where it is placed."""
        self.token = rule_token(f"{self.rule.direction}|{self.priority}|{self.conj_id}|{rule_digest(self.rule)}")
        return self.token

    def clause_actions(self) -> list[tuple[Key, Conjunction]]:
        """Every (clause flow key, conjunction action) this rule contributes."""
        table, prio, n = self.table, self.priority, len(self.dims)
        out = []
        for k, dim in enumerate(self.dims, 1):
            c = Conjunction(self.conj_id, k, n)
            out += [((table, prio, m), c) for m in dim]
        return out


class Joining(NamedTuple):
    """What a patched rule puts in once every rule of its batch has taken out what leaves:
    plain flows, and (clause match, conjunction action) pairs."""

    hard: list[Flow]
    clauses: list[tuple[tuple, Conjunction]]


def _allow(placed: Placed) -> tuple:
    """The actions of a rule's allowing flows: its conj id into the register, then onward."""
    ingress = placed.rule.direction == INGRESS
    reg = P.REG_INGRESS_CONJ if ingress else P.REG_EGRESS_CONJ
    nxt = P.CONNTRACK_COMMIT if ingress else P.INGRESS_RULE
    return (Load(placed.conj_id, FieldRef(reg)), GotoTable(nxt))


def _peer_changes(was_peers: tuple[str, ...], was: list, peers: tuple[str, ...], now: list) -> tuple[list, list]:
    """The matches that left and joined a peers dimension (`was` made from `was_peers`, `now`
    from `peers`), found on the peers' text: strings keep their hash, match tuples are hashed
    anew each time. Only for peers made from address sets: canonical CIDRs, one per match."""
    before, after = set(was_peers), set(peers)
    gone, new = before - after, after - before
    left = list(map(dict(zip(was_peers, was)).__getitem__, gone)) if gone else []
    joined = list(map(dict(zip(peers, now)).__getitem__, new)) if new else []
    return left, joined


class RuleFlows:
    """Plain flows, and clause flows as the set of conjunction actions on them, by (table,
    priority), then match: adding a rule's clause actions looks its matches up without
    building a key per action. `taken` holds the keys of flows of other origins (pipeline) a
    rule must not collide with."""

    def __init__(self, taken: dict[Key, Flow]):
        self.taken = taken
        self.hard: dict[tuple[int, int], dict[tuple, Flow]] = {}
        self.clauses: dict[tuple[int, int], dict[tuple, set[Conjunction]]] = {}
        self.built: dict[tuple[int, int], dict[tuple, Flow]] = {}  # clause flows as last built

    def flow(self, key: Key) -> Flow | None:
        at = (key[0], key[1])
        f = self.hard.get(at, _EMPTY).get(key[2])
        if f is not None:
            return f
        conjs = self.clauses.get(at, _EMPTY).get(key[2])
        if not conjs:
            return None
        built = self.built.setdefault(at, {})
        f = built.get(key[2])
        if f is None:
            f = built[key[2]] = Flow(key[0], key[1], key[2], tuple(sorted(conjs)), CLAUSE_COOKIE)
        return f

    def keys(self) -> set[Key]:
        return {(t, p, m) for d in (self.hard, self.clauses) for (t, p), at in d.items() for m in at}

    # ---- writing ---------------------------------------------------------------------------

    def _add_hard(self, placed: Placed, f: Flow, touch: Touch) -> None:
        P.check_flow(f)
        key, at = f.key, (f.table, f.priority)
        if f.match in self.hard.get(at, _EMPTY) or f.match in self.clauses.get(at, _EMPTY) or key in self.taken:
            raise CompileError(f"flow of {placed.rule.id} collides with another flow: {f}")
        if touch:
            touch(key)
        self.hard.setdefault(at, {})[f.match] = f
        placed.hard.append(key)

    def _del_hard(self, key: Key, touch: Touch) -> None:
        if touch:
            touch(key)
        at = (key[0], key[1])
        level = self.hard[at]
        del level[key[2]]
        if not level:
            del self.hard[at]

    def _add_clauses(self, placed: Placed, k: int, dim: list[tuple], touch: Touch) -> None:
        c = Conjunction(placed.conj_id, k, len(placed.dims))
        table, prio = at = (placed.table, placed.priority)
        hard = self.hard.get(at)
        if hard and not hard.keys().isdisjoint(dim):
            m = next(m for m in dim if m in hard)
            raise CompileError(f"clause flow of {placed.rule.id} collides with a rule flow: "
                               f"{Flow(table, prio, m)}")
        if touch:
            for m in dim:
                touch((table, prio, m))
        built = self.built.get(at)
        if built:
            for m in dim:
                built.pop(m, None)
        level = self.clauses.get(at)
        if level is None:
            level = self.clauses[at] = {}
        for m in dim:
            conjs = level.get(m)
            if conjs is None:
                level[m] = {c}
            else:
                conjs.add(c)

    def _remove_clause(self, key: Key, c: Conjunction, touch: Touch) -> None:
        if touch:
            touch(key)
        at, m = (key[0], key[1]), key[2]
        self.built.get(at, {}).pop(m, None)
        level = self.clauses[at]
        conjs = level[m]
        conjs.discard(c)
        if not conjs:
            del level[m]
            if not level:
                del self.clauses[at]

    def emit(self, placed: Placed, dims: Dims, kind: str, touch: Touch) -> None:
        """Write a rule's flows: plain flows (one dimension, or a product no bigger than the
        conjunction), or its clause actions and its conj_id flow."""
        rule, prio, table = placed.rule, placed.priority, placed.table
        placed.kind, placed.n_dims = kind, len(dims)
        if rule.matches_nothing:
            return
        allow, cookie = _allow(placed), rule_cookie(rule.id)
        if kind == "plain":
            for m in (dims[0] if len(dims) == 1 else combinations(dims)):
                self._add_hard(placed, Flow(table, prio, m, allow, cookie), touch)
            return
        placed.dims = dims
        for k, dim in enumerate(dims, 1):
            # dims are canonical (flows.matches): (table, priority, match) is the flow's key
            self._add_clauses(placed, k, dim, touch)
        self._add_hard(placed, Flow(table, prio, (Match("conj_id", placed.conj_id),), allow, cookie),
                       touch)

    def drop(self, placed: Placed, touch: Touch) -> None:
        """Take every flow and clause action of a rule out."""
        for key in placed.hard:
            self._del_hard(key, touch)
        for key, c in placed.clause_actions():
            self._remove_clause(key, c, touch)

    def patch_out(self, old: Placed, placed: Placed, dims: Dims, kind: str, touch: Touch) -> Joining:
        """The first half of turning `old`'s flows into those `emit(placed, ...)` would write
        (same priority, conj id, encoding and number of dimensions), touching only the flows
        that differ: take out what leaves, and return what joins, for `patch_in`. Every rule
        of a batch takes out before any rule puts in: a flow one rule leaves may be one that
        another rule of the batch gets."""
        rule, prio, table = placed.rule, placed.priority, placed.table
        placed.kind, placed.n_dims = kind, len(dims)
        if kind == "plain":
            allow, cookie = _allow(placed), rule_cookie(rule.id)
            want = {}
            for m in (dims[0] if len(dims) == 1 else combinations(dims)):
                f = Flow(table, prio, m, allow, cookie)
                want[f.key] = f
            have = set(old.hard)
            for key in have - want.keys():
                self._del_hard(key, touch)
            placed.hard = [key for key in old.hard if key in want]
            return Joining([want[key] for key in want.keys() - have], [])
        placed.dims = dims
        placed.hard = old.hard  # the conj_id flow: same priority, conj id and cookie
        # Dimension k keeps its conjunction action: only the matches that left or joined it change.
        clauses = []
        for k, (was, now) in enumerate(zip(old.dims, dims), 1):
            c = Conjunction(placed.conj_id, k, len(dims))
            was_peers, peers = old.rule.peers, rule.peers
            if k == 1 and was_peers is not None and peers is not None \
                    and old.rule.made_peer_set() is not None and rule.made_peer_set() is not None:
                left, joined = _peer_changes(was_peers, was, peers, now)
            else:
                was_set, now_set = set(was), set(now)
                left, joined = list(was_set - now_set), list(now_set - was_set)
            for m in left:
                self._remove_clause((table, prio, m), c, touch)
            clauses += [(m, c) for m in joined]
        return Joining([], clauses)

    def patch_in(self, placed: Placed, joining: Joining, touch: Touch) -> None:
        """The second half of a patch: put in the flows and clause actions that join."""
        for f in joining.hard:
            self._add_hard(placed, f, touch)
        table, prio = at = (placed.table, placed.priority)
        for m, c in joining.clauses:
            if m in self.hard.get(at, _EMPTY):
                raise CompileError(f"clause flow of {placed.rule.id} collides with a rule flow: "
                                   f"{Flow(table, prio, m)}")
            if touch:
                touch((table, prio, m))
            self.built.get(at, {}).pop(m, None)
            self.clauses.setdefault(at, {}).setdefault(m, set()).add(c)


__all__ = ["Joining", "Key", "Placed", "RuleFlows"]
