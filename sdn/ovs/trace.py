"""Run ``ovs-appctl ofproto/trace`` and parse its output.

The trace runs a made-up packet through the real OpenFlow classifier of a running
ovs-vswitchd, so it is an independent judge of what a flow table does.

Format of ``ofproto/trace`` in OVS 3.1 (checked on this machine), which the parser relies on::

    Flow: tcp,in_port=1,vlan_tci=0x0000,...,tp_dst=80,tcp_flags=0

    bridge("br0")
    -------------
     0. ip, priority 100
        ct(table=1,zone=1)
        drop
         -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 1.
         -> Sets the packet to an untracked state, and clears all the conntrack fields.

    Final flow: unchanged
    Megaflow: recirc_id=0,eth,ip,in_port=1,nw_frag=no
    Datapath actions: ct(zone=1),recirc(0x1)

    ===============================================================================
    recirc(0x1) - resume conntrack with ct_state=est|trk
    ===============================================================================

    Flow: recirc_id=0x1,ct_state=est|trk,ct_zone=1,eth,tcp,in_port=1,...

    bridge("br0")
    -------------
        thaw
            Resuming from table 1
     1. ct_state=+est+trk,ip, priority 200, cookie 0x12
        output:2

    Final flow: unchanged
    Megaflow: recirc_id=0x1,ct_state=+est+trk,eth,ip,in_port=1,nw_frag=no
    Datapath actions: 3

Quirks:

* A step header is ``<table>. <match>, priority <p>[, cookie 0x<c>]``: the cookie is printed
  only when non-zero, the match is omitted for a catch-all (`` 2. priority 10``), and a table
  miss is `` 1. No match.`` followed by ``drop``.
* Clause flows of a conjunction never appear; only the ``conj_id=N`` flow does.
* The body is a printed tree (ofproto-dpif-trace.c ``oftrace_node_print_details``): a
  node is indented ``(level + more) * 4`` where ``more`` is 0 only for the LAST non-leaf
  node of a list, and its children are printed at ``level + 2 * more``.  A resubmitted or
  goto'd table is a child of the table that sent it there (after the resubmit action), so
  indentation jumps around (``resubmit(,1)`` at column 4, table 1 at 5, its actions at 12;
  a table reached by a last action goes back to the parent's column: ``12.``/``200.`` at 0).
  Table numbers are ``%2d``: `` 0.`` but ``12.``.
* Each ``ct(...)`` action line is followed by a spurious ``drop`` line (removed here).
* Actions are re-printed, not echoed: ``mod_dl_dst:X`` -> ``set_field:X->eth_dst``,
  ``output:LOCAL`` -> ``LOCAL``, ``note:abcd`` -> ``note:ab.cd.00.00.00.00``.
* Every recirculation (after ``ct(table=...)``) is a separate pass with its own
  ``Datapath actions``; a packet may be output in any pass, so the verdict is the union.
* Without ``--ct-next`` the state after a recirculation is ``trk|new`` ("resume conntrack
  with default ct_state=trk|new (use --ct-next to customize)"). ``--ct-next`` is given once
  per recirculation, in order, and only accepts comma-separated names (``trk,est``);
  ``+trk+est`` and ``trk|est`` are rejected ("unknown connection tracking state flag").
* Datapath actions name DATAPATH port numbers, not OpenFlow ports (``output:2`` shows up
  as ``3``; the bridge's LOCAL port is datapath port 1 with the netdev datapath):
  ``dpif/show`` maps them (``p2 2/3: (tap)`` = OpenFlow 2, datapath 3).
* ``CONTROLLER`` shows as ``userspace(pid=0,controller(...))``; NORMAL flooding lists all
  ports; outputs to the input port are skipped (``>> skipping output to input port``).
* A bad flow or unknown bridge makes ovs-appctl exit 2 with the reason on stderr
  (``Bad openflow flow syntax: ...``, ``brX: unknown bridge``).  A non-existent in_port is
  accepted silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sdn.ovs.errors import OvsError

__all__ = [
    "CT_FLAGS",
    "TraceError",
    "TracePass",
    "TraceResult",
    "TraceStep",
    "normalize_ct_state",
    "parse_dpif_show",
    "parse_trace",
    "split_actions",
]

CT_FLAGS = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")


class TraceError(OvsError):
    """ofproto/trace refused the request (bad flow syntax, unknown bridge, ...)."""


@dataclass(frozen=True)
class TraceStep:
    """One OpenFlow table lookup visited by the trace."""

    table: int
    cookie: int
    priority: int | None  # None for a table miss ("No match.")
    match: str  # "" for a catch-all flow or a miss
    actions: str  # the executed actions as OVS prints them, comma-joined
    bridge: str = ""
    depth: int = 0  # resubmit nesting level
    recirc: int = 0  # index of the pass (0 = before any recirculation)
    notes: tuple[str, ...] = ()  # "-> ..." / ">> ..." lines under the step
    miss: bool = False

    def as_tuple(self) -> tuple[int, int, int | None, str, str]:
        """(table, cookie, priority, match, actions)."""
        return (self.table, self.cookie, self.priority, self.match, self.actions)


@dataclass
class TracePass:
    """One pass through the pipeline: the initial one, then one per recirculation."""

    index: int
    recirc_id: int | None = None
    ct_state: str | None = None  # state the pass resumed with ("est|trk")
    ct_state_default: bool = False  # True when OVS used its default (no --ct-next left)
    header: str = ""
    flow: str = ""
    final_flow: str = ""
    megaflow: str = ""
    datapath_actions: str = ""
    steps: list[TraceStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def datapath_ports(self) -> list[int]:
        return _dp_outputs(self.datapath_actions)


@dataclass
class TraceResult:
    """Parsed ``ofproto/trace`` output."""

    raw: str
    passes: list[TracePass]
    bridge: str = ""
    flow: str = ""
    ct_next: tuple[str, ...] = ()
    port_map: dict[int, tuple[str, int]] = field(default_factory=dict)

    @property
    def steps(self) -> list[TraceStep]:
        """All table lookups, in order, across every pass."""
        return [s for p in self.passes for s in p.steps]

    @property
    def step_tuples(self) -> list[tuple[int, int, int | None, str, str]]:
        return [s.as_tuple() for s in self.steps]

    @property
    def tables(self) -> list[int]:
        return [s.table for s in self.steps]

    @property
    def datapath_actions(self) -> str:
        """The final ``Datapath actions:`` line (of the last pass)."""
        return self.passes[-1].datapath_actions if self.passes else ""

    @property
    def all_datapath_actions(self) -> list[str]:
        return [p.datapath_actions for p in self.passes]

    @property
    def datapath_ports(self) -> list[int]:
        """Datapath port numbers the packet is output to, over all passes."""
        seen: list[int] = []
        for p in self.passes:
            for n in p.datapath_ports:
                if n not in seen:
                    seen.append(n)
        return seen

    @property
    def output_ports(self) -> list[int]:
        """OpenFlow port numbers the packet leaves by (mapped with dpif/show; a datapath
        port missing from the map is returned unmapped)."""
        return [self.port_map[n][1] if n in self.port_map else n for n in self.datapath_ports]

    @property
    def openflow_outputs(self) -> list[int]:
        """OpenFlow ports named by output:N actions the trace executed. Unlike output_ports
        this does not depend on the datapath: a tunnel output whose native routing fails
        in a trace (no underlay route) still counts."""
        out: list[int] = []
        for s in self.steps:
            for act in split_actions(s.actions):
                if act.startswith("output:") and act[7:].isdigit():
                    out.append(int(act[7:]))
        return out

    @property
    def output_port_names(self) -> list[str]:
        return [self.port_map[n][0] if n in self.port_map else f"dp{n}"
                for n in self.datapath_ports]

    @property
    def to_controller(self) -> bool:
        return any("controller(" in p.datapath_actions for p in self.passes)

    @property
    def recirculated(self) -> bool:
        return len(self.passes) > 1

    @property
    def dropped(self) -> bool:
        """No output port in any pass (datapath actions "drop", empty, or only ct/recirc)."""
        return not self.datapath_ports

    @property
    def verdict(self) -> str:
        """``"drop"`` or ``"output:P1[,P2...]"`` (OpenFlow ports, in output order)."""
        if self.dropped:
            return "drop"
        return "output:" + ",".join(str(p) for p in self.output_ports)

    def __str__(self) -> str:
        return self.raw


# --------------------------------------------------------------------------- parsing

_STEP_RE = re.compile(r"^(\d+)\. (.*)$")
_HDR_RE = re.compile(r"^(?:(?P<match>.*?),\s)?priority (?P<prio>\d+)"
                     r"(?:, cookie (?P<cookie>0x[0-9a-fA-F]+|\d+))?\s*$")
_RECIRC_RE = re.compile(r"^recirc\((0x[0-9a-fA-F]+|\d+)\)\s*-\s*(.*)$")
_BRIDGE_RE = re.compile(r'^bridge\("(.*)"\)$')


@dataclass
class _Node:
    unit: int
    text: str
    subs: list[_Node] = field(default_factory=list)


def _parse_tree(lines: list[tuple[int, str]]) -> list[_Node]:
    """Rebuild the node tree that ofproto-dpif-trace.c printed.

    OVS prints a list of nodes at ``level`` as: each node indented ``(level + more) * 4``
    spaces, where ``more`` is 1 unless the node is the LAST of its list and not a leaf
    (table/bridge/thaw), then the node's children as a list at ``level + 2 * more``.  So a
    line at unit ``level + 1`` is a member of the list, a line at unit ``level`` is its last
    (non-leaf) member whose children follow at the same level, anything less belongs to an
    ancestor.  (The unit is ``spaces // 4``: " 0." and " -> " add one space.)
    """
    pos = 0

    def parse_list(level: int) -> list[_Node]:
        nonlocal pos
        nodes: list[_Node] = []
        while pos < len(lines):
            unit, text = lines[pos]
            if unit == level + 1:
                pos += 1
                node = _Node(unit, text)
                node.subs = parse_list(level + 2)
                nodes.append(node)
            elif unit == level:
                pos += 1
                node = _Node(unit, text)
                node.subs = parse_list(level)
                nodes.append(node)
                return nodes
            else:
                return nodes
        return nodes

    roots: list[_Node] = []
    while pos < len(lines):
        before = pos
        roots.extend(parse_list(min(u for u, _ in lines[pos:pos + 1])))
        if pos == before:  # cannot happen, but never loop forever
            roots.append(_Node(*lines[pos]))
            pos += 1
    return roots


def _step_from(table: int, header: str, actions: list[str], notes: list[str], bridge: str,
               depth: int, recirc: int) -> TraceStep:
    acts: list[str] = []
    for a in actions:
        # OVS 3.1 prints a spurious "drop" after every ct(...) action
        if a == "drop" and acts and acts[-1].startswith("ct("):
            continue
        acts.append(a)
    hdr = header.strip()
    if hdr.rstrip(".") == "No match":
        return TraceStep(table, 0, None, "", ",".join(acts), bridge, depth, recirc,
                         tuple(notes), miss=True)
    m = _HDR_RE.match(hdr)
    if not m:  # unknown format: keep the whole header as the match text
        return TraceStep(table, 0, None, hdr, ",".join(acts), bridge, depth, recirc,
                         tuple(notes))
    cookie = m.group("cookie")
    return TraceStep(table, int(cookie, 0) if cookie else 0, int(m.group("prio")),
                     m.group("match") or "", ",".join(acts), bridge, depth, recirc,
                     tuple(notes))


def _is_note(text: str) -> bool:
    return text.startswith(("->", ">>"))


def _note(text: str) -> str:
    return text.strip("-<> ")


def _split_children(subs: list[_Node], top: bool, actions: list[str], notes: list[str],
                    nested: list[_Node]) -> None:
    """Sort a table node's subtree into its actions, notes and nested table/bridge nodes."""
    for sub in subs:
        if _STEP_RE.match(sub.text) or _BRIDGE_RE.match(sub.text):
            nested.append(sub)
            continue
        if _is_note(sub.text) or not top:
            notes.append(_note(sub.text))  # incl. leaves under an action
        else:
            actions.append(sub.text)
        _split_children(sub.subs, False, actions, notes, nested)


def _collect_steps(nodes: list[_Node], bridge: str, depth: int, recirc: int,
                   out: list[TraceStep], loose: list[str]) -> None:
    """Depth-first walk: one TraceStep per table node, in the order OVS visited them.

    A table node's children are its actions and notes ("-> ...", ">> ...") in order, plus
    the table nodes of the lookups it caused (resubmit, goto_table), which become steps
    with ``depth + 1``.
    """
    for node in nodes:
        mb = _BRIDGE_RE.match(node.text)
        ms = _STEP_RE.match(node.text)
        if mb:
            _collect_steps(node.subs, mb.group(1), depth, recirc, out, loose)
        elif ms:
            actions: list[str] = []
            notes: list[str] = []
            nested: list[_Node] = []
            _split_children(node.subs, True, actions, notes, nested)
            out.append(_step_from(int(ms.group(1)), ms.group(2), actions, notes, bridge,
                                  depth, recirc))
            _collect_steps(nested, bridge, depth + 1, recirc, out, loose)
        else:
            loose.append(_note(node.text))
            _collect_steps(node.subs, bridge, depth, recirc, out, loose)


def parse_trace(text: str, port_map: dict[int, tuple[str, int]] | None = None, *,
                bridge: str = "", flow: str = "", ct_next: Sequence[str] = ()) -> TraceResult:
    """Parse the text of ``ovs-appctl ofproto/trace`` (see the module doc for the format)."""
    passes: list[TracePass] = [TracePass(index=0)]
    trees: list[list[tuple[int, str]]] = [[]]
    in_tree = False

    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or set(stripped) <= {"=", "-"}:
            continue
        cur = passes[-1]
        m = _RECIRC_RE.match(line)
        if m:
            st = re.search(r"ct_state=(\S+)", m.group(2))
            passes.append(TracePass(index=len(passes), recirc_id=int(m.group(1), 0),
                                    ct_state=st.group(1) if st else None,
                                    ct_state_default="default" in m.group(2),
                                    header=stripped))
            trees.append([])
            in_tree = False
            continue
        top = None
        for prefix, attr in (("Flow:", "flow"), ("Final flow:", "final_flow"),
                             ("Megaflow:", "megaflow"),
                             ("Datapath actions:", "datapath_actions")):
            if line.startswith(prefix):
                top = attr
                setattr(cur, attr, stripped[len(prefix):].strip())
                break
        if top is not None:
            in_tree = top == "flow"
            continue
        if in_tree:
            spaces = len(line) - len(line.lstrip(" "))
            trees[-1].append((spaces // 4, stripped))
        else:
            cur.notes.append(stripped)

    for p, lines in zip(passes, trees, strict=True):
        steps: list[TraceStep] = []
        _collect_steps(_parse_tree(lines), bridge, 0, p.index, steps, p.notes)
        p.steps = steps
    return TraceResult(raw=text, passes=passes, bridge=bridge, flow=flow,
                       ct_next=tuple(ct_next), port_map=dict(port_map or {}))


def split_actions(text: str) -> list[str]:
    """Split a comma-separated action list at top level (not inside parentheses)."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _dp_outputs(actions: str) -> list[int]:
    ports: list[int] = []
    for a in split_actions(actions.strip()):
        if a.isdigit():
            ports.append(int(a))
        elif a.startswith("clone(") and a.endswith(")"):
            ports.extend(_dp_outputs(a[len("clone("):-1]))
        elif a.startswith("tnl_push("):
            m = re.search(r"out_port\((\d+)\)", a)
            if m:
                ports.append(int(m.group(1)))
    return ports


def parse_dpif_show(text: str, bridge: str | None = None) -> dict[int, tuple[str, int]]:
    """``ovs-appctl dpif/show`` -> {datapath port: (name, OpenFlow port)}.

    Lines look like ``    p1 1/2: (tap)`` (name, OpenFlow port / datapath port).  With
    ``bridge`` only that bridge's ports are returned.
    """
    result: dict[int, tuple[str, int]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^  (\S+):\s*$", line)
        if m:
            cur = m.group(1)
            continue
        m = re.match(r"^\s{4,}(\S+) (\d+)/(\d+)(?::.*)?$", line)
        if m and (bridge is None or cur == bridge):
            result[int(m.group(3))] = (m.group(1), int(m.group(2)))
    return result


def normalize_ct_state(state: str | Sequence[str]) -> str:
    """``"+trk+est"``, ``"trk|est"``, ``"trk,est"`` or ``["trk", "est"]`` -> ``"trk,est"``
    (the only form ``--ct-next`` accepts)."""
    tokens = re.split(r"[,|+\s]+", state) if isinstance(state, str) else list(state)
    flags = [t for t in (t.strip() for t in tokens) if t]
    for f in flags:
        if f.startswith("-"):
            raise ValueError(f"--ct-next takes the flags that are set, not {f!r}")
        if f not in CT_FLAGS:
            raise ValueError(f"unknown conntrack state flag {f!r} (known: {', '.join(CT_FLAGS)})")
    if not flags:
        raise ValueError("empty ct state")
    return ",".join(flags)
