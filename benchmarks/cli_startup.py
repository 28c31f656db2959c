"""How long `sdnctl` takes to start: `sdnctl --help` (imports only the CLI) and `sdnctl compile`
of the example cluster (loads, validates and compiles nine pods and four policies), each run as
a user runs it, in a fresh process, several times. Target: --help under 0.2 s."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HELP_TARGET_S = 0.2
COMMANDS = {
    "help": ["--help"],
    "compile": ["compile", "-f", str(REPO / "examples"), "--node", "node-1"],
}


def sdnctl() -> list[str]:
    """The installed console script next to this Python (what the README runs), else the module."""
    script = Path(sys.executable).parent / "sdnctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sdn.cli"]


def measure(runs: int = 7) -> dict:
    """Wall seconds of each command over `runs` fresh processes: min, median, and the runs; a
    command that fails or writes to stderr (a warning) is reported as an error."""
    out: dict = {"runs": runs, "command": " ".join(Path(c).name for c in sdnctl())}
    for name, args in COMMANDS.items():
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = subprocess.run(sdnctl() + args, cwd=REPO, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode or proc.stderr.strip():
                out[name] = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[:200]}"}
                break
        else:
            out[name] = {"min_s": round(min(times), 4), "median_s": round(statistics.median(times), 4),
                         "seconds": [round(t, 4) for t in times], "args": " ".join(args[:1])}
    return out


def target_rows(meta: dict | None) -> list[dict]:
    """The start-up target row of results.md: `sdnctl --help` median under 0.2 s."""
    st = (meta or {}).get("cli_startup") or {}
    row: dict[str, Any] = {"target": "CLI start-up: `sdnctl --help`, a fresh process (median)", "scenario": "-",
           "target_text": f"< {HELP_TARGET_S:g} s"}
    h, c = st.get("help") or {}, st.get("compile") or {}
    if "median_s" in h:
        met = h["median_s"] < HELP_TARGET_S
        factor = HELP_TARGET_S / h["median_s"] if met else h["median_s"] / HELP_TARGET_S
        comp = (f"; `sdnctl compile -f examples/ --node node-1` median {c['median_s']:.3f} s"
                if "median_s" in c else f"; compile: {c.get('error', 'not run')}")
        row.update(measured=f"median {h['median_s']:.3f} s (min {h['min_s']:.3f} s, {st['runs']} runs){comp}",
                   status="met" if met else "missed", met=met,
                   margin=f"{factor:.1f}x headroom" if met else f"missed by {factor:.1f}x")
    else:
        row.update(measured=h.get("error", "not run (results from before this measurement)")[:200],
                   status="not measured", margin="-", met=None)
    return [row]


if __name__ == "__main__":
    import json
    print(json.dumps(measure(), indent=2))
