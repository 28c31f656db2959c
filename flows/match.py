"""A flow's match: one field's value under a mask, as a tuple (hashed, compared and ordered in
C: flow keys are looked up millions of times while compiling), and the canonical order of a
match's fields. `hash_once` caches the hash of frozen dataclasses that are hashed over and over.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from functools import lru_cache
from operator import itemgetter

from flows.fields import ORDER


def hash_once(cls):
    """Decorate a frozen dataclass so its hash is computed once per object: the policy
    model's selectors and peers are hashed over and over, each time walking every nested
    value otherwise. The cached value is not pickled (string hashes differ between
    processes)."""
    fields_hash = cls.__hash__

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash_")
        if h is None:
            h = fields_hash(self)
            object.__setattr__(self, "_hash_", h)
        return h

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_hash_", None)
        return state

    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls


class Match(tuple):
    """One match field: value under mask (mask None = exact). Ordered by (field, value, mask),
    an exact match before any masked one.

    A tuple underneath: flow keys (table, priority, match) are hashed and compared millions
    of times while compiling, and a tuple's hash and equality run in C, not as Python calls."""

    __slots__ = ()

    def __new__(cls, field: str, value: int, mask: int | None = None) -> Match:
        return tuple.__new__(cls, (field, value, mask))

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    def __setattr__(self, name: str, value) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    field = property(itemgetter(0), doc="the field's name")
    value = property(itemgetter(1), doc="the value, an integer")
    mask = property(itemgetter(2), doc="the mask, None for an exact match")

    def _key(self) -> tuple[str, int, int]:
        return (self[0], self[1], -1 if self[2] is None else self[2])

    def __lt__(self, other: Match) -> bool:  # type: ignore[override]  # only with Matches
        return self._key() < other._key()

    def __le__(self, other: Match) -> bool:  # type: ignore[override]  # only with Matches
        return self._key() <= other._key()

    def __gt__(self, other: Match) -> bool:  # type: ignore[override]  # only with Matches
        return self._key() > other._key()

    def __ge__(self, other: Match) -> bool:  # type: ignore[override]  # only with Matches
        return self._key() >= other._key()

    def __repr__(self) -> str:
        return f"Match(field={self[0]!r}, value={self[1]!r}, mask={self[2]!r})"

    def hits(self, packet_value: int) -> bool:
        if self[2] is None:
            return packet_value == self[1]
        return packet_value & self[2] == self[1]


@lru_cache(maxsize=1 << 16)
def canonical_match(match: tuple[Match, ...]) -> tuple[Match, ...]:
    """The fields of a match in the order a Flow keeps them (the same tuple when already in
    order). Remembered: compiled tables repeat the same address and port matches."""
    ordered = tuple(sorted(match, key=lambda m: (ORDER[m.field], m._key())))
    return match if ordered == match else ordered


@lru_cache(maxsize=1 << 16)
def match_order(match: tuple[Match, ...]) -> tuple:
    """A match's place in the flow order: its fields' (name, value, mask) keys."""
    return tuple(m._key() for m in match)


__all__ = ["Match", "canonical_match", "hash_once", "match_order"]
