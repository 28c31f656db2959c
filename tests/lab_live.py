"""Checks of the live commands against a lab (used by tests/test_lab_host.py and
tests/test_lab_fabric.py): `sdnctl` finds the lab's agents without --control, and a live trace
of every pod pair agrees with the semantic evaluator and with the offline trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from sdn.cli_locate import lab_trace, running_lab
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import load_paths
from tests.e2e_cases import base_cluster

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_POLICIES = list(yaml.safe_load_all((REPO / "examples/policies.yaml").read_text()))


def sdnctl(state_dir: str, *args: str) -> subprocess.CompletedProcess:
    """The real command as a user runs it after `make demo KEEP=1`: no --control, the lab's
    state directory from the environment; no node agent socket on this machine."""
    env = {k: v for k, v in os.environ.items() if k != "SDN_CONTROL"}
    env["SDN_LAB_DIR"] = state_dir
    return subprocess.run([sys.executable, "-m", "sdn.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def with_example_policies(replayer) -> None:
    replayer.goto(base_cluster() + EXAMPLE_POLICIES)


def check_live_trace_of_every_pair(replayer, monkeypatch) -> None:
    state_dir = str(replayer.lab.state.dir)
    monkeypatch.setenv("SDN_LAB_DIR", state_dir)
    lab = running_lab()
    assert lab is not None and set(lab.controls) >= {"node-1", "node-2"}
    cluster, _ = load_paths([lab.manifests])
    keys = sorted(k for k, p in cluster.pods.items() if p.ips)
    wrong = []
    for port, proto in ((80, "TCP"), (81, "UDP")):
        for s in keys:
            for d in keys:
                if s == d:
                    continue
                doc = lab_trace(lab, s, d, f"{port}/{proto}")
                want = evaluate(cluster, cluster.pods[s], cluster.pods[d], port, proto).allowed
                if (doc["verdict"] == "allowed") != want or not doc["agree"]:
                    wrong.append(f"{s} -> {d} {port}/{proto}: live {doc['verdict']}, evaluator {want}")
    assert not wrong, "\n".join(wrong)
    # the command itself, across nodes, names the deciding rule
    out = sdnctl(state_dir, "trace", "--live", "--from", "y/b", "--to", "x/a", "--port", "80", "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "allowed" and doc["agree"]
    assert any(line.startswith("allowed by x/allow-web ingress[0]") for line in doc["decided_by"])


def check_live_commands_find_the_lab(replayer) -> None:
    state_dir = str(replayer.lab.state.dir)
    out = sdnctl(state_dir, "flows", "show", "--node", "node-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("node node-1, bridge br-sdn")
    out = sdnctl(state_dir, "flows", "show", "--node", "node-1", "--pod", "x/a", "-o", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["live"], out.stderr
    out = sdnctl(state_dir, "flows", "diff", "--node", "node-2")
    assert (out.returncode, out.stdout) == (0, "# node-2 (br-sdn): in sync, nothing to add, modify or delete\n")
    out = sdnctl(state_dir, "flows", "diff", "--node", "node-7")
    assert out.returncode == 2 and "node-7" in out.stderr and "node-1" in out.stderr
    out = sdnctl(state_dir, "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    agents = json.loads(out.stdout)["agents"]
    assert {"node-1", "node-2"} <= set(agents) and all(a["in_sync"] for a in agents.values())
    out = sdnctl(state_dir, "policy", "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)["nodes"]
    for n in nodes:
        assert {(p["namespace"], p["name"]) for p in n["policies"]} == {
            ("x", "default-deny"), ("x", "allow-web"), ("y", "egress-to-x")}
        assert all(p["realized"] for p in n["policies"]), n
    text = sdnctl(state_dir, "policy", "status", "-n", "y").stdout
    assert "node node-1 (lab " in text and "egress-to-x" in text and "allow-web" not in text
    # no lab in the state directory: exit 3, saying where it looked
    out = sdnctl(state_dir + "-none", "status")
    assert out.returncode == 3 and "no lab is up" in out.stderr
