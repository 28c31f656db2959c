"""Sets of IP addresses as sorted, disjoint integer intervals per address family.

Union, difference and disjointness are linear merges, and the set renders back as the fewest
CIDRs (the same prefix decomposition as port ranges). This is what peer sets and ipBlock
excepts need, at a fraction of the cost of a general IP set library.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from functools import lru_cache
from operator import itemgetter

_BITS = {4: 32, 6: 128}

Intervals = tuple[tuple[int, int], ...]


@lru_cache(maxsize=1 << 18)
def parse_cidr(text: str) -> tuple[int, int, int]:
    """'10.0.0.0/8' or '10.1.2.3' (or IPv6) -> (family, first, last). Remembered: the same
    pod addresses and CIDRs are parsed again and again as peer sets are rebuilt."""
    addr, _, plen = text.partition("/")
    if ":" in addr:
        import ipaddress
        net = ipaddress.IPv6Network(text, strict=False)
        return 6, int(net.network_address), int(net.broadcast_address)
    parts = addr.split(".")
    if len(parts) != 4:
        raise ValueError(f"bad IPv4 address {addr!r}")
    value = 0
    for p in parts:
        octet = int(p)
        if not 0 <= octet <= 255:
            raise ValueError(f"bad IPv4 address {addr!r}")
        value = (value << 8) | octet
    n = 32 if not plen else int(plen)
    if not 0 <= n <= 32:
        raise ValueError(f"bad prefix length in {text!r}")
    host = (1 << (32 - n)) - 1
    return 4, value & ~host & 0xFFFFFFFF, (value & ~host & 0xFFFFFFFF) | host


def _merge(intervals: Iterable[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _subtract(a: Intervals, b: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            if cur > hi:
                break
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return tuple(out)


def _overlap(a: Intervals, b: Intervals) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> Intervals:
    """Sorted, disjoint, coalesced intervals covering the same values."""
    return _merge(intervals)


def intervals_overlap(a: Intervals, b: Intervals) -> bool:
    """True if two sorted, disjoint interval tuples share a value (a linear merge)."""
    return _overlap(a, b)


def _to_cidrs(lo: int, hi: int, bits: int) -> list[tuple[int, int]]:
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, bits - size.bit_length() + 1))
        lo += size
    return out


def _format(family: int, value: int) -> str:
    if family == 4:
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"
    import ipaddress
    return str(ipaddress.IPv6Address(value))


def _cidr_start(cidr: str) -> tuple[int, int]:
    """(family, first address) of a CIDR: the order of `AddressSet.cidrs`."""
    family, lo, _ = parse_cidr(cidr)
    return family, lo


@lru_cache(maxsize=1 << 18)
def _host_cidr(family: int, value: int) -> str:
    """'10.0.0.5/32' for one address, remembered: pod addresses recur in every peer set that
    holds them, and equal rules then compare their peers by identity."""
    return f"{_format(family, value)}/{_BITS[family]}"


def _interval_cidrs(family: int, lo: int, hi: int) -> list[str]:
    """The fewest CIDRs covering one interval, in address order."""
    if lo == hi:  # a single address (pods): the same text object every time
        return [_host_cidr(family, lo)]
    return [f"{_format(family, value)}/{plen}" for value, plen in _to_cidrs(lo, hi, _BITS[family])]


_LO, _HI = itemgetter(0), itemgetter(1)


def _edit(ivs: Intervals, lo: int, hi: int, add: bool) -> tuple[Intervals, int, int, Intervals]:
    """`ivs` with [lo, hi] added (or taken out), found by bisection: the result, and the span
    [first, last] of values whose intervals were replaced by `put` (empty when nothing changed).
    Only the replaced intervals are touched in Python; the rest is copied as slices."""
    reach = 1 if add else 0  # an added interval also merges with the ones it touches
    i = bisect_left(ivs, lo - reach, key=_HI)  # first interval ending at or after lo
    j = bisect_right(ivs, hi + reach, key=_LO)  # first interval starting after hi
    if add:
        if i < j and ivs[i][0] <= lo and hi <= ivs[i][1]:
            return ivs, 0, -1, ()
        put: Intervals = ((min(lo, ivs[i][0]) if i < j else lo, max(hi, ivs[j - 1][1]) if i < j else hi),)
        first, last = put[0]
    else:
        if i == j:
            return ivs, 0, -1, ()
        pieces = []
        if ivs[i][0] < lo:
            pieces.append((ivs[i][0], lo - 1))
        if ivs[j - 1][1] > hi:
            pieces.append((hi + 1, ivs[j - 1][1]))
        put = tuple(pieces)
        first, last = ivs[i][0], ivs[j - 1][1]
    return ivs[:i] + put + ivs[j:], first, last, put


class AddressSet:
    """An immutable set of IPv4 and IPv6 addresses."""

    __slots__ = ("_cidrs", "_hash", "v4", "v6")

    def __init__(self, v4: Intervals = (), v6: Intervals = ()):
        self.v4, self.v6 = v4, v6
        self._hash: int | None = None
        self._cidrs: tuple[str, ...] | None = None

    @classmethod
    def of(cls, cidrs: Iterable[str]) -> AddressSet:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for c in cidrs:
            fam, lo, hi = parse_cidr(c)
            (v4 if fam == 4 else v6).append((lo, hi))
        return cls(_merge(v4), _merge(v6))

    @classmethod
    def union(cls, sets: Iterable[AddressSet]) -> AddressSet:
        """The union of many sets in one merge."""
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for s in sets:
            v4.extend(s.v4)
            v6.extend(s.v6)
        return cls(_merge(v4), _merge(v6))

    def __or__(self, other: AddressSet) -> AddressSet:
        return AddressSet(_merge(self.v4 + other.v4), _merge(self.v6 + other.v6))

    def __sub__(self, other: AddressSet) -> AddressSet:
        return AddressSet(_subtract(self.v4, other.v4), _subtract(self.v6, other.v6))

    def changed(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> AddressSet:
        """This set without `remove`, then with `add` (addresses or CIDRs): a few bisections
        and slice copies per address, not a rebuild, so a pod joining or leaving a peer set of
        thousands costs little. The CIDR text is patched the same way when it was made."""
        out = self
        for address, put_in in [(a, False) for a in remove] + [(a, True) for a in add]:
            out = out._edited(*parse_cidr(address), put_in)
        return out

    def _edited(self, family: int, lo: int, hi: int, add: bool) -> AddressSet:
        old = self.v4 if family == 4 else self.v6
        ivs, first, last, put = _edit(old, lo, hi, add)
        if ivs is old:
            return self
        out = AddressSet(ivs, self.v6) if family == 4 else AddressSet(self.v4, ivs)
        if self._cidrs is not None:
            cidrs = self._cidrs
            key = _cidr_start
            a = bisect_left(cidrs, (family, first), key=key)
            b = bisect_left(cidrs, (family, last + 1), key=key)
            text = [c for lo_, hi_ in put for c in _interval_cidrs(family, lo_, hi_)]
            out._cidrs = cidrs[:a] + tuple(text) + cidrs[b:]
        return out

    def isdisjoint(self, other: AddressSet) -> bool:
        return not (_overlap(self.v4, other.v4) or _overlap(self.v6, other.v6))

    def __contains__(self, address) -> bool:
        """An address or CIDR (a string, or anything whose str() is one) wholly inside."""
        fam, lo, hi = parse_cidr(str(address))
        return _overlap(self.v4 if fam == 4 else self.v6, ((lo, hi),)) and not (
            _subtract(((lo, hi),), self.v4 if fam == 4 else self.v6))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __eq__(self, other) -> bool:
        return isinstance(other, AddressSet) and self.v4 == other.v4 and self.v6 == other.v6

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.v4, self.v6))
        return self._hash

    def cidrs(self) -> tuple[str, ...]:
        """The fewest CIDRs covering exactly this set, IPv4 first, in address order."""
        if self._cidrs is not None:
            return self._cidrs
        out = []
        for fam, intervals in ((4, self.v4), (6, self.v6)):
            for lo, hi in intervals:
                if lo == hi:
                    out.append(_host_cidr(fam, lo))
                else:
                    out += _interval_cidrs(fam, lo, hi)
        self._cidrs = tuple(out)
        return self._cidrs

    def __repr__(self) -> str:
        return f"AddressSet({list(self.cidrs())})"
