"""The Flow value type: immutable, hashable, ordered; renders to ovs-ofctl syntax, parses back
from `ovs-ofctl dump-flows` text, and diffs two tables into adds, modifies and deletes."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter

from flows.fields import (
    ETH_ARP,
    ETH_IP,
    ETH_IPV6,
    FIELDS,
    ORDER,
    PROTO_NAMES,
    PROTO_NUMBERS,
    FieldRef,
    canonical_name,
    format_mac,
    format_value,
    full_mask,
    parse_mac,
    parse_value,
)
from flows.match import Match, canonical_match, hash_once, match_order  # noqa: F401 (re-exported)

# ---- actions -------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class Output:
    port: int

    def render(self) -> str:
        return f"output:{self.port}"


@dataclass(frozen=True, order=True)
class InPort:
    def render(self) -> str:
        return "IN_PORT"


@dataclass(frozen=True, order=True)
class GotoTable:
    table: int

    def render(self) -> str:
        return f"goto_table:{self.table}"


class Conjunction(tuple):
    """conjunction(id, clause/n_clauses). A tuple underneath (see Match): a shared clause flow
    carries one per rule, hundreds of thousands per table, hashed and sorted in C."""

    __slots__ = ()

    def __new__(cls, id: int, clause: int, n_clauses: int) -> Conjunction:
        return tuple.__new__(cls, (id, clause, n_clauses))

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    __setattr__ = Match.__setattr__

    id = property(itemgetter(0), doc="the conj id")
    clause = property(itemgetter(1), doc="1-based, as ovs-ofctl writes it")
    n_clauses = property(itemgetter(2), doc="how many clauses the conjunction has")

    def __repr__(self) -> str:
        return f"Conjunction(id={self[0]!r}, clause={self[1]!r}, n_clauses={self[2]!r})"

    def render(self) -> str:
        return f"conjunction({self[0]},{self[1]}/{self[2]})"


@dataclass(frozen=True, order=True)
class Load:
    """Set bits of a field to a constant (load:/set_field:)."""

    value: int
    dst: FieldRef

    def render(self) -> str:
        d = FIELDS[self.dst.field]
        if self.dst.start == 0 and self.dst.end is None:
            if d.kind == "mac":
                return f"set_field:{format_mac(self.value)}->{_SET_FIELD_NAME.get(d.name, d.name)}"
            if d.kind == "ipv4":
                return f"set_field:{format_value(d.name, self.value, None)}->{d.name}"
        return f"load:{self.value:#x}->{self.dst.render()}"


@dataclass(frozen=True, order=True)
class Move:
    src: FieldRef
    dst: FieldRef

    def render(self) -> str:
        return f"move:{self.src.render()}->{self.dst.render()}"


@dataclass(frozen=True, order=True)
class CT:
    """Connection tracking: ct(commit, zone, table, exec(...))."""

    zone: int
    table: int | None = None
    commit: bool = False
    exec: tuple = ()

    def render(self) -> str:
        parts = []
        if self.commit:
            parts.append("commit")
        if self.table is not None:
            parts.append(f"table={self.table}")
        parts.append(f"zone={self.zone}")
        if self.exec:
            parts.append("exec(" + ",".join(a.render() for a in self.exec) + ")")
        return "ct(" + ",".join(parts) + ")"


Action = Output | InPort | GotoTable | Conjunction | Load | Move | CT
_SET_FIELD_NAME = {"dl_src": "eth_src", "dl_dst": "eth_dst"}


# ---- flows ---------------------------------------------------------------------------------

@functools.total_ordering
@dataclass(frozen=True)
class Flow:
    """One OpenFlow flow. `match` is kept sorted so equal flows compare and hash equal; flows
    are ordered by table, priority, match, actions text and cookie (a total order)."""

    table: int
    priority: int
    match: tuple[Match, ...]
    actions: tuple = ()
    cookie: int = field(default=0, compare=True)

    def __post_init__(self):
        match = self.match
        ordered = canonical_match(match) if type(match) is tuple else canonical_match(tuple(match))
        if ordered is not match:
            object.__setattr__(self, "match", ordered)

    def sort_key(self) -> tuple:
        """(table, priority, match keys, actions text, cookie), computed once per flow."""
        key = self.__dict__.get("_sort_key")
        if key is None:
            key = (self.table, self.priority, match_order(self.match), self.actions_text, self.cookie)
            object.__setattr__(self, "_sort_key", key)
        return key

    def __lt__(self, other: Flow) -> bool:
        return self.sort_key() < other.sort_key()

    @property
    def key(self) -> tuple:
        """What identifies a flow in a switch table: table, priority and match."""
        return (self.table, self.priority, self.match)

    def get(self, name: str) -> Match | None:
        for m in self.match:
            if m.field == name:
                return m
        return None

    @property
    def conjunctions(self) -> tuple[Conjunction, ...]:
        return tuple(a for a in self.actions if isinstance(a, Conjunction))

    @property
    def actions_text(self) -> str:
        return ",".join(a.render() for a in self.actions) or "drop"

    def render(self, cookie: bool = True) -> str:
        head = f"cookie={self.cookie:#x}," if cookie else ""
        head += f"table={self.table},priority={self.priority}"
        m = render_match(self.match)
        return f"{head}{',' + m if m else ''} actions={self.actions_text}"

    def __str__(self) -> str:
        return self.render()


def render_match(match: Iterable[Match]) -> str:
    fields = {m.field: m for m in match}
    parts = []
    dl_type = fields.pop("dl_type", None)
    proto = fields.get("nw_proto")
    if dl_type is not None and dl_type.mask is None:
        short = None
        if dl_type.value in (ETH_IP, ETH_IPV6) and proto and proto.value in PROTO_NAMES:
            name = PROTO_NAMES[proto.value]
            if name != "icmp6" or dl_type.value == ETH_IPV6:
                short = name if dl_type.value == ETH_IP or name == "icmp6" else name + "6"
                fields.pop("nw_proto")
        if short is None:
            short = {ETH_IP: "ip", ETH_IPV6: "ipv6", ETH_ARP: "arp"}.get(dl_type.value)
        if short is None:
            parts.append(f"dl_type={dl_type.value:#06x}")
        else:
            parts.append(short)
    for m in sorted(fields.values(), key=lambda m: ORDER[m.field]):
        parts.append(f"{m.field}={format_value(m.field, m.value, m.mask)}")
    return ",".join(parts)


_SHORTHANDS = {
    "ip": (ETH_IP, None), "ipv6": (ETH_IPV6, None), "arp": (ETH_ARP, None),
    "tcp": (ETH_IP, 6), "udp": (ETH_IP, 17), "sctp": (ETH_IP, 132), "icmp": (ETH_IP, 1),
    "tcp6": (ETH_IPV6, 6), "udp6": (ETH_IPV6, 17), "sctp6": (ETH_IPV6, 132),
    "icmp6": (ETH_IPV6, 58),
}
# Fields ovs-ofctl prints in dump-flows that are statistics or flags, not part of the match.
_STATS = {"duration", "n_packets", "n_bytes", "idle_age", "hard_age", "idle_timeout",
          "hard_timeout", "reset_counts", "send_flow_rem", "check_overlap", "no_packet_counts",
          "no_byte_counts", "importance"}


def parse_match(text: str) -> tuple[Match, ...]:
    out: dict[str, Match] = {}
    for token in _split_top(text):
        token = token.strip()
        if not token:
            continue
        if token in _SHORTHANDS:
            dl, proto = _SHORTHANDS[token]
            out["dl_type"] = Match("dl_type", dl)
            if proto is not None:
                out["nw_proto"] = Match("nw_proto", proto)
            continue
        name, _, value = token.partition("=")
        name = canonical_name(name)
        v, mask = parse_value(name, value)
        out[name] = Match(name, v, mask)
    return tuple(out.values())


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on sep outside parentheses and brackets."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return parts


def parse_actions(text: str) -> tuple:
    text = text.strip()
    if text in ("drop", ""):
        return ()
    return tuple(_parse_action(tok.strip()) for tok in _split_top(text))


def _parse_action(tok: str):
    if tok.startswith("output:"):
        return Output(int(tok[7:]))
    if tok == "IN_PORT" or tok == "in_port":
        return InPort()
    if tok.startswith("goto_table:"):
        return GotoTable(int(tok[11:]))
    if tok.startswith("conjunction("):
        ident, clause = tok[12:-1].split(",")
        k, n = clause.strip().split("/")
        return Conjunction(int(ident), int(k), int(n))
    if tok.startswith("load:"):
        value, dst = tok[5:].split("->")
        return Load(int(value, 0), FieldRef.parse(dst))
    if tok.startswith("set_field:"):
        value, dst = tok[10:].rsplit("->", 1)
        name = canonical_name(dst)
        v, mask = parse_value(name, value)
        if mask is not None:
            raise ValueError(f"masked set_field not supported: {tok}")
        return Load(v, FieldRef(name))
    if tok.startswith(("mod_dl_src:", "mod_dl_dst:")):
        name = "dl_src" if tok.startswith("mod_dl_src") else "dl_dst"
        return Load(parse_mac(tok[11:]), FieldRef(name))
    if tok.startswith("move:"):
        src, dst = tok[5:].split("->")
        return Move(FieldRef.parse(src), FieldRef.parse(dst))
    if tok.startswith("ct("):
        return _parse_ct(tok[3:-1])
    raise ValueError(f"unsupported action {tok!r}")


def _parse_ct(body: str) -> CT:
    zone, table, commit, execs = 0, None, False, ()
    for part in _split_top(body):
        part = part.strip()
        if part == "commit":
            commit = True
        elif part.startswith("table="):
            table = int(part[6:])
        elif part.startswith("zone="):
            zone = int(part[5:])
        elif part.startswith("exec("):
            execs = parse_actions(part[5:-1])
        elif part:
            raise ValueError(f"unsupported ct argument {part!r}")
    return CT(zone=zone, table=table, commit=commit, exec=execs)


_HEAD = re.compile(r"^\s*(?P<head>.*?)\s*actions=(?P<actions>.*)$")


def parse_flow(line: str) -> Flow:
    """Parse one flow in ovs-ofctl syntax, with or without dump-flows statistics."""
    m = _HEAD.match(line)
    if not m:
        raise ValueError(f"not a flow: {line!r}")
    cookie = table = 0
    priority = 32768
    match_parts = []
    # dump-flows separates stats with ", " and bare flags ("send_flow_rem reset_counts") by " "
    for tok in _split_top(re.sub(r",?\s+", ",", m.group("head"))):
        tok = tok.strip()
        if not tok:
            continue
        name, _, value = tok.partition("=")
        if name == "cookie":
            cookie = int(value.split("/")[0], 0)
        elif name == "table":
            table = int(value)
        elif name == "priority":
            priority = int(value)
        elif name in _STATS or (not value and name in _STATS):
            continue
        else:
            match_parts.append(tok)
    return Flow(table, priority, parse_match(",".join(match_parts)), parse_actions(m.group("actions")),
                cookie)


def parse_flows(text: str) -> list[Flow]:
    """Parse `ovs-ofctl dump-flows` output (or our own rendering); skips headers and comments."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", "OFPST_FLOW", "NXST_FLOW")):
            continue
        out.append(parse_flow(s))
    return out


@dataclass(frozen=True)
class FlowDiff:
    """What turns `installed` into `desired`: flows to add, to modify (same key, other
    actions or cookie) and to delete."""

    add: tuple[Flow, ...]
    modify: tuple[Flow, ...]
    delete: tuple[Flow, ...]

    @property
    def empty(self) -> bool:
        return not (self.add or self.modify or self.delete)

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)


def sorted_by_key(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """Flows of distinct keys in Flow order: their keys decide it, so no actions are rendered
    (a clause flow of a big table carries hundreds of conjunction actions)."""
    return tuple(sorted(flows, key=_key_order))


def _key_order(f: Flow) -> tuple:
    return (f.table, f.priority, match_order(f.match))


def diff(installed: Iterable[Flow], desired: Iterable[Flow]) -> FlowDiff:
    have = {f.key: f for f in installed}
    want = {f.key: f for f in desired}
    add = sorted_by_key(f for k, f in want.items() if k not in have)
    delete = sorted_by_key(f for k, f in have.items() if k not in want)
    modify = sorted_by_key(f for k, f in want.items() if k in have and have[k] != f)
    return FlowDiff(add, modify, delete)


def mask_for(field_name: str) -> int:
    return full_mask(FIELDS[field_name].bits)


def proto_number(name: str) -> int:
    return PROTO_NUMBERS[name.lower()]
