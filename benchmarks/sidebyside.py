"""Before/after in one run: the compiler and rule stages of two source trees on the same
scenarios, each measurement in a fresh process, the trees alternating.

    python -m benchmarks.sidebyside --base DIR [--scenarios S1=1,S3=1,S5=1] [--rounds 3] [--json OUT]

DIR is another checkout of the project (e.g. `git archive <rev> | tar -x -C DIR`). Per tree and
scenario: `cluster_rules` CPU, the focus node's `compile_bridge` CPU and that program's diff
against the pods-only program (what a realization computes before it sends), and the peak RSS
of the process; medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Runs inside the measured tree (PYTHONPATH): only APIs both trees have.
PROBE = r"""
import json, resource, sys, time
from benchmarks import scenarios as S
from flows.compiler import compile_bridge
from flows.flow import diff
from sdn.layout import build_layout
from sdn.policy.rules import cluster_rules
name, scale = sys.argv[1], float(sys.argv[2])
sc = S.build(name, scale, 7, 0)
t = time.process_time(); rules, iso = cluster_rules(sc.cluster); t_rules = time.process_time() - t
bridge = build_layout(sc.cluster).bridge(sc.focus_node)
base = compile_bridge(bridge, [], [])
t = time.process_time(); prog = compile_bridge(bridge, rules, iso); t_node = time.process_time() - t
t = time.process_time(); d = diff(base.flows, prog.flows); t_diff = time.process_time() - t
print(json.dumps({"rules_cpu_s": t_rules, "node_cpu_s": t_node, "diff_cpu_s": t_diff, "flows": len(prog.flows),
                  "rules": len(rules), "isolation": len(iso), "diff": len(d),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def probe(tree: Path, name: str, scale: float, python: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([python, "-c", PROBE, name, str(scale)], cwd=tree, env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sidebyside", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the other source tree (before)")
    ap.add_argument("--scenarios", default="S1=1,S3=1,S5=1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args(argv)
    trees = {"before": Path(a.base).resolve(), "after": REPO}
    out: dict = {}
    for item in a.scenarios.split(","):
        name, scale = item.split("=")
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(a.rounds):
            for label, tree in trees.items():
                runs[label].append(probe(tree, name, float(scale), sys.executable))
        res = {}
        for label, rs in runs.items():
            res[label] = {k: round(statistics.median(r[k] for r in rs), 4) for k in rs[0]}
        b, f = res["before"], res["after"]
        res["ratio_after_before"] = {k: round(f[k] / b[k], 3) for k in ("rules_cpu_s", "node_cpu_s", "diff_cpu_s",
                                                                          "peak_rss_mb") if b[k]}
        out[f"{name}@{scale}"] = res
        print(name, scale, json.dumps(res), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
