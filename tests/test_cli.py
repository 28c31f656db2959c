"""sdnctl as a user runs it: outputs, exit codes, and errors that name file, object and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from flows.flow import parse_flows
from sdn.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = str(ROOT / "examples")


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_compile_prints_loadable_flows_with_a_header():
    out = run("compile", "-f", EXAMPLES, "--node", "node-1")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("# sdnctl compile: node node-1")
    ports = json.loads(lines[1].split("ofports: ", 1)[1])
    assert ports["tunnel"] == 1 and ports["x/a"] == 10
    assert any("x/allow-web ingress[1]" in line for line in lines if line.startswith("# cookie"))
    flows = parse_flows(out.output)
    assert len(flows) == int(lines[0].split(", ")[-1].split()[0])


def test_compile_is_byte_identical_across_runs_and_input_order(tmp_path):
    docs = list(yaml.safe_load_all((ROOT / "examples/cluster.yaml").read_text()))
    docs += list(yaml.safe_load_all((ROOT / "examples/policies.yaml").read_text()))
    (tmp_path / "shuffled.yaml").write_text(yaml.safe_dump_all(list(reversed(docs))))
    a = run("compile", "-f", EXAMPLES, "--node", "node-2").output
    b = run("compile", "-f", str(tmp_path / "shuffled.yaml"), "--node", "node-2").output
    assert a == b


def test_compile_needs_a_node_when_there_are_several():
    out = run("compile", "-f", EXAMPLES)
    assert out.exit_code == 2
    assert "--node" in out.output and "node-1" in out.output


def test_compile_json_lists_every_node_with_rules_and_isolation():
    doc = json.loads(run("compile", "-f", EXAMPLES, "-o", "json").output)
    assert [n["node"] for n in doc["nodes"]] == ["node-1", "node-2"]
    n1 = doc["nodes"][0]
    assert {r["policy"] for r in n1["rules"]} == {"x/allow-web"}
    assert {i["address"] for i in n1["isolation"]} == {"10.244.1.2", "10.244.1.3"}


def test_invalid_manifest_exits_2_naming_file_object_and_field_and_prints_no_flows(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-a", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}}))
    proc = subprocess.run([sys.executable, "-m", "sdn.cli", "compile", "-f", EXAMPLES, "-f", str(bad),
                           "--node", "node-1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert str(bad) in proc.stderr and "NetworkPolicy x/allow-a" in proc.stderr
    assert "spec.ingress[0].ports[0].endPort" in proc.stderr


def test_unknown_kinds_are_skipped_with_a_warning(tmp_path):
    extra = tmp_path / "svc.yaml"
    extra.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}))
    proc = subprocess.run([sys.executable, "-m", "sdn.cli", "compile", "-f", EXAMPLES, "-f", str(extra),
                           "--node", "node-1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert "warning" in proc.stderr and "Service" in proc.stderr
    assert parse_flows(proc.stdout)


def test_stdin_input():
    text = (ROOT / "examples/cluster.yaml").read_text() + "\n---\n" + (ROOT / "examples/policies.yaml").read_text()
    out = run("compile", "-f", "-", "--node", "node-1", input=text)
    assert out.exit_code == 0
    assert out.output.splitlines()[2:] == run("compile", "-f", EXAMPLES, "--node", "node-1").output.splitlines()[2:]


def test_flows_show_groups_by_table_and_rule():
    doc = json.loads(run("flows", "show", "-f", EXAMPLES, "--node", "node-1", "-o", "json").output)
    tables = {t["name"]: t for t in doc["tables"]}
    assert next(iter(tables)) == "classifier"
    rules = [g for g in tables["ingress_rule"]["groups"] if g["kind"] == "rule"]
    assert {g["policy"] for g in rules} == {"x/allow-web"}
    assert [g["rule"] for g in rules] == ["x/allow-web ingress[0].1", "x/allow-web ingress[1]",
                                          "x/allow-web ingress[2]"]
    # rules 0 and 2 are conjunctions sharing the applied-to flow of x/a (shown under both)
    shared = [f for g in rules for f in g["flows"] if f.get("pods") == ["x/a"] and "conjunction" in f["flow"]]
    assert len(shared) == 2 and shared[0]["flow"] == shared[1]["flow"]
    assert shared[0]["flow"].count("conjunction(") == 2
    # rule 1 is small: plain flows, each naming both pods
    plain = list(rules[1]["flows"])
    assert len(plain) == 6 and all(f["role"] == "allow" and len(f["pods"]) == 2 for f in plain)
    defaults = [g["title"] for g in tables["ingress_default"]["groups"] if g["kind"] == "default"]
    assert defaults == ["x/a ingress-isolated by x/allow-web, x/default-deny",
                        "x/c ingress-isolated by x/allow-web, x/default-deny"]


def test_flows_show_filters_by_policy_and_table():
    doc = json.loads(run("flows", "show", "-f", EXAMPLES, "--node", "node-2", "--policy", "egress-to-x",
                         "-n", "y", "-o", "json").output)
    assert [t["name"] for t in doc["tables"]] == ["egress_rule", "egress_default"]
    doc = json.loads(run("flows", "show", "-f", EXAMPLES, "--node", "node-1", "--table", "output", "-o", "json").output)
    assert [t["name"] for t in doc["tables"]] == ["output"]
    out = run("flows", "show", "-f", EXAMPLES, "--node", "node-1", "--policy", "y/none")
    assert out.exit_code == 2 and "no flows of y/none" in out.output
    assert run("flows", "show", "-f", EXAMPLES, "--node", "node-1", "--table", "nope").exit_code == 2


@pytest.mark.parametrize("enforce", ["host", "fabric"])
def test_trace_names_the_deciding_rule_or_default_deny(enforce):
    allowed = json.loads(run("trace", "-f", EXAMPLES, "--enforce", enforce, "--from", "y/b", "--to", "x/a",
                             "--port", "serve-80-tcp", "-o", "json").output)
    assert allowed["verdict"] == "allowed" and allowed["agree"] and allowed["reply"] == "delivered"
    assert allowed["port"] == 80 and allowed["protocol"] == "TCP"
    assert any("x/allow-web ingress[0]" in d for d in allowed["decided_by"])
    denied = json.loads(run("trace", "-f", EXAMPLES, "--enforce", enforce, "--from", "y/a", "--to", "x/a",
                            "--port", "80", "-o", "json").output)
    assert denied["verdict"] == "denied" and denied["agree"]
    assert any("default deny of x/a" in d for d in denied["decided_by"])
    egress = json.loads(run("trace", "-f", EXAMPLES, "--enforce", enforce, "--from", "c", "-n", "y", "--to", "z/a",
                            "--port", "80/TCP", "-o", "json").output)
    assert egress["verdict"] == "denied" and any("egress default deny of y/c" in d for d in egress["decided_by"])


def test_trace_rejects_bad_ports_and_unknown_pods():
    assert run("trace", "-f", EXAMPLES, "--from", "x/a", "--to", "x/b", "--port", "80/ICMP").exit_code == 2
    assert run("trace", "-f", EXAMPLES, "--from", "x/a", "--to", "x/b", "--port", "nope").exit_code == 2
    out = run("trace", "-f", EXAMPLES, "--from", "x/zz", "--to", "x/b", "--port", "80")
    assert out.exit_code == 2 and "x/zz" in out.output


def test_policy_explain():
    out = run("policy", "explain", "-f", EXAMPLES, "x/a")
    assert out.exit_code == 0
    assert "ingress: isolated by 2 policies" in out.output
    assert "rule 0: from namespaceSelector <all> and podSelector pod=b (x/b, y/b, z/b) on serve-80-tcp/TCP" in out.output
    doc = yaml.safe_load(run("policy", "explain", "-f", EXAMPLES, "c", "-n", "y", "-o", "yaml").output)
    assert doc["egress"]["isolated"] and not doc["ingress"]["isolated"]


def test_no_input_is_a_usage_error():
    out = run("compile")
    assert out.exit_code == 2 and "-f" in out.output


def test_controller_fabric_option_is_a_fabric_bridge_with_enforce_fabric(monkeypatch):
    import sdn.switch.controller as controller
    seen = {}
    monkeypatch.setattr(controller, "run", lambda opts: seen.setdefault("opts", opts) and 0)
    run("controller", "-f", EXAMPLES, "--bridge", "node-1=unix:/run/n1/db.sock",
        "--fabric", "br-fab=unix:/run/fab/db.sock")
    opts = seen["opts"]
    assert opts.enforce == "fabric"
    assert [(n.node, n.bridge, n.ovsdb) for n in opts.nodes] == [
        ("node-1", None, "unix:/run/n1/db.sock"), ("fabric", "br-fab", "unix:/run/fab/db.sock")]
    seen.clear()
    run("controller", "-f", EXAMPLES, "--fabric", "unix:/run/fab/db.sock")
    assert [(n.node, n.bridge) for n in seen["opts"].nodes] == [("fabric", None)]


def test_the_cli_names_the_fabric_switch_as_the_layout_does():
    from sdn import cli
    from sdn.layout import FABRIC
    assert cli.FABRIC == FABRIC


def sdnctl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """The real command, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "sdn.cli", *args], input=input, capture_output=True, text=True,
                          cwd=ROOT)


@pytest.mark.parametrize("text", ["", "---\n---\n", "# nothing but a comment\n", "kind: List\napiVersion: v1\nitems: []\n"])
def test_an_empty_input_is_an_error_not_an_invented_node(tmp_path, text):
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    for cmd in (["compile"], ["flows", "show"], ["policy", "explain", "x/a"]):
        proc = sdnctl(*cmd, "-f", str(f))
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert proc.stderr == f"error: no objects in {f}: expected Namespaces, Pods, Nodes or NetworkPolicies " \
                              "(an empty input is not an empty cluster)\n"


def test_policies_without_nodes_or_pods_have_no_bridge_to_compile_for():
    proc = sdnctl("compile", "-f", str(ROOT / "examples/policies.yaml"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: nothing to compile: the input has no Node and no Pod")


def test_a_duplicate_key_is_an_error_naming_file_line_and_key(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n"
                 "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: a\n"
                 "spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n      port: 81\n")
    proc = sdnctl("compile", "-f", str(f))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {f}: line 16: duplicate key 'port' in a mapping (first on line 15); "
                           "kubectl refuses it too: keep one\n")
    j = tmp_path / "dup.json"
    j.write_text('{"apiVersion": "v1", "kind": "Namespace",\n "metadata": {"name": "a", "name": "b"}}\n')
    proc = sdnctl("compile", "-f", str(j))
    assert proc.returncode == 2 and "line 2: duplicate key 'name'" in proc.stderr and str(j) in proc.stderr
    proc = sdnctl("compile", "-f", "-", input=f.read_text())
    assert proc.returncode == 2 and proc.stderr.startswith("error: <stdin>: line 16: duplicate key 'port'")


def test_a_yaml_merge_key_may_be_overridden(tmp_path):
    f = tmp_path / "merge.yaml"
    f.write_text("apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: &l {a: '1', b: '2'}\n"
                 "  annotations:\n    <<: *l\n    a: '3'\n")
    proc = sdnctl("compile", "-f", str(f))
    assert proc.returncode == 0, proc.stderr


def test_errors_have_one_prefix_and_usage_errors_exit_2():
    for args in (["compile", "--nope"], ["nope"], ["trace", "-f", EXAMPLES, "--from", "x/a"],
                 ["compile", "-f", "/nonexistent.yaml"]):
        proc = sdnctl(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        last = proc.stderr.rstrip().splitlines()[-1]
        assert last.startswith("error: ") and "Error" not in proc.stderr, proc.stderr


def test_live_commands_without_a_controller_exit_3():
    for args in (["status", "--control", "/nonexistent/ctl.sock"],
                 ["flows", "diff", "--node", "node-1", "--control", "/nonexistent/ctl.sock"],
                 ["policy", "status", "--agent", "http://127.0.0.1:9"]):
        proc = sdnctl(*args)
        assert proc.returncode == 3 and proc.stderr.startswith("error: "), (args, proc.stderr)


def test_policy_matrix_predicts_every_pair_from_the_manifests():
    from sdn.policy.evaluate import evaluate
    from sdn.policy.manifests import load_paths
    proc = sdnctl("policy", "matrix", "-f", EXAMPLES, "--port", "80", "--port", "81", "--protocol", "TCP",
                  "--protocol", "UDP", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    cluster, _ = load_paths([EXAMPLES])
    assert doc["pods"] == sorted(cluster.pods) and (doc["rows"], doc["columns"]) == ("from", "to")
    assert [(m["protocol"], m["port"]) for m in doc["matrices"]] == [("TCP", 80), ("TCP", 81), ("UDP", 80), ("UDP", 81)]
    for m in doc["matrices"]:
        for s in doc["pods"]:
            for d in doc["pods"]:
                want = evaluate(cluster, cluster.pods[s], cluster.pods[d], m["port"], m["protocol"]).allowed
                assert m["allowed"][s][d] is want, (m["protocol"], m["port"], s, d)
    # y/c may not reach y/a on UDP 81 (y/egress-to-x: only namespace x, and 10.244.0.0/16 except
    # node-2's 10.244.2.0/24, where y/a lives): row y/c, column y/a
    text = sdnctl("policy", "matrix", "-f", EXAMPLES, "--port", "81", "--protocol", "udp").stdout.splitlines()
    assert "rows: source (from), columns: destination (to)" in text[0]
    columns = text[1].split()
    row = next(line.split() for line in text if line.startswith("y/c "))
    assert row[1 + columns.index("y/a")] == "✗" and row[1 + columns.index("y/c")] == "✓"


def test_policy_matrix_namespace_filter_and_bad_input(tmp_path):
    doc = json.loads(sdnctl("policy", "matrix", "-f", EXAMPLES, "-n", "z", "-o", "json").stdout)
    assert doc["pods"] == ["z/a", "z/b", "z/c"]
    proc = sdnctl("policy", "matrix", "-f", EXAMPLES, "-n", "nope")
    assert proc.returncode == 2 and "no pods with an address" in proc.stderr
    proc = sdnctl("policy", "matrix", "-f", EXAMPLES, "--protocol", "ICMP")
    assert proc.returncode == 2 and "error: " in proc.stderr
