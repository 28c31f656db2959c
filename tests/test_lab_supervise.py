"""Supervision in the lab: a SIGKILLed agent is started again (as a DaemonSet's restart
policy would), enforces new isolation on its node again, and `lab status` counts the restart;
a change that some node cannot realize says what was saved and which nodes have it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sdn import proc
from sdn.lab import probe as PR
from sdn.lab import supervise
from sdn.lab.lab import Lab
from sdn.lab.state import State
from tests.e2e_model import node_doc
from tests.lab_harness import lab_state_dir
from tests.test_lab_lifecycle import clean, leftovers, small_cluster

pytestmark = pytest.mark.ovs

SDNCTL = [sys.executable, "-m", "sdn.cli"]
DENY_A = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"namespace": "x", "name": "deny-a"},
          "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]}}
# Node fields `lab status -o json` has always had (other tools read them): kept.
NODE_FIELDS = {"name", "netns", "bridge", "address", "pod_cidr", "ovs", "netns_exists", "agent"}


@pytest.fixture
def lab(request):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root", pytrace=False)
    lab = Lab(State(lab_state_dir("sv" + request.node.name[5:8])))
    lab.down()
    try:
        yield lab
    finally:
        lab.down()
        assert clean(lab), leftovers(lab)


def sdnctl_lab(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(SDNCTL + ["lab", "--state-dir", str(lab.state.dir), *args],
                          capture_output=True, text=True, timeout=120)


def b_to_a(lab: Lab) -> str:
    doc = lab.matrix([(80, "TCP")], timeout=0.5, pods=["x/a", "x/b"])
    return doc["matrices"][0]["measured"]["x/b"]["x/a"]


def test_backoff_doubles_and_is_bounded():
    delays = [supervise.backoff(n) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == supervise.BACKOFF_MAX == delays[-1]


def test_a_killed_agent_is_restarted_and_enforces_isolation_again(lab):
    lab.up_docs(small_cluster())  # x/a on node-1, x/b on node-2
    assert supervise.supervisor_pid(lab.state), "lab up starts the lab's supervisor"
    assert b_to_a(lab) == PR.ALLOWED
    ctl = lab.state.load()["controllers"]["node-1"]
    os.kill(ctl["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    # a new isolation of a pod on node-1, applied while its agent is dead: `lab apply` waits
    # for the restarted agent, which realizes it
    report = lab.apply_docs([DENY_A], timeout=60)
    took = time.monotonic() - t0
    print(f"SIGKILL -> restarted agent realized a new isolation: {took:.2f}s")
    assert report == ["NetworkPolicy x/deny-a created"]
    assert took < 30, took  # loose: the first restart comes after 0.5 s
    assert b_to_a(lab) == PR.DENIED
    out = sdnctl_lab(lab, "status", "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    st = json.loads(out.stdout)
    nodes = {n["name"]: n for n in st["nodes"]}
    assert nodes["node-1"]["restarts"] == 1 and nodes["node-2"]["restarts"] == 0
    for n in nodes.values():
        assert set(n) >= NODE_FIELDS, set(n)
    assert nodes["node-1"]["agent"]["running"] and nodes["node-1"]["agent"]["pid"] != ctl["pid"]
    assert nodes["node-1"]["agent"]["in_sync"]
    assert st["supervisor"]["running"]
    table = sdnctl_lab(lab, "status")
    assert table.returncode == 0 and "restarts 1" in table.stdout, table.stdout
    # the supervisor is detached from whoever ran `lab up` (it outlives the CLI) ...
    spid = supervise.supervisor_pid(lab.state)
    assert spid and os.getsid(spid) == spid
    # ... and an agent the lab stops on purpose (its node deleted) stays stopped
    lab.delete_docs([node_doc("node-2")])
    time.sleep(2 * supervise.BACKOFF_FIRST + 1)
    assert not [p for p in leftovers(lab)["processes"] if b"node-2/br-sdn" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert "node-2" not in (supervise.view(lab.state).get("agents") or {})


def test_apply_that_a_node_cannot_realize_says_what_was_saved_and_where(lab):
    lab.up_docs(small_cluster())
    supervise.stop(lab.state)  # supervision off: node-2's agent stays dead
    record = lab.state.load()
    pid = record["controllers"]["node-2"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert proc.wait_gone([pid], 5) == []
    manifest = lab.state.dir / "deny-a.yaml"
    manifest.write_text(yaml.safe_dump(DENY_A))
    out = sdnctl_lab(lab, "apply", "-f", str(manifest), "--timeout", "20")
    assert out.returncode == 1, out.stdout + out.stderr
    err = " ".join(out.stderr.split())
    assert "NetworkPolicy x/deny-a created" in err, err
    assert str(lab.state.manifests_path) in err  # what was saved, and where
    assert "realized on node-1, but NOT on node-2" in err, err
    assert "agent node-2" in err and "not running" in err, err
    assert "Traceback" not in out.stderr
    # saved, and realized where it could be: x/a (node-1) is isolated
    assert any(d.get("kind") == "NetworkPolicy" and d["metadata"]["name"] == "deny-a"
               for d in lab.state.read_manifests())
    assert b_to_a(lab) == PR.DENIED
    st = sdnctl_lab(lab, "status", "-o", "json")
    assert st.returncode == 1
    problems = json.loads(st.stdout)["problems"]
    assert "agent node-2 is not running" in problems and any("supervisor is not running" in p for p in problems)


def test_matrix_check_on_an_invalid_or_incomplete_cluster_file_is_a_clear_error(lab):
    lab.up_docs(small_cluster())
    path = lab.state.manifests_path
    good = path.read_text()
    docs = [d for d in yaml.safe_load_all(good) if d]
    without_b = [d for d in docs if not (d.get("kind") == "Pod" and d["metadata"]["name"] == "b")]
    bad_policy = docs + [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                          "metadata": {"namespace": "x", "name": "broken"},
                          "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}}]
    cases = {"garbage": ("kind: [Pod\n", "not valid YAML"),
             "not an object": ("- just\n- a list\n", "is not an object"),
             "incomplete": (yaml.safe_dump_all(without_b), "incomplete: no Pod x/b"),
             "invalid": (yaml.safe_dump_all(bad_policy), "NetworkPolicy x/broken")}
    try:
        for name, (text, want) in cases.items():
            path.write_text(text)
            out = sdnctl_lab(lab, "matrix", "--check")
            assert out.returncode == 1, (name, out.stdout, out.stderr)
            assert "Traceback" not in out.stderr and out.stderr.startswith("error: "), (name, out.stderr)
            assert want in " ".join(out.stderr.split()), (name, out.stderr)
    finally:
        path.write_text(good)
    # the agents read cluster.yaml too (the incomplete one took x/b away from node-2's ports):
    # once they reloaded the good file, the lab agrees with the evaluator again
    lab.apply_docs([])
    assert sdnctl_lab(lab, "matrix", "--check").returncode == 0
