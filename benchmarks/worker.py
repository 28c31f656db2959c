"""Measure one scenario, in a process of its own (so peak RSS belongs to it alone).

    python -m benchmarks.worker --scenario S3 --scale 0.1 --json out.json [...]

Stages, each timed with time.perf_counter (wall) and time.process_time (CPU: what one core
spends, the fairer number on a shared machine), and followed by the process's peak RSS
(ru_maxrss, a high-water mark: the value after a stage is the peak up to its end):

  generate   build the Cluster (not part of any target)
  rules      sdn.policy.rules.cluster_rules: every rule and isolation of the whole cluster
  layout     sdn.layout.build_layout
  node       flows.compiler.compile_bridge for the focus node; flows by kind, the node's
             scoped rules and flows.compiler.cross_product_count of them
  all_nodes  compile_bridge for every node (stops at a time budget and extrapolates)
  events     incremental path per event: apply the pod change, cluster_rules again (full
             recompute: there is no incremental engine), compile_bridge of the affected
             nodes with previous= their last program, flows.flow.diff against it
  growth     S4 only: add one pod at 500 and 2,000 pods, with and without policies
  switch     --switch: benchmarks.switch in a private ovs-vswitchd: the focus node's program
             cold-installed (ours vs ovs-ofctl --bundle), the same events replayed through
             sdn.engine.Engine with each flow diff sent as one bundle (event -> diff ->
             bundle sent -> committed), the switch read back against the program
  hook:NAME  benchmarks.hooks
  profile    cProfile of rules + focus-node compile (+ diff against the previous program)

The JSON file is rewritten after every stage, so a parent that kills the worker at its
timeout still gets every finished stage.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import ipaddress
import json
import os
import pstats
import resource
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import hooks as H
from benchmarks import scenarios as S
from benchmarks.stats import clock, pct, same_flows
from flows import pipeline as P
from flows.bulk import freeze_all
from flows.compiler import compile_bridge, cross_product_count, port_matches, scope_rules
from flows.encoding import signature
from flows.flow import diff
from sdn.layout import build_layout
from sdn.policy.rules import cluster_rules

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def where(exc: BaseException) -> str:
    """file:line of the innermost frame of the repository in exc's traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        try:
            rel = Path(fr.filename).resolve().relative_to(REPO)
        except ValueError:
            continue
        return f"{rel}:{fr.lineno} ({fr.name})"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def flow_kinds(flows) -> dict:
    out = {"total": len(flows), "rule": 0, "default": 0, "pipeline": 0}
    for f in flows:
        kind = P.cookie_kind(f.cookie)
        if kind in (P.KIND_RULE, P.KIND_CLAUSE):
            out["rule"] += 1
        elif kind == P.KIND_DEFAULT:
            out["default"] += 1
        else:
            out["pipeline"] += 1
    return out


def _families(addresses) -> set[int]:
    return {ipaddress.ip_network(a, strict=False).version for a in addresses}


def conj_upper_bound(rules) -> int:
    """Rule flows without any sharing: sum of |peers| + |targets| + |ports| (+1 conj_id), each
    set of identical rules counted once (the compiler places them once: the others are aliases,
    with no flows of their own)."""
    total = 0
    seen: set = set()
    for r in rules:
        if r.matches_nothing:
            continue
        sig = signature(r)
        if sig in seen:
            continue
        seen.add(sig)
        dims = [len(r.targets)]
        if r.peers is not None:
            dims.append(len(r.peers))
        if r.ports is not None:
            dims.append(len(port_matches(r.ports, _families(r.targets))))
        total += sum(dims) + (1 if len(dims) > 1 else 0)
    return total


class Worker:
    def __init__(self, args):
        self.args = args
        self.res: dict = {"scenario": args.scenario, "scale": args.scale, "seed": args.seed,
                          "quick": args.quick, "python": sys.version.split()[0], "pid": os.getpid(),
                          "stages": {}, "errors": {}, "rss_start_mb": rss_mb()}
        self.failed: set[str] = set()

    # ---- bookkeeping -------------------------------------------------------------------

    def save(self) -> None:
        path = Path(self.args.json)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)

    @contextmanager
    def stage(self, name: str):
        rec: dict = {}
        self.res["current"] = name
        self.save()
        t0 = time.perf_counter()
        try:
            yield rec
        except Exception as e:  # noqa: BLE001 - recorded, later stages decide whether they can run
            self.failed.add(name)
            self.res["errors"][name] = {"error": f"{type(e).__name__}: {e}"[:500], "where": where(e)}
            print(f"[{self.args.scenario}] {name} failed: {type(e).__name__}: {e} at {where(e)}",
                  file=sys.stderr)
        finally:
            rec.setdefault("seconds", round(time.perf_counter() - t0, 4))
            rec["rss_mb"] = rss_mb()
            self.res["stages"][name] = rec
            self.res.pop("current", None)
            self.save()

    # ---- stages ------------------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        with self.stage("generate") as rec:
            events = a.events if a.events is not None else None
            self.sc = S.build(a.scenario, a.scale, a.seed, events)
            rec.update(self.sc.counts())
            rec["title"] = self.sc.title
            rec["focus_node"] = self.sc.focus_node
            rec["full_shape"] = self.sc.shape
            rec["events"] = len(self.sc.events)
        if "generate" in self.failed:
            return self.res
        # The events' pods before the events stage changes them (the switch stage replays them).
        self.before = {ev.pod: self.sc.cluster.pods[ev.pod] for ev in self.sc.events}
        if a.gc_freeze:
            gc.collect()
            freeze_all()
        with self.stage("rules") as rec:
            stop = clock()
            self.rules, self.iso = cluster_rules(self.sc.cluster)
            wall, cpu = stop()
            rec["seconds"], rec["cpu_seconds"] = round(wall, 4), round(cpu, 4)
            rec["rules"] = len(self.rules)
            rec["isolation"] = len(self.iso)
        if "rules" in self.failed:
            return self.res
        with self.stage("layout") as rec:
            self.layout = build_layout(self.sc.cluster)
            self.bridges: dict = {}
        self.programs: dict = {}
        self.stage_node()
        if not a.skip_all_nodes:
            self.stage_all_nodes()
        if self.sc.events and not a.skip_events:
            self.stage_events()
        if a.scenario == "S4" and not a.skip_growth:
            self.stage_growth()
        if a.switch:
            self.stage_switch()
        for spec in a.hook or ():
            self.stage_hook(spec)
        if a.profile:
            self.stage_profile()
        self.res["rss_peak_mb"] = rss_mb()
        self.save()
        return self.res

    def bridge(self, node: str):
        b = self.bridges.get(node)
        if b is None:
            b = self.bridges[node] = self.layout.bridge(node)
        return b

    def node_numbers(self, node: str, rules, iso) -> dict:
        scoped, sco_iso = scope_rules(self.bridge(node), rules, iso)
        return {"scoped_rules": len(scoped), "scoped_isolation": len(sco_iso),
                "cross_product": cross_product_count(scoped), "conj_upper_bound": conj_upper_bound(scoped)}

    def stage_node(self) -> None:
        node = self.sc.focus_node
        with self.stage("node") as rec:
            rec["node"] = node
            rec["pods_on_node"] = len(self.layout.nodes[node].pods)
            nums = self.node_numbers(node, self.rules, self.iso)
            rec.update(nums)
            if nums["conj_upper_bound"] > self.args.max_flows:
                rec["skipped"] = (f"estimated {nums['conj_upper_bound']:,} rule flows > --max-flows "
                                  f"{self.args.max_flows:,}")
                rec["seconds"] = None
                return
            bridge = self.bridge(node)
            stop = clock()
            prog = compile_bridge(bridge, self.rules, self.iso)
            wall, cpu = stop()
            rec["seconds"], rec["cpu_seconds"] = round(wall, 4), round(cpu, 4)
            self.programs[node] = prog
            kinds = flow_kinds(prog.flows)
            rec["flows"] = kinds
            rec["naive_total"] = kinds["pipeline"] + kinds["default"] + nums["cross_product"]

    def stage_all_nodes(self) -> None:
        nodes = sorted(self.layout.nodes)
        budget = self.args.all_nodes_budget
        with self.stage("all_nodes") as rec:
            rec["nodes"] = len(nodes)
            done, spent, spent_cpu, flows, rule_flows, cross, skipped = 0, 0.0, 0.0, [], [], [], 0
            for node in nodes:
                nums = self.node_numbers(node, self.rules, self.iso)
                if nums["conj_upper_bound"] > self.args.max_flows:
                    skipped += 1
                    continue
                stop = clock()
                prog = compile_bridge(self.bridge(node), self.rules, self.iso)
                wall, cpu = stop()
                spent += wall
                spent_cpu += cpu
                done += 1
                k = flow_kinds(prog.flows)
                flows.append(k["total"])
                rule_flows.append(k["rule"])
                cross.append(nums["cross_product"])
                del prog
                if budget and spent > budget and done < len(nodes):
                    break
            rec["compiled"] = done
            rec["skipped_too_big"] = skipped
            rec["seconds_compiled"] = round(spent, 4)
            if done:
                per = spent / done
                rec["seconds"] = round(per * (len(nodes) - skipped), 4)
                rec["cpu_seconds"] = round(spent_cpu / done * (len(nodes) - skipped), 4)
                rec["extrapolated"] = done < len(nodes) - skipped
                rec["flows_per_node"] = {"min": min(flows), "median": statistics.median(flows),
                                         "max": max(flows), "sum_compiled": sum(flows)}
                rec["rule_flows_sum"] = sum(rule_flows)
                rec["cross_product_sum"] = sum(cross)
            else:
                rec["seconds"] = None

    def stage_events(self) -> None:
        """Replay the scenario's pod label events one after the other, through two paths side
        by side, each on its own copy of the cluster:

        full    cluster_rules again (full recompute), then compile_bridge(previous=) + diff
                for the focus node (the events' pods live there) when the event reaches it;
                latency = rules + that node. Other affected nodes (at most --max-affected - 1)
                are compiled too, for the record (node_others_s), and kept up to date.
        engine  sdn.engine.Engine for the focus node alone (one node agent: RuleSet
                recomputes the affected policies, the node's BridgeCompiler turns the rule
                delta into a flow diff); latency = Engine.apply. Its program is checked
                against the full compile.
        """
        cl = self.sc.cluster
        addr_node = {ip: p.node for p in cl.pods.values() for ip in p.ips if p.node is not None}  # (all placed)
        max_nodes = self.args.max_affected
        with self.stage("events") as rec:
            focus = self.sc.focus_node
            engine, info = self._make_engine(cl, [focus])
            self.engine = engine
            self.undo = []
            rec.update(info)
            samples = []
            rules0, iso0 = self.rules, self.iso
            cache = dict(self.programs)
            for ev in self.sc.events:
                old_pod = cl.pods[ev.pod]
                new_pod = dataclasses.replace(old_pod, labels=ev.labels)
                # -- full path: event to recomputed rules --
                stop = clock()
                cl.pods[ev.pod] = new_pod
                rules1, iso1 = cluster_rules(cl)
                t_rules, c_rules = stop()
                # -- what changed and which nodes it reaches (analysis, not timed) --
                old_by = {r.id: r for r in rules0}
                new_by = {r.id: r for r in rules1}
                changed = [i for i in old_by.keys() | new_by.keys() if old_by.get(i) != new_by.get(i)]
                addrs: set[str] = set()
                for i in changed:
                    for r in (old_by.get(i), new_by.get(i)):
                        if r is not None:
                            addrs |= r.targets
                iso_changed = set(iso0) ^ set(iso1)
                addrs |= {i.address for i in iso_changed}
                touched = {i.policy for i in changed} | {p for i in iso_changed for p in i.policies}
                affected = sorted({addr_node[a] for a in addrs if a in addr_node})
                self.undo.append(old_pod)
                home = focus
                order = ([home] if home in affected else []) + [n for n in affected if n != home]
                compiled = order[:max_nodes]
                node_times, node_cpu, diff_sizes, home_prog = [], [], [], None
                for node in compiled:
                    prev = cache.get(node)
                    if prev is None:  # the node's program before the event (not timed)
                        prev = compile_bridge(self.bridge(node), rules0, iso0)
                    est = self.node_numbers(node, rules1, iso1)["conj_upper_bound"]
                    if est > self.args.max_flows:
                        raise RuntimeError(f"node {node}: estimated {est:,} rule flows > --max-flows")
                    stop = clock()
                    new = compile_bridge(self.bridge(node), rules1, iso1, previous=prev)
                    d = diff(prev.flows, new.flows)
                    wall, cpu = stop()
                    node_times.append(wall)
                    node_cpu.append(cpu)
                    diff_sizes.append({"add": len(d.add), "modify": len(d.modify), "delete": len(d.delete)})
                    cache[node] = new
                    if node == home:
                        home_prog = new
                for node in affected:  # not recompiled: their cached program is stale
                    if node not in compiled:
                        cache.pop(node, None)
                rules0, iso0 = rules1, iso1
                reached = bool(compiled and compiled[0] == home)
                t_home = node_times[0] if reached else 0.0
                c_home = node_cpu[0] if reached else 0.0
                sample = {
                    "event": ev.description, "rules_s": t_rules, "node_s": t_home,
                    "latency_cpu_s": c_rules + c_home,
                    "focus_reached": reached,
                    "node_others_s": max(node_times[1:] if t_home else node_times, default=0.0),
                    "latency_s": t_rules + t_home,
                    "rules_changed": len(changed), "isolation_changed": len(iso_changed),
                    "policies_touched": len(touched), "affected_nodes": len(affected),
                    "compiled_nodes": len(compiled),
                    "diff": diff_sizes[0] if diff_sizes else {"add": 0, "modify": 0, "delete": 0},
                    "diff_total_compiled": sum(sum(d.values()) for d in diff_sizes),
                }
                if engine is not None:
                    sample.update(self._engine_event(engine, new_pod, home, home_prog))
                samples.append(sample)
            self.rules, self.iso = rules0, iso0
            self.programs = dict(cache)
            lat = [s["latency_s"] for s in samples]
            rec["n"] = len(samples)
            rec["latency_ms"] = {"p50": pct(lat, 50) * 1e3, "p99": pct(lat, 99) * 1e3, "max": max(lat) * 1e3,
                                 "min": min(lat) * 1e3}
            lc = [s["latency_cpu_s"] for s in samples]
            rec["latency_cpu_ms"] = {"p50": pct(lc, 50) * 1e3, "p99": pct(lc, 99) * 1e3}
            rec["rules_ms_p50"] = pct([s["rules_s"] for s in samples], 50) * 1e3
            rec["node_ms_p50"] = pct([s["node_s"] for s in samples], 50) * 1e3
            rec["policies_touched_median"] = statistics.median(s["policies_touched"] for s in samples)
            rec["affected_nodes_median"] = statistics.median(s["affected_nodes"] for s in samples)
            rec["diff_median"] = statistics.median(sum(s["diff"].values()) for s in samples)
            eng = [s for s in samples if "engine_s" in s]
            if eng:
                el = [s["engine_s"] for s in eng]
                ec = [s["engine_cpu_s"] for s in eng]
                rec["engine"] = {
                    "n": len(eng), "init_s": info.get("engine_init_s"), "init_cpu_s": info.get("engine_init_cpu_s"),
                    "bridges": info.get("engine_bridges"),
                    "latency_ms": {"p50": pct(el, 50) * 1e3, "p99": pct(el, 99) * 1e3, "max": max(el) * 1e3},
                    "latency_cpu_ms": {"p50": pct(ec, 50) * 1e3, "p99": pct(ec, 99) * 1e3},
                    "policies_recomputed_median": statistics.median(s["engine_policies"] for s in eng),
                    "diff_median": statistics.median(s["engine_diff"] for s in eng),
                    "vs_full_compile": sorted({s["engine_vs_full"] for s in eng}),
                }
            errs = [s["engine_error"] for s in samples if "engine_error" in s]
            if errs:
                rec["engine_error"] = errs[0]
            rec["samples"] = samples
            rec["seconds"] = round(sum(lat), 4)

    def _make_engine(self, cluster, nodes: list[str], rules=None, iso=None, layout=None):
        """sdn.engine.Engine for `nodes` on a copy of the cluster (its cold start is reported
        as engine_init_s, not as an event). rules/iso/layout: the cluster's, when it is not the
        scenario's own."""
        if self.args.no_engine:
            return None, {}
        try:
            from sdn.engine import Engine
        except Exception as e:  # noqa: BLE001 - the benchmark records what failed and goes on
            return None, {"engine_error": f"{type(e).__name__}: {e}"}
        if rules is None:
            rules, iso = self.rules, self.iso
        bridge = self.bridge if layout is None else layout.bridge
        nodes = [n for n in nodes if conj_upper_bound(scope_rules(bridge(n), rules, iso)[0]) <= self.args.max_flows]
        if not nodes:
            return None, {"engine_error": "every event node is too big to compile (--max-flows)"}
        copy = S.copy_cluster(cluster)
        try:
            stop = clock()
            engine = Engine(copy, nodes=nodes)
            wall, cpu = stop()
            return engine, {"engine_init_s": round(wall, 4), "engine_init_cpu_s": round(cpu, 4),
                            "engine_bridges": len(nodes),
                            "engine_rss_mb": rss_mb()}
        except Exception as e:  # noqa: BLE001 - the benchmark records what failed and goes on
            return None, {"engine_error": f"{type(e).__name__}: {e} at {where(e)}"}

    def _engine_event(self, engine, new_pod, home: str, full_prog) -> dict:
        try:
            stop = clock()
            diffs = engine.apply(upserts=[new_pod])
            t, c = stop()
            out = {"engine_s": t, "engine_cpu_s": c, "engine_diff": len(diffs.get(home, ())) if diffs else 0,
                   "engine_policies": len(getattr(engine.last_delta, "policies", ()) or ())}
            if full_prog is not None and home in engine.compilers:
                out["engine_vs_full"] = same_flows(engine.program(home).flows, full_prog.flows)
            else:
                out["engine_vs_full"] = "not compared (pod's node not affected)"
            return out
        except Exception as e:  # noqa: BLE001 - the benchmark records what failed and goes on
            return {"engine_error": f"{type(e).__name__}: {e} at {where(e)}"}

    def stage_growth(self) -> None:
        """OpenShift's check: adding pods with policies no slower than without. One pod added
        at 500 and at 2,000 pods, with and without policies, through both paths."""
        sizes = [max(20, round(n * self.args.growth_scale)) for n in (500, 2000)]
        with self.stage("growth") as rec:
            rows = []
            for pods in sizes:
                row = {"pods": pods}
                for with_pol in (False, True):
                    c, new = S.s4_growth(pods, with_pol, self.args.seed)
                    node = new.node
                    if node is None:
                        raise RuntimeError(f"S4 growth: the new pod {new.key} has no node")
                    lay = build_layout(c)
                    rules0, iso0 = cluster_rules(c)
                    prev = compile_bridge(lay.bridge(node), rules0, iso0)
                    engine, info = self._make_engine(c, [node], rules0, iso0, lay)
                    stop = clock()
                    c.pods[new.key] = new
                    rules1, iso1 = cluster_rules(c)
                    t_rules, _ = stop()
                    lay = build_layout(c)  # the new pod gets its ofport
                    prog = compile_bridge(lay.bridge(node), rules1, iso1, previous=prev)
                    d = diff(prev.flows, prog.flows)
                    wall, cpu = stop()
                    key = "with" if with_pol else "without"
                    row[key] = {"latency_ms": wall * 1e3, "latency_cpu_ms": cpu * 1e3, "rules_ms": t_rules * 1e3,
                                "node_ms": (wall - t_rules) * 1e3, "diff": len(d), "policies": len(c.policies),
                                "flows": len(prog.flows)}
                    if engine is not None:
                        try:
                            stop = clock()
                            diffs = engine.apply(upserts=[new])
                            wall, cpu = stop()
                            row[key]["engine_ms"] = wall * 1e3
                            row[key]["engine_cpu_ms"] = cpu * 1e3
                            row[key]["engine_diff"] = len(diffs.get(node, ())) if diffs else 0
                        except Exception as e:  # noqa: BLE001 - the benchmark records what failed and goes on
                            row[key]["engine_error"] = f"{type(e).__name__}: {e} at {where(e)}"
                    elif info.get("engine_error"):
                        row[key]["engine_error"] = info["engine_error"]
                row["ratio_with_without"] = row["with"]["latency_ms"] / max(row["without"]["latency_ms"], 1e-9)
                if "engine_ms" in row["with"] and "engine_ms" in row["without"]:
                    row["engine_ratio_with_without"] = (row["with"]["engine_ms"]
                                                        / max(row["without"]["engine_ms"], 1e-9))
                rows.append(row)
            rec["rows"] = rows
            rec["growth_with"] = rows[-1]["with"]["latency_ms"] / max(rows[0]["with"]["latency_ms"], 1e-9)
            rec["growth_without"] = rows[-1]["without"]["latency_ms"] / max(rows[0]["without"]["latency_ms"], 1e-9)
            eng = [r for r in rows if "engine_ratio_with_without" in r]
            if len(eng) == len(rows):
                rec["engine_growth_with"] = rows[-1]["with"]["engine_ms"] / max(rows[0]["with"]["engine_ms"], 1e-9)
                rec["engine_growth_without"] = (rows[-1]["without"]["engine_ms"]
                                                / max(rows[0]["without"]["engine_ms"], 1e-9))

    def stage_switch(self) -> None:
        """benchmarks.switch on the cluster as it was before the events: the focus node's
        program cold-installed into a private ovs-vswitchd (ours vs ovs-ofctl), then the same
        pod label events as the events stage, each diff sent as one bundle."""
        from benchmarks.switch import realize, unavailable

        node = self.sc.focus_node
        with self.stage("switch") as rec:
            why = unavailable()
            if why:
                rec["skipped"], rec["seconds"] = why, None
                return
            est = self.node_numbers(node, self.rules, self.iso)["conj_upper_bound"]
            if est > self.args.max_flows:
                rec["skipped"] = f"estimated {est:,} rule flows on {node} > --max-flows {self.args.max_flows:,}"
                rec["seconds"] = None
                return
            cluster = S.copy_cluster(self.sc.cluster)
            cluster.pods.update(self.before)
            pods, now = [], dict(self.before)
            if self.args.skip_events:  # S3: the static compile; S4 replays events on the same state
                rec["events_skipped"] = "--skip-events"
            for ev in [] if self.args.skip_events else self.sc.events:
                now[ev.pod] = dataclasses.replace(now[ev.pod], labels=ev.labels)
                pods.append(now[ev.pod])
            after = S.copy_cluster(cluster)  # for the check, not timed
            after.pods.update(now)
            reference = (compile_bridge(self.bridge(node), *cluster_rules(after)) if pods
                         else self.programs.get(node))
            stop = clock()
            rec.update(realize(cluster, node, pods, self.args.switch_rounds, reference))
            wall, cpu = stop()
            if not rec.get("skipped"):
                rec["seconds"], rec["cpu_seconds"] = round(wall, 4), round(cpu, 4)

    def stage_hook(self, spec: str) -> None:
        try:
            name, fn = H.resolve(spec)
        except Exception as e:  # noqa: BLE001 - a hook that cannot load is recorded, the others run
            self.res["errors"][f"hook:{spec}"] = {"error": f"{type(e).__name__}: {e}", "where": where(e)}
            return
        with self.stage(f"hook:{name}") as rec:
            ctx = H.HookContext(self.sc, self.rules, self.iso, self.layout, self.programs, self.args.quick,
                                vars(self.args))
            t0 = time.perf_counter()
            out = fn(ctx) or {}
            rec["seconds"] = round(time.perf_counter() - t0, 4)
            rec.update(out)

    def stage_profile(self) -> None:
        """cProfile, after every timed stage: (1) the full path (cluster_rules + the focus
        node's compile + diff); (2) the engine path: Engine.apply undoing the events one by
        one (each undo is an event of the same kind)."""
        node = self.sc.focus_node
        prev = self.programs.get(node)
        with self.stage("profile") as rec:
            if self.node_numbers(node, self.rules, self.iso)["conj_upper_bound"] > self.args.max_flows:
                rec["skipped"] = "focus node too big to compile"
                return
            prof = cProfile.Profile()
            stop = clock()
            prof.enable()
            rules, iso = cluster_rules(self.sc.cluster)
            prog = compile_bridge(self.bridge(node), rules, iso, previous=prev)
            if prev is not None:
                diff(prev.flows, prog.flows)
            prof.disable()
            total = stop()[0]
            rec["profiled_seconds"] = round(total, 3)
            rec["what"] = ("cluster_rules + compile_bridge(focus node"
                           + (", previous=last program) + diff" if prev is not None else ")"))
            rec["top_tottime"] = top_entries(prof, "tottime", self.args.profile_top, total)
            rec["top_cumtime_repo"] = top_entries(prof, "cumtime", self.args.profile_top, total, repo_only=True)
            engine, undo = getattr(self, "engine", None), getattr(self, "undo", [])
            if engine is not None and undo:
                prof = cProfile.Profile()
                stop = clock()
                prof.enable()
                for pod in reversed(undo):
                    engine.apply(upserts=[pod])
                prof.disable()
                total = stop()[0]
                rec["engine_profiled_seconds"] = round(total, 3)
                rec["engine_what"] = f"sdn.engine.Engine.apply x{len(undo)} (the events undone, one by one)"
                rec["engine_top_tottime"] = top_entries(prof, "tottime", self.args.profile_top, total)
                rec["engine_top_cumtime_repo"] = top_entries(prof, "cumtime", self.args.profile_top, total,
                                                             repo_only=True)



def _loc(func: tuple) -> str:
    filename, line, name = func
    try:
        filename = str(Path(filename).resolve().relative_to(REPO))
    except ValueError:
        if filename.startswith("~") or filename == "~":
            return name  # built-in
        parts = Path(filename).parts
        filename = "/".join(parts[-2:]) if len(parts) >= 2 else filename
    return f"{filename}:{line}({name})"


def top_entries(prof: cProfile.Profile, key: str, n: int, total: float, repo_only: bool = False) -> list[dict]:
    """The n costliest functions; share = their time / the profiled block's wall time."""
    st: Any = pstats.Stats(prof)  # Any: its `stats` table is not in the stubs
    total = max(total, 1e-9)
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in st.stats.items():
        loc = _loc(func)
        if repo_only and not (loc.startswith(("sdn/", "flows/"))):
            continue
        rows.append({"where": loc, "ncalls": nc, "tottime": round(tt, 4), "cumtime": round(ct, 4),
                     "share": round((tt if key == "tottime" else ct) / total, 4)})
    rows.sort(key=lambda r: -r[key])
    return rows[:n]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    ap.add_argument("--scenario", required=True, choices=sorted(S.BUILDERS))
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=S.DEFAULT_SEED)
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--max-flows", type=int, default=3_000_000)
    ap.add_argument("--max-affected", type=int, default=4, help="affected nodes compiled per event")
    ap.add_argument("--all-nodes-budget", type=float, default=0.0,
                    help="seconds of compile for the all-nodes stage before extrapolating (0: none)")
    ap.add_argument("--growth-scale", type=float, default=1.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--hook", action="append")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() the generated cluster (keeps the GC from rescanning it)")
    ap.add_argument("--skip-all-nodes", action="store_true")
    ap.add_argument("--skip-events", action="store_true")
    ap.add_argument("--skip-growth", action="store_true")
    ap.add_argument("--no-engine", action="store_true",
                    help="do not measure sdn.engine.Engine (the incremental path) side by side")
    ap.add_argument("--switch", action="store_true",
                    help="benchmarks.switch: cold install and event-to-bundle-committed latency on a "
                         "private ovs-vswitchd (root and Open vSwitch; else recorded as not run)")
    ap.add_argument("--switch-rounds", type=int, default=3, help="cold install rounds (ours and ovs-ofctl)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    Worker(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
