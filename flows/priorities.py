"""Priority levels and conj ids for rules.

OVS leaves overlapping conjunctions at one priority undefined (ovs-fields(7), "Conjunctive
match fields"), so a rule shares its priority level only with rules provably disjoint from it
(applied-to addresses, peers or ports); rules that share a level share their address and port
flows. Conj ids are a hash of the rule's identity, probed on collision.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from flows.addrset import intervals_overlap
from flows.ir import Rule, RuleId

RULE_PRIORITY_TOP = 60000
RULE_PRIORITY_FLOOR = 1000
N_LEVELS = RULE_PRIORITY_TOP - RULE_PRIORITY_FLOOR + 1
SHARE_CANDIDATES = 8  # levels tried for sharing before taking a fresh one


class CompileError(ValueError):
    pass


def stable_hash(text: str, bits: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") & (
        (1 << bits) - 1)


def provably_disjoint(a: Rule, b: Rule) -> bool:
    """True if no packet can match both rules (so they may share a priority)."""
    if a.targets.isdisjoint(b.targets):
        return True
    # ports before peers: a few intervals against a walk of two address sets
    a_ports, b_ports = a.port_set, b.port_set  # None: any port
    if a_ports is not None and b_ports is not None and not intervals_overlap(a_ports, b_ports):
        return True
    a_peers, b_peers = a.peer_set, b.peer_set  # None: any peer
    return a_peers is not None and b_peers is not None and a_peers.isdisjoint(b_peers)


class PeerIndex:
    """The peer addresses of the rules at one level, bucketed by /28 (IPv6: /64), so the rules
    whose peers may overlap a new rule's are found by looking up its own addresses instead of
    walking every other rule's peer set (S5: 100 rules on the same pods, each with 50 peers).
    Intervals spanning more than WIDE buckets are kept in a list checked one by one."""

    SHIFT: ClassVar[dict[int, int]] = {4: 4, 6: 64}
    WIDE = 16

    def __init__(self):
        # bucket -> the rules with peers in it, by identity: (rule, its intervals there), so a
        # rule leaves a bucket in one step however many rules share it (S3: hundreds)
        self.buckets: dict[tuple[int, int], dict[int, tuple[Rule, list[tuple[int, int]]]]] = defaultdict(dict)
        self.wide: list[tuple[int, int, int, Rule]] = []  # (family, lo, hi, rule)
        self.any: list[Rule] = []  # rules without peers: they overlap every rule

    @classmethod
    def _intervals(cls, rule: Rule):
        ps = rule.peer_set
        if ps is None:  # any peer: such rules go to `any`, never here
            return
        for fam, ivs in ((4, ps.v4), (6, ps.v6)):
            shift = cls.SHIFT[fam]
            for lo, hi in ivs:
                yield fam, lo, hi, lo >> shift, hi >> shift

    @classmethod
    def narrow(cls, rule: Rule) -> bool:
        """True if every peer interval of the rule falls into a few buckets (then `overlapping`
        answers by lookups alone)."""
        return rule.peers is not None and all(
            b1 - b0 < cls.WIDE for _, _, _, b0, b1 in cls._intervals(rule))

    def add(self, rule: Rule) -> None:
        if rule.peers is None:
            self.any.append(rule)
            return
        for fam, lo, hi, b0, b1 in self._intervals(rule):
            if b1 - b0 < self.WIDE:
                for b in range(b0, b1 + 1):
                    bucket = self.buckets[(fam, b)]
                    entry = bucket.get(id(rule))
                    if entry is None:
                        bucket[id(rule)] = (rule, [(lo, hi)])
                    else:
                        entry[1].append((lo, hi))
            else:
                self.wide.append((fam, lo, hi, rule))

    def remove(self, rule: Rule) -> None:
        if rule.peers is None:
            self.any = [r for r in self.any if r is not rule]
            return
        for fam, _lo, _hi, b0, b1 in self._intervals(rule):
            if b1 - b0 < self.WIDE:
                for b in range(b0, b1 + 1):
                    bucket = self.buckets.get((fam, b))
                    if bucket is not None and bucket.pop(id(rule), None) is not None and not bucket:
                        del self.buckets[(fam, b)]
        self.wide = [w for w in self.wide if w[3] is not rule]

    def overlapping(self, rule: Rule):
        """The rules whose peers may overlap `rule`'s (a narrow rule with peers), possibly
        repeated: every rule without peers, and every rule sharing a peer address."""
        yield from self.any
        wide, buckets = self.wide, self.buckets
        for fam, lo, hi, b0, b1 in self._intervals(rule):
            for f, wlo, whi, other in wide:
                if f == fam and wlo <= hi and lo <= whi:
                    yield other
            for b in range(b0, b1 + 1):
                for other, intervals in buckets.get((fam, b), _NO_RULES).values():
                    for elo, ehi in intervals:
                        if elo <= hi and lo <= ehi:
                            yield other
                            break


_NO_RULES: dict = {}


class Levels:
    """Priority levels of one table; each level holds rules that are pairwise disjoint.

    Level 0 is priority RULE_PRIORITY_TOP, level 1 the one below, and so on.
    """

    def __init__(self, n_levels: int = N_LEVELS):
        self.n_levels = n_levels
        self.at: dict[int, dict[str, list[Rule]]] = defaultdict(lambda: defaultdict(list))
        # Built for a level the first time many rules there share pods with a new rule, then
        # kept up to date (most levels never need one: their rules share few pods).
        self.peers: dict[int, PeerIndex] = {}
        self.high_water: dict[str, int] = {}
        self.by_targets: dict[frozenset[str], Counter] = defaultdict(Counter)

    def fits(self, level: int, rule: Rule) -> bool:
        """Room for `rule` at `level`: disjoint from every rule there. Few rules on its pods:
        each is checked in turn; many: only those its peer index says may share a peer."""
        if not 0 <= level < self.n_levels:
            return False
        index = self.at.get(level)
        if not index:
            return True
        lists = [index[t] for t in rule.targets if t in index]
        if sum(len(x) for x in lists) > 4 and PeerIndex.narrow(rule):
            candidates = self._peer_index(level).overlapping(rule)
        else:
            candidates = (other for lst in lists for other in lst)
        seen: set[int] = set()
        for other in candidates:
            if id(other) not in seen:
                seen.add(id(other))
                if not provably_disjoint(rule, other):
                    return False
        return True

    def _peer_index(self, level: int) -> PeerIndex:
        idx = self.peers.get(level)
        if idx is None:
            idx = self.peers[level] = PeerIndex()
            seen: set[int] = set()
            for lst in self.at[level].values():
                for other in lst:
                    if id(other) not in seen:
                        seen.add(id(other))
                        idx.add(other)
        return idx

    def place(self, level: int, rule: Rule) -> None:
        index = self.at[level]
        for t in rule.targets:
            index[t].append(rule)
            if self.high_water.get(t, 0) <= level:
                self.high_water[t] = level + 1
        if level in self.peers:
            self.peers[level].add(rule)
        self.by_targets[rule.targets][level] += 1

    def remove(self, level: int, rule: Rule) -> None:
        """Take a placed rule out. High-water marks stay (they only bound where new rules go)."""
        index = self.at[level]
        for t in rule.targets:
            lst = index[t]
            lst[:] = [r for r in lst if r is not rule]
            if not lst:
                del index[t]
        if not index:
            del self.at[level]
            self.peers.pop(level, None)
        elif level in self.peers:
            self.peers[level].remove(rule)
        counts = self.by_targets[rule.targets]
        counts[level] -= 1
        if counts[level] <= 0:
            del counts[level]
        if not counts:
            del self.by_targets[rule.targets]

    def choose(self, rule: Rule) -> int:
        for level in sorted(self.by_targets.get(rule.targets, ()))[:SHARE_CANDIDATES]:
            if self.fits(level, rule):
                return level
        level = max((self.high_water.get(t, 0) for t in rule.targets), default=0)
        while level < self.n_levels and not self.fits(level, rule):
            level += 1
        if level >= self.n_levels:
            raise CompileError(
                f"more than {self.n_levels} overlapping rules in one table; cannot give each "
                f"its own priority (rule {rule.id})")
        return level


def priority_of(level: int) -> int:
    return RULE_PRIORITY_TOP - level


def level_of(priority: int) -> int:
    return RULE_PRIORITY_TOP - priority


def place_in_levels(levels_of: Callable[[Rule], Levels], wanted: Sequence[tuple[Rule, int | None]]
                    ) -> dict[RuleId, int]:
    """A priority per rule, taken in the given order: the wanted one while its level has room
    for the rule, then, for the others, a level chosen for each (in `levels_of(rule)`)."""
    out: dict[RuleId, int] = {}
    homeless = []
    for rule, prio in wanted:
        levels = levels_of(rule)
        if prio is not None and levels.fits(level_of(prio), rule):
            levels.place(level_of(prio), rule)
            out[rule.id] = prio
        else:
            homeless.append(rule)
    for rule in homeless:
        levels = levels_of(rule)
        level = levels.choose(rule)
        levels.place(level, rule)
        out[rule.id] = priority_of(level)
    return out


def take_conj_ids(used: set[int], wanted: Sequence[tuple[RuleId, int | None]]) -> dict[RuleId, int]:
    """A conj id per rule, taken in the given order and added to `used`: the wanted one if
    free, then, for the others, a probed hash."""
    out: dict[RuleId, int] = {}
    for rid, cid in wanted:
        if cid is not None and cid not in used:
            out[rid] = cid
            used.add(cid)
    for rid, _ in wanted:
        if rid not in out:
            out[rid] = probe_conj_id(rid, used)
            used.add(out[rid])
    return out


def assign_priorities(rules: Sequence[Rule], hint: dict[RuleId, int] | None = None) -> dict[RuleId, int]:
    """Priority per rule of one table. Rules keep their hinted priority while it stays valid,
    so unchanged rules keep their flows across recompiles."""
    levels = Levels()
    return place_in_levels(lambda _: levels, [(r, (hint or {}).get(r.id)) for r in sorted(rules, key=lambda r: r.id)])


def assign_conj_ids(ids: Iterable[RuleId], hint: dict[RuleId, int] | None = None) -> dict[RuleId, int]:
    """A 32-bit conj id per rule, unique on the bridge: a hash of the rule's identity, probed
    on collision in a stable order."""
    return take_conj_ids(set(), [(rid, (hint or {}).get(rid)) for rid in sorted(set(ids))])


def probe_conj_id(rid: RuleId, used: set[int]) -> int:
    """The rule's hashed conj id, or the next free one after it (never 0)."""
    cid = stable_hash(str(rid), 32) or 1
    while cid in used or cid == 0:
        cid = (cid + 1) & 0xFFFFFFFF
    return cid
