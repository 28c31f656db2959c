"""flows.addrset.AddressSet agrees with netaddr's IPSet (an independent implementation) on
union, difference, disjointness, membership and the minimal CIDR cover."""

from __future__ import annotations

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.addrset import AddressSet, parse_cidr

v4 = st.builds(lambda a, p: str(netaddr.IPNetwork(f"{netaddr.IPAddress(a)}/{p}").cidr),
               st.integers(0, 2**32 - 1), st.integers(0, 32))
near = st.builds(lambda a, p: str(netaddr.IPNetwork(f"{netaddr.IPAddress(0x0A000000 + a)}/{p}").cidr),
                 st.integers(0, 4095), st.integers(20, 32))
v6 = st.builds(lambda a, p: str(netaddr.IPNetwork(f"{netaddr.IPAddress(a, 6)}/{p}").cidr),
               st.integers(0, 2**128 - 1), st.integers(0, 128))
cidrs = st.lists(st.one_of(near, near, v4, v6), max_size=6)


def ref(cs):
    return netaddr.IPSet(cs)


def parsed(cs):
    """CIDRs as (family, first, last): the same network may be written differently."""
    return [parse_cidr(str(c)) for c in cs]


@settings(max_examples=300, deadline=None)
@given(cidrs, cidrs)
def test_set_algebra_matches_netaddr(a, b):
    A, B = AddressSet.of(a), AddressSet.of(b)
    assert parsed((A | B).cidrs()) == parsed((ref(a) | ref(b)).iter_cidrs())
    assert parsed((A - B).cidrs()) == parsed((ref(a) - ref(b)).iter_cidrs())
    assert A.isdisjoint(B) == (not (ref(a) & ref(b)))
    assert bool(A) == bool(ref(a))
    assert AddressSet.of((A | B).cidrs()) == A | B


@settings(max_examples=300, deadline=None)
@given(cidrs, st.integers(0x0A000000, 0x0A000FFF))
def test_membership(a, addr):
    ip = str(netaddr.IPAddress(addr))
    assert (ip in AddressSet.of(a)) == (netaddr.IPAddress(ip) in ref(a))


@settings(max_examples=300, deadline=None)
@given(cidrs, cidrs, cidrs, st.booleans())
def test_changed_is_remove_then_add(start, add, remove, text_first):
    """A set edited in place (pods joining and leaving a peer set) equals the set built
    afresh, CIDR text included, whether or not the text was made before the edit."""
    s = AddressSet.of(start)
    if text_first:
        s.cidrs()
    got = s.changed(add=add, remove=remove)
    want = (ref(start) - ref(remove)) | ref(add)
    assert parsed(got.cidrs()) == parsed(want.iter_cidrs())
    assert got == AddressSet.of(got.cidrs())


def test_parse_rejects_bad_addresses():
    for bad in ("10.0.0", "10.0.0.256", "10.0.0.0/33", "x.y.z.w"):
        try:
            parse_cidr(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
