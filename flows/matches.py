"""Addresses and ports as OpenFlow matches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache

from flows.addrset import parse_cidr
from flows.fields import ETH_IP, ETH_IPV6, ORDER
from flows.flow import Match
from flows.ir import PortRange
from flows.ports import merge_ranges, range_to_masks


def canonical(match: Iterable[Match]) -> tuple[Match, ...]:
    """Match fields in the order a Flow keeps them, so (table, priority, match) is its key
    without building the Flow."""
    return tuple(sorted(match, key=lambda m: (ORDER[m.field], m._key())))


@lru_cache(maxsize=1 << 18)
def address_match(cidr: str, side: str) -> tuple[Match, ...]:
    """Match an address or CIDR as source (side 'src') or destination ('dst'), in canonical
    order (remembered: the same addresses recur in many rules)."""
    fam, lo, hi = parse_cidr(cidr)
    bits = 32 if fam == 4 else 128
    dl, name = (ETH_IP, f"nw_{side}") if fam == 4 else (ETH_IPV6, f"ipv6_{side}")
    span = hi - lo
    if span == (1 << bits) - 1:
        return (Match("dl_type", dl),)
    mask = None if span == 0 else ((1 << bits) - 1) ^ span
    return canonical((Match("dl_type", dl), Match(name, lo, mask)))


def port_matches(ports: Sequence[PortRange], families: Iterable[int] = (4,)) -> list[tuple[Match, ...]]:
    """Minimal value/mask matches for a rule's ports, per protocol and address family, each in
    canonical order."""
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
                out.append(canonical(base))
                continue
            for lo, hi in segments:
                for value, mask in range_to_masks(lo, hi):
                    m = None if mask == 0xFFFF else mask
                    out.append(canonical(base + (Match("tp_dst", value, m),)))
    return out


def families(addresses: Iterable[str]) -> set[int]:
    return {6 if ":" in a else 4 for a in addresses}
