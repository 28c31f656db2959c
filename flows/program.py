"""A compiled bridge program and the index naming every flow's origin: rule infos, cookies,
digests, and the order flows are shown in."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from flows import pipeline as P
from flows.flow import Flow, match_order
from flows.ir import INGRESS, Isolation, Rule, RuleId
from flows.priorities import stable_hash


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
    """ovs-ofctl-like order: by table, highest priority first, then match (then actions text,
    only between flows of one key: a table holds one flow per key, so rendering every
    conjunction action just to sort is skipped)."""
    flows = list(flows)
    keys = [(f.table, -f.priority, match_order(f.match)) for f in flows]
    if len(set(keys)) == len(keys):
        order = sorted(range(len(flows)), key=keys.__getitem__)
        return [flows[i] for i in order]

    def key(f: Flow) -> tuple:
        k = f.sort_key()
        return (k[0], -k[1], k[2], k[3])
    return sorted(flows, key=key)


def rule_cookie(rid: RuleId) -> int:
    return P.cookie(P.KIND_RULE, stable_hash(f"{rid.policy}|{rid.direction}|{rid.index}", 48))


def default_cookie(iso: Isolation) -> int:
    return P.cookie(P.KIND_DEFAULT, stable_hash(f"{iso.direction}|{iso.address}", 48))


CLAUSE_COOKIE = P.cookie(P.KIND_CLAUSE)


def describe_rule(rule: Rule) -> str:
    peers = "any" if rule.peers is None else f"{len(rule.peers)} cidr(s)"
    ports = "any" if rule.ports is None else ",".join(str(p) for p in rule.ports)
    return f"{len(rule.targets)} pod address(es) {'from' if rule.direction == INGRESS else 'to'} {peers} on {ports}"


def rule_digest(rule: Rule) -> str:
    """A short hash of what a rule matches (not of its identity)."""
    text = repr((sorted(rule.targets), rule.peers, None if rule.ports is None else sorted(rule.ports)))
    return f"{stable_hash(text, 48):012x}"
