"""`sdnctl flows show`: flows grouped by table and by the policy rule (or isolated pod) they
implement, readable with rich or as JSON. Works on compiled programs and, with counters, on
flows read back from a live switch."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table as RichTable

from flows import pipeline as P
from flows.compiler import Program, RuleInfo, sorted_flows
from flows.fields import parse_mac
from flows.flow import Flow, Output
from flows.ir import EGRESS

Stats = dict[tuple, tuple[int, int]]  # flow key -> (packets, bytes)
_KIND_ORDER = {"rule": 0, "default": 1, "pipeline": 2, "unknown": 3}


@dataclass
class Row:
    flow: Flow
    role: str
    pods: list[str] = field(default_factory=list)

    def to_json(self, stats: Stats | None) -> dict:
        out = {"flow": self.flow.render(), "cookie": f"{self.flow.cookie:#x}", "role": self.role,
               "priority": self.flow.priority}
        if self.pods:
            out["pods"] = self.pods
        if stats is not None and self.flow.key in stats:
            out["packets"], out["bytes"] = stats[self.flow.key]
        return out


@dataclass
class Group:
    title: str
    kind: str  # rule | default | pipeline | unknown
    policy: str | None = None
    rule: RuleInfo | None = None
    rows: list[Row] = field(default_factory=list)


def _networks(flow: Flow) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for m in flow.match:
        if m.field in ("nw_src", "nw_dst", "arp_spa", "ipv6_src", "ipv6_dst"):
            v6 = m.field.startswith("ipv6")
            bits = 128 if v6 else 32
            plen = bits if m.mask is None else bin(m.mask).count("1")
            addr = ipaddress.IPv6Address(m.value) if v6 else ipaddress.IPv4Address(m.value)
            out.append(ipaddress.ip_network(f"{addr}/{plen}", strict=False))
    return out


def _pods_of(flow: Flow, names: dict[str, str]) -> list[str]:
    """The pods behind a flow's addresses: exact addresses by name; a CIDR by the pods inside
    it (up to four, else a count)."""
    out = []
    for net in _networks(flow):
        if net.num_addresses == 1:
            if str(net.network_address) in names:
                out.append(names[str(net.network_address)])
            continue
        inside = sorted(n for ip, n in names.items()
                        if ipaddress.ip_address(ip).version == net.version and ipaddress.ip_address(ip) in net)
        if len(inside) > 4:
            out.append(f"{len(inside)} pods")
        else:
            out.extend(inside)
    return out


def pod_flows(flows: Iterable[Flow], ips: Iterable[str], ofport: int | None, mac: str | None) -> list[Flow]:
    """The flows that concern one pod: those matching its address (exactly or inside a CIDR),
    its port (in_port, output) or its MAC, then the conj_id flows and port clauses of the
    conjunctions those flows take part in, so each rule of the pod is shown whole."""
    flows = list(flows)
    addrs = [ipaddress.ip_address(ip) for ip in ips]
    mac_value = parse_mac(mac) if mac else None

    def direct(f: Flow) -> bool:
        if any(a.version == n.version and a in n for n in _networks(f) for a in addrs):
            return True
        if ofport is not None and (any(m.field == "in_port" and m.value == ofport for m in f.match)
                                   or any(isinstance(a, Output) and a.port == ofport for a in f.actions)):
            return True
        return mac_value is not None and any(m.field in ("dl_src", "dl_dst") and m.value == mac_value
                                             for m in f.match)

    kept = [f for f in flows if direct(f)]
    conj_ids = {c.id for f in kept for c in f.conjunctions}
    chosen = set(kept)
    for f in flows:
        cid = f.get("conj_id")
        if cid is not None and cid.value in conj_ids:
            chosen.add(f)
        elif f.conjunctions and not _networks(f) and any(c.id in conj_ids for c in f.conjunctions):
            chosen.add(f)  # a ports clause of one of the pod's rules
    return [f for f in flows if f in chosen]


def _clause_role(flow: Flow, info: RuleInfo) -> str:
    conj = next(c for c in flow.conjunctions if c.id == info.conj_id)
    fields = {m.field for m in flow.match}
    if fields & {"tp_dst"} or fields <= {"dl_type", "nw_proto"}:
        what = "ports"
    else:
        src = bool(fields & {"nw_src", "ipv6_src"})
        applied_src = info.id.direction == EGRESS
        what = "applied-to" if src == applied_src else "peer"
    return f"clause {conj.clause}/{conj.n_clauses} {what}"


def group_flows(flows: Iterable[Flow], program: Program, names: dict[str, str],
                policy: str | None = None, table: str | None = None) -> list[tuple[P.Table, list[Group]]]:
    """Group flows per table, then per rule / isolated pod / pipeline purpose."""
    by_conj = program.by_conj()
    by_cookie = program.by_cookie()
    aliases = program.aliases()

    def wanted(info: RuleInfo) -> bool:
        return not policy or info.id.policy == policy or any(a.policy == policy for a in aliases.get(info.id, ()))

    def title_of(info: RuleInfo) -> str:
        same = aliases.get(info.id)
        if not same:
            return str(info.id)
        names = ", ".join(str(a) for a in same[:3]) + (f" and {len(same) - 3} more" if len(same) > 3 else "")
        return f"{info.id} (identical rules enforced by these flows: {names})"
    defaults = dict(program.defaults)
    wanted_table = P.table_named(table).id if table is not None else None
    per_table: dict[int, dict[str, Group]] = defaultdict(dict)

    def group(tid: int, key: str, make) -> Group:
        g = per_table[tid].get(key)
        if g is None:
            g = per_table[tid][key] = make()
        return g

    for f in sorted_flows(flows):
        if wanted_table is not None and f.table != wanted_table:
            continue
        kind = P.cookie_kind(f.cookie)
        pods = _pods_of(f, names)
        if f.conjunctions:
            for c in f.conjunctions:
                info = by_conj.get(c.id)
                if info is None:
                    group(f.table, "?", lambda: Group("unknown conjunction", "unknown")).rows.append(Row(f, str(c.id), pods))
                    continue
                if not wanted(info):
                    continue
                g = group(f.table, str(info.id), lambda info=info: Group(title_of(info), "rule", info.id.policy, info))
                g.rows.append(Row(f, _clause_role(f, info), pods))
        elif kind == P.KIND_RULE:
            info = by_cookie.get(f.cookie)
            cid = f.get("conj_id")
            if cid is not None:
                info = by_conj.get(cid.value, info)
            if info is None:
                group(f.table, "?", lambda: Group("unknown rule", "unknown")).rows.append(Row(f, "rule", pods))
                continue
            if not wanted(info):
                continue
            g = group(f.table, str(info.id), lambda info=info: Group(title_of(info), "rule", info.id.policy, info))
            g.rows.append(Row(f, "conj_id (allow)" if cid is not None else "allow", pods))
        elif kind == P.KIND_DEFAULT:
            iso = defaults.get(f.cookie)
            if iso is None:
                group(f.table, "?", lambda: Group("unknown default", "unknown")).rows.append(Row(f, "default", pods))
                continue
            if policy and policy not in iso.policies:
                continue
            who = names.get(iso.address, iso.address)
            title = f"{who} {iso.direction}-isolated by {', '.join(iso.policies)}"
            group(f.table, title, lambda title=title: Group(title, "default")).rows.append(Row(f, "default deny", pods))
        else:
            if policy:
                continue
            title = "pipeline" if kind == P.KIND_PIPELINE else "not ours (unknown cookie)"
            group(f.table, title, lambda title=title, kind=kind: Group(title, "pipeline" if kind else "unknown")).rows.append(
                Row(f, "", pods))
    out = []
    for t in P.TABLES:
        if t.id in per_table:
            groups = sorted(per_table[t.id].values(), key=lambda g: (_KIND_ORDER.get(g.kind, 9), g.title))
            out.append((t, groups))
    return out


def to_json(grouped, stats: Stats | None = None) -> list[dict]:
    out = []
    for t, groups in grouped:
        tj = {"table": t.id, "name": t.name, "groups": []}
        for g in groups:
            gj = {"title": g.title, "kind": g.kind, "flows": [r.to_json(stats) for r in g.rows]}
            if g.policy:
                gj["policy"] = g.policy
            if g.rule:
                gj.update(rule=str(g.rule.id), conj_id=g.rule.conj_id, priority=g.rule.priority,
                          description=g.rule.description)
            tj["groups"].append(gj)
        out.append(tj)
    return out


def render(grouped, console: Console, stats: Stats | None = None, wide: bool = False) -> None:
    for t, groups in grouped:
        n = sum(len(g.rows) for g in groups)
        console.print(f"[bold]table {t.id} {t.name}[/bold] ({n} flows) [dim]{t.doc}[/dim]")
        for g in groups:
            title = g.title
            if g.rule:
                title += f"  [dim]conj {g.rule.conj_id}, priority {g.rule.priority}: {g.rule.description}[/dim]"
            rt = RichTable(title=title, title_justify="left", show_edge=False, pad_edge=False,
                           expand=False, box=None, header_style="dim")
            rt.add_column("prio", justify="right")
            rt.add_column("match")
            rt.add_column("actions", overflow="fold")
            rt.add_column("role")
            rt.add_column("pods")
            if stats is not None:
                rt.add_column("packets", justify="right")
                rt.add_column("bytes", justify="right")
            for r in g.rows:
                text = r.flow.render(cookie=False)
                match, _, actions = text.partition(" actions=")
                match = match.split(",", 2)[2] if match.count(",") >= 2 else ""
                if not wide and len(actions) > 90:
                    actions = actions[:87] + "..."
                row = [str(r.flow.priority), match or "*", actions, r.role, ", ".join(r.pods)]
                if stats is not None:
                    pk = stats.get(r.flow.key)
                    row += [str(pk[0]) if pk and not r.flow.conjunctions else "",
                            str(pk[1]) if pk and not r.flow.conjunctions else ""]
                rt.add_row(*row)
            console.print(rt)
        console.print()
