"""Port ranges as value/mask matches: merge into disjoint segments, then split each segment
into the fewest aligned power-of-two blocks (at most 30 for a 16-bit range)."""

from __future__ import annotations

from collections.abc import Iterable


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of inclusive ranges as sorted, disjoint, non-adjacent segments."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def range_to_masks(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    """The minimal list of (value, mask) pairs covering exactly lo..hi."""
    full = (1 << bits) - 1
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, full ^ (size - 1)))
        lo += size
    return out
