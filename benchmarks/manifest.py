"""The big-manifest benchmark (issue 14): a ~50 MB multi-document YAML file (132,523 policies
over 1,000 pods by default) written as a user would keep it, and `sdnctl compile` timed on it
as a process: wall and CPU time, peak RSS, what it printed on stderr.

    python -m benchmarks.manifest [--policies N] [--pods N] [--json OUT]

The file is written into a fresh temporary directory and removed afterwards. Seeded: the same
arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NAMESPACES = 40
NODES = 10
FOCUS_NODE = "node-00"


def _node(i: int) -> str:
    return (f"apiVersion: v1\nkind: Node\nmetadata:\n  name: node-{i:02d}\nspec:\n"
            f"  podCIDR: 10.244.{i}.0/24\nstatus:\n  addresses:\n  - type: InternalIP\n"
            f"    address: 192.168.50.{10 + i}\n")


def _namespace(i: int) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{i:02d}\n  labels:\n    team: t{i % 8}\n"


def _pod(i: int) -> str:
    node = i % NODES
    ip = f"10.244.{node}.{2 + i // NODES}"
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i:04d}\n  namespace: ns-{i % NAMESPACES:02d}\n"
            f"  labels:\n    app: a{i % 10}\n    tier: t{i % 3}\nspec:\n  nodeName: node-{node:02d}\n"
            f"  containers:\n  - name: server\n    image: registry.k8s.io/e2e-test-images/agnhost:2.47\n"
            f"    ports:\n    - name: http\n      containerPort: 8080\n      protocol: TCP\n"
            f"status:\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n")


def _policy(q: int) -> str:
    ns = q % NAMESPACES
    peer = (f"    - namespaceSelector:\n        matchLabels:\n          team: t{(q * 7) % 8}\n"
            f"      podSelector:\n        matchLabels:\n          tier: t{q % 3}\n")
    if q % 8 == 0:
        peer += (f"    - ipBlock:\n        cidr: 172.{16 + q % 16}.{q % 256}.0/24\n        except:\n"
                 f"        - 172.{16 + q % 16}.{q % 256}.128/25\n")
    ports = f"    - protocol: TCP\n      port: {80 + q % 50}\n"
    if q % 2:
        ports += "    - protocol: UDP\n      port: 53\n"
    if q % 4 == 0:
        ports += f"    - protocol: TCP\n      port: {9000 + q % 100}\n      endPort: {9100 + q % 100}\n"
    if q % 10 == 0:
        ports += "    - port: http\n"
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: pol-{q:06d}\n"
            f"  namespace: ns-{ns:02d}\nspec:\n  podSelector:\n    matchLabels:\n      app: a{q % 10}\n"
            f"  ingress:\n  - from:\n{peer}    ports:\n{ports}")


def write_manifest(path: Path, policies: int = 132_523, pods: int = 1_000) -> int:
    """Write the manifest; returns its size in bytes."""
    with open(path, "w", encoding="utf-8") as f:
        docs = ([_node(i) for i in range(NODES)] + [_namespace(i) for i in range(NAMESPACES)]
                + [_pod(i) for i in range(pods)])
        f.write("---\n".join(docs))
        for q in range(policies):
            f.write("---\n")
            f.write(_policy(q))
    return path.stat().st_size


def time_cli(path: Path, node: str = FOCUS_NODE) -> dict:
    """`sdnctl compile -f FILE --node NODE` as a process, its stderr on a pseudo-terminal (as a
    user at a terminal sees it; flows to /dev/null): wall, CPU of the child, its peak RSS, exit
    status, and whether a progress line showed while it ran."""
    master, slave = pty.openpty()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sdn.cli", "compile", "-f", str(path), "--node", node],
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # the terminal must be read, or the child blocks once its buffer fills
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc.wait()
    wall = time.perf_counter() - t0
    reader.join(timeout=10)
    os.close(master)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = b"".join(chunks).decode(errors="replace")
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if "documents" in ln or "compiling" in ln]
    return {"wall_seconds": round(wall, 3),
            "cpu_seconds": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1), "returncode": proc.returncode,
            "progress": (f"yes ({len(lines)} updates, last: {_plain(lines[-1])[:80]!r})" if lines else "none shown"),
            "stderr_tail": [_plain(x)[:200] for x in text.strip().splitlines()[-3:]]}


def _plain(line: str) -> str:
    """A terminal line without its escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).strip()


def run(policies: int = 132_523, pods: int = 1_000) -> dict:
    """Generate the manifest in a temporary directory, time the CLI on it, remove it."""
    with tempfile.TemporaryDirectory(prefix="sdnbench-manifest-") as tmp:
        path = Path(tmp) / "cluster.yaml"
        t0 = time.perf_counter()
        size = write_manifest(path, policies, pods)
        out = {"policies": policies, "pods": pods, "bytes": size,
               "generate_seconds": round(time.perf_counter() - t0, 3)}
        out.update(time_cli(path))
    return out


def run_in_process(policies: int, out: Path, repo: Path, timeout: float) -> dict:
    """This module in a process of its own (so its children's peak RSS is the CLI's alone), for
    the benchmark runner; {"skipped": ...} for policies=0, {"error": ...} if it failed."""
    if not policies:
        return {"skipped": "not run (--manifest-policies 0)"}
    json_path = out / ".manifest.json"
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.manifest", "--policies", str(policies), "--json", str(json_path)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after the {timeout:g} s timeout"}
    res = json.loads(json_path.read_text()) if json_path.exists() else {}
    json_path.unlink(missing_ok=True)
    if not res:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"error": f"exited with {proc.returncode}: {' | '.join(tail)[:300]}"}
    res["command"] = f"python -m benchmarks.manifest --policies {policies}"
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.manifest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", type=int, default=132_523)
    ap.add_argument("--pods", type=int, default=1_000)
    ap.add_argument("--json", metavar="OUT", help="write the result as JSON here")
    a = ap.parse_args(argv)
    res = run(a.policies, a.pods)
    text = json.dumps(res, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)
    return 0 if res["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
