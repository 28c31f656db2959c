"""flows.compiler, flows.ports, flows.pipeline and flows.simulate, read like the specification.

- Port ranges become the minimal prefix (value/mask) cover: at most 30 matches for 16 bits.
- Every flow lives in a declared table and only matches and does what that table may.
- A rule is one conjunction of up to three clauses (peers, applied-to, ports): its flow count is
  |peers| + |targets| + |port matches| + 1, never a product; one dimension needs no conjunction.
  Address flows shared between rules at one priority carry one conjunction action per rule.
- Overlapping rules never share a priority; provably disjoint ones may.
- Conj ids and priorities are stable; the same input gives byte-identical output.
- ipBlock except becomes disjoint CIDRs; default deny exists only for isolated local pods; a host
  bridge keeps only the rules applied to its own pods.
- The simulator follows OpenFlow 1.3 + conjunctive match + ct semantics.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import netaddr
import pytest

from flows import pipeline as P
from flows import priorities as PR
from flows.compiler import (
    BridgeCompiler,
    CompileError,
    Program,
    address_match,
    assign_conj_ids,
    assign_priorities,
    compile_bridge,
    cross_product_count,
    port_matches,
    provably_disjoint,
    scope_rules,
    sorted_flows,
)
from flows.fields import CT_BITS, FieldRef, parse_value
from flows.flow import CT, Conjunction, Flow, GotoTable, InPort, Load, Match, Move, Output
from flows.ir import EGRESS, INGRESS, Bridge, Isolation, PodPort, PortRange, Route, Rule, RuleId
from flows.ports import merge_ranges, range_to_masks
from flows.simulate import Ambiguous, Conntrack, Packet, Simulator

REPO = Path(__file__).resolve().parent.parent
IP, IP6 = 0x0800, 0x86DD


# ---- helpers -----------------------------------------------------------------------------------

def pods(*ips: str) -> tuple[PodPort, ...]:
    return tuple(PodPort(f"x/p{i}", i, f"02:00:00:00:00:{i:02x}", (a,)) for i, a in enumerate(ips, 1))


def bridge(*ips: str, mode: str = "host") -> Bridge:
    return Bridge("br0", pods=pods(*ips), mode=mode)


def rule(policy: str, targets, peers=None, ports=None, direction=INGRESS, index=0, part=0) -> Rule:
    return Rule(RuleId(policy, direction, index, part), frozenset(targets),
                None if peers is None else tuple(peers), None if ports is None else tuple(ports))


def tcp(start=None, end=None) -> PortRange:
    return PortRange("tcp", start, end)


def udp(start=None, end=None) -> PortRange:
    return PortRange("udp", start, end)


def rule_flows(prog: Program, table: int | None = None) -> list[Flow]:
    """The flows compiled from rules (conj_id, clause and single-dimension flows)."""
    return [f for f in prog.flows if P.cookie_kind(f.cookie) in (P.KIND_RULE, P.KIND_CLAUSE)
            and (table is None or f.table == table)]


def info(prog: Program, policy: str):
    (found,) = [r for r in prog.rules if r.id.policy == policy]
    return found


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


# ---- port ranges ---------------------------------------------------------------------------------

def covered(value: int, mask: int, bits: int = 16) -> range | set[int]:
    """Every number a value/mask pair matches (aligned blocks only need a range)."""
    size = ((1 << bits) - 1 ^ mask) + 1
    if mask | (size - 1) == (1 << bits) - 1 and value % size == 0:
        return range(value, value + size)
    return {x for x in range(1 << bits) if x & mask == value}


def minimal_prefix_cover(lo: int, hi: int, bits: int) -> int:
    """Brute force, independent of the greedy: the fewest aligned power-of-two blocks whose
    disjoint union is exactly lo..hi (dynamic programming over every block that may start at
    each position)."""
    best = [0] * (hi - lo + 2)  # best[i]: cover of lo+i..hi; best[hi+1-lo] = 0
    for x in range(hi, lo - 1, -1):
        fewest, size = 1 + best[x + 1 - lo], 2  # a block of one
        while size <= 1 << bits and x % size == 0 and x + size - 1 <= hi:
            fewest = min(fewest, 1 + best[x + size - lo])
            size <<= 1
        best[x - lo] = fewest
    return best[0]


def check_cover(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    masks = range_to_masks(lo, hi, bits)
    full = (1 << bits) - 1
    seen: set[int] = set()
    for value, mask in masks:
        assert 0 <= mask <= full and value & ~mask & full == 0, (lo, hi, value, mask)
        # a prefix: contiguous high bits
        inv = full ^ mask
        assert inv & (inv + 1) == 0, (lo, hi, hex(mask))
        block = set(covered(value, mask, bits))
        assert not block & seen, "value/mask pairs overlap"
        seen |= block
    assert seen == set(range(lo, hi + 1)), (lo, hi)
    return masks


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6])
def test_range_to_masks_is_the_minimal_prefix_cover_exhaustively(bits):
    for lo in range(1 << bits):
        for hi in range(lo, 1 << bits):
            masks = check_cover(lo, hi, bits)
            assert len(masks) == minimal_prefix_cover(lo, hi, bits), (lo, hi)


def test_range_to_masks_is_minimal_for_random_16_bit_ranges():
    rnd = random.Random(20240611)
    cases = [(0, 65535), (1, 65534), (0, 0), (65535, 65535), (1024, 65535), (1, 1023), (80, 80),
             (32768, 32768), (32767, 32768), (8000, 8099), (1000, 1999), (0, 32767), (30000, 32767)]
    for _ in range(60):
        a, b = rnd.randrange(65536), rnd.randrange(65536)
        cases.append((min(a, b), max(a, b)))
    for _ in range(300):  # short ranges, where the edges dominate
        a = rnd.randrange(65536)
        cases.append((a, min(65535, a + rnd.randrange(300))))
    for lo, hi in cases:
        masks = check_cover(lo, hi)
        assert len(masks) == minimal_prefix_cover(lo, hi, 16), (lo, hi)
        assert len(masks) <= 30


def test_at_most_30_matches_for_any_16_bit_range():
    assert len(range_to_masks(1, 65534)) == 30  # the worst case: 2 * 16 - 2
    assert range_to_masks(0, 65535) == [(0, 0)]
    assert range_to_masks(80, 80) == [(80, 0xFFFF)]
    assert range_to_masks(1000, 1999) == [(0x3E8, 0xFFF8), (0x3F0, 0xFFF0), (0x400, 0xFE00),
                                          (0x600, 0xFF00), (0x700, 0xFF80), (0x780, 0xFFC0),
                                          (0x7C0, 0xFFF0)]
    # ranges with worst-case edges (odd start, even end) stay within 30 too
    rnd = random.Random(7)
    for _ in range(2000):
        lo = rnd.randrange(1, 32768, 2)
        hi = rnd.randrange(32768, 65536, 2)
        assert len(range_to_masks(lo, hi)) <= 30
    assert range_to_masks(5, 4) == []


@pytest.mark.parametrize("ranges, merged", [
    ([], []),
    ([(80, 80)], [(80, 80)]),
    ([(80, 90), (85, 100)], [(80, 100)]),
    ([(85, 100), (80, 90)], [(80, 100)]),
    ([(80, 80), (81, 81)], [(80, 81)]),  # adjacent segments merge
    ([(80, 80), (82, 82)], [(80, 80), (82, 82)]),
    ([(1, 65535), (100, 200)], [(1, 65535)]),  # contained
    ([(443, 443), (80, 80), (8000, 8099), (8100, 8100), (79, 79)], [(79, 80), (443, 443), (8000, 8100)]),
    ([(5, 5), (5, 5)], [(5, 5)]),
])
def test_merge_ranges(ranges, merged):
    assert merge_ranges(ranges) == merged


def test_merge_ranges_property():
    rnd = random.Random(3)
    for _ in range(300):
        ranges = []
        for _ in range(rnd.randrange(1, 6)):
            a = rnd.randrange(0, 200)
            ranges.append((a, a + rnd.randrange(0, 30)))
        out = merge_ranges(ranges)
        points = {x for lo, hi in ranges for x in range(lo, hi + 1)}
        assert {x for lo, hi in out for x in range(lo, hi + 1)} == points
        for (_, h1), (l2, _) in itertools.pairwise(out):
            assert h1 + 1 < l2  # sorted, disjoint, not adjacent


def test_port_matches_per_protocol_and_family():
    base4 = (Match("dl_type", IP), Match("nw_proto", 6))
    assert port_matches([tcp()]) == [base4]  # every port: no tp_dst at all
    assert port_matches([tcp(0, 65535)]) == [base4]
    assert port_matches([tcp(80)]) == [base4 + (Match("tp_dst", 80),)]  # exact: no mask
    assert port_matches([tcp(80, 81)]) == [base4 + (Match("tp_dst", 80, 0xFFFE),)]
    # ranges of one protocol merge before splitting: 80-90 + 85-100 = 80..100, 3 blocks not 3+5
    assert len(port_matches([tcp(80, 90), tcp(85, 100)])) == len(range_to_masks(80, 100)) == 3
    assert port_matches([udp(53), tcp(53)]) == [base4 + (Match("tp_dst", 53),),
                                                (Match("dl_type", IP), Match("nw_proto", 17), Match("tp_dst", 53))]
    assert port_matches([PortRange("sctp", 9)], families=(6,)) == [
        (Match("dl_type", IP6), Match("nw_proto", 132), Match("tp_dst", 9))]
    assert len(port_matches([tcp(80)], families=(4, 6))) == 2


def test_address_match():
    assert address_match("10.0.0.1", "src") == (Match("dl_type", IP), Match("nw_src", ip("10.0.0.1")))
    assert address_match("10.0.0.1/32", "dst") == (Match("dl_type", IP), Match("nw_dst", ip("10.0.0.1")))
    assert address_match("10.1.2.3/16", "src") == (Match("dl_type", IP), Match("nw_src", ip("10.1.0.0"), 0xFFFF0000))
    assert address_match("0.0.0.0/0", "src") == (Match("dl_type", IP),)
    assert address_match("fd00::/64", "dst") == (Match("dl_type", IP6), Match("ipv6_dst", ip("fd00::"), ((1 << 64) - 1) << 64))
    assert address_match("::/0", "dst") == (Match("dl_type", IP6),)


# ---- the pipeline declaration --------------------------------------------------------------------

def everything_bridge(mode="host") -> Bridge:
    return Bridge("br0", pods=(PodPort("x/a", 1, "02:00:00:00:00:01", ("10.0.0.1",)),
                               PodPort("x/b", 2, "02:00:00:00:00:02", ("10.0.0.2", "fd00::2"))),
                  routes=(Route("10.1.0.0/16", 9, "192.168.0.2", "n2"), Route("10.2.0.0/16", 8, None, "fabric")),
                  uplinks=(8, 9), mode=mode)


EVERYTHING_RULES = [
    rule("x/p", {"10.0.0.1"}, ["10.1.0.0/16", "10.2.3.4/32"], [tcp(1000, 1999), udp(53), PortRange("sctp")]),
    rule("x/q", {"10.0.0.2"}, None, [tcp(443)], direction=EGRESS),
    rule("x/r", {"fd00::2"}, ["fd00:1::/64", "::/0"], None),
    rule("x/s", {"10.0.0.1", "10.0.0.2"}, None, None, direction=EGRESS, index=1),
    rule("x/t", {"10.0.0.1", "10.1.0.7"}, ["10.0.0.0/8"], [tcp(80)]),
    rule("x/u", {"10.1.0.7"}, ["10.0.0.0/8"], [tcp(80)]),  # remote: dropped in host mode
]
EVERYTHING_ISOLATION = [Isolation(INGRESS, "10.0.0.1", ("x/p",)), Isolation(EGRESS, "10.0.0.2", ("x/q",)),
                        Isolation(INGRESS, "10.1.0.7", ("x/u",))]


@pytest.mark.parametrize("mode", ["host", "fabric", "fabric-node"])
def test_every_compiled_flow_passes_check_flow(mode):
    prog = compile_bridge(everything_bridge(mode), EVERYTHING_RULES, EVERYTHING_ISOLATION)
    assert prog.flows
    for f in prog.flows:
        P.check_flow(f)
        assert P.cookie_kind(f.cookie) in (P.KIND_PIPELINE, P.KIND_RULE, P.KIND_CLAUSE, P.KIND_DEFAULT)
    # rule tables never know ofports
    for f in prog.flows:
        if f.table in P.RULE_TABLES or f.table in (P.EGRESS_DEFAULT, P.INGRESS_DEFAULT):
            assert f.get("in_port") is None
            assert not any(isinstance(a, (Output, InPort)) for a in f.actions)
    # every table has a miss flow, so no packet falls off the pipeline undecided
    tables = {f.table for f in prog.flows}
    for t in tables:
        assert any(f.table == t and f.priority == 0 and not f.match for f in prog.flows), t


@pytest.mark.parametrize("bad", [
    Flow(P.INGRESS_RULE, 100, (Match("in_port", 1),), (GotoTable(P.CONNTRACK_COMMIT),)),
    Flow(P.EGRESS_RULE, 100, (Match("in_port", 1), Match("dl_type", IP)), (GotoTable(P.INGRESS_RULE),)),
    Flow(P.INGRESS_RULE, 100, (Match("conj_id", 5),), (Output(3),)),
    Flow(P.EGRESS_RULE, 100, (Match("conj_id", 5),), (InPort(),)),
    Flow(P.INGRESS_DEFAULT, 200, (Match("dl_type", IP), Match("nw_dst", 1)), (Output(1),)),
    Flow(P.EGRESS_RULE, 0, (), (GotoTable(99),)),  # an undeclared table
    Flow(P.EGRESS_RULE, 0, (), (GotoTable(P.OUTPUT),)),  # declared, but not a next of this table
    Flow(P.INGRESS_RULE, 0, (), (GotoTable(P.EGRESS_RULE),)),  # backwards
    Flow(P.CONNTRACK, 200, (Match("dl_type", IP),), (CT(zone=1, table=99),)),
    Flow(P.CONNTRACK, 200, (Match("dl_type", IP),), (CT(zone=1, table=P.INGRESS_RULE),)),
    Flow(99, 0, ()),
    Flow(P.INGRESS_RULE, 100, (Match("dl_type", IP), Match("dl_src", 1)), ()),  # not an L3/L4 field
    Flow(P.INGRESS_RULE, 100, (Match("reg0", 1),), ()),
], ids=lambda f: f.render(cookie=False))
def test_check_flow_rejects(bad):
    with pytest.raises(P.PipelineError):
        P.check_flow(bad)


def test_check_flow_accepts_declared_shapes():
    P.check_flow(Flow(P.INGRESS_RULE, 100, (Match("dl_type", IP), Match("nw_proto", 6), Match("tp_dst", 80)),
                      (Conjunction(1, 3, 3),)))
    P.check_flow(Flow(P.CLASSIFIER, 200, (Match("in_port", 1),), (GotoTable(P.SPOOFGUARD),)))
    P.check_flow(Flow(P.OUTPUT, 200, (Match("dl_type", IP), Match("nw_dst", 1)), (Output(1),)))
    P.check_flow(Flow(P.CONNTRACK, 200, (Match("dl_type", IP),), (CT(zone=1, table=P.CONNTRACK_STATE),)))
    assert P.table_named("ingress_rule") is P.table_named(P.INGRESS_RULE) is P.table_named("40")


def test_cookie_layout():
    c = P.cookie(P.KIND_RULE, (1 << 60) + 5)
    assert c >> 56 == P.COOKIE_TAG and P.cookie_kind(c) == P.KIND_RULE and c & ((1 << 48) - 1) == 5
    assert P.cookie_kind(0) is None and P.cookie_kind(0x1234) is None


# ---- flow counts and conjunctions ----------------------------------------------------------------

ALONE = bridge("10.0.0.1", "10.0.0.2", "10.0.0.3")


@pytest.mark.parametrize("peers, targets, ports, n_ports", [
    (["10.1.0.0/16", "10.2.0.5/32", "192.168.0.0/24"], {"10.0.0.1", "10.0.0.2"},
     [tcp(80), tcp(1000, 1999), udp(53)], 1 + 7 + 1),
    (["0.0.0.0/0"], {"10.0.0.1"}, [tcp()], 1),
    (["10.1.0.0/16"], {"10.0.0.1", "10.0.0.2", "10.0.0.3"}, [tcp(1, 65534)], 30),
    (["10.1.0.0/16", "10.3.0.0/16"], {"10.0.0.3"}, None, 0),
    (None, {"10.0.0.1", "10.0.0.2"}, [udp(53), udp(5353), PortRange("sctp", 9, 10)], 1 + 1 + 2),
])
@pytest.mark.parametrize("direction", [INGRESS, EGRESS])
def test_rule_flow_count_is_a_sum_not_a_product(peers, targets, ports, n_ports, direction):
    r = rule("x/p", targets, peers, ports, direction)
    prog = compile_bridge(ALONE, [r], [])
    table = P.INGRESS_RULE if direction == INGRESS else P.EGRESS_RULE
    flows = rule_flows(prog, table)
    assert not rule_flows(prog, P.EGRESS_RULE if direction == INGRESS else P.INGRESS_RULE)
    if ports is not None:
        assert len(port_matches(ports)) == n_ports
    n_peers = 0 if peers is None else len(peers)
    dims = (peers is not None) + 1 + (ports is not None)
    (rinfo,) = prog.rules
    product = max(n_peers, 1) * len(targets) * max(n_ports, 1)
    total = n_peers + len(targets) + n_ports + 1
    # the naive encoding would need the product
    assert cross_product_count([r]) == product
    if product <= total:
        # small rules are written as the plain product: never more flows than the conjunction
        assert len(flows) == product
        reg = P.REG_INGRESS_CONJ if direction == INGRESS else P.REG_EGRESS_CONJ
        nxt = P.CONNTRACK_COMMIT if direction == INGRESS else P.INGRESS_RULE
        for f in flows:
            assert not f.conjunctions and f.priority == rinfo.priority and f.cookie == rinfo.cookie
            assert f.actions == (Load(rinfo.conj_id, FieldRef(reg)), GotoTable(nxt))
        return
    assert len(flows) == total
    (conj_flow,) = [f for f in flows if f.get("conj_id")]
    assert conj_flow.match == (Match("conj_id", rinfo.conj_id),)
    reg = P.REG_INGRESS_CONJ if direction == INGRESS else P.REG_EGRESS_CONJ
    nxt = P.CONNTRACK_COMMIT if direction == INGRESS else P.INGRESS_RULE
    assert conj_flow.actions == (Load(rinfo.conj_id, FieldRef(reg)), GotoTable(nxt))
    assert conj_flow.cookie == rinfo.cookie and conj_flow.priority == rinfo.priority
    for f in flows:
        assert f.priority == rinfo.priority
        if f is not conj_flow:
            (c,) = f.conjunctions
            assert c.id == rinfo.conj_id and c.n_clauses == dims
            assert f.actions == (c,)  # clause flows carry nothing else
            assert P.cookie_kind(f.cookie) == P.KIND_CLAUSE
    clauses = {c.clause for f in flows for c in f.conjunctions}
    assert clauses == set(range(1, dims + 1))


@pytest.mark.parametrize("direction", [INGRESS, EGRESS])
def test_a_rule_with_only_targets_needs_no_conjunction(direction):
    targets = {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    prog = compile_bridge(ALONE, [rule("x/p", targets, direction=direction)], [])
    flows = rule_flows(prog)
    assert len(flows) == len(targets)
    (rinfo,) = prog.rules
    side = "nw_dst" if direction == INGRESS else "nw_src"
    assert {f.get(side).value for f in flows} == {ip(t) for t in targets}
    for f in flows:
        assert not f.conjunctions and f.get("conj_id") is None
        assert Load(rinfo.conj_id, FieldRef(P.REG_INGRESS_CONJ if direction == INGRESS else P.REG_EGRESS_CONJ)) in f.actions
        assert f.cookie == rinfo.cookie
    assert not any(f.conjunctions for f in prog.flows)


def test_rules_that_match_nothing_compile_to_no_flows_but_are_listed():
    rules = [rule("x/a", {"10.0.0.1"}, [], None), rule("x/b", {"10.0.0.1"}, None, []),
             rule("x/c", set(), ["10.1.0.0/16"], None)]
    prog = compile_bridge(bridge("10.0.0.1", mode="fabric"), rules, [])
    assert not rule_flows(prog)
    assert [r.active for r in prog.rules] == [False, False, False]


def test_two_rules_sharing_a_target_at_one_priority_share_one_address_flow():
    targets = {"10.0.0.1", "10.0.0.2"}
    a = rule("x/a", targets, ["10.1.0.0/16", "10.5.0.0/16"], [tcp(80), tcp(8080)])
    b = rule("x/b", targets, ["10.1.0.0/16", "10.9.0.0/16"], [tcp(443), tcp(8443)])  # disjoint on ports
    assert provably_disjoint(a, b)
    prog = compile_bridge(ALONE, [a, b], [])
    ia, ib = info(prog, "x/a"), info(prog, "x/b")
    assert ia.priority == ib.priority
    assert ia.conj_id != ib.conj_id
    target = [f for f in rule_flows(prog) if f.get("nw_dst")]
    assert len(target) == 2
    for f in target:
        assert set(f.conjunctions) == {Conjunction(ia.conj_id, 2, 3), Conjunction(ib.conj_id, 2, 3)}
    shared_peer = [f for f in rule_flows(prog) if f.get("nw_src") == Match("nw_src", ip("10.1.0.0"), 0xFFFF0000)]
    assert len(shared_peer) == 1 and len(shared_peer[0].conjunctions) == 2
    # 2 shared targets + 3 peers (one shared) + 4 port flows + 2 conj_id flows
    assert len(rule_flows(prog)) == 2 + 3 + 4 + 2
    # and the simulator tells the two rules apart
    sim = Simulator(prog.flows)
    for port, who in ((80, ia), (443, ib)):
        pkt = Packet.l4("tcp", in_port=0, src_ip="10.1.2.3", dst_ip="10.0.0.1", dst_port=port)
        step = sim.lookup(P.INGRESS_RULE, pkt)
        assert step.flow.get("conj_id").value == who.conj_id
    assert sim.lookup(P.INGRESS_RULE, Packet.l4("tcp", in_port=0, src_ip="10.9.0.1", dst_ip="10.0.0.1",
                                                dst_port=80)).flow.priority == 0


def test_a_small_rule_is_written_as_plain_flows():
    r = rule("x/a", {"10.0.0.1"}, ["10.1.0.0/16", "10.2.0.0/16"], [tcp(80)])  # 2 x 1 x 1 <= 2 + 1 + 1 + 1
    prog = compile_bridge(ALONE, [r], [])
    flows = rule_flows(prog)
    assert len(flows) == 2 and not any(f.conjunctions or f.get("conj_id") for f in flows)
    sim = Simulator(prog.flows)
    assert sim.lookup(P.INGRESS_RULE, Packet.l4("tcp", in_port=0, src_ip="10.2.0.9", dst_ip="10.0.0.1",
                                                dst_port=80)).flow in flows
    assert sim.lookup(P.INGRESS_RULE, Packet.l4("tcp", in_port=0, src_ip="10.2.0.9", dst_ip="10.0.0.1",
                                                dst_port=81)).flow.priority == 0


def test_overlapping_rules_get_different_priorities():
    a = rule("x/a", {"10.0.0.1", "10.0.0.2"}, ["10.1.0.0/16"], [tcp(80, 90)])
    b = rule("x/b", {"10.0.0.1", "10.0.0.2"}, ["10.1.2.0/24"], [tcp(85, 100)])
    assert not provably_disjoint(a, b)
    prog = compile_bridge(ALONE, [a, b], [])
    assert info(prog, "x/a").priority != info(prog, "x/b").priority
    # the packet both allow is decided by one of them, never undefined
    pkt = Packet.l4("tcp", in_port=0, src_ip="10.1.2.3", dst_ip="10.0.0.2", dst_port=88)
    step = Simulator(prog.flows).lookup(P.INGRESS_RULE, pkt)
    assert step.flow.actions[0].value in {info(prog, "x/a").conj_id, info(prog, "x/b").conj_id}
    # a third overlapping rule takes a third level; a disjoint one shares
    c = rule("x/c", {"10.0.0.2"}, None, [tcp(80)])
    d = rule("x/d", {"10.0.0.3"}, None, [tcp(443)])
    prog = compile_bridge(ALONE, [a, b, c, d], [])
    prios = {r.id.policy: r.priority for r in prog.rules}
    assert len({prios["x/a"], prios["x/b"], prios["x/c"]}) == 3
    assert prios["x/d"] in {prios["x/a"], prios["x/b"], prios["x/c"]}
    assert all(PR.RULE_PRIORITY_FLOOR <= p <= PR.RULE_PRIORITY_TOP for p in prios.values())


def test_two_single_dimension_rules_on_one_target_never_collide():
    a = rule("x/a", {"10.0.0.1"})
    b = rule("x/b", {"10.0.0.1", "10.0.0.2"})
    prog = compile_bridge(ALONE, [a, b], [])
    assert info(prog, "x/a").priority != info(prog, "x/b").priority
    assert len(rule_flows(prog)) == 3


@pytest.mark.parametrize("a, b, disjoint", [
    (rule("a", {"10.0.0.1"}), rule("b", {"10.0.0.2"}), True),  # applied to other pods
    (rule("a", {"10.0.0.1"}), rule("b", {"10.0.0.1"}), False),
    (rule("a", {"10.0.0.1"}, ["10.1.0.0/16"]), rule("b", {"10.0.0.1"}, ["10.2.0.0/16"]), True),
    (rule("a", {"10.0.0.1"}, ["10.0.0.0/25"]), rule("b", {"10.0.0.1"}, ["10.0.0.128/25"]), True),
    (rule("a", {"10.0.0.1"}, ["10.0.0.0/24"]), rule("b", {"10.0.0.1"}, ["10.0.0.5/32"]), False),
    (rule("a", {"10.0.0.1"}, ["10.1.0.0/16"]), rule("b", {"10.0.0.1"}, None), False),  # any peer
    (rule("a", {"10.0.0.1"}, ["10.1.0.0/16"]), rule("b", {"10.0.0.1"}, []), True),  # matches nothing
    (rule("a", {"10.0.0.1"}, None, [tcp(80)]), rule("b", {"10.0.0.1"}, None, [udp(80)]), True),
    (rule("a", {"10.0.0.1"}, None, [tcp(80, 90)]), rule("b", {"10.0.0.1"}, None, [tcp(91, 100)]), True),
    (rule("a", {"10.0.0.1"}, None, [tcp(80, 90)]), rule("b", {"10.0.0.1"}, None, [tcp(90, 100)]), False),
    (rule("a", {"10.0.0.1"}, None, [tcp(80)]), rule("b", {"10.0.0.1"}, None, [tcp()]), False),
    (rule("a", {"10.0.0.1"}, None, [tcp(80)]), rule("b", {"10.0.0.1"}, None, None), False),
    (rule("a", {"10.0.0.1"}, None, [tcp(80), udp(53)]), rule("b", {"10.0.0.1"}, None, [udp(1, 53)]), False),
    (rule("a", {"10.0.0.1", "10.0.0.2"}, ["10.1.0.0/16"], [tcp(80)]),
     rule("b", {"10.0.0.2", "10.0.0.3"}, ["10.1.5.0/24"], [tcp(79, 81)]), False),
    (rule("a", {"fd00::1"}, ["fd00:1::/64"]), rule("b", {"fd00::1"}, ["fd00:2::/64"]), True),
])
def test_provably_disjoint(a, b, disjoint):
    assert provably_disjoint(a, b) is disjoint
    assert provably_disjoint(b, a) is disjoint


def test_disjoint_rules_share_priority_and_overlapping_never_do():
    """Random rules: at every (table, priority) the rules are pairwise provably disjoint."""
    rnd = random.Random(11)
    targets = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    for _ in range(40):
        rules = [random_rule(rnd, i, targets) for i in range(rnd.randrange(2, 12))]
        prios = assign_priorities(rules)
        by_prio = {}
        for r in rules:
            by_prio.setdefault(prios[r.id], []).append(r)
        for group in by_prio.values():
            for x, y in itertools.combinations(group, 2):
                assert provably_disjoint(x, y), (x, y)


# ---- the compiled rule tables allow exactly what the rules allow ---------------------------------

PEER_MENU = ["10.0.0.0/30", "10.0.0.4/32", "10.0.0.5/32", "10.0.0.6/31", "10.0.0.8/29", "10.0.1.0/24",
             "10.0.0.0/32", "10.0.0.0/28"]
PORT_MENU = [tcp(80), tcp(443), tcp(8000, 8099), udp(53), udp(1000, 1999), tcp(), PortRange("sctp", 9)]


def random_rule(rnd: random.Random, i: int, targets: list[str], direction=INGRESS) -> Rule:
    t = rnd.sample(targets, rnd.randrange(1, len(targets) + 1))
    peers = None if rnd.random() < 0.3 else (
        ["0.0.0.0/0"] if rnd.random() < 0.1 else rnd.sample(PEER_MENU, rnd.randrange(1, 4)))
    if peers is not None:  # a rule's peers are disjoint CIDRs
        peers = [str(c) for c in netaddr.IPSet(peers).iter_cidrs()]
    ports = None if rnd.random() < 0.3 else rnd.sample(PORT_MENU, rnd.randrange(1, 3))
    if ports is not None and tcp() in ports:
        ports = [p for p in ports if p.protocol != "tcp"] + [tcp()]
    return rule(f"ns/pol{i % 3}", t, peers, ports, direction, index=i)


def allows(r: Rule, src: str, dst: str, proto: str, port: int) -> bool:
    applied, peer = (dst, src) if r.direction == INGRESS else (src, dst)
    if r.matches_nothing or applied not in r.targets:
        return False
    if r.peers is not None and netaddr.IPAddress(peer) not in r.peer_set:
        return False
    if r.ports is None:
        return True
    return any(p.protocol == proto and p.bounds[0] <= port <= p.bounds[1] for p in r.ports)


@pytest.mark.parametrize("direction", [INGRESS, EGRESS])
def test_compiled_rule_table_allows_exactly_what_the_rules_allow(direction):
    rnd = random.Random(5 if direction == INGRESS else 6)
    targets = ["10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.9"]
    others = ["10.0.0.0", "10.0.0.3", "10.0.0.4", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.15",
              "10.0.0.16", "10.0.1.7", "192.168.1.1"]
    ports = [9, 53, 80, 443, 999, 1000, 1999, 2000, 7999, 8000, 8099, 8100]
    table = P.INGRESS_RULE if direction == INGRESS else P.EGRESS_RULE
    reg = P.REG_INGRESS_CONJ if direction == INGRESS else P.REG_EGRESS_CONJ
    nxt = P.CONNTRACK_COMMIT if direction == INGRESS else P.INGRESS_RULE
    for _ in range(25):
        rules = [random_rule(rnd, i, targets, direction) for i in range(rnd.randrange(1, 9))]
        prog = compile_bridge(bridge(*targets, mode="fabric"), rules, [])
        sim = Simulator(prog.flows)
        by_conj = prog.by_conj()
        by_id = {r.id: r for r in rules}
        for _ in range(150):
            applied = rnd.choice(targets + ["10.0.0.3"])
            peer = rnd.choice(others + targets)
            src, dst = (peer, applied) if direction == INGRESS else (applied, peer)
            proto, port = rnd.choice(["tcp", "udp", "sctp"]), rnd.choice(ports)
            pkt = Packet.l4(proto, in_port=0, src_ip=src, dst_ip=dst, dst_port=port)
            step = sim.lookup(table, pkt)  # raises Ambiguous on an undefined lookup
            want = any(allows(r, src, dst, proto, port) for r in rules)
            got = GotoTable(nxt) in step.flow.actions
            assert got == want, (src, dst, proto, port, rules)
            if got:
                (load,) = [a for a in step.flow.actions if isinstance(a, Load)]
                assert load.dst == FieldRef(reg)
                assert allows(by_id[by_conj[load.value].id], src, dst, proto, port)


# ---- stable conj ids and priorities; byte-identical output ---------------------------------------

def test_conj_ids_unique_per_bridge_and_stable_across_compiles():
    rules = [rule(f"ns/p{i}", {f"10.0.0.{1 + i % 3}"}, ["10.1.0.0/16"], [tcp(80 + i)],
                  INGRESS if i % 2 else EGRESS, index=i % 4) for i in range(60)]
    br = bridge("10.0.0.1", "10.0.0.2", "10.0.0.3")
    p1 = compile_bridge(br, rules, [])
    ids = [r.conj_id for r in p1.rules]
    assert len(set(ids)) == len(ids) and all(0 < c < 1 << 32 for c in ids)
    p2 = compile_bridge(br, list(reversed(rules)), [])
    assert {r.id: r.conj_id for r in p1.rules} == {r.id: r.conj_id for r in p2.rules}
    # a subset keeps the same ids without any `previous`: they are a hash of the rule id
    p3 = compile_bridge(br, rules[:10], [])
    first = {r.id for r in rules[:10]}
    assert {r.id: r.conj_id for r in p3.rules} == {r.id: r.conj_id for r in p1.rules if r.id in first}
    # conj_id flows are unique in each table
    for t in P.RULE_TABLES:
        cids = [f.get("conj_id").value for f in p1.flows if f.table == t and f.get("conj_id")]
        assert len(cids) == len(set(cids))


def test_conj_id_collisions_are_probed_and_previous_ids_are_kept(monkeypatch):
    monkeypatch.setattr(PR, "stable_hash", lambda text, bits: 7)
    a, b, c = RuleId("a", INGRESS, 0), RuleId("b", INGRESS, 0), RuleId("c", INGRESS, 0)
    assert assign_conj_ids([b]) == {b: 7}
    assert assign_conj_ids([a, b]) == {a: 7, b: 8}
    assert assign_conj_ids([c, b, a], hint={b: 7}) == {a: 8, b: 7, c: 9}
    monkeypatch.setattr(PR, "stable_hash", lambda text, bits: 0)  # 0 is never a conj id
    assert assign_conj_ids([a, b]) == {a: 1, b: 2}
    monkeypatch.setattr(PR, "stable_hash", lambda text, bits: 0xFFFFFFFF)  # wraps, skipping 0
    assert assign_conj_ids([a, b]) == {a: 0xFFFFFFFF, b: 1}


def test_adding_an_unrelated_rule_keeps_existing_conj_ids_and_priorities():
    br = bridge("10.0.0.1", "10.0.0.2", "10.0.0.3")
    a = rule("x/b", {"10.0.0.1"}, ["10.1.0.0/16"], [tcp(80)])
    b = rule("x/c", {"10.0.0.1"}, ["10.1.0.0/16"], [tcp(79, 81)])
    p1 = compile_bridge(br, [a, b], [])
    unrelated = rule("x/a", {"10.0.0.3"}, ["10.2.0.0/16"], [udp(53)])
    p2 = compile_bridge(br, [a, b, unrelated], [], previous=p1)
    for r in (a, b):
        assert info(p2, r.id.policy).conj_id == info(p1, r.id.policy).conj_id
        assert info(p2, r.id.policy).priority == info(p1, r.id.policy).priority
    # the existing rules' own flows are untouched
    old = set(rule_flows(p1))
    assert old <= set(rule_flows(p2))


def test_previous_keeps_priorities_when_an_overlapping_rule_is_added():
    br = bridge("10.0.0.1")
    old = rule("x/m", {"10.0.0.1"}, ["10.1.0.0/16"], [tcp(80)])
    p1 = compile_bridge(br, [old], [])
    top = info(p1, "x/m").priority
    new = rule("x/a", {"10.0.0.1"}, ["10.1.0.0/16"], [tcp(79, 81)])  # sorts first, overlaps
    fresh = compile_bridge(br, [old, new], [])
    assert info(fresh, "x/a").priority == top  # without `previous` the new rule takes the top
    kept = compile_bridge(br, [old, new], [], previous=p1)
    assert info(kept, "x/m").priority == top
    assert info(kept, "x/a").priority != top
    assert info(kept, "x/m").conj_id == info(p1, "x/m").conj_id
    assert set(rule_flows(p1)) <= set(rule_flows(kept))
    # and recompiling with its own output as `previous` changes nothing
    assert compile_bridge(br, [old, new], [], previous=kept).render() == kept.render()


def test_a_hinted_priority_that_no_longer_fits_is_reassigned():
    a = rule("x/a", {"10.0.0.1"}, None, [tcp(80)])
    b = rule("x/b", {"10.0.0.1"}, None, [tcp(80)])
    # a stale hint puts both on one level: they overlap, so one must move
    prios = assign_priorities([a, b], hint={a.id: 500 + PR.RULE_PRIORITY_FLOOR, b.id: 500 + PR.RULE_PRIORITY_FLOOR})
    assert prios[a.id] == 500 + PR.RULE_PRIORITY_FLOOR and prios[b.id] != prios[a.id]


def test_same_input_gives_byte_identical_output():
    br = everything_bridge("fabric")
    p1 = compile_bridge(br, EVERYTHING_RULES, EVERYTHING_ISOLATION)
    p2 = compile_bridge(br, list(reversed(EVERYTHING_RULES)), list(reversed(EVERYTHING_ISOLATION)))
    assert p1.render() == p2.render()
    assert p1 == p2
    assert p1.render() == "".join(f.render() + "\n" for f in p1.flows)  # flows kept in render order
    assert list(p1.flows) == sorted_flows(p1.flows)


_PROCESS_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.test_compiler import EVERYTHING_ISOLATION, EVERYTHING_RULES, everything_bridge
from flows.compiler import compile_bridge
sys.stdout.write(compile_bridge(everything_bridge("fabric"), EVERYTHING_RULES, EVERYTHING_ISOLATION).render())
"""


def test_byte_identical_across_processes_and_hash_seeds():
    outs = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", _PROCESS_SCRIPT, str(REPO)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outs.add(done.stdout)
    assert len(outs) == 1
    assert outs.pop() == compile_bridge(everything_bridge("fabric"), EVERYTHING_RULES, EVERYTHING_ISOLATION).render()


def test_duplicate_rule_ids_are_refused():
    r = rule("x/a", {"10.0.0.1"})
    with pytest.raises(CompileError):
        compile_bridge(ALONE, [r, dataclasses.replace(r, targets=frozenset({"10.0.0.2"}))], [])


# Two rules on different pods share a priority level; one allows port 80, the other 80-81: the
# clause flows tp_dst=80 (exact) and tp_dst=0x50/0xfffe sit at one priority and must sort.
def test_exact_and_masked_matches_of_one_value_at_one_priority_compile():
    a = rule("x/a", {"10.0.0.1"}, ["10.1.0.0/16"], [tcp(80)])
    b = rule("x/b", {"10.0.0.2"}, ["10.1.0.0/16"], [tcp(80, 81)])
    prog = compile_bridge(ALONE, [a, b], [])
    assert info(prog, "x/a").priority == info(prog, "x/b").priority
    ports = [f.get("tp_dst") for f in rule_flows(prog) if f.get("tp_dst")]
    assert ports == [Match("tp_dst", 80), Match("tp_dst", 80, 0xFFFE)]
    sim = Simulator(prog.flows)
    for dst, port, ok in (("10.0.0.1", 80, True), ("10.0.0.1", 81, False), ("10.0.0.2", 81, True)):
        step = sim.lookup(P.INGRESS_RULE, Packet.l4("tcp", in_port=0, src_ip="10.1.0.1", dst_ip=dst, dst_port=port))
        assert (GotoTable(P.CONNTRACK_COMMIT) in step.flow.actions) is ok


# ---- ipBlock except ------------------------------------------------------------------------------

def tiny_cluster(ip_block: dict):
    from sdn.policy.manifests import load_documents
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"}},
         "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
         "status": {"podIP": "10.0.0.1"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "x", "labels": {"app": "b"}},
         "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
         "status": {"podIP": "10.0.0.2"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "from-block", "namespace": "x"},
         "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"ipBlock": ip_block}], "ports": [{"protocol": "TCP", "port": 80}]}]}},
    ]
    cluster, _ = load_documents(docs)
    return cluster


@pytest.mark.parametrize("block", [
    {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.0/24"]},
    {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/24", "10.0.128.0/17"]},
    {"cidr": "192.168.0.0/24", "except": ["192.168.0.77/32"]},
    {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]},
    {"cidr": "10.0.0.0/8"},
])
def test_ipblock_except_becomes_disjoint_cidrs(block):
    from sdn.policy.rules import cluster_rules
    rules, isolation = cluster_rules(tiny_cluster(block))
    (r,) = rules
    assert r.targets == frozenset({"10.0.0.1"})
    assert isolation == [Isolation(INGRESS, "10.0.0.1", ("x/from-block",))]
    nets = [netaddr.IPNetwork(c) for c in r.peers]
    for x, y in itertools.combinations(nets, 2):
        assert x.last < y.first or y.last < x.first, (x, y)  # pairwise disjoint
    want = netaddr.IPSet([block["cidr"]]) - netaddr.IPSet(block.get("except", []))
    assert netaddr.IPSet(nets) == want
    assert sum(n.size for n in nets) == want.size  # no address counted twice
    # compiled, an excepted address is refused and a kept one allowed, with no undefined lookup
    prog = compile_bridge(bridge("10.0.0.1", "10.0.0.2"), rules, isolation)
    sim = Simulator(prog.flows)
    for exc in block.get("except", []):
        net = netaddr.IPNetwork(exc)
        for probe in (net.first, net.last):
            pkt = Packet.l4("tcp", in_port=0, src_ip=str(netaddr.IPAddress(probe)), dst_ip="10.0.0.1", dst_port=80)
            assert sim.lookup(P.INGRESS_RULE, pkt).flow.priority == 0
    for addr in itertools.islice(want.iter_cidrs(), 5):
        pkt = Packet.l4("tcp", in_port=0, src_ip=str(addr.network), dst_ip="10.0.0.1", dst_port=80)
        assert GotoTable(P.CONNTRACK_COMMIT) in sim.lookup(P.INGRESS_RULE, pkt).flow.actions


# ---- placement: default deny and host-mode scoping -----------------------------------------------

def test_default_deny_only_for_isolated_local_pods():
    br = bridge("10.0.0.1", "10.0.0.2", "fd00::3")
    iso = [Isolation(INGRESS, "10.0.0.1", ("x/p",)), Isolation(EGRESS, "10.0.0.1", ("x/q",)),
           Isolation(INGRESS, "fd00::3", ("x/p",)),
           Isolation(INGRESS, "10.0.9.9", ("x/p",)), Isolation(EGRESS, "10.0.9.8", ("x/q",))]  # remote
    prog = compile_bridge(br, [], iso)
    defaults = [f for f in prog.flows if P.cookie_kind(f.cookie) == P.KIND_DEFAULT]
    assert sorted((f.table, f.render(cookie=False)) for f in defaults) == sorted([
        (P.EGRESS_DEFAULT, "table=31,priority=200,ip,nw_src=10.0.0.1 actions=drop"),
        (P.INGRESS_DEFAULT, "table=41,priority=200,ip,nw_dst=10.0.0.1 actions=drop"),
        (P.INGRESS_DEFAULT, "table=41,priority=200,ipv6,ipv6_dst=fd00::3 actions=drop"),
    ])
    assert sorted(i for _, i in prog.defaults) == sorted(iso[:3])
    assert {c for c, _ in prog.defaults} == {f.cookie for f in defaults}
    # 10.0.0.2 is not isolated: no default flow names it
    assert not any("10.0.0.2" in f.render() for f in defaults)
    # a fabric bridge judges everyone; a fabric-node bridge no one
    assert len([f for f in compile_bridge(bridge("10.0.0.1", mode="fabric"), [], iso).flows
                if P.cookie_kind(f.cookie) == P.KIND_DEFAULT]) == len(iso)
    assert not [f for f in compile_bridge(bridge("10.0.0.1", mode="fabric-node"), [], iso).flows
                if P.cookie_kind(f.cookie) == P.KIND_DEFAULT]


def test_host_mode_keeps_only_rules_applied_to_local_pods():
    br = bridge("10.0.0.1", "10.0.0.2")
    mixed = rule("x/mixed", {"10.0.0.1", "10.0.5.5"}, ["10.1.0.0/16"], [tcp(80)])
    remote = rule("x/remote", {"10.0.5.5"}, ["10.0.0.1/32"], [tcp(80)])
    local = rule("x/local", {"10.0.0.2"}, None, None, EGRESS)
    kept, iso = scope_rules(br, [mixed, remote, local], [Isolation(INGRESS, "10.0.5.5", ("x/remote",))])
    assert kept == [dataclasses.replace(mixed, targets=frozenset({"10.0.0.1"})), local]
    assert kept[1] is local  # untouched when all targets are local
    assert iso == []
    prog = compile_bridge(br, [mixed, remote, local], [])
    assert {r.id.policy for r in prog.rules} == {"x/mixed", "x/local"}
    assert not any("10.0.5.5" in f.render() for f in prog.flows)
    assert [f.get("nw_dst") for f in rule_flows(prog, P.INGRESS_RULE) if f.get("nw_dst")] == [
        Match("nw_dst", ip("10.0.0.1"))]
    # a peer that is a remote address stays (it is a peer, not a target)
    assert any(f.get("nw_src") == Match("nw_src", ip("10.1.0.0"), 0xFFFF0000) for f in prog.flows)
    # fabric keeps all, fabric-node none
    assert scope_rules(dataclasses.replace(br, mode="fabric"), [mixed, remote], []) == ([mixed, remote], [])
    assert scope_rules(dataclasses.replace(br, mode="fabric-node"), [mixed, remote], []) == ([], [])
    assert not rule_flows(compile_bridge(dataclasses.replace(br, mode="fabric-node"), [mixed, remote, local], []))


# ---- simulator semantics on hand-built tables ----------------------------------------------------

def pkt(src="10.1.0.1", dst="10.0.0.1", port=80, proto="tcp", in_port=1) -> Packet:
    return Packet.l4(proto, in_port=in_port, src_ip=src, dst_ip=dst, dst_port=port)


def nw_src(a: str) -> tuple[Match, ...]:
    return (Match("dl_type", IP), Match("nw_src", ip(a)))


def nw_dst(a: str) -> tuple[Match, ...]:
    return (Match("dl_type", IP), Match("nw_dst", ip(a)))


def port80() -> tuple[Match, ...]:
    return (Match("dl_type", IP), Match("nw_proto", 6), Match("tp_dst", 80))


def conj_flow(cid: int, prio: int, out: int) -> Flow:
    return Flow(0, prio, (Match("conj_id", cid),), (Output(out),))


def test_highest_priority_wins():
    sim = Simulator([Flow(0, 10, (), (Output(1),)), Flow(0, 100, nw_dst("10.0.0.1"), (Output(2),)),
                     Flow(0, 50, (Match("dl_type", IP),), (Output(3),))])
    assert sim.run(pkt()).outputs == [2]
    assert sim.run(pkt(dst="10.0.0.2")).outputs == [3]
    assert sim.run(Packet({"in_port": 1, "dl_type": 0x0806})).outputs == [1]
    assert Simulator([]).run(pkt()).dropped  # table miss without a miss flow drops


def test_two_ordinary_flows_at_one_priority_are_ambiguous():
    sim = Simulator([Flow(0, 100, nw_dst("10.0.0.1"), (Output(1),)), Flow(0, 100, nw_src("10.1.0.1"), (Output(2),))])
    with pytest.raises(Ambiguous):
        sim.run(pkt())
    assert sim.run(pkt(src="10.1.0.2")).outputs == [1]


def test_a_conjunction_beats_a_lower_priority_ordinary_flow():
    flows = [Flow(0, 100, nw_src("10.1.0.1"), (Conjunction(5, 1, 2),)),
             Flow(0, 100, nw_dst("10.0.0.1"), (Conjunction(5, 2, 2),)),
             conj_flow(5, 100, 7), Flow(0, 50, (Match("dl_type", IP),), (Output(1),))]
    sim = Simulator(flows)
    res = sim.run(pkt())
    assert res.outputs == [7]
    assert set(res.steps[0].clauses) == set(flows[:2])
    assert res.steps[0].flow == flows[2]
    # but an ordinary flow of higher priority beats it
    sim = Simulator(flows + [Flow(0, 200, nw_dst("10.0.0.1"), (Output(9),))])
    assert sim.run(pkt()).outputs == [9]


def test_an_incomplete_conjunction_falls_through_to_lower_priorities():
    flows = [Flow(0, 200, nw_src("10.1.0.1"), (Conjunction(5, 1, 3),)),
             Flow(0, 200, nw_dst("10.0.0.1"), (Conjunction(5, 2, 3),)),
             Flow(0, 200, port80(), (Conjunction(5, 3, 3),)), conj_flow(5, 200, 7),
             Flow(0, 100, nw_src("10.1.0.1"), (Conjunction(6, 1, 2),)),
             Flow(0, 100, nw_dst("10.0.0.1"), (Conjunction(6, 2, 2),)), conj_flow(6, 100, 8),
             Flow(0, 0, (), (Output(1),))]
    sim = Simulator(flows)
    assert sim.run(pkt(port=80)).outputs == [7]
    assert sim.run(pkt(port=81)).outputs == [8]  # clause 3 of 5 missing: the 100 level decides
    assert sim.run(pkt(dst="10.0.0.2")).outputs == [1]  # nothing complete: the miss flow


def test_a_complete_conjunction_without_a_conj_id_flow_falls_through():
    flows = [Flow(0, 200, nw_src("10.1.0.1"), (Conjunction(5, 1, 2),)),
             Flow(0, 200, nw_dst("10.0.0.1"), (Conjunction(5, 2, 2),)),
             Flow(0, 50, (), (Output(1),))]
    res = Simulator(flows).run(pkt())
    assert res.outputs == [1] and res.steps[0].clauses == ()
    assert Simulator(flows + [conj_flow(6, 200, 9)]).run(pkt()).outputs == [1]  # another id's flow
    assert Simulator(flows + [conj_flow(5, 200, 9)]).run(pkt()).outputs == [9]
    # ... down to a complete conjunction of lower priority that has one
    lower = [Flow(0, 100, nw_src("10.1.0.1"), (Conjunction(6, 1, 2),)),
             Flow(0, 100, nw_dst("10.0.0.1"), (Conjunction(6, 2, 2),)), conj_flow(6, 100, 6)]
    res = Simulator(flows + lower).run(pkt())
    assert res.outputs == [6] and set(res.steps[0].clauses) == set(lower[:2])


def test_two_complete_conjunctions_at_one_priority_are_ambiguous():
    shared = Flow(0, 100, nw_dst("10.0.0.1"), (Conjunction(5, 2, 2), Conjunction(6, 2, 2)))
    flows = [shared, Flow(0, 100, nw_src("10.1.0.1"), (Conjunction(5, 1, 2),)),
             Flow(0, 100, port80(), (Conjunction(6, 1, 2),)), conj_flow(5, 100, 5), conj_flow(6, 100, 6)]
    sim = Simulator(flows)
    with pytest.raises(Ambiguous):
        sim.run(pkt(port=80))
    # one shared flow serving two rules is fine while only one completes
    assert sim.run(pkt(port=81)).outputs == [5]
    assert sim.run(pkt(src="10.1.0.2", port=80)).outputs == [6]
    # at different priorities the higher one decides
    moved = [dataclasses.replace(f, priority=90) if any(c.id == 6 for c in f.conjunctions) or f.get("conj_id") ==
             Match("conj_id", 6) else f for f in flows[1:]]
    sim = Simulator(moved + [Flow(0, 100, nw_dst("10.0.0.1"), (Conjunction(5, 2, 2),)),
                             Flow(0, 90, nw_dst("10.0.0.1"), (Conjunction(6, 2, 2),))])
    assert sim.run(pkt(port=80)).outputs == [5]


def ct_tables(commit_label: bool = True) -> list[Flow]:
    exec_ = (Move(FieldRef("reg3"), FieldRef("ct_label", 32, 63)),) if commit_label else ()
    st = lambda text: Match("ct_state", *parse_value("ct_state", text))  # noqa: E731
    return [
        Flow(0, 100, (Match("dl_type", IP),), (Load(0x7B, FieldRef("reg3")), CT(zone=1, table=1))),
        Flow(1, 200, (st("+inv+trk"),), ()),
        Flow(1, 190, (st("+est+rpl+trk"),), (Output(2),)),
        Flow(1, 180, (st("+est+trk"),), (Output(3),)),
        Flow(1, 170, (st("+new+trk"),), (CT(zone=1, commit=True, exec=exec_), Output(4))),
    ]


def test_ct_recirculation_new_then_established_then_reply():
    sim = Simulator(ct_tables())
    ct = Conntrack()
    first = sim.run(pkt(), ct)
    assert first.outputs == [4] and first.committed
    assert first.packet.get("ct_state") == CT_BITS["new"] | CT_BITS["trk"]
    assert [s.table for s in first.steps] == [0, 1]
    assert ct.label(pkt(), 1) == 0x7B << 32  # ct_label[32..63] := reg3 at commit
    again = sim.run(pkt(), ct)
    assert again.outputs == [3] and not again.committed
    assert again.packet.get("ct_state") == CT_BITS["est"] | CT_BITS["trk"]
    reply = sim.run(pkt().reply(), ct)
    assert reply.outputs == [2]
    assert reply.packet.get("ct_state") == CT_BITS["est"] | CT_BITS["rpl"] | CT_BITS["trk"]
    assert reply.packet.get("ct_label") == 0x7B << 32
    # another zone knows nothing of it, and a fresh Conntrack per run means every packet is new
    assert sim.run(pkt()).outputs == [4]
    other = Simulator([dataclasses.replace(f, actions=(Load(1, FieldRef("reg3")), CT(zone=2, table=1)))
                       if f.table == 0 else f for f in ct_tables()])
    assert other.run(pkt(), ct).outputs == [4]


def test_ct_next_accepts_space_separated_flags():
    assert Simulator(ct_tables()).run(pkt(), ct_next=["trk est"]).outputs == [3]


def test_ct_next_overrides_state_like_ofproto_trace():
    sim = Simulator(ct_tables())
    assert sim.run(pkt(), ct_next=["trk,est"]).outputs == [3]
    assert sim.run(pkt(), ct_next=["trk,est,rpl"]).outputs == [2]
    assert sim.run(pkt(), ct_next=["trk|inv"]).dropped
    assert sim.run(pkt(), ct_next=["trk,new"]).outputs == [4]
    # more ct actions than --ct-next entries: the rest come from the connection tracker
    ct = Conntrack()
    assert sim.run(pkt(), ct, ct_next=[]).outputs == [4]
    assert sim.run(pkt(), ct, ct_next=["trk,new"]).outputs == [4]  # the override wins over "est"


def test_load_and_move_bit_ranges():
    flows = [Flow(0, 1, (), (Load(0xFFFFFFFF, FieldRef("reg0")), Load(0x5, FieldRef("reg0", 4, 7)),
                             Load(1, FieldRef("reg1", 31, 31)),
                             Move(FieldRef("reg0", 0, 7), FieldRef("reg2", 8, 15)),
                             Move(FieldRef("nw_src"), FieldRef("reg3")),
                             Move(FieldRef("nw_src", 24, 31), FieldRef("reg4", 0, 7)),
                             GotoTable(1))),
             Flow(1, 1, (Match("reg0", 0x50, 0xF0), Match("reg2", 0x5F00)), (Output(1),))]
    res = Simulator(flows).run(pkt(src="10.1.0.1"))
    f = res.packet.fields
    assert f["reg0"] == 0xFFFFFF5F  # bits 4..7 replaced, the rest kept
    assert f["reg1"] == 1 << 31
    assert f["reg2"] == 0x5F00
    assert f["reg3"] == ip("10.1.0.1")
    assert f["reg4"] == 10
    assert res.outputs == [1]
    # a load wider than its range is cut to the range
    res = Simulator([Flow(0, 1, (), (Load(0x1FF, FieldRef("reg5", 0, 7)),))]).run(pkt())
    assert res.packet.fields["reg5"] == 0xFF


def test_in_port_output_and_goto_chain():
    flows = [Flow(0, 1, (), (GotoTable(5),)), Flow(5, 1, (), (Output(3), InPort()))]
    res = Simulator(flows).run(pkt(in_port=7))
    assert res.outputs == [3, 7]
    assert [s.table for s in res.steps] == [0, 5] and res.hit(5).flow == flows[1] and res.hit(9) is None


@pytest.mark.parametrize("spelling", ["trk,est", "trk est", "trk|est", "+trk+est", " trk, est "])
def test_ct_next_spellings(spelling):
    assert Simulator(ct_tables()).run(pkt(), ct_next=[spelling]).outputs == [3]


def test_identical_rules_share_one_set_of_flows():
    """Rules matching exactly the same (direction, applied-to, peers, ports) once scoped are
    one set of flows: the first in rule order is placed, the others name it (same_as)."""
    br = bridge("10.0.0.1", "10.0.0.2")
    rules = [rule(f"x/p{i}", {"10.0.0.1"}, ["10.1.0.0/16", "10.3.0.7/32"], [tcp(80)]) for i in range(5)]
    other = rule("x/q", {"10.0.0.2"}, ["10.1.0.0/16"], [tcp(80)])
    one = compile_bridge(br, rules[:1] + [other], [])
    many = compile_bridge(br, rules + [other], [])
    assert set(many.flows) == set(one.flows)
    infos = {r.id.policy: r for r in many.rules}
    assert all(infos[f"x/p{i}"].same_as == rules[0].id for i in range(1, 5))
    assert infos["x/p0"].same_as is None and infos["x/q"].same_as is None
    assert len({infos[f"x/p{i}"].conj_id for i in range(5)}) == 1
    assert many.aliases() == {rules[0].id: [r.id for r in rules[1:]]}
    assert many.by_conj()[infos["x/p0"].conj_id].id == rules[0].id


def test_identical_rules_incrementally():
    """Taking out the placed rule of a group hands its flows to the next; a member that
    changes leaves the group; every step's diff turns the old tables into the new ones, and
    the tables equal a fresh compile's."""
    br = bridge("10.0.0.1", "10.0.0.2")
    same = lambda name, ports=(80,): rule(name, {"10.0.0.1"}, ["10.1.0.0/16"], [tcp(p) for p in ports])  # noqa: E731
    c = BridgeCompiler(br)
    c.update(upsert=[same("x/b"), same("x/c"), same("x/d")], diff=False)
    table = {f.key: f for f in c.program().flows}

    def step(**kw):
        d = c.update(**kw)
        for f in d.delete:
            del table[f.key]
        for f in d.modify + d.add:
            table[f.key] = f
        prog = c.program()
        assert table == {f.key: f for f in prog.flows}
        fresh = compile_bridge(br, list(c._all_rules.values()), [])
        assert sorted(f.match for f in prog.flows if f.table == 40) == sorted(
            f.match for f in fresh.flows if f.table == 40)  # conj ids and levels may differ
        return d, prog

    d, prog = step(upsert=[same("x/a")])  # sorts first: takes the group's placement
    assert {r.id.policy: r.same_as for r in prog.rules}["x/b"] == RuleId("x/a", "ingress", 0, 0)
    assert len(d) == 1 and d.modify  # only the conj_id flow's cookie changes
    d, prog = step(delete=[RuleId("x/a", "ingress", 0, 0)])
    assert {r.id.policy: r.same_as for r in prog.rules}["x/b"] is None
    d, prog = step(upsert=[same("x/b", (80, 81))])  # the placed one changes: x/c takes over
    infos = {r.id.policy: r for r in prog.rules}
    assert infos["x/b"].same_as is None and infos["x/c"].same_as is None
    assert infos["x/d"].same_as == RuleId("x/c", "ingress", 0, 0)
    d, prog = step(upsert=[same("x/d", (80, 81))])  # joins x/b
    infos = {r.id.policy: r for r in prog.rules}
    assert infos["x/d"].same_as == RuleId("x/b", "ingress", 0, 0)
    d, prog = step(delete=[RuleId("x/b", "ingress", 0, 0), RuleId("x/c", "ingress", 0, 0)])
    assert [r.id.policy for r in prog.rules] == ["x/d"] and prog.rules[0].same_as is None


def test_a_flow_handed_from_one_patched_rule_to_another_in_one_update():
    """A pod that moves from one self-selecting rule to another and back (a label flip and its
    revert): both rules keep their shared priority and plain encoding, and the flow from the
    pod to itself passes from one to the other in one update. Every rule takes out what it
    leaves before any rule puts in what it gets, so the hand-over is no collision."""
    from tests.switch_support import apply_flow_diff

    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    br = bridge(*ips)
    self_selecting = lambda name, pods: rule(name, pods, [f"{a}/32" for a in sorted(pods)])  # noqa: E731
    a, b = self_selecting("x/a", {ips[0], ips[1]}), self_selecting("x/b", {ips[2]})
    c = BridgeCompiler(br, compile_bridge(br, [a, b], []))
    c.update(upsert=[a, b], diff=False)
    table = {f.key: f for f in c.program().flows}
    for upsert in ([self_selecting("x/a", {ips[0]}), self_selecting("x/b", {ips[1], ips[2]})], [a, b]):
        d = c.update(upsert=upsert)
        apply_flow_diff(table, d)
        prog = c.program()
        assert table == {f.key: f for f in prog.flows}
        assert {r.priority for r in prog.rules} == {PR.RULE_PRIORITY_TOP}
        fresh = compile_bridge(br, upsert, [])
        assert sorted(f.match for f in prog.flows if f.table == 40) == sorted(
            f.match for f in fresh.flows if f.table == 40)
