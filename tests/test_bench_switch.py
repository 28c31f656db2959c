"""The benchmarks' switch stage (benchmarks/switch.py): a scenario's focus node program in a
private ovs-vswitchd, its events' flow diffs sent as bundles; the switch must end up holding
exactly the engine's program. Plus the pure part: a bundle from an engine diff."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks import scenarios as S
from benchmarks import switch
from flows.compiler import compile_bridge
from flows.flow import Flow, FlowDiff, Match, Output
from sdn.layout import build_layout
from sdn.policy.rules import cluster_rules
from sdn.switch.reconcile import plan_diff

RULE_A, RULE_B = 0x5D02000000000001, 0x5D02000000000002


def flow(n: int, cookie: int = RULE_A, port: int = 1) -> Flow:
    return Flow(40, 100, (Match("dl_type", 0x800), Match("nw_src", n)), (Output(port),), cookie)


def test_plan_diff_follows_the_change_and_keeps_cookies_right():
    installed = {f.key: f for f in (flow(1), flow(2), flow(3))}
    same_cookie, new_cookie, gone, unknown, fresh = flow(1, port=2), flow(2, RULE_B), flow(3), flow(4), flow(5)
    p = plan_diff(FlowDiff((fresh,), (same_cookie, new_cookie, unknown), (gone,)), installed)
    assert p.modify == (same_cookie,)  # modify-strict keeps the installed cookie: same cookie only
    assert p.replace == (new_cookie,)  # an add replaces the flow with its new cookie
    assert p.add == (fresh, unknown)  # a "modify" of a flow the switch lacks is an add
    assert p.delete == (gone,) and not p.delete_cookies


def test_plan_diff_of_nothing_is_empty():
    assert plan_diff(FlowDiff((), (), ()), {}).empty


def test_not_root_says_so(monkeypatch):
    monkeypatch.setattr(switch.os, "geteuid", lambda: 1000)
    assert switch.unavailable().startswith(switch.NOT_AVAILABLE)
    out = switch.realize(S.s1(0.004).cluster, "node-0000", [])
    assert out == {"skipped": switch.unavailable()}


def _tiny():
    sc = S.s1(0.004, events=3)  # 100 namespaces, 4 nodes; the events' pods on the focus node
    pods, now = [], dict(sc.cluster.pods)
    for ev in sc.events:
        now[ev.pod] = dataclasses.replace(now[ev.pod], labels=ev.labels)
        pods.append(now[ev.pod])
    after = S.copy_cluster(sc.cluster)
    after.pods.update(now)
    return sc, pods, compile_bridge(build_layout(after).bridge(sc.focus_node), *cluster_rules(after))


@pytest.mark.ovs
@pytest.mark.xdist_group("bench-switch")
def test_switch_stage_installs_the_program_and_each_event_as_one_bundle():
    from tests.conftest import require_ovs

    require_ovs()
    sc, pods, reference = _tiny()
    out = switch.realize(sc.cluster, sc.focus_node, pods, rounds=1, reference=reference)
    cold = out["cold_install"]
    assert cold["flows"] > 100 and cold["ours_median_s"] > 0 and cold["ovs_ofctl_median_s"] > 0
    assert cold["ratio"] == cold["ours_median_s"] / cold["ovs_ofctl_median_s"]
    back = out["after_cold_install"]
    assert back["equal"] and back["installed"] == back["program"] == cold["flows"] and back["diff"] == 0
    ev = out["events"]
    assert ev["n"] == 3 and ev["bundles"] >= 1 and ev["flow_mods"]["total"] >= ev["bundles"]
    for key in ("diff_ms", "sent_ms", "committed_ms", "sent_cpu_ms", "committed_cpu_ms"):
        assert 0 < ev[key]["p50"] <= ev[key]["p99"], key
    for s in out["samples"]:
        if s["bundle"]:
            assert s["diff_s"] <= s["sent_s"] <= s["committed_s"]
    final = out["read_back"]
    assert final["equal"] and final["diff"] == 0
    assert final["installed"] == final["program"] == out["flows_after_events"]
    assert out["vs_full_compile"] in ("identical", "same up to priority levels")


@pytest.mark.ovs
@pytest.mark.xdist_group("bench-switch")
def test_runner_reports_the_switch(tmp_path):
    from benchmarks.__main__ import main
    from tests.conftest import require_ovs

    require_ovs()
    out = tmp_path / "res"
    rc = main(["--quick", "--only", "S1", "--scales", "S1=0.004", "--events", "2", "--out", str(out), "--quiet",
               "--no-plots", "--timeout", "60", "--install-flows", "2000", "--profile", "none"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    sw = data["results"]["S1"]["stages"]["switch"]
    assert sw["read_back"]["equal"] and sw["events"]["n"] == 2
    inst = data["meta"]["controller_install"]
    assert inst["flows"] > 1000 and inst["ratio"] > 0, inst
    md = (out / "results.md").read_text()
    assert "## On a switch: cold install and event to bundle committed" in md
    assert "event to bundle sent (real switch), p99" in md
    assert "Cold install through our controller within 2x" in md
    assert "equal (" in md
