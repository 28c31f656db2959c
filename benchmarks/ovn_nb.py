"""The compiled rules of one node, expressed the way OVN-Kubernetes writes them into the OVN
Northbound database (ideas from its design, no code): one logical switch; a logical switch port
per pod of the node ("MAC IP" addresses and port security); a port group per policy holding its
local target pods, with the policy's rules as allow-related ACLs (priority 1001) on it; the
peers of a rule as an address set (one per distinct peer set, shared by every rule that has the
same peers, as OVN-Kubernetes shares namespace and selector address sets; ipBlocks minus their
excepts are CIDRs in it); isolated pods in per-namespace default-deny port groups (drop at 1000,
ARP/ND allowed at 1001).

Pure: `translate` gives an `NbState`, `diff_ops` the OVSDB operations that turn one state into
another (inserts for a cold start, address set and port group mutations for a label change), so
the measured side only sends one transaction. Pods of other nodes get no logical port: their
addresses only appear in address sets, which is all the focus node's flows need.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flows.ir import EGRESS, INGRESS, Bridge, Isolation, PortRange, Rule

SWITCH = "bench-node"
PRIORITY_ALLOW = 1001
PRIORITY_DENY = 1000
PRIORITY_ARP = 1001


@dataclass(frozen=True, order=True)
class Acl:
    direction: str  # to-lport (ingress to the pod) | from-lport (egress from it)
    priority: int
    match: str
    action: str  # allow-related | allow | drop


@dataclass
class NbState:
    """Northbound rows by name: logical ports (name -> addresses), port groups (name -> port
    names, and their ACLs), address sets (name -> addresses)."""

    ports: dict[str, str] = field(default_factory=dict)
    port_groups: dict[str, frozenset[str]] = field(default_factory=dict)
    acls: dict[str, frozenset[Acl]] = field(default_factory=dict)
    address_sets: dict[str, frozenset[str]] = field(default_factory=dict)

    def counts(self) -> dict:
        return {"logical_ports": len(self.ports), "port_groups": len(self.port_groups),
                "acls": sum(len(a) for a in self.acls.values()), "address_sets": len(self.address_sets),
                "address_set_entries": sum(len(a) for a in self.address_sets.values())}


def lsp_name(pod_key: str) -> str:
    """OVN-Kubernetes names a pod's logical port <namespace>_<pod>."""
    return pod_key.replace("/", "_")


def _h(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=6).hexdigest()


def _family(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def l4_matches(ports: tuple[PortRange, ...] | None) -> list[str]:
    """One L4 match per protocol, as OVN-Kubernetes builds them: `tcp.dst == {80, 443} ||
    (tcp.dst >= 9000 && tcp.dst <= 9099)`, `udp.dst == 53`, `sctp` (every port); [""] for
    any protocol. Each becomes an ACL of its own (an OR across protocols would make
    ovn-controller cross every address with every port)."""
    if ports is None:
        return [""]
    out = []
    by_proto: dict[str, list[PortRange]] = defaultdict(list)
    for p in ports:
        by_proto[p.protocol].append(p)
    for proto in sorted(by_proto):
        prs = by_proto[proto]
        if any(p.start is None for p in prs):
            out.append(proto)
            continue
        terms = []
        singles = sorted({p.start for p in prs if p.start is not None and p.start == p.end})
        if len(singles) == 1:
            terms.append(f"{proto}.dst == {singles[0]}")
        elif singles:
            terms.append(f"{proto}.dst == {{{', '.join(map(str, singles))}}}")
        for p in sorted(p for p in prs if p.start != p.end):
            terms.append(f"({proto}.dst >= {p.start} && {proto}.dst <= {p.end})")
        out.append(terms[0] if len(terms) == 1 else "(" + " || ".join(terms) + ")")
    return out


def translate(bridge: Bridge, rules: list[Rule], isolation: list[Isolation]) -> NbState:
    """The node's pods, the rules that apply to at least one of them, and their isolation, as
    OVN-Kubernetes-style NB rows (see the module doc)."""
    st = NbState()
    lsp_of: dict[str, str] = {}
    ns_of: dict[str, str] = {}
    for pod in bridge.pods:
        name = lsp_name(pod.pod)
        st.ports[name] = " ".join((pod.mac, *pod.ips))
        ns_of[name] = pod.pod.split("/", 1)[0]
        for ip in pod.ips:
            lsp_of[ip] = name
    scoped: list[tuple[Rule, frozenset[str]]] = []
    for r in sorted(rules, key=lambda r: r.id):
        if r.matches_nothing:
            continue
        local = frozenset(lsp_of[a] for a in r.targets if a in lsp_of)
        if local:
            scoped.append((r, local))
    # One port group per policy (per target set when named ports split a policy's rules).
    targets_of_policy: dict[str, set[frozenset[str]]] = defaultdict(set)
    for r, local in scoped:
        targets_of_policy[r.id.policy].add(local)

    def pg_name(r: Rule, local: frozenset[str]) -> str:
        if len(targets_of_policy[r.id.policy]) == 1:
            return "pg_" + _h(r.id.policy)
        return "pg_" + _h(r.id.policy, *sorted(local))

    # One address set per distinct peer set and family, named after the first rule using it.
    groups: dict[tuple[int, frozenset[str]], list[Rule]] = defaultdict(list)
    for r, _ in scoped:
        if r.peers is None:
            continue
        fams: dict[int, set[str]] = defaultdict(set)
        for c in r.peers:
            fams[_family(c)].add(c)
        for fam, cidrs in fams.items():
            groups[(fam, frozenset(cidrs))].append(r)
    as_of: dict[tuple[object, int], str] = {}
    for (fam, peer_set), members in groups.items():
        name = f"as_{_h(str(min(m.id for m in members)), str(fam))}"
        st.address_sets[name] = peer_set
        for m in members:
            as_of[(m.id, fam)] = name
    acls: dict[str, set[Acl]] = defaultdict(set)
    for r, local in scoped:
        pg = pg_name(r, local)
        st.port_groups[pg] = st.port_groups.get(pg, frozenset()) | local
        ingress = r.direction == INGRESS
        port = f"outport == @{pg}" if ingress else f"inport == @{pg}"
        direction = "to-lport" if ingress else "from-lport"
        if r.peers is None:
            addrs = ["ip"]
        else:
            side = "src" if ingress else "dst"
            addrs = [f"ip{fam}.{side} == ${as_of[(r.id, fam)]}" for fam in sorted({_family(c) for c in r.peers})]
        for addr in addrs:
            for l4 in l4_matches(r.ports):
                acls[pg].add(Acl(direction, PRIORITY_ALLOW, f"{port} && {addr}" + (f" && {l4}" if l4 else ""),
                                 "allow-related"))
    # Default deny, per namespace and direction (OVN-Kubernetes: <ns>_ingressDefaultDeny).
    isolated: dict[tuple[str, str], set[str]] = defaultdict(set)
    for iso in isolation:
        lsp = lsp_of.get(iso.address)
        if lsp is not None:
            isolated[(ns_of[lsp], iso.direction)].add(lsp)
    for (ns, direction), lsps in sorted(isolated.items()):
        pg = "pg_" + _h(ns, direction + "DefaultDeny")
        st.port_groups[pg] = frozenset(lsps)
        if direction == INGRESS:
            acls[pg] |= {Acl("to-lport", PRIORITY_DENY, f"outport == @{pg}", "drop"),
                         Acl("to-lport", PRIORITY_ARP, f"outport == @{pg} && (arp || nd)", "allow")}
        else:
            assert direction == EGRESS
            acls[pg] |= {Acl("from-lport", PRIORITY_DENY, f"inport == @{pg}", "drop"),
                         Acl("from-lport", PRIORITY_ARP, f"inport == @{pg} && (arp || nd)", "allow")}
    st.acls = {pg: frozenset(a) for pg, a in acls.items()}
    for pg in st.port_groups:
        st.acls.setdefault(pg, frozenset())
    return st


# ---- OVSDB operations ------------------------------------------------------------------------

def _set(values) -> list:
    return ["set", list(values)]


def _uuids(values) -> list:
    return ["set", [["uuid", v] for v in values]]


def _acl_row(a: Acl) -> dict:
    return {"direction": a.direction, "priority": a.priority, "match": a.match, "action": a.action}


@dataclass
class Uuids:
    """Row UUIDs learnt from the database's replies (needed to reference and mutate rows)."""

    ports: dict[str, str] = field(default_factory=dict)
    acls: dict[tuple[str, Acl], str] = field(default_factory=dict)


def topology_ops(state: NbState) -> tuple[list[dict], list[tuple[int, str, object]]]:
    """The logical switch and its ports, in one transaction; (ops, what each insert is)."""
    ops: list[dict] = []
    recs: list[tuple[int, str, object]] = []
    names = []
    for i, (name, addresses) in enumerate(sorted(state.ports.items())):
        ops.append({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": f"lsp{i}",
                    "row": {"name": name, "addresses": _set([addresses]), "port_security": _set([addresses])}})
        recs.append((len(ops) - 1, "port", name))
        names.append(f"lsp{i}")
    ops.append({"op": "insert", "table": "Logical_Switch",
                "row": {"name": SWITCH, "ports": ["set", [["named-uuid", n] for n in names]]}})
    return ops, recs


def diff_ops(old: NbState, new: NbState, ids: Uuids) -> tuple[list[dict], list[tuple[int, str, object]]]:
    """OVSDB operations turning `old` policy rows (port groups, ACLs, address sets) into `new`,
    as OVN-Kubernetes would on an update: address sets and port groups are mutated in place,
    ACLs inserted or unlinked one by one. Returns (ops, [(op index, "acl", (pg, acl))] for
    the inserts whose UUIDs the caller must record)."""
    if old.ports != new.ports:
        raise ValueError("logical ports changed: this benchmark only moves policies, not pods")
    ops: list[dict] = []
    recs: list[tuple[int, str, object]] = []
    for name in sorted(new.address_sets.keys() - old.address_sets.keys()):
        ops.append({"op": "insert", "table": "Address_Set",
                    "row": {"name": name, "addresses": _set(sorted(new.address_sets[name]))}})
    for name in sorted(new.address_sets.keys() & old.address_sets.keys()):
        a, b = old.address_sets[name], new.address_sets[name]
        muts = []
        if b - a:
            muts.append(["addresses", "insert", _set(sorted(b - a))])
        if a - b:
            muts.append(["addresses", "delete", _set(sorted(a - b))])
        if muts:
            ops.append({"op": "mutate", "table": "Address_Set", "where": [["name", "==", name]], "mutations": muts})
    n = 0
    for pg in sorted(new.port_groups):
        ports = new.port_groups[pg]
        want = new.acls.get(pg, frozenset())
        if pg not in old.port_groups:
            names = []
            for acl in sorted(want):
                names.append(f"acl{n}")
                ops.append({"op": "insert", "table": "ACL", "uuid-name": f"acl{n}", "row": _acl_row(acl)})
                recs.append((len(ops) - 1, "acl", (pg, acl)))
                n += 1
            ops.append({"op": "insert", "table": "Port_Group",
                        "row": {"name": pg, "ports": _uuids(ids.ports[p] for p in sorted(ports)),
                                "acls": ["set", [["named-uuid", x] for x in names]]}})
            continue
        muts = []
        had = old.port_groups[pg]
        if ports - had:
            muts.append(["ports", "insert", _uuids(ids.ports[p] for p in sorted(ports - had))])
        if had - ports:
            muts.append(["ports", "delete", _uuids(ids.ports[p] for p in sorted(had - ports))])
        have = old.acls.get(pg, frozenset())
        added = []
        for acl in sorted(want - have):
            added.append(f"acl{n}")
            ops.append({"op": "insert", "table": "ACL", "uuid-name": f"acl{n}", "row": _acl_row(acl)})
            recs.append((len(ops) - 1, "acl", (pg, acl)))
            n += 1
        if added:
            muts.append(["acls", "insert", ["set", [["named-uuid", x] for x in added]]])
        if have - want:
            muts.append(["acls", "delete", _uuids(ids.acls.pop((pg, acl)) for acl in sorted(have - want))])
        if muts:
            ops.append({"op": "mutate", "table": "Port_Group", "where": [["name", "==", pg]], "mutations": muts})
    for pg in sorted(old.port_groups.keys() - new.port_groups.keys()):
        ops.append({"op": "delete", "table": "Port_Group", "where": [["name", "==", pg]]})
        for acl in old.acls.get(pg, ()):
            ids.acls.pop((pg, acl), None)
    for name in sorted(old.address_sets.keys() - new.address_sets.keys()):
        ops.append({"op": "delete", "table": "Address_Set", "where": [["name", "==", name]]})
    return ops, recs


def record(ids: Uuids, recs: list[tuple[int, str, Any]], results: list[dict]) -> None:
    """Store the UUIDs the database gave the inserted rows."""
    for index, kind, key in recs:
        uuid = results[index]["uuid"][1]
        if kind == "port":
            ids.ports[key] = uuid
        else:
            ids.acls[key] = uuid


def policy_only(state: NbState) -> NbState:
    """The same logical ports without any policy rows (the state before policies arrive)."""
    return NbState(ports=dict(state.ports))


__all__ = ["Acl", "NbState", "Uuids", "diff_ops", "l4_matches", "lsp_name", "policy_only", "record",
           "topology_ops", "translate"]
