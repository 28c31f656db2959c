"""Which part of a rule a bridge enforces: host bridges the rules of their own pods, fabric
switches every rule; peers normalised to the targets' address families."""

from __future__ import annotations

from collections.abc import Sequence

from flows.addrset import AddressSet
from flows.ir import Bridge, Isolation, Rule
from flows.matches import families


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
    peers = normal_peers(rule.peers, families(t), rule.made_peer_set())
    if t == rule.targets and peers == rule.peers:
        return rule
    return rule.narrowed(frozenset(t), peers)


_FULL = {4: "0.0.0.0/0", 6: "::/0"}
_FULL_INTERVALS = {4: ((0, (1 << 32) - 1),), 6: ((0, (1 << 128) - 1),)}


def normal_peers(peers: tuple[str, ...] | None, fams: set[int],
                 peer_set: AddressSet | None = None) -> tuple[str, ...] | None:
    """Peers that can meet the targets: a source and a destination share an address family,
    so peers of another family never match (kept out: as clause flows they would only cost
    flows); peers that are the whole address space of every target family are no constraint
    at all (None), which keeps every flow of a small rule carrying each of its dimensions.
    `peer_set`, the same peers as an address set when the rule has it, answers both
    questions without reading the text of every peer (thousands for a selector spanning
    every namespace)."""
    if peers is None:
        return None
    if peer_set is not None:
        present = {f for f, ivs in ((4, peer_set.v4), (6, peer_set.v6)) if ivs}
        if present <= fams:
            full = fams and all((peer_set.v4 if f == 4 else peer_set.v6) == _FULL_INTERVALS[f] for f in fams)
            return None if full else peers
    kept = tuple(p for p in peers if (6 if ":" in p else 4) in fams)
    if fams and all(_FULL[f] in kept for f in fams):
        return None
    return peers if len(kept) == len(peers) else kept


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
