"""The table layout, declared once as data: id, name, what each table may match, where it may
go next, and whether it may know ofports. Every flow the compiler builds is checked against
its table's declaration (`check_flow`), so a pipeline mistake fails in a unit test."""

from __future__ import annotations

from dataclasses import dataclass

from flows.flow import CT, Flow, GotoTable

# Registers (see docs/pipeline.md).
REG_EGRESS_CONJ = "reg2"  # conj id of the egress rule that allowed the packet
REG_INGRESS_CONJ = "reg3"  # conj id of the ingress rule that allowed the packet
REG_SCRATCH = "reg4"  # ARP responder swap space
REG_FROM = "reg0"  # 1: came from a local pod port; 2: from the node itself; 3: forwarded by it
FROM_POD, FROM_NODE, FROM_GATEWAY = 1, 2, 3
REG_TO_GATEWAY = "reg5"  # 1: a reply of a connection that came through the gateway: back to it
CT_MARK_GATEWAY = 1  # ct_mark of connections that entered through the gateway port
# Fabric mode: a fabric-node bridge sends what its gateway port gives it up to the fabric with
# this destination MAC, and the fabric sends what is for a node's stack down with the other; on
# the fabric, a gateway connection's ct_mark is CT_MARK_GATEWAY in its low 16 bits and the
# ofport of the link it came in on in its high 16 (its replies go back down that link).
MAC_FROM_GATEWAY = "0a:58:a9:fe:00:03"
MAC_TO_GATEWAY = "0a:58:a9:fe:00:04"
CT_ZONE = 1

# Cookie layout: 0x5d (tag) | kind (8 bits) | id (48 bits).
COOKIE_TAG = 0x5D
COOKIE_TAG_MASK = 0xFF << 56
KIND_PIPELINE = 1
KIND_RULE = 2
KIND_CLAUSE = 3
KIND_DEFAULT = 4


def cookie(kind: int, ident: int = 0) -> int:
    return (COOKIE_TAG << 56) | (kind << 48) | (ident & ((1 << 48) - 1))


def cookie_kind(value: int) -> int | None:
    if value >> 56 != COOKIE_TAG:
        return None
    return (value >> 48) & 0xFF


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    matches: frozenset[str]  # fields a flow in this table may match (dl_type/nw_proto always)
    next: frozenset[int]  # tables it may go to (goto_table or ct recirculation)
    knows_ports: bool = False  # may match in_port or output to ofports
    doc: str = ""


CLASSIFIER, SPOOFGUARD, ARP_RESPONDER = 0, 10, 11
CONNTRACK, CONNTRACK_STATE = 20, 21
EGRESS_RULE, EGRESS_DEFAULT = 30, 31
INGRESS_RULE, INGRESS_DEFAULT = 40, 41
CONNTRACK_COMMIT, OUTPUT = 50, 60

_ADDR = {"nw_src", "nw_dst", "ipv6_src", "ipv6_dst"}
_L4 = {"tp_dst"}

TABLES: tuple[Table, ...] = (
    Table(CLASSIFIER, "classifier", frozenset({"in_port", "dl_dst", "nw_src", "ipv6_src", "nw_dst",
                                               "ipv6_dst"}),
          frozenset({SPOOFGUARD, ARP_RESPONDER, CONNTRACK, OUTPUT}), True,
          "Sorts packets by the port they came in on: local pods go to the spoof guard, "
          "tunnels, fabric links and the node's gateway port to connection tracking (the "
          "node's own addresses marked as such); anything else is dropped."),
    Table(SPOOFGUARD, "spoofguard",
          frozenset({"in_port", "dl_src", "nw_src", "ipv6_src", "arp_spa", "arp_sha"}),
          frozenset({ARP_RESPONDER, CONNTRACK, OUTPUT}), True,
          "A pod port may only send from its own MAC and IP, ARP included."),
    Table(ARP_RESPONDER, "arp_responder", frozenset({"arp_op"}), frozenset(), True,
          "Answers every ARP request with the gateway MAC (proxy ARP): forwarding is L3."),
    Table(CONNTRACK, "conntrack", frozenset(), frozenset({CONNTRACK_STATE, OUTPUT}), False,
          "Sends IP packets through connection tracking (zone 1)."),
    Table(CONNTRACK_STATE, "conntrack_state", frozenset({"ct_state", "ct_mark", "reg0", "nw_dst",
                                                         "ipv6_dst"}),
          frozenset({EGRESS_RULE, CONNTRACK_COMMIT, OUTPUT}), False,
          "Invalid packets drop; established and related ones skip the rule tables (replies of "
          "connections that came through the gateway go back to it); new ones from the node "
          "itself, or to a Service address (judged once translated), are not judged; other new "
          "ones are."),
    Table(EGRESS_RULE, "egress_rule", frozenset(_ADDR | _L4 | {"conj_id"}),
          frozenset({INGRESS_RULE, EGRESS_DEFAULT}), False,
          "Egress rules: conjunctions of peer (destination) x applied-to (source) x port; small rules as plain flows."),
    Table(EGRESS_DEFAULT, "egress_default", frozenset({"nw_src", "ipv6_src"}),
          frozenset({INGRESS_RULE}), False,
          "Drops new connections from egress-isolated pods that no egress rule allowed."),
    Table(INGRESS_RULE, "ingress_rule", frozenset(_ADDR | _L4 | {"conj_id"}),
          frozenset({CONNTRACK_COMMIT, INGRESS_DEFAULT}), False,
          "Ingress rules: conjunctions of peer (source) x applied-to (destination) x port; small rules as plain flows."),
    Table(INGRESS_DEFAULT, "ingress_default", frozenset({"nw_dst", "ipv6_dst"}),
          frozenset({CONNTRACK_COMMIT}), False,
          "Drops new connections to ingress-isolated pods that no ingress rule allowed."),
    Table(CONNTRACK_COMMIT, "conntrack_commit", frozenset({"ct_state", "reg0"}), frozenset({OUTPUT}),
          False,
          "Commits allowed new connections, with the allowing conj ids in ct_label."),
    Table(OUTPUT, "output", frozenset({"in_port", "nw_dst", "ipv6_dst", "reg0", "reg5"}), frozenset(),
          True,
          "L3 forwarding: local pods by address (MACs rewritten), other addresses by route."),
)
BY_ID = {t.id: t for t in TABLES}
BY_NAME = {t.name: t for t in TABLES}
RULE_TABLES = (EGRESS_RULE, INGRESS_RULE)


def table_named(name_or_id: str | int) -> Table:
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        return BY_ID[int(name_or_id)]
    return BY_NAME[name_or_id]


class PipelineError(ValueError):
    pass


def check_flow(flow: Flow) -> None:
    """Raise PipelineError if flow breaks its table's declaration."""
    t = BY_ID.get(flow.table)
    if t is None:
        raise PipelineError(f"flow in undeclared table {flow.table}: {flow}")
    allowed = t.matches | {"dl_type", "nw_proto"}
    for m in flow.match:
        if m.field not in allowed:
            raise PipelineError(f"table {t.name} may not match {m.field}: {flow}")
    for a in flow.actions:
        target = a.table if isinstance(a, (GotoTable, CT)) else None
        if target is not None and target not in t.next:
            raise PipelineError(f"table {t.name} may not go to table {target}: {flow}")
        if not t.knows_ports and type(a).__name__ in ("Output", "InPort"):
            raise PipelineError(f"table {t.name} may not output to ports: {flow}")
