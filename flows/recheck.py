"""Established connections judged again after a change (docs/architecture.md, "Existing
connections"): every judged connection is committed with the generation of the rule tables
that judged it in `ct_label`; an established packet of an older generation goes through the
rule tables again, as a new connection would, in the direction the connection was opened
(a reply's addresses and ports are swapped for the judgement and swapped back after it). If
the rules still allow the connection it is committed again with the current generation and
goes on; if they no longer do, the default tables drop it, in both directions.

The generation is a hash of what the rule and default tables hold (rules with their
priority, conj id and content; isolated addresses), so a change that leaves those tables as
they were (a policy rewritten with the same meaning) re-judges nothing, and a restarted
controller computes the same generation again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from flows import pipeline as P
from flows.fields import ETH_IP, ETH_IPV6, FieldRef, parse_value
from flows.flow import CT, Action, Flow, GotoTable, Load, Match, Move
from flows.priorities import stable_hash

ENFORCE, KEEP = "enforce", "keep"
EXISTING_CONNECTIONS = (ENFORCE, KEEP)

LABEL_EGRESS = FieldRef("ct_label", 0, 31)
LABEL_INGRESS = FieldRef("ct_label", 32, 63)
LABEL_GENERATION = FieldRef("ct_label", 64, 95)
LABEL_UNJUDGED = FieldRef("ct_label", 96, 96)  # committed without the rule tables (node, Service)
GENERATION_MASK = 0xFFFFFFFF << 64
UNJUDGED_BIT = 1 << 96

_PORTS = {6: ("tcp_sport", "tcp_dport"), 17: ("udp_sport", "udp_dport"),
          132: ("sctp_sport", "sctp_dport")}
_ADDRS = {ETH_IP: ("nw_src", "nw_dst"), ETH_IPV6: ("ipv6_src", "ipv6_dst")}
_SCRATCH = ("reg8", "reg9", "reg10", "reg11")  # 128 bits: an IPv6 address in four registers


def reg(name: str, start: int = 0, end: int | None = None) -> FieldRef:
    return FieldRef(name, start, end)


def generation(tokens: int) -> int:
    """The generation stored in ct_label from the XOR of the judging tables' tokens: 32 bits,
    never 0 (0 is what a connection committed before generations existed holds)."""
    return (tokens & 0xFFFFFFFF) or 1


def rule_token(text: str) -> int:
    """One rule's or isolated address's share of the generation: a stable hash, so the same
    tables give the same generation in every process."""
    return stable_hash(text, 32)


def default_token(key: tuple[str, str]) -> int:
    """An isolated (direction, address)'s share of the generation."""
    return rule_token(f"default|{key[0]}|{key[1]}")


def _swap(a: str, b: str, width: int) -> list[Action]:
    """Exchange two packet fields through the scratch registers (32 bits at a time)."""
    chunks = [(lo, min(lo + 32, width) - 1) for lo in range(0, width, 32)]

    def part(field: str, lo: int, hi: int) -> FieldRef:
        return FieldRef(field) if (lo, hi) == (0, width - 1) else FieldRef(field, lo, hi)

    def scratch(i: int, lo: int, hi: int) -> FieldRef:
        return reg(_SCRATCH[i]) if hi - lo == 31 else reg(_SCRATCH[i], 0, hi - lo)

    out: list[Action] = [Move(part(a, lo, hi), scratch(i, lo, hi)) for i, (lo, hi) in enumerate(chunks)]
    out.append(Move(FieldRef(b), FieldRef(a)))
    out += [Move(scratch(i, lo, hi), part(b, lo, hi)) for i, (lo, hi) in enumerate(chunks)]
    return out


def swap_actions(dl_type: int, proto: int | None) -> list[Action]:
    """Swap a packet's addresses (and ports, for TCP, UDP and SCTP) in place; applied twice it
    gives the packet back."""
    src, dst = _ADDRS[dl_type]
    out = _swap(src, dst, 32 if dl_type == ETH_IP else 128)
    if proto in _PORTS:
        out += _swap(*_PORTS[proto], 16)
    return out


def _protocols() -> Iterable[tuple[int, int | None, int]]:
    """(dl_type, IP protocol or None for any other, priority offset)."""
    for dl in (ETH_IP, ETH_IPV6):
        for proto in _PORTS:
            yield dl, proto, 10
        yield dl, None, 0


def commit_label(gen: int | None) -> tuple[Action, ...]:
    """What a commit writes into ct_label: the allowing conj ids, and (enforce) the
    generation and whether the connection was judged at all (reg6)."""
    out: list[Action] = [Move(reg(P.REG_EGRESS_CONJ), LABEL_EGRESS),
                         Move(reg(P.REG_INGRESS_CONJ), LABEL_INGRESS)]
    if gen is not None:
        out += [Load(gen, LABEL_GENERATION), Move(reg(P.REG_UNJUDGED, 0, 0), LABEL_UNJUDGED)]
    return tuple(out)


def recheck_flows(gen: int) -> list[Flow]:
    """Table conntrack_recheck and the commits of re-judged connections (enforce mode)."""
    ck = lambda table: P.cookie(P.KIND_PIPELINE, table)  # noqa: E731
    st = lambda text: Match("ct_state", *_ct(text))  # noqa: E731
    out: list[Flow] = []
    add = lambda t, prio, match, actions=(): out.append(Flow(t, prio, tuple(match), tuple(actions), ck(t)))  # noqa: E731
    t = P.CONNTRACK_RECHECK
    add(t, 210, [Match("ct_label", UNJUDGED_BIT, UNJUDGED_BIT)], [GotoTable(P.OUTPUT)])
    add(t, 200, [Match("ct_label", gen << 64, GENERATION_MASK)], [GotoTable(P.OUTPUT)])
    label = commit_label(gen)
    for dl, proto, offset in _protocols():
        kind = [Match("dl_type", dl)] + ([Match("nw_proto", proto)] if proto else [])
        swap = swap_actions(dl, proto)
        # A reply is judged as the packet that opened its connection.
        add(t, 100 + offset, [st("+rpl+trk"), *kind],
            [*swap, Load(1, reg(P.REG_SWAPPED)), GotoTable(P.EGRESS_RULE)])
        add(P.CONNTRACK_COMMIT, 150 + offset, [st("+est+trk"), Match(P.REG_SWAPPED, 1), *kind],
            [*swap, CT(zone=P.CT_ZONE, commit=True, exec=label), GotoTable(P.OUTPUT)])
    add(t, 0, [], [GotoTable(P.EGRESS_RULE)])
    for dl in (ETH_IP, ETH_IPV6):
        add(P.CONNTRACK_COMMIT, 140, [st("+est+trk"), Match("dl_type", dl)],
            [CT(zone=P.CT_ZONE, commit=True, exec=label), GotoTable(P.OUTPUT)])
    return out


def without_generation(flow: Flow) -> Flow:
    """The flow with the generation it carries (a ct_label match, a load into the label) set
    to 0: two programs whose rule tables say the same with other priorities or conj ids have
    other generations, and nothing else differs in their pipeline flows."""
    def act(a: Action) -> Action:
        if isinstance(a, Load) and a.dst == LABEL_GENERATION:
            return Load(0, LABEL_GENERATION)
        if isinstance(a, CT) and a.exec:
            return dataclasses.replace(a, exec=tuple(act(x) for x in a.exec))
        return a
    match = tuple(Match(m.field, m.value & ~GENERATION_MASK, m.mask)
                  if m.field == "ct_label" and m.mask == GENERATION_MASK else m for m in flow.match)
    return dataclasses.replace(flow, match=match, actions=tuple(act(a) for a in flow.actions))


def _ct(text: str) -> tuple[int, int | None]:
    return parse_value("ct_state", text)
