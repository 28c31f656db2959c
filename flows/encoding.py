"""How a rule becomes matches: its dimensions (peers, applied-to addresses, ports), and
whether a conjunction or plain flows are the smaller encoding."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from flows.flow import Match
from flows.ir import INGRESS, PortRange, Rule
from flows.matches import address_match, families, port_matches

Dims = list[list[tuple[Match, ...]]]


def rule_dims(rule: Rule, before: tuple[Rule, Dims] | None = None) -> Dims:
    """The matches of each dimension of a rule, in clause order: peers (if any), applied-to
    addresses, ports (if any). `before`: an earlier version of the rule and its dimensions
    (empty if it was not a conjunction), whose peer matches are reused: a peer set of
    thousands that gained or lost an address costs one match made, not thousands looked up."""
    tside, pside = ("dst", "src") if rule.direction == INGRESS else ("src", "dst")
    dims: Dims = []
    if rule.peers is not None:
        known = None
        if before is not None and before[1] and before[0].peers is not None \
                and before[0].direction == rule.direction:
            known = dict(zip(before[0].peers, before[1][0]))
        dims.append(_address_dim(rule.peers, pside, known))
    dims.append([address_match(t, tside) for t in sorted(rule.targets)])
    if rule.ports is not None:
        dims.append(_port_matches(rule.ports, tuple(sorted(families(rule.targets)))))
    return dims


def _address_dim(cidrs: tuple[str, ...], side: str, known: dict[str, tuple[Match, ...]] | None
                 ) -> list[tuple[Match, ...]]:
    """The matches of addresses, taken from `known` where it has them (a C-level map, then
    the few misses found with list.index)."""
    if not known:
        return [address_match(c, side) for c in cidrs]
    dim: list = list(map(known.get, cidrs))
    i = -1
    try:
        while True:
            i = dim.index(None, i + 1)
            dim[i] = address_match(cidrs[i], side)
    except ValueError:
        return dim


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
    return "plain" if product(dims) <= sum(len(d) for d in dims) + 1 else "conj"


def signature(rule: Rule) -> tuple:
    """What a scoped rule matches, without its identity: rules with equal signatures are
    interchangeable on the bridge."""
    return (rule.direction, rule.targets, rule.peers, rule.ports)


def product(dims: list[list]) -> int:
    n = 1
    for d in dims:
        n *= len(d)
    return n


def combinations(dims: list[list[tuple[Match, ...]]]) -> list[tuple[Match, ...]]:
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
