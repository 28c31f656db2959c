"""Addresses and ports as OpenFlow matches."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Iterable, Sequence

from flows.fields import ETH_IP, ETH_IPV6
from flows.flow import Match
from flows.ir import PortRange
from flows.ports import merge_ranges, range_to_masks


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


def families(addresses: Iterable[str]) -> set[int]:
    return {_net(a).version for a in addresses}
