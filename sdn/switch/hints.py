"""A restarted controller's first compile, hinted by the flows its bridges already hold.

The compiler keeps an unchanged rule's priority and conj id from the program it compiled
before (`previous`); a restarted controller has none, so a fresh compile may place a rule
elsewhere than the history of changes placed it (a priority level freed by a rule removed
since stays taken until a restart) and would rewrite flows that did not change. The flows
installed tell both: every allowing flow of a rule carries the rule's cookie, its priority,
and its conj id loaded into the conj register (flows/table.py). A program made of those
(no flows, only the rule index) is the hint the first compile lacked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from flows import pipeline as P
from flows.flow import Load
from flows.program import Program
from flows.wire import InstalledFlow

CONJ_REGISTERS = frozenset({P.REG_EGRESS_CONJ, P.REG_INGRESS_CONJ})


def _conj_id(flow) -> int | None:
    for action in flow.actions:
        if isinstance(action, Load) and action.dst.field in CONJ_REGISTERS:
            return action.value
    match = flow.get("conj_id")
    return None if match is None else match.value


def installed_placements(installed: Iterable[InstalledFlow]) -> dict[int, tuple[int, int | None]]:
    """Rule cookie -> (priority, conj id) of the rule flows installed."""
    out: dict[int, tuple[int, int | None]] = {}
    for item in installed:
        flow = item.flow
        if flow is None or P.cookie_kind(item.cookie) != P.KIND_RULE:
            continue
        cid = _conj_id(flow)
        have = out.get(item.cookie)
        if have is None or (have[1] is None and cid is not None):
            out[item.cookie] = (item.priority, cid)
    return out


def hint_program(fresh: Program, installed: Iterable[InstalledFlow]) -> Program | None:
    """The rules of `fresh` placed as the installed flows place them (rules without installed
    flows left out), as a `previous` program for the compiler; None when the installed flows
    place every rule as `fresh` does (no second compile needed)."""
    placed = installed_placements(installed)
    rules, differs = [], False
    for rule in fresh.rules:
        got = placed.get(rule.cookie)
        if got is None or rule.same_as is not None:
            continue
        priority, cid = got
        cid = rule.conj_id if cid is None else cid
        differs |= (priority, cid) != (rule.priority, rule.conj_id)
        rules.append(dataclasses.replace(rule, priority=priority, conj_id=cid))
    return Program(fresh.bridge, (), tuple(rules), ()) if differs else None
