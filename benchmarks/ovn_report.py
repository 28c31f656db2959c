"""results.md: the OVN side-by-side section and the issue's OVN target row, from the `ovn` hook's
results (benchmarks/ovn.py). Kept apart from benchmarks/report.py, which only calls `targets`
and `section`."""

from __future__ import annotations

from typing import Any

OVN_SCENARIOS = ("S3", "S5")
TARGET = "Fewer flows than OVN, and faster realization than OVN"


HOOK_STAGES = ("hook:ovn", "hook:ovn_hook", "hook:ovn-any", "hook:ovn_any_hook")  # by name or module:function


def _hook(r: dict | None) -> dict:
    stages = (r or {}).get("stages") or {}
    return next((stages[k] for k in HOOK_STAGES if k in stages), {})


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:,.0f} ms" if s >= 0.1 else f"{s * 1e3:.1f} ms"


def _n(x) -> str:
    return "-" if x is None else f"{int(x):,}"


def _vs(ours: float, theirs: float, lower_is_better: bool = True) -> tuple[bool, str]:
    """(met, '12.8x fewer' / 'missed by 1.07x')."""
    if ours <= 0 or theirs <= 0:
        return False, "-"
    met = ours < theirs if lower_is_better else ours > theirs
    f = theirs / ours if met else ours / theirs
    return met, (f"{f:.2f}x" if met else f"missed by {f:.2f}x")


def _why_not(r: dict | None) -> str:
    if not r:
        return "not run"
    h = _hook(r)
    err = next((r["errors"][k] for k in HOOK_STAGES if k in (r.get("errors") or {})), None)
    if err:
        return f"failed: {err['error'][:160]} at {err['where']}"
    if h.get("skipped"):
        return h["skipped"]
    if r.get("timed_out") and not h:
        return f"timed out ({r['timed_out']})"
    return "not run (`python -m benchmarks --hook benchmarks.ovn:ovn_hook`, root and OVN needed)"


def targets(results: dict[str, dict]) -> list[dict]:
    """One row per OVN scenario for the targets table (evaluate_targets' row format)."""
    rows = []
    for name in OVN_SCENARIOS:
        r = results.get(name)
        h = _hook(r)
        row: dict[str, Any] = {"target": f"{name}: {TARGET}", "scenario": name,
               "target_text": "flows on the node < OVN's; rules to flows installed < OVN's NB commit to "
                              "`--wait=hv` (median)"}
        if not h.get("ours") or not h.get("ovn"):
            row.update(measured=_why_not(r), status="not measured", margin="-", met=None)
            rows.append(row)
            continue
        o, w = h["ours"], h["ovn"]
        f_met, f_margin = _vs(o["flows"], w["flows"])
        t_met, t_margin = _vs(o["seconds"], w["seconds"])
        measured = (f"flows {o['flows']:,} vs OVN {w['flows']:,}; realization {_ms(o['seconds'])} "
                    f"(compile {_ms(o['compile_seconds'])} + bundle {_ms(o['bundle_seconds'])}) vs OVN "
                    f"{_ms(w['seconds'])} (NB transaction {_ms(w['nb_transaction_seconds'])} + wait=hv "
                    f"{_ms(w['wait_hv_seconds'])}), median of {len(w.get('rounds', [1]))}")
        if not t_met:
            nb = h.get("nb") or {}
            measured += (f"; missed because our compiler (Python, flows/compiler.py) alone takes "
                         f"{_ms(o['compile_seconds'])} ({o['compile_seconds'] / o['seconds']:.0%} of ours) for "
                         f"{_n(nb.get('address_set_entries'))} peer addresses in {_n(nb.get('address_sets'))} "
                         f"distinct peer sets, where OVN's ovn-northd + ovn-controller (C) need "
                         f"{_ms(w['wait_hv_seconds'])}")
        scale = (r or {}).get("scale", 1.0)
        met = f_met and t_met
        status = "met" if met else ("flows met, realization missed" if f_met else
                                    "realization met, flows missed" if t_met else "missed")
        if scale < 1:
            status += f" (at scale {scale:g})"
        if not f_met:
            measured += (f"; flows missed: our rule and default tables hold "
                         f"{o['flows_by_kind']['rule'] + o['flows_by_kind']['default']:,} flows, OVN's ACL "
                         f"stages {w['flows_by_stage']['acl_stages']:,}")
        row.update(measured=measured, status=status, met=met,
                   margin=f"flows: {f_margin}{' fewer' if f_met else ''}; "
                          f"realization: {t_margin}{' faster' if t_met else ''}")
        rows.append(row)
    return rows


def _row(label: str, scale: str, h: dict) -> list[str]:
    o, w, nb = h["ours"], h["ovn"], h.get("nb", {})
    v, inc = h.get("verdicts", {}), h.get("incremental", {})
    if inc.get("n"):
        io, iw = inc["ours_ms"], inc["ovn_ms"]
        incr = (f"{io['p50']:,.1f} / {io['p99']:,.1f} vs {iw['p50']:,.1f} / {iw['p99']:,.1f} "
                f"(n={inc['n']}; engine p50 {inc['engine_ms_p50']:,.1f})")
    else:
        incr = inc.get("note", "-")
    return [label, scale, _n(h.get("pods_on_node")),
            f"{_n(nb.get('port_groups'))} / {_n(nb.get('acls'))} / {_n(nb.get('address_sets'))} "
            f"({_n(nb.get('address_set_entries'))})",
            f"{o['flows']:,} ({o['flows_pods_only']:,})", f"{w['flows']:,} ({w['flows_pods_only']:,})",
            f"{_n(o['flows_by_kind']['rule'] + o['flows_by_kind']['default'])} / "
            f"{_n(w['flows_by_stage']['acl_stages'])}",
            f"{_ms(o['seconds'])} = {_ms(o['compile_seconds'])} + {_ms(o['bundle_seconds'])}",
            f"{_ms(w['seconds'])} = {_ms(w['nb_transaction_seconds'])} + {_ms(w['wait_hv_seconds'])}",
            incr, f"{v.get('agree', 0)}/{v.get('probes', 0)} ({v.get('pairs', 0)} pairs)"]


def section(results: dict[str, dict]) -> str:
    """The side-by-side table (small case, S3, S5) and how it was measured; "" if never run."""
    rows = []
    small = None
    for name in sorted(results):
        h = _hook(results[name])
        if h.get("ours") and h.get("ovn"):
            rows.append(_row(name, f"{results[name].get('scale', 1):g}", h))
        if small is None and (h.get("small_case") or {}).get("ours"):
            small = h["small_case"]
    if small is not None:
        rows.insert(0, _row(f"small ({small.get('case', 'examples/')}, {small['node']})", "-", small))
    tried = [n for n in OVN_SCENARIOS if n in results]
    if not rows and not tried:
        return ""
    L = ["\n## OVN side by side (Debian ovn-northd + ovn-controller 23.03)\n",
         "The same rules of the focus node, realized by OVN and by us, each on a private netdev "
         "ovs-vswitchd (`benchmarks/ovn.py`; setup and fairness notes in benchmarks/README.md). OVN gets "
         "OVN-Kubernetes-shaped NB rows: one logical switch, a port per pod of the node bound to an OVS "
         "interface, a port group per policy with its rules as allow-related ACLs (one per protocol), an "
         "address set per distinct peer set, per-namespace default-deny port groups. Flows: `ovs-ofctl "
         "dump-flows` of each bridge once settled, with the flows before any policy (pods only) in "
         "parentheses; *policy flows*: ours the rule and default-deny tables, OVN the flows of its ACL "
         "stages (by logical flow). Realization (median of the rounds, wall): ours = the controller's "
         "compiler from the rules + one bundle to its commit reply; OVN = one NB transaction + "
         "`ovn-nbctl --wait=hv sync` (northd, SB, ovn-controller, flows installed). Incremental, ms "
         "p50 / p99: label flips that change the node's flows and their reverts; ours = "
         "`Engine.apply` (policy recompute + flow diff) + one bundle; OVN = the address set / port "
         "group mutations as one NB transaction + `--wait=hv` (OVN-Kubernetes' own computation of "
         "those mutations is not counted, ours is). Verdicts: new connections between pods of the "
         "node, `ofproto/trace` on both bridges against the semantic evaluator and our simulator.\n\n"]
    if rows:
        L.append("| case | scale | pods on node | NB: port groups / ACLs / address sets (entries) | "
                 "flows ours (pods only) | flows OVN (pods only) | policy flows ours / OVN | "
                 "realization ours = compile + bundle | realization OVN = NB txn + wait=hv | "
                 "incremental ms ours p50 / p99 vs OVN p50 / p99 | verdicts agree |\n")
        L.append("|" + "---|" * 11 + "\n")
        L += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |\n" for row in rows]
    for name in tried:
        if not (_hook(results[name]).get("ours")):
            L.append(f"\n{name}: {_why_not(results[name])}\n")
    dis = [(n, d) for n in sorted(results) for d in (_hook(results[n]).get("verdicts") or {}).get("disagreements", [])]
    if dis:
        L.append("\nVerdict disagreements (to investigate):\n\n")
        L += [f"- {n}: {d}\n" for n, d in dis[:20]]
    return "".join(L)


__all__ = ["section", "targets"]
