"""`sdnctl controller` against a real ovs-vswitchd: it installs exactly the compiled tables,
sends only the difference of each change as one bundle, survives its own SIGKILL and the
switch's restart without losing or resending a flow, cleans up flows it does not know, reports
a flow the switch rejects (and changes nothing), and shows all of it through `sdnctl`.

Each test starts from a known manifest set it writes itself, so tests can run in any order
and on any xdist worker (each worker builds its own OVS and controller for this module)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.flow import diff, parse_flow, parse_flows
from sdn.compile import compile_cluster
from sdn.policy.manifests import load_documents
from sdn.switch.control import program_from_json
from tests.conftest import OvsFactory
from tests.e2e_model import (
    base_cluster,
    deny_ingress,
    from_,
    match,
    namespaces,
    netpol,
    node_of,
    pod_ip,
    pod_keys,
    pods,
    port,
)
from tests.switch_support import (
    Controller,
    add_tunnel,
    kill_vswitchd,
    plug_internal,
    start_vswitchd,
    write_manifests,
)

pytestmark = pytest.mark.ovs

NODE = "node-1"
BRIDGE = "br-sdn"
LOCAL = [k for k in pod_keys() if node_of(k) == NODE]  # x/a x/c y/b z/a z/c
LATE = "z/c"  # plugged in by a test, not at start


def port_name(key: str) -> str:
    return "p" + key.replace("/", "")


# y/web is big enough to be a conjunction on node-1 (3 peers x 1 pod x 3 ports > 3 + 1 + 3 + 1);
# in v2 a second rule with disjoint ports shares its level and its address flows.
WEB_PORTS = [port(80), port(443), port(8080)]
POLICIES = {
    "v0": [deny_ingress("x"), netpol("x", "allow-from-y", match(), ingress=[from_(namespaces(match(ns="y")))])],
    "v1": [deny_ingress("x"), netpol("x", "allow-from-y", match(), ingress=[from_(namespaces(match(ns="y")))]),
           netpol("y", "web", match(pod="b"), ingress=[from_(pods(match()), ports=WEB_PORTS)])],
    "v2": [deny_ingress("x"), netpol("x", "allow-from-y", match(), ingress=[from_(namespaces(match(ns="y")))]),
           netpol("y", "web", match(pod="b"), ingress=[from_(pods(match()), ports=WEB_PORTS),
                                                       from_(pods(match()), ports=[port(7000), port(9000), port(9443)])])],
    "v3": [netpol("y", "web", match(pod="b"), ingress=[from_(pods(match(pod="c")), ports=[port(8080)])])],
    # y/api overlaps y/web (peers and port 80): placed while y/web holds the top priority, it
    # keeps the level below after y/web is gone, where a fresh compile would put it on top.
    "h1": [netpol("y", "web", match(pod="b"), ingress=[from_(pods(match()), ports=WEB_PORTS)])],
    "h2": [netpol("y", "web", match(pod="b"), ingress=[from_(pods(match()), ports=WEB_PORTS)]),
           netpol("y", "api", match(pod="b"), ingress=[from_(namespaces(match(ns="y")), ports=[port(80)])])],
    "h3": [netpol("y", "api", match(pod="b"), ingress=[from_(namespaces(match(ns="y")), ports=[port(80)])])],
}


def docs(version: str) -> list[dict]:
    return base_cluster() + POLICIES[version]


class Lab:
    def __init__(self, ovs, controller: Controller, manifests: Path):
        self.ovs, self.ctl, self.manifests = ovs, controller, manifests

    def flows(self):
        return set(parse_flows(self.ovs.dump_flows(BRIDGE)))

    def ofports(self) -> dict[str, int]:
        out = {}
        for key in LOCAL:
            raw = self.ovs.vsctl("--if-exists", "get", "interface", port_name(key), "ofport").strip()
            if raw.isdigit() and int(raw) > 0:
                out[key] = int(raw)
        return out

    def expected(self, version: str, plugged=None):
        """`sdnctl compile` of the same manifests with the live ofports: what must be installed."""
        cluster, _ = load_documents(docs(version))
        ports = self.ofports() if plugged is None else plugged
        for key in [p for p in cluster.pods if node_of(p) == NODE and p not in ports]:
            del cluster.pods[key]  # not plugged in: not on this bridge (and no longer in routes)
        # The controller compiles with its last program as the hint (stable priorities and
        # conj ids for unchanged rules); so does the expectation. Rule contents must match.
        previous = program_from_json(self.ctl.ask("program", node=NODE)["program"])
        return set(compile_cluster(cluster, [NODE], {NODE: ports}, previous={NODE: previous}).programs[NODE].flows)

    def use(self, version: str) -> dict:
        write_manifests(self.manifests, docs(version))
        return self.ctl.reload_and_wait()

    def sdnctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sdn.cli", *args, "--control", self.ctl.control],
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    factory = OvsFactory(tmp_path_factory)
    ctl = None
    try:
        ovs = factory()
        ovs.add_bridge(BRIDGE, dpid=0x5D0001)  # no controller yet: the controller configures it
        add_tunnel(ovs, BRIDGE, "tun0", 1)
        for key in LOCAL:
            if key != LATE:
                plug_internal(ovs, BRIDGE, port_name(key), key, pod_ip(key))
        manifests = tmp_path_factory.mktemp("manifests")
        write_manifests(manifests, docs("v0"))
        # node-9's OVSDB does not exist: reported, retried, and it must disturb nothing.
        ctl = Controller(manifests, {NODE: ovs.db_remote, "node-9": "unix:/nonexistent/sdn/db.sock"})
        ctl.start()
        ctl.wait_in_sync()
        yield Lab(ovs, ctl, manifests)
    finally:
        if ctl is not None:
            ctl.close()
        factory.close()


def test_installs_exactly_the_compiled_tables(lab):
    lab.use("v1")
    assert lab.flows() == lab.expected("v1")
    program = lab.ctl.ask("program", node=NODE)["program"]
    assert {parse_flow(f) for f in program["flows"]} == lab.flows()
    assert lab.ovs.vsctl("get", "bridge", BRIDGE, "fail_mode").strip() == "secure"
    assert "sdn-openflow.sock" in lab.ovs.vsctl("get-controller", BRIDGE)


def test_unreachable_ovsdb_is_reported_and_disturbs_nothing(lab):
    st = lab.ctl.status()
    node9 = next(b for b in st["bridges"] if b["node"] == "node-9")
    assert not node9["connected"] and not node9["ovsdb"]["connected"]
    assert "cannot connect to OVSDB" in node9["ovsdb"]["error"] and "/nonexistent/sdn/db.sock" in node9["ovsdb"]["error"]
    assert st["in_sync"] and not st["all_bridges_programmed"]
    out = lab.sdnctl("status")
    assert out.returncode == 0 and "node-9" in out.stdout and "cannot connect to OVSDB" in out.stdout


def test_incremental_changes_send_minimal_bundles(lab):
    lab.use("v0")
    for version in ("v1", "v2", "v3", "v0"):
        before = lab.flows()
        bundles = lab.ctl.bridge(NODE)["counters"]["bundles"]
        lab.use(version)
        after = lab.flows()
        assert after == lab.expected(version)
        d = diff(before, after)
        b = lab.ctl.bridge(NODE)
        assert b["counters"]["bundles"] == bundles + 1, "one change, one bundle"
        last = b["last_bundle"]
        assert (last["add"], last["modify"], last["delete"]) == (len(d.add), len(d.modify), len(d.delete)), version
        assert last["committed"] and last["messages"] <= len(d)
    # a shared clause flow gained a conjunction: a modify, not a delete + add
    lab.use("v1")
    lab.use("v2")
    assert lab.ctl.bridge(NODE)["last_bundle"]["modify"] >= 1


def test_reloading_unchanged_manifests_sends_nothing(lab):
    lab.use("v1")
    mods = lab.ctl.bridge(NODE)["counters"]["flow_mods"]
    for _ in range(3):
        lab.ctl.reload_and_wait()
    assert lab.ctl.bridge(NODE)["counters"]["flow_mods"] == mods


def _wait_status(lab, what, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while not what(st := lab.ctl.status()):
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    return st


def _denied(lab) -> bool:
    """z/a -> x/a:80 on the live bridge (ofproto/trace): denied by x's default deny."""
    return lab.ctl.ask("trace", **{"from": "z/a", "to": "x/a", "port": "80"})["verdict"] == "denied"


def test_a_manifest_cut_short_mid_write_never_reaches_the_bridge(lab):
    lab.use("v1")
    before, gen = lab.flows(), lab.ctl.status()["generation"]
    assert _denied(lab)
    text = yaml.safe_dump_all(docs("v2"))
    cut = text.rindex("---", 0, text.index("kind: NetworkPolicy"))  # every pod, no policy yet: parses
    with open(lab.manifests / "cluster.yaml", "w") as fh:  # in place, as `cat > f` or a slow copy
        fh.write(text[:cut])
        fh.flush()
        time.sleep(1.5)  # 7 polls, 3 settle intervals: the writer is still at it
        st = lab.ctl.status()
        assert st["generation"] == gen and "open for writing" in st["inputs"][0]["waiting"]
        assert lab.flows() == before and _denied(lab), "half a file reached the bridge"
        fh.write(text[cut:])
    _wait_status(lab, lambda st: st["generation"] > gen)
    lab.ctl.wait_in_sync()
    assert lab.flows() == lab.expected("v2") and _denied(lab)


def test_an_emptied_manifest_is_refused_and_the_tables_stay(lab):
    lab.use("v1")
    before, gen = lab.flows(), lab.ctl.status()["generation"]
    (lab.manifests / "cluster.yaml").write_text("")  # emptied in place (a truncating copy, `: > f`)
    st = _wait_status(lab, lambda st: st["manifest_error"])
    assert "no documents" in st["manifest_error"] and "kind: List" in st["manifest_error"]
    assert st["generation"] == gen and lab.flows() == before and _denied(lab)
    out = lab.sdnctl("status")
    assert "no documents" in out.stdout
    lab.use("v1")
    assert not lab.ctl.status()["manifest_error"]


def _durations(lab) -> dict:
    out = {}
    for line in lab.ovs.dump_flows(BRIDGE, stats=True).splitlines():
        f = parse_flow(line)
        out[f] = float(line.split("duration=")[1].split("s")[0])
    return out


def test_sigkill_and_restart_lose_nothing_and_send_nothing(lab):
    lab.use("v2")
    before = _durations(lab)
    assert lab.ctl.signal(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(1.0)
    assert set(_durations(lab)) == set(before), "flows must stay while no controller runs (fail_mode=secure)"
    lab.ctl.start()
    st = lab.ctl.wait_in_sync()
    b = next(x for x in st["bridges"] if x["node"] == NODE)
    assert b["counters"]["resyncs"] == 1
    assert b["counters"]["flow_mods"] == 0 and b["counters"]["bundles"] == 0, "nothing changed: nothing sent"
    after = _durations(lab)
    assert set(after) == set(before)
    assert all(after[f] >= before[f] for f in before), "no flow was replaced (durations continue)"
    assert lab.ctl.ask("diff", node=NODE)["in_sync"]


def test_a_restarted_controller_keeps_the_placements_a_history_of_changes_made(lab):
    for version in ("h1", "h2", "h3"):
        lab.use(version)
    fresh = compile_cluster(load_documents(docs("h3"))[0], [NODE], {NODE: lab.ofports()}).programs[NODE]
    before = _durations(lab)
    assert set(before) != set(fresh.flows), "the history placed y/api elsewhere than a fresh compile"
    assert lab.ctl.signal(signal.SIGKILL) == -signal.SIGKILL
    lab.ctl.start()
    st = lab.ctl.wait_in_sync()
    b = next(x for x in st["bridges"] if x["node"] == NODE)
    assert b["counters"]["flow_mods"] == 0 and b["counters"]["bundles"] == 0, "nothing changed: nothing sent"
    after = _durations(lab)
    assert set(after) == set(before) and all(after[f] >= before[f] for f in before)
    program = {parse_flow(f) for f in lab.ctl.ask("program", node=NODE)["program"]["flows"]}
    assert program == set(before)
    assert "compiled again with the priorities and conj ids its flows hold" in lab.ctl.log_text()


def test_changes_made_while_the_controller_was_down_are_applied_on_restart(lab):
    lab.use("v1")
    lab.ctl.signal(signal.SIGKILL)
    write_manifests(lab.manifests, docs("v3"))
    before = lab.flows()
    lab.ctl.start()
    lab.ctl.wait_in_sync()
    assert lab.flows() == lab.expected("v3")
    d = diff(before, lab.flows())
    last = lab.ctl.bridge(NODE)["last_bundle"]
    assert (last["add"], last["modify"], last["delete"]) == (len(d.add), len(d.modify), len(d.delete))


def test_flows_of_unknown_cookies_are_cleaned_up_after_a_resync(lab):
    lab.use("v1")
    assert lab.ctl.signal(signal.SIGTERM) == 0
    lab.ovs.add_flows(BRIDGE, ["cookie=0x1234,table=0,priority=5,dl_vlan=7 actions=drop",
                               "cookie=0x5d02000000abcdef,table=40,priority=9,ip actions=drop",
                               "table=60,priority=1,ip actions=drop"])
    lab.ctl.start()
    lab.ctl.wait_in_sync()
    assert lab.flows() == lab.expected("v1")
    assert lab.ctl.bridge(NODE)["last_bundle"]["delete"] == 3
    assert "removed flows of unknown cookies 0x0, 0x1234, 0x5d02000000abcdef" in lab.ctl.log_text()


def test_vswitchd_restart_is_resynced(lab):
    lab.use("v2")
    b0 = lab.ctl.bridge(NODE)["counters"]
    kill_vswitchd(lab.ovs)
    deadline = time.monotonic() + 20
    while lab.ctl.bridge(NODE)["connected"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    b = lab.ctl.bridge(NODE)
    assert "has not connected" in b["waiting"] and "sdn-openflow.sock" in b["waiting"]
    start_vswitchd(lab.ovs)
    deadline = time.monotonic() + 30
    while lab.ctl.bridge(NODE)["counters"]["connects"] == b0["connects"]:
        assert time.monotonic() < deadline, lab.ctl.log_text()[-3000:]
        time.sleep(0.1)
    lab.ctl.wait_in_sync()
    assert lab.flows() == lab.expected("v2")
    b1 = lab.ctl.bridge(NODE)["counters"]
    assert b1["resyncs"] == b0["resyncs"] + 1 and b1["bundles"] == b0["bundles"] + 1


def test_a_pod_port_appearing_and_disappearing_updates_the_tables(lab):
    lab.use("v1")
    assert LATE not in lab.ofports()
    plug_internal(lab.ovs, BRIDGE, port_name(LATE), LATE, pod_ip(LATE))
    deadline = time.monotonic() + 20
    while lab.flows() != lab.expected("v1"):
        assert time.monotonic() < deadline, lab.ctl.log_text()[-2000:]
        time.sleep(0.1)
    assert any(f.get("in_port") and f.get("in_port").value == lab.ofports()[LATE] for f in lab.flows())
    lab.ovs.del_port(BRIDGE, port_name(LATE), delete_link=False)
    deadline = time.monotonic() + 20
    while lab.flows() != lab.expected("v1"):
        assert time.monotonic() < deadline, lab.ctl.log_text()[-2000:]
        time.sleep(0.1)
    assert LATE not in lab.ofports()


def test_a_rejected_flow_is_decoded_logged_with_its_policy_and_changes_nothing(lab):
    lab.use("v0")
    before = lab.flows()
    n40 = sum(1 for f in before if f.table == 40)
    lab.ovs.vsctl("--", "--id=@ft", "create", "Flow_Table", f"flow_limit={n40}", "overflow_policy=refuse",
                  "--", "set", "Bridge", BRIDGE, "flow_tables:40=@ft")
    try:
        write_manifests(lab.manifests, docs("v1"))  # adds ingress rule flows to table 40
        lab.ctl.ask("reload")
        deadline = time.monotonic() + 20
        while "OFPFMFC_TABLE_FULL" not in lab.ctl.bridge(NODE)["last_error"]:
            assert time.monotonic() < deadline, lab.ctl.log_text()[-3000:]
            time.sleep(0.1)
        b = lab.ctl.bridge(NODE)
        assert b["counters"]["failed_bundles"] >= 1 and not b["last_bundle"]["committed"]
        assert lab.flows() == before, "a discarded bundle changes nothing"
        log = lab.ctl.log_text()
        assert "switch rejected add table=40" in log and "y/web ingress[0]" in log and "OFPFMFC_TABLE_FULL" in log
        assert "nothing changed on the switch; retrying in" in log
    finally:
        lab.ovs.vsctl("clear", "Bridge", BRIDGE, "flow_tables")
    lab.ctl.wait_in_sync(timeout=40)  # the retry (with backoff) now succeeds
    assert lab.flows() == lab.expected("v1")


def test_flows_show_diff_and_trace_live(lab):
    lab.use("v1")
    out = lab.sdnctl("flows", "show", "--node", NODE, "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["live"] and doc["bridge"] == BRIDGE
    groups = [g for t in doc["tables"] for g in t["groups"]]
    rule = next(g for g in groups if g.get("rule") == "y/web ingress[0]")
    conj = next(f for f in rule["flows"] if f["role"] == "conj_id (allow)")
    assert "packets" in conj and "bytes" in conj
    default = next(g for g in groups if g["kind"] == "default")
    assert all("packets" in f for f in default["flows"])
    out = lab.sdnctl("flows", "show", "--bridge", BRIDGE, "--policy", "y/web")
    assert out.returncode == 0 and "y/web ingress[0]" in out.stdout and "x/allow-from-y" not in out.stdout
    # in sync: says so, exit 0; a flow removed behind the controller's back: exit 1; an unknown
    # node: exit 2; no controller at the socket: exit 3 (README, "Exit status")
    out = lab.sdnctl("flows", "diff", "--node", NODE)
    assert (out.returncode, out.stdout) == (0, f"# {NODE} ({BRIDGE}): in sync, nothing to add, modify or delete\n")
    out = lab.sdnctl("flows", "diff", "--node", "node-77")
    assert out.returncode == 2 and out.stderr.startswith("error: unknown node 'node-77'"), out.stderr
    out = subprocess.run([sys.executable, "-m", "sdn.cli", "flows", "diff", "--node", NODE, "--control",
                          lab.ctl.control + ".gone"], capture_output=True, text=True)
    assert out.returncode == 3 and out.stderr.startswith("error: no controller control socket at "), out.stderr
    victim = next(f for f in lab.flows() if f.table == 41 and f.priority == 200)
    lab.ovs.del_flows(BRIDGE, victim.render(cookie=False).split(" actions=")[0], strict=True)
    out = lab.sdnctl("flows", "diff", "--bridge", BRIDGE)
    assert out.returncode == 1 and "1 to add" in out.stdout and "table=41" in out.stdout
    lab.ctl.ask("resync", node=NODE)
    lab.ctl.wait_in_sync()
    assert lab.sdnctl("flows", "diff", "--node", NODE).returncode == 0
    # ofproto/trace on the live bridge, annotated
    out = lab.sdnctl("trace", "--live", "--from", "y/b", "--to", "x/a", "--port", "80")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ALLOWED" in out.stdout and "x/allow-from-y ingress[0]" in out.stdout
    out = lab.sdnctl("trace", "--live", "--from", "z/a", "--to", "x/a", "--port", "80", "-o", "json")
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "denied" and doc["agree"] and "default deny of x/a" in " ".join(doc["decided_by"])


def test_sigterm_and_sigint_stop_cleanly_and_keep_the_flows(lab):
    lab.use("v1")
    flows = lab.flows()
    for sig in (signal.SIGTERM, signal.SIGINT):
        assert lab.ctl.signal(sig) == 0
        assert not Path(lab.ctl.control).exists() and not Path(lab.ctl.listen[5:]).exists()
        assert lab.flows() == flows
        assert "stopped" in lab.ctl.log_text().splitlines()[-1]
        lab.ctl.start()
        lab.ctl.wait_in_sync()
