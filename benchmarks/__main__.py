"""python -m benchmarks [--quick] [--only S3,S5] [--out benchmarks/results]

Runs each scenario in a worker process of its own (benchmarks/worker.py), one after the other,
then writes results.json, results.md and PNG plots into --out. A scenario that exceeds
--timeout is killed; the stages it finished are still reported.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import cli_startup, manifest, report
from benchmarks.scenarios import BUILDERS, DEFAULT_SEED, FULL_SCALES, QUICK_SCALES

REPO = Path(__file__).resolve().parent.parent

# Per-mode settings; every one can be overridden on the command line.
QUICK = {"events": 5, "timeout": 60.0, "all_nodes_budget": 2.0, "growth_scale": 0.05, "max_flows": 300_000,
         "max_affected": 2, "install_flows": 100_000, "install_rounds": 1,
         "manifest_policies": 13_252}
FULL = {"events": 20, "timeout": 4 * 3600.0, "all_nodes_budget": 300.0, "growth_scale": 1.0, "max_flows": 3_000_000,
        "max_affected": 4, "install_flows": 100_000, "install_rounds": 3,
        "manifest_policies": 132_523}
# S3 and S4 share one state: S3 measures the static compile, S4 the events and the growth.
PER_SCENARIO = {"S3": ["--skip-events"], "S4": ["--skip-all-nodes"]}
# Scenarios whose time target is (or is likely) missed: profiled after their timed stages. S4
# (the event path under many touched policies) only in full runs, to keep QUICK short.
PROFILED = {"quick": ("S1",), "full": ("S1", "S4")}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scaled-down scenarios (< 2 min on 2 cores)")
    ap.add_argument("--only", default="", help="comma-separated scenarios, e.g. S3,S5 (default: all)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output directory")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every scenario's scale by this (after --quick); e.g. 0.1")
    ap.add_argument("--scales", default="", help="explicit scales, e.g. S1=0.5,S3=1 (overrides the mode's)")
    ap.add_argument("--events", type=int, default=None, help="events per scenario for the incremental stage")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per scenario before it is killed")
    ap.add_argument("--all-nodes-budget", type=float, default=None,
                    help="compile seconds for 'all nodes' before extrapolating (0: compile every node)")
    ap.add_argument("--max-flows", type=int, default=None,
                    help="skip compiling a node whose estimated rule flows exceed this")
    ap.add_argument("--max-affected", type=int, default=None, help="affected nodes compiled per event")
    ap.add_argument("--growth-scale", type=float, default=None, help="S4 growth: 500 and 2000 pods times this")
    ap.add_argument("--profile", choices=("auto", "all", "none"), default="auto",
                    help="auto: cProfile S1 (and S4 in full runs) after their timed stages")
    ap.add_argument("--hook", action="append", default=[],
                    help="extra stage (benchmarks.hooks): a registered name or package.module:function")
    ap.add_argument("--no-engine", action="store_true",
                    help="events: skip the side-by-side flows.compiler.BridgeCompiler measurement")
    ap.add_argument("--no-switch", action="store_true",
                    help="skip what needs root and Open vSwitch: each scenario's switch stage "
                         "(benchmarks/switch.py) and the controller cold install (benchmarks/install.py)")
    ap.add_argument("--install-flows", type=int, default=None,
                    help="flows of the controller-vs-ovs-ofctl cold install (0: skip it; default 100000)")
    ap.add_argument("--manifest-policies", type=int, default=None,
                    help="policies of the big-manifest `sdnctl compile` run (benchmarks/manifest.py; 0: skip "
                         "it; full 132523 = 52 MB, QUICK a tenth)")
    ap.add_argument("--install-rounds", type=int, default=None,
                    help="its rounds (QUICK 1 without the restart check, full 3)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--report-from", nargs="+", metavar="DIR",
                    help="run nothing: re-render results.md and plots into --out from the results.json "
                         "of these directories (merged; a later directory wins per scenario)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def settings(args) -> dict:
    base = dict(QUICK if args.quick else FULL)
    for k in base:
        v = getattr(args, k)
        if v is not None:
            base[k] = v
    return base


def scales(args) -> dict[str, float]:
    out = dict(QUICK_SCALES if args.quick else FULL_SCALES)
    for k in out:
        out[k] = out[k] * args.scale
    for item in filter(None, args.scales.split(",")):
        k, v = item.split("=")
        out[k.strip().upper()] = float(v)
    return out


def wants_profile(name: str, mode: str, quick: bool) -> bool:
    """auto: the scenarios with a time target (S1 rules + node, S1/S4 event path). The profile
    runs in the same worker after every timed stage, so it does not distort them."""
    return mode == "all" or (mode == "auto" and name in PROFILED["quick" if quick else "full"])


def run_worker(name: str, scale: float, args, cfg: dict, out: Path, profile: bool) -> dict:
    json_path = out / f".{name}.json"
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.worker", "--scenario", name, "--scale", repr(scale),
           "--seed", str(args.seed), "--json", str(json_path), "--events", str(cfg["events"]),
           "--max-flows", str(cfg["max_flows"]), "--all-nodes-budget", str(cfg["all_nodes_budget"]),
           "--growth-scale", str(cfg["growth_scale"]), "--max-affected", str(cfg["max_affected"])]
    if args.quick:
        cmd.append("--quick")
    if profile:
        cmd.append("--profile")
    cmd += PER_SCENARIO.get(name, [])
    if args.no_engine:
        cmd.append("--no-engine")
    if not args.no_switch:
        cmd.append("--switch")
    for h in args.hook:
        cmd += ["--hook", h]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL if args.quiet else None)
    timed_out = None
    try:
        proc.wait(timeout=cfg["timeout"])
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timed_out = f"killed after the {cfg['timeout']:g} s timeout"
    wall = time.perf_counter() - t0
    res: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {"scenario": name, "scale": scale,
                                                                         "stages": {}, "errors": {}}
    json_path.unlink(missing_ok=True)
    if timed_out:
        res["timed_out"] = timed_out + (f" during stage `{res['current']}`" if res.get("current") else "")
    elif proc.returncode:
        res.setdefault("errors", {})["worker"] = {"error": f"worker exited with {proc.returncode}",
                                                  "where": "benchmarks/worker.py"}
    res["wall_seconds"] = round(wall, 2)
    return res


def run_install(args, cfg: dict, out: Path) -> dict:
    """benchmarks/install.py in a process of its own: ~100k flows through the real controller
    process (os-ken) against ovs-ofctl --bundle add-flows on one ovs-vswitchd."""
    from benchmarks.switch import unavailable

    if args.no_switch:
        return {"skipped": "not run (--no-switch)"}
    if not cfg["install_flows"]:
        return {"skipped": "not run (--install-flows 0)"}
    why = unavailable()
    if why:
        return {"skipped": why}
    json_path = out / ".install.json"
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.install", "--flows", str(cfg["install_flows"]),
           "--rounds", str(cfg["install_rounds"]), "--json", str(json_path)]
    if args.quick:
        cmd.append("--no-restart")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=cfg["timeout"])
    except subprocess.TimeoutExpired:
        proc.terminate()  # install.py stops its controller and OVS on SIGTERM
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return {"error": f"stopped after the {cfg['timeout']:g} s timeout"}
    res = json.loads(json_path.read_text()) if json_path.exists() else {}
    json_path.unlink(missing_ok=True)
    if proc.returncode or not res:
        tail = output.strip().splitlines()[-3:]
        return {"error": f"exited with {proc.returncode}: {' | '.join(tail)[:300]}"}
    shown = [c for c in cmd[1:] if c not in ("--json", str(json_path))]
    res.update(rounds=cfg["install_rounds"], restart_checked=not args.quick,
               wall_seconds=round(time.perf_counter() - t0, 2), command="python " + " ".join(shown))
    return res


def write_report(results: dict, meta: dict, out: Path, plots: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, sort_keys=True,
                                                 default=str) + "\n")
    written = report.plots(results, out) if plots else []
    md = report.markdown(results, meta)
    if written:
        md += "\n" + "".join(f"![{w}]({w})\n" for w in written)
    (out / "results.md").write_text(md)


def rerender(args) -> int:
    results: dict = {}
    metas = []
    for d in args.report_from:
        data = json.loads((Path(d) / "results.json").read_text())
        results.update(data["results"])
        metas.append(data["meta"])
    meta = dict(metas[-1])
    if len(metas) > 1:
        meta["command"] = " + ".join(m.get("command", "?") for m in metas)
        meta["date"] = " / ".join(m.get("date", "?") for m in metas)
        meta["loadavg_start"] = [m.get("loadavg_start") for m in metas]
        meta["loadavg_end"] = [m.get("loadavg_end") for m in metas]
        meta["quick"] = all(m.get("quick") for m in metas)
        meta["controller_install"] = next((m["controller_install"] for m in reversed(metas)
                                           if m.get("controller_install")
                                           and not m["controller_install"].get("skipped")), None)
        meta["cli_startup"] = next((m["cli_startup"] for m in reversed(metas) if m.get("cli_startup")), None)
        meta["manifest"] = next((m["manifest"] for m in reversed(metas) if (m.get("manifest") or {}).get("bytes")),
                                meta.get("manifest"))
    write_report(results, meta, Path(args.out), not args.no_plots)
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'results.md'} from {len(metas)} run(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.report_from:
        return rerender(args)
    cfg = settings(args)
    sc = scales(args)
    names = [n.strip().upper() for n in args.only.split(",") if n.strip()] or sorted(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {', '.join(sorted(BUILDERS))}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    for name in names:
        if not args.quiet:
            print(f"== {name} (scale {sc[name]:g})", flush=True)
        res = run_worker(name, sc[name], args, cfg, out, wants_profile(name, args.profile, args.quick))
        results[name] = res
        if not args.quiet:
            print(f"   {name} done in {res['wall_seconds']} s", flush=True)
    if not args.quiet and not args.no_switch and cfg["install_flows"]:
        print(f"== controller cold install of {cfg['install_flows']:,} flows vs ovs-ofctl", flush=True)
    install = run_install(args, cfg, out)
    if not args.quiet:
        print("== CLI start-up: sdnctl --help, sdnctl compile of the example", flush=True)
    startup = cli_startup.measure(5 if args.quick else 9)
    if not args.quiet and cfg["manifest_policies"]:
        print(f"== sdnctl compile on a manifest of {cfg['manifest_policies']:,} policies", flush=True)
    big = manifest.run_in_process(cfg["manifest_policies"], out, REPO, cfg["timeout"])
    meta = {"quick": args.quick, "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(), "python": platform.python_version(), "seed": args.seed,
            "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": cfg, "scales": {n: sc[n] for n in names},
            "total_seconds": round(time.perf_counter() - t_start, 1),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()], "controller_install": install,
            "cli_startup": startup, "manifest": big}
    write_report(results, meta, out, not args.no_plots)
    if not args.quiet:
        print(f"wrote {out / 'results.md'} ({meta['total_seconds']} s)")
        for t in report.evaluate_targets(results, meta):
            print(f"  {t['status']:>12}  {t['target']}: {t['measured']} (target {t['target_text']}; {t['margin']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
