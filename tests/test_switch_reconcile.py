"""sdn.switch.reconcile: installed flows + desired tables -> the one bundle between them.
Pure: the switch is a dict here (`apply` below does what OVS does with each op)."""

from __future__ import annotations

import pytest

from flows.compiler import compile_bridge
from flows.flow import Conjunction, Flow, GotoTable, Match, diff
from flows.ir import INGRESS, Bridge, PodPort, PortRange, Rule, RuleId
from flows.wire import InstalledFlow
from sdn.switch.reconcile import ADD, DELETE, DELETE_COOKIE, DELETE_RAW, MODIFY, REPLACE, plan

RULE_A, RULE_B, CLAUSE, PIPE = 0x5D02000000000001, 0x5D02000000000002, 0x5D03000000000000, 0x5D01000000000000


def ip(n: int) -> tuple[Match, ...]:
    return (Match("dl_type", 0x800), Match("nw_src", n))


def apply(installed: dict, ops) -> dict:
    """What OVS does with the ops (OpenFlow 1.3 semantics), in order."""
    table = dict(installed)
    for op in ops:
        if op.kind in (ADD, REPLACE):
            table[op.flow.key] = op.flow
        elif op.kind == MODIFY:
            old = table.get(op.flow.key)
            if old is not None:  # modify keeps the cookie
                table[op.flow.key] = Flow(old.table, old.priority, old.match, op.flow.actions, old.cookie)
        elif op.kind == DELETE:
            table.pop(op.flow.key, None)
        elif op.kind == DELETE_COOKIE:
            table = {k: f for k, f in table.items() if f.cookie != op.cookie}
        elif op.kind == DELETE_RAW:
            table.pop((op.installed.table, op.installed.priority, op.installed.match_raw), None)
    return table


def test_empty_switch_gets_every_flow_added():
    want = [Flow(40, 100, ip(i), (GotoTable(41),), RULE_A) for i in range(5)]
    p = plan([], want)
    assert p.add == tuple(want) and not p.modify and not p.deleted
    assert [op.kind for op in p.ops()] == [ADD] * 5


def test_in_sync_means_nothing_to_send():
    want = [Flow(40, 100, ip(i), (GotoTable(41),), RULE_A) for i in range(5)]
    assert plan(want, want).empty
    assert plan([InstalledFlow(f, f.table, f.priority, f.cookie, 3, 300, 1.0) for f in want], want).empty


def test_shared_clause_flow_whose_conjunctions_changed_is_modified_not_replaced():
    old = Flow(40, 100, ip(1), (Conjunction(7, 1, 2),), CLAUSE)
    new = Flow(40, 100, ip(1), (Conjunction(7, 1, 2), Conjunction(9, 1, 3)), CLAUSE)
    p = plan([old], [new])
    assert p.modify == (new,) and not p.add and not p.replace and not p.deleted
    assert p.summary() == {"add": 0, "modify": 1, "delete": 0, "messages": 1}


def test_same_key_other_cookie_is_replaced_by_an_add():
    old = Flow(40, 100, ip(1), (GotoTable(41),), RULE_A)
    new = Flow(40, 100, ip(1), (GotoTable(41),), RULE_B)
    p = plan([old], [new])
    assert p.replace == (new,) and p.ops()[0].kind == REPLACE
    assert not p.delete_cookies  # the replacement took the only flow of RULE_A
    assert apply({old.key: old}, p.ops()) == {new.key: new}


def test_flows_of_a_removed_rule_go_by_cookie_and_others_strictly():
    keep = Flow(40, 100, ip(1), (GotoTable(41),), RULE_A)
    gone_same_cookie = Flow(40, 100, ip(2), (GotoTable(41),), RULE_A)
    gone_rule = [Flow(40, 90, ip(i), (GotoTable(41),), RULE_B) for i in range(3)]
    p = plan([keep, gone_same_cookie, *gone_rule], [keep])
    assert p.delete == (gone_same_cookie,)
    assert p.delete_cookies == (RULE_B,) and p.deleted_by_cookie == 3 and p.deleted == 4
    assert p.unknown == ()  # RULE_B is ours (0x5d tag), just not wanted
    assert [op.kind for op in p.ops()] == [DELETE, DELETE_COOKIE]


def test_flows_of_unknown_cookies_are_cleaned_up_and_reported():
    ours = Flow(0, 0, (), (), PIPE)
    foreign = [Flow(0, 5, ip(1), (), 0x1234), Flow(0, 6, ip(2), (), 0)]
    p = plan([ours, *foreign], [ours])
    assert p.delete_cookies == (0, 0x1234) and p.unknown == (0, 0x1234)


def test_undecodable_installed_flows():
    known = Flow(0, 0, (), (), PIPE)
    raw_known = InstalledFlow(None, 0, 5, PIPE, 0, 0, 0.0, b"\x00\x01\x00\x08\x80\x00\x0c\x02")
    raw_foreign = InstalledFlow(None, 0, 6, 0x77, 0, 0, 0.0, b"\x00\x01\x00\x04\x00\x00\x00\x00")
    p = plan([known, raw_known, raw_foreign], [known])
    assert p.delete_raw == (raw_known,) and p.delete_cookies == (0x77,)


def test_make_before_break_order():
    a_old = Flow(40, 100, ip(1), (Conjunction(7, 1, 2),), CLAUSE)
    a_new = Flow(40, 100, ip(1), (Conjunction(8, 1, 2),), CLAUSE)
    r_old = Flow(40, 99, ip(3), (GotoTable(41),), RULE_A)
    r_new = Flow(40, 99, ip(3), (GotoTable(41),), RULE_B)
    gone = Flow(40, 100, ip(2), (Conjunction(7, 1, 2),), CLAUSE)
    added = Flow(40, 100, ip(4), (Conjunction(8, 1, 2),), CLAUSE)
    stale = Flow(40, 98, ip(5), (GotoTable(41),), RULE_A)
    p = plan([a_old, gone, r_old, stale], [a_new, added, r_new])
    assert [op.kind for op in p.ops()] == [ADD, REPLACE, MODIFY, DELETE, DELETE_COOKIE]


# ---- on compiled programs ------------------------------------------------------------------

def _bridge() -> Bridge:
    pods = tuple(PodPort(f"x/p{i}", 10 + i, f"0a:58:0a:00:00:{i:02x}", (f"10.0.0.{i}",)) for i in range(1, 9))
    return Bridge("br0", pods, (), (1,), "0a:58:a9:fe:00:01")


def _rule(policy: str, targets, peers, port: int) -> Rule:
    return Rule(RuleId(policy, INGRESS, 0), frozenset(f"10.0.0.{t}" for t in targets),
                tuple(f"10.1.0.{p}/32" for p in peers), (PortRange("tcp", port),))


VERSIONS = [
    [_rule("x/a", [1, 2], [1, 2, 3], 80)],
    [_rule("x/a", [1, 2], [1, 2, 3], 80), _rule("x/b", [1, 3], [3, 4], 443)],
    [_rule("x/a", [1, 2], [1, 2, 3, 5], 80), _rule("x/b", [1, 3], [3, 4], 443)],
    [_rule("x/b", [1, 3], [3, 4], 8443)],
    [],
]


@pytest.mark.parametrize("i", range(len(VERSIONS) - 1))
def test_incremental_changes_send_exactly_the_difference(i):
    before = compile_bridge(_bridge(), VERSIONS[i], [])
    after = compile_bridge(_bridge(), VERSIONS[i + 1], [], previous=before)
    p = plan(before.flows, after.flows)
    d = diff(before.flows, after.flows)
    assert len(p.add) == len(d.add)
    assert p.modified == len(d.modify)
    assert p.deleted == len(d.delete)
    assert len(p.ops()) <= len(d)  # deletes by cookie can only merge messages
    assert apply({f.key: f for f in before.flows}, p.ops()) == {f.key: f for f in after.flows}


def test_apply_then_revert_restores_the_identical_table():
    a = compile_bridge(_bridge(), VERSIONS[1], [])
    b = compile_bridge(_bridge(), VERSIONS[2], [], previous=a)
    table = {f.key: f for f in a.flows}
    there = apply(table, plan(a.flows, b.flows).ops())
    back = apply(there, plan(list(there.values()), a.flows).ops())
    assert back == table
    assert plan(list(back.values()), a.flows).empty
