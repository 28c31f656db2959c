"""OVN side by side (issue 7): the same rules on the same node, realized by OVN (Debian's
ovn-northd + ovn-controller 23.03, OVN-Kubernetes-style NB rows) and by us, both on a private
netdev ovs-vswitchd.

    python -m benchmarks.ovn                       the small case (examples/, node-1)
    python -m benchmarks.ovn --scenario S3 --scale 0.1 [--events 10] [--pairs 12] [--json OUT]
    python -m benchmarks --quick --only S3,S5 --hook benchmarks.ovn:ovn_hook   (S3, S5 + small case)

What is measured, per node (see benchmarks/README.md for the fairness caveats):

  flows        OpenFlow flows on br-int after ovn-controller settled (`ovs-ofctl -O OpenFlow15
               dump-flows`), split by logical stage (cookie -> SB Logical_Flow), vs the flows
               on our bridge; both before policies (pods only) and with them
  realization  OVN: one NB transaction (port groups, address sets, ACLs) until
               `ovn-nbctl --wait=hv sync` returns (ovn-controller reports the flows installed);
               ours: the controller's compiler (BridgeCompiler) from the rules + the diff against
               the pods-only program + one bundle until its commit reply. Pods are plugged and
               bound on both sides first; median of `rounds`
  incremental  pod label flips that change the node's flows (the scenario's events first, then
               seeded flips, each followed by its revert): OVN: the address set / port group
               mutations in one NB transaction + `--wait=hv sync`; ours: sdn.engine.Engine.apply
               -> the node's flow diff -> reconcile.plan_diff -> one bundle committed. p50/p99
  verdicts     pairs of the node's pods on a few ports: ofproto/trace on br-int (OVN) and on our
               bridge (new connection: every recirculation resumes as trk,new), against the
               semantic evaluator (sdn.policy.evaluate) and our flow simulator
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from itertools import count
from pathlib import Path

from benchmarks import ovn_nb as NB
from benchmarks import ovn_verdicts as V
from benchmarks.hooks import register
from benchmarks.ovn_daemons import BRIDGE as OVN_BRIDGE
from benchmarks.ovn_daemons import OvnStack, missing_programs
from benchmarks.stats import pct

REPO = Path(__file__).resolve().parent.parent
OVN_SCENARIOS = ("S3", "S5")
OUR_BRIDGE = "br-sdn"
FIRST_OFPORT = 10
_seq = count(1)
_COOKIE = re.compile(r"\bcookie=(0x[0-9a-fA-F]+)")
_TABLE = re.compile(r"\btable=(\d+)")


def unavailable() -> str | None:
    """Why the comparison cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "not root"
    missing = missing_programs()
    return f"missing {', '.join(missing)} (apt-get install ovn-central ovn-host)" if missing else None


# ---- plumbing ----------------------------------------------------------------------------------

def _plug(ovs, bridge: str, ports: list[tuple[str, int, dict]]) -> None:
    """Internal ports (name, ofport, external_ids) in one ovs-vsctl transaction."""
    if not ports:
        return
    args: list[str] = []
    for name, ofport, ext in ports:
        args += ["--", "add-port", bridge, name, "--", "set", "interface", name, "type=internal",
                 f"ofport_request={ofport}", *(f'external_ids:{k}="{v}"' for k, v in ext.items())]
    ovs.vsctl(*args[1:], timeout=120)


def _classify_ovn(lines: list[str], stages: dict[int, str]) -> dict:
    """OVN's flows by logical stage (ACL stages summed), and those with conjunction actions.
    A flow's cookie names its logical flow; conjunction clause flows shared by several logical
    flows carry cookie 0 and are put in the stage that owns their OpenFlow table."""
    parsed = []
    table_stage: dict[int, Counter] = {}
    for line in lines:
        m = _COOKIE.search(line)
        cookie = int(m.group(1), 16) & 0xFFFFFFFF if m else 0
        m = _TABLE.search(line)
        table = int(m.group(1)) if m else 0
        stage = stages.get(cookie) if cookie else None
        if stage:
            table_stage.setdefault(table, Counter())[stage] += 1
        parsed.append((table, stage, "conjunction(" in line))
    by_stage: Counter = Counter()
    conj = 0
    for table, stage, has_conj in parsed:
        if stage is None:
            owners = table_stage.get(table)
            stage = owners.most_common(1)[0][0] if owners else "physical (no logical flow)"
        by_stage[stage] += 1
        conj += has_conj
    acl = sum(n for s, n in by_stage.items() if "acl" in s)
    return {"total": len(lines), "acl_stages": acl, "with_conjunction": conj,
            "top_stages": dict(by_stage.most_common(8))}


# ---- events -------------------------------------------------------------------------------------

def _flips(cluster, scenario_events, rng: random.Random):
    """Candidate label changes (pod key, new labels): the scenario's events not yet applied,
    then a random label of a random pod set to another value that label has in the cluster."""
    from sdn.policy.model import freeze_labels
    for ev in scenario_events or ():
        if ev.pod in cluster.pods and cluster.pods[ev.pod].labels != ev.labels:
            yield ev.pod, ev.labels
    values: dict[str, set[str]] = {}
    for p in cluster.pods.values():
        for k, v in p.labels:
            values.setdefault(k, set()).add(v)
    keys = sorted(cluster.pods)
    rng.shuffle(keys)
    for key in keys:
        labels = dict(cluster.pods[key].labels)
        flippable = [k for k in sorted(labels) if values[k] - {labels[k]}]
        if flippable:
            k = rng.choice(flippable)
            labels[k] = rng.choice(sorted(values[k] - {labels[k]}))
            yield key, freeze_labels(labels)


# ---- the comparison -----------------------------------------------------------------------------

def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _ovn_cold(ovn: OvnStack, bridge, state: NB.NbState, rounds: int) -> tuple[NB.Uuids, dict]:
    """Plug and bind the pods, then realize the policies `rounds` times (removed in between):
    one NB transaction, then `ovn-nbctl --wait=hv sync`."""
    _plug(ovn.ovs, OVN_BRIDGE, [(f"ovn{i}", FIRST_OFPORT + i, {"iface-id": NB.lsp_name(p.pod)})
                                for i, p in enumerate(bridge.pods)])
    t = time.perf_counter()
    ids = NB.Uuids()
    ops, recs = NB.topology_ops(state)
    NB.record(ids, recs, ovn.nb.transact(ops))
    ovn.wait_ports_up(list(state.ports), timeout=120)
    ovn.wait_hv(timeout=120)
    bound = time.perf_counter() - t
    base = len(ovn.flow_lines())
    empty = NB.policy_only(state)
    total, txn, wait = [], [], []
    for k in range(rounds):
        if k:
            ops, _ = NB.diff_ops(state, empty, ids)
            ovn.nb.transact(ops)
            ovn.wait_hv(timeout=3600)
        ops, recs = NB.diff_ops(empty, state, ids)
        t0 = time.perf_counter()
        results = ovn.nb.transact(ops)
        t1 = time.perf_counter()
        sync = ovn.wait_hv(timeout=3600)
        total.append(time.perf_counter() - t0)
        txn.append(t1 - t0)
        wait.append(sync)
        NB.record(ids, recs, results)
    floor = min(ovn.wait_hv() for _ in range(3))
    flows = _classify_ovn(ovn.flow_lines(), ovn.stage_of_cookie())
    return ids, {"seconds": round(_median(total), 4), "rounds": [round(x, 4) for x in total],
                 "nb_transaction_seconds": round(_median(txn), 4), "wait_hv_seconds": round(_median(wait), 4),
                 "idle_wait_hv_seconds": round(floor, 4), "ports_bound_seconds": round(bound, 3),
                 "nb_operations": len(ops), "flows": flows["total"], "flows_pods_only": base,
                 "flows_by_stage": flows}


def _ours_cold(ours, ch, bridge, rules, isolation, rounds: int):
    """The pods-only program, then the rules `rounds` times (removed in between): the
    controller's compiler (flows.compiler.BridgeCompiler, as sdn.engine drives it) from the
    rules, the diff against the pods-only program, one bundle until its commit reply."""
    from benchmarks.worker import flow_kinds
    from flows.compiler import BridgeCompiler, compile_bridge
    from flows.flow import diff
    from sdn.switch import channel, reconcile

    def send(plan, what: str) -> None:
        r = channel.apply_plan(ch, plan)
        if not r.committed:
            raise RuntimeError(f"{what} refused by ovs-vswitchd: {r.describe_failure()}")

    base = compile_bridge(bridge, [], [])
    send(reconcile.plan([], base.flows), "the pods-only program")
    base_keys = {f.key: f for f in base.flows}
    total, comp, comp_cpu, bundle = [], [], [], []
    for k in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        compiler = BridgeCompiler(bridge)
        compiler.update(upsert=rules, isolate=isolation, diff=False)
        prog = compiler.program()
        t1 = time.perf_counter()
        comp_cpu.append(time.process_time() - c0)
        plan = reconcile.plan_diff(diff(base.flows, prog.flows), base_keys)
        send(plan, "the rules' bundle")
        total.append(time.perf_counter() - t0)
        comp.append(t1 - t0)
        bundle.append(total[-1] - comp[-1])
        if k < rounds - 1:
            send(reconcile.plan_diff(diff(prog.flows, base.flows), {f.key: f for f in prog.flows}), "removal")
    return prog, {"seconds": round(_median(total), 4), "rounds": [round(x, 4) for x in total],
                  "compile_seconds": round(_median(comp), 4), "compile_cpu_seconds": round(_median(comp_cpu), 4),
                  "bundle_seconds": round(_median(bundle), 4),
                  "bundle_messages": plan.messages, "flows": len(ours.flow_lines(OUR_BRIDGE)),
                  "flows_pods_only": len(base.flows), "flows_by_kind": flow_kinds(prog.flows)}


def _incremental(ovn: OvnStack, ids: NB.Uuids, state: NB.NbState, ch, engine, focus: str, flips,
                 events: int, max_attempts: int) -> dict:
    """Label flips that change the node's flows, each followed by its revert, through both."""
    from sdn.switch import channel, reconcile

    installed = {f.key: f for f in engine.program(focus).flows}
    cur = state
    samples: list[dict] = []
    tried = 0

    def event(pod) -> dict | None:
        nonlocal cur
        t0 = time.perf_counter()
        d = engine.apply(upserts=[pod]).get(focus)
        if not d:
            return None
        t1 = time.perf_counter()
        res = channel.apply_plan(ch, reconcile.plan_diff(d, installed))
        t2 = time.perf_counter()
        if not res.committed:
            raise RuntimeError(f"event bundle refused: {res.describe_failure()}")
        for f in d.delete:
            installed.pop(f.key, None)
        installed.update((f.key, f) for f in (*d.add, *d.modify))
        # OVN-Kubernetes' own work (which address sets and port groups change) is not timed.
        new = NB.translate(engine.compilers[focus].bridge, engine.ruleset.all_rules(),
                           engine.ruleset.all_isolation())
        ops, recs = NB.diff_ops(cur, new, ids)
        t3 = time.perf_counter()
        replies = ovn.nb.transact(ops)
        t4 = time.perf_counter()
        sync = ovn.wait_hv(timeout=600)
        t5 = time.perf_counter()
        NB.record(ids, recs, replies)
        cur = new
        return {"pod": pod.key, "ours_s": t2 - t0, "engine_s": t1 - t0, "flow_diff": len(d),
                "ovn_s": t5 - t3, "nb_transaction_s": t4 - t3, "wait_hv_s": sync, "nb_operations": len(ops)}

    for key, labels in flips:
        if len(samples) >= events or tried >= max_attempts:
            break
        tried += 1
        old = engine.cluster.pods[key]
        s = event(dataclasses.replace(old, labels=labels))
        if s is None:
            continue
        samples.append(s)
        back = event(old)
        if back is not None:
            samples.append(back)
    if not samples:
        return {"n": 0, "flips_tried": tried, "note": "no label flip changed this node's flows"}
    o, w = [s["ours_s"] for s in samples], [s["ovn_s"] for s in samples]
    return {"n": len(samples), "flips_tried": tried,
            "ours_ms": {"p50": pct(o, 50) * 1e3, "p99": pct(o, 99) * 1e3},
            "ovn_ms": {"p50": pct(w, 50) * 1e3, "p99": pct(w, 99) * 1e3},
            "engine_ms_p50": pct([s["engine_s"] for s in samples], 50) * 1e3,
            "ovn_wait_hv_ms_p50": pct([s["wait_hv_s"] for s in samples], 50) * 1e3,
            "flow_diff_median": _median([s["flow_diff"] for s in samples]),
            "nb_operations_median": _median([s["nb_operations"] for s in samples]),
            "samples": samples}


def compare(cluster, rules, isolation, layout, focus: str, *, events: int = 10, pairs: int = 12,
            rounds: int = 3, seed: int = 7, max_attempts: int = 60, keep: bool = False,
            scenario_events=()) -> dict:
    """Both realizations of one node side by side (module doc); a JSON-able dict."""
    from benchmarks.scenarios import copy_cluster
    from sdn.engine import Engine
    from sdn.ovs.instance import OvsInstance
    from sdn.switch import channel, ofclient, reconcile

    bridge = layout.bridge(focus)
    rng = random.Random(f"ovn/{seed}")
    out: dict = {"node": focus, "pods_on_node": len(bridge.pods), "rounds": rounds}
    work = Path(tempfile.mkdtemp(prefix="sdnovn", dir="/tmp"))
    tag = f"{os.getpid() % 100000}x{next(_seq)}"
    ovn = OvnStack(work / "ovn", netns=f"sdnovn{tag}")
    ours = OvsInstance(work / "ours", netns=f"sdnour{tag}")
    try:
        t = time.perf_counter()
        ovn.start()
        out["ovn_start_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        state = NB.translate(bridge, rules, isolation)
        out["translate_seconds"] = round(time.perf_counter() - t, 4)
        out["nb"] = state.counts()
        ids, out["ovn"] = _ovn_cold(ovn, bridge, state, rounds)
        ours.start()
        ours.add_bridge(OUR_BRIDGE, dpid=0x5D0B1)
        _plug(ours, OUR_BRIDGE, [(f"sdn{i}", p.ofport, {}) for i, p in enumerate(bridge.pods)])
        with ofclient.DirectChannel(f"unix:{ours.mgmt(OUR_BRIDGE)}") as ch:
            prog, out["ours"] = _ours_cold(ours, ch, bridge, rules, isolation, rounds)
            out["flows_ratio_ours_to_ovn"] = round(out["ours"]["flows"] / max(out["ovn"]["flows"], 1), 4)
            out["seconds_ratio_ours_to_ovn"] = round(out["ours"]["seconds"] / max(out["ovn"]["seconds"], 1e-9), 4)
            ovn_ofport = {p.pod: FIRST_OFPORT + i for i, p in enumerate(bridge.pods)}
            probes = V.probes(bridge, rules, cluster, rng, pairs)
            out["verdicts"] = V.verdicts(probes, cluster, ovn, ours, ovn_ofport, prog, bridge, OUR_BRIDGE)
            engine = Engine(copy_cluster(cluster), nodes=[focus], previous={focus: prog})
            r = channel.apply_plan(ch, reconcile.plan(channel.read_flows(ch), engine.program(focus).flows))
            if not r.committed:
                raise RuntimeError(f"engine program refused: {r.describe_failure()}")
            out["incremental"] = _incremental(ovn, ids, state, ch, engine, focus,
                                              _flips(cluster, scenario_events, rng), events, max_attempts)
            left = reconcile.plan(channel.read_flows(ch), engine.program(focus).flows)
            out["ours_in_sync_after_events"] = left.empty
        out["ovn_flows_after_events"] = len(ovn.flow_lines())
        return out
    finally:
        errors = []
        for stop in (ovn.stop, ours.stop):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the other
                errors.append(e)
        if keep:
            print(f"kept {work} (daemon logs, databases)", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        if errors and sys.exc_info()[0] is None:
            raise errors[0]


# ---- entry points -------------------------------------------------------------------------------

def _options(quick: bool) -> dict:
    return {"events": 4, "pairs": 8, "rounds": 2} if quick else {"events": 20, "pairs": 24, "rounds": 3}


@register("ovn")
def ovn_hook(ctx) -> dict:
    """`python -m benchmarks --hook benchmarks.ovn:ovn_hook`: the OVN comparison on the focus node
    of S3 and S5, plus the small case (examples/); other scenarios are skipped (`ovn_any_hook`
    runs on any)."""
    if ctx.scenario.name not in OVN_SCENARIOS:
        return {"skipped": f"the OVN comparison runs on {', '.join(OVN_SCENARIOS)} (ovn_any_hook: any)"}
    res = ovn_any_hook(ctx)
    if "skipped" not in res:
        res["small_case"] = small_case(**_options(True))
    return res


@register("ovn-any")
def ovn_any_hook(ctx) -> dict:
    why = unavailable()
    if why:
        return {"skipped": f"not run: {why}"}
    res = compare(ctx.scenario.cluster, ctx.rules, ctx.isolation, ctx.layout, ctx.scenario.focus_node,
                  scenario_events=ctx.scenario.events, seed=ctx.scenario.seed, **_options(ctx.quick))
    return {**summary(res), **res}


def summary(r: dict) -> dict:
    """The headline numbers as flat keys (results.md's "Extra stages" list shows these)."""
    inc = r.get("incremental") or {}
    out = {"flows_ours": r["ours"]["flows"], "flows_ovn": r["ovn"]["flows"],
           "realization_s_ours": r["ours"]["seconds"], "realization_s_ovn": r["ovn"]["seconds"],
           "verdicts_agree": f"{r['verdicts']['agree']}/{r['verdicts']['probes']}"}
    if inc.get("n"):
        out.update(incremental_p50_ms_ours=round(inc["ours_ms"]["p50"], 2),
                   incremental_p50_ms_ovn=round(inc["ovn_ms"]["p50"], 2),
                   incremental_p99_ms_ours=round(inc["ours_ms"]["p99"], 2),
                   incremental_p99_ms_ovn=round(inc["ovn_ms"]["p99"], 2), incremental_n=inc["n"])
    return out


def small_case(paths: list[str] | None = None, node: str = "node-1", **kw) -> dict:
    """The repository's examples/ cluster (or other manifests) on one node."""
    from sdn.layout import build_layout
    from sdn.policy.manifests import load_paths
    from sdn.policy.rules import cluster_rules
    cluster, _ = load_paths(paths or [str(REPO / "examples")])
    rules, iso = cluster_rules(cluster)
    res = compare(cluster, rules, iso, build_layout(cluster), node, **kw)
    res["case"] = "examples/" if not paths else ", ".join(paths)
    return res


def table(name: str, r: dict) -> str:
    """A plain-text side-by-side table of one comparison."""
    o, w, v = r["ours"], r["ovn"], r["verdicts"]
    inc = r.get("incremental", {})
    rows = [("flows on the node (with policies)", f"{o['flows']:,}", f"{w['flows']:,}"),
            ("flows before policies (pods only)", f"{o['flows_pods_only']:,}", f"{w['flows_pods_only']:,}"),
            ("policy realization, commit -> installed", f"{o['seconds'] * 1e3:,.1f} ms", f"{w['seconds'] * 1e3:,.1f} ms")]
    if inc.get("n"):
        rows += [(f"incremental p50 (n={inc['n']})", f"{inc['ours_ms']['p50']:.1f} ms", f"{inc['ovn_ms']['p50']:.1f} ms"),
                 (f"incremental p99 (n={inc['n']})", f"{inc['ours_ms']['p99']:.1f} ms", f"{inc['ovn_ms']['p99']:.1f} ms")]
    lines = [f"{name}: node {r['node']}, {r['pods_on_node']} pods; NB rows {r['nb']}",
             f"  {'':42} {'ours':>14} {'OVN':>14}"]
    lines += [f"  {a:42} {b:>14} {c:>14}" for a, b, c in rows]
    lines.append(f"  verdicts: {v['agree']}/{v['probes']} probes agree over {v['pairs']} pod pairs "
                 f"({v['allowed']} allowed, {v['denied']} denied by the evaluator)")
    for d in v["disagreements"]:
        lines.append(f"    DISAGREE {d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ovn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", help="S1..S5 (default: the small case, examples/ on node-1)")
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-f", "--file", action="append", help="manifests for the small case (default examples/)")
    ap.add_argument("--node", default="node-1", help="the small case's node")
    ap.add_argument("--events", type=int, default=10, help="incremental events (flips and reverts)")
    ap.add_argument("--pairs", type=int, default=12, help="pod pairs traced")
    ap.add_argument("--rounds", type=int, default=3, help="cold realizations per side (median)")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (logs, databases)")
    args = ap.parse_args(argv)
    why = unavailable()
    if why:
        print(f"cannot run the OVN comparison: {why}", file=sys.stderr)
        return 2
    kw = {"events": args.events, "pairs": args.pairs, "rounds": args.rounds, "seed": args.seed, "keep": args.keep}
    if args.scenario:
        from benchmarks import scenarios as S
        from sdn.layout import build_layout
        from sdn.policy.rules import cluster_rules
        sc = S.build(args.scenario.upper(), args.scale, args.seed)
        rules, iso = cluster_rules(sc.cluster)
        res = compare(sc.cluster, rules, iso, build_layout(sc.cluster), sc.focus_node,
                      scenario_events=sc.events, **kw)
        name = f"{sc.name} (scale {args.scale:g})"
    else:
        res = small_case(args.file, args.node, **kw)
        name = f"small case ({res['case']})"
    print(table(name, res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0 if res["verdicts"]["disagree"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
