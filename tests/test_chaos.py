"""A bounded chaos run in the lab (host, fabric and kubernetes mode): a long-lived TCP
connection and a UDP flow across nodes, and a prober whose new connections policy denies,
through a stream of policy updates, a SIGKILL of the judging controller (the server node's
agent, or the fabric switch's; the lab's supervisor starts it again), a restart of that
switch's ovs-vswitchd (empty tables, empty conntrack), and in kubernetes mode a kube-apiserver
stop/start and an etcd compaction. Asserts: no line lost on the allowed TCP connection, no
denied connection through (docs/controller.md names no window for any of these faults), every
bridge's tables in sync with its program after each fault. Prints the outage windows it
measured (docs/controller.md, "Restarts")."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from sdn import proc
from sdn.lab import supervise
from sdn.lab.lab import Lab
from sdn.lab.nodes import FABRIC_BRIDGE
from sdn.lab.state import State
from sdn.ovs.instance import OvsInstance
from sdn.switch.control import ControlError, request
from tests.conntrack_support import OTHER, Outcome, Streams, allow, cluster
from tests.e2e_model import match, netpol
from tests.lab_harness import lab_state_dir
from tests.switch_support import kill_vswitchd, start_vswitchd

pytestmark = pytest.mark.ovs
VICTIMS = {"fabric": FABRIC_BRIDGE}  # the switch that judges the server's ingress (else node-2)
UPDATES = 12  # policy updates between faults


def variant(i: int) -> list[dict]:
    """The i-th policy set: the client may always reach the server's stream port, the prober
    (x/c) never; around that a rule comes and goes and an unrelated egress policy toggles."""
    docs = [allow(2 if i % 2 else 0)]
    if i % 3 == 0:
        docs.append(netpol("x", "c-egress", match(pod="c"), egress=[{}], types=["Egress"]))
    return docs


def _in_sync(lab: Lab, timeout: float = 30.0) -> float:
    """Seconds until every bridge's installed tables equal its program (fails after timeout)."""
    t0 = time.monotonic()
    pending = {(n, c["control"]) for c in lab.state.load()["controllers"].values() for n in c["nodes"]}
    while pending:
        for node, control in sorted(pending):
            try:
                if request(control, "diff", timeout=10, node=node)["in_sync"]:
                    pending.discard((node, control))
            except (ControlError, OSError):
                pass
        if pending and time.monotonic() - t0 > timeout:
            pytest.fail(f"not in sync after {timeout}s: {sorted(n for n, _ in pending)}")
        time.sleep(0.1)
    return time.monotonic() - t0


def _gap(out: Outcome, proto: str, t0: float, t1: float) -> float:
    """The longest time without an echo between t0 and t1."""
    times = [t0] + sorted(w for _, w in out.echoed[proto] if t0 < w < t1) + [t1]
    return max(b - a for a, b in itertools.pairwise(times))


@pytest.fixture(scope="module", params=["host", "fabric", "kubernetes"])
def lab(request):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, private Open vSwitch)", pytrace=False)
    mode = request.param
    lab = Lab(State(lab_state_dir(f"chaos-{mode[:4]}")))
    try:
        lab.down()
        lab.up_docs(cluster() + variant(0), enforce="fabric" if mode == "fabric" else "host",
                    kubernetes=mode == "kubernetes")
        lab.mode, lab.victim = mode, VICTIMS.get(mode, "node-2")
        yield lab
    finally:
        lab.down()


def _kill_controller(lab: Lab) -> None:
    """SIGKILL the judging switch's controller (the agent in kubernetes mode); the lab's
    supervisor starts it again, as a DaemonSet's restart policy would (sdn/lab/supervise.py).
    The bridge keeps its flows meanwhile (fail_mode=secure)."""
    ctl = lab.state.load()["controllers"][lab.victim]
    pid = supervise.current_pid(lab.state, lab.victim, ctl)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while supervise.current_pid(lab.state, lab.victim, ctl) in (pid, None) or \
            not proc.alive(supervise.current_pid(lab.state, lab.victim, ctl)):
        assert time.monotonic() < deadline, "the supervisor did not restart the agent"
        time.sleep(0.05)


def _restart_vswitchd(lab: Lab) -> None:
    """Kill the judging switch's ovs-vswitchd and start it again: empty tables and conntrack."""
    record = lab.state.load()
    node = record["fabric"] if lab.victim == FABRIC_BRIDGE else record["nodes"][lab.victim]
    ovs = OvsInstance(Path(node["rundir"]), netns=node["netns"])
    kill_vswitchd(ovs)
    start_vswitchd(ovs)


def _apiserver_outage(lab: Lab) -> None:
    """kube-apiserver stopped for two seconds (every watch cut), then started again."""
    cp = lab.kube().cp
    cp.stop_component("kube-apiserver")
    time.sleep(2.0)
    cp.start_component("kube-apiserver")


def _etcd_compaction(lab: Lab) -> None:
    """etcd compacted: lists and watches from an older resourceVersion get 410 Gone."""
    lab.kube().cp.compact()


FAULTS = {"host": [_kill_controller, _restart_vswitchd], "fabric": [_kill_controller, _restart_vswitchd],
          "kubernetes": [_kill_controller, _restart_vswitchd, _apiserver_outage, _etcd_compaction]}


def test_chaos(lab):
    i = 0
    current = variant(0)

    def updates(n: int) -> None:
        nonlocal i, current
        for _ in range(n):
            i += 1
            new = variant(i)
            gone = [d for d in current if d["metadata"]["name"] not in {x["metadata"]["name"] for x in new}]
            lab.change(apply=new, delete=gone)
            current = new
            time.sleep(0.1)

    windows: dict[str, tuple[float, float]] = {}
    print(f"\n{lab.mode}, faults on {lab.victim}:")
    with Streams(lab) as streams:
        streams.start_streams()
        streams.start_denied(OTHER, lab)
        time.sleep(0.5)
        t_start = time.monotonic()
        updates(UPDATES)
        assert _in_sync(lab) < 30
        for fault in FAULTS[lab.mode]:
            t0 = time.monotonic()
            fault(lab)
            t1 = time.monotonic()
            sync = _in_sync(lab)
            windows[fault.__name__.strip("_")] = (t0, time.monotonic())
            print(f"  {fault.__name__.strip('_')}: {t1 - t0:.2f}s, then in sync after {sync:.2f}s")
            updates(UPDATES)
        time.sleep(0.5)
        t_end = time.monotonic()
        denied = streams.stop_denied()
        out = streams.stop()

    assert not out.error, f"the allowed TCP connection failed: {out.error}"
    assert out.lost_before("tcp", t_end) == [], "lines lost on the allowed TCP connection"
    assert out.last_echo("tcp") > t_end - 1.0 and out.last_echo("udp") > t_end - 1.0, "a stream stopped"
    for name, (a, b) in windows.items():
        print(f"  {name}: longest gap without an echo TCP {_gap(out, 'tcp', a, b + 1):.2f}s, "
              f"UDP {_gap(out, 'udp', a, b + 1):.2f}s")
    echoed = sorted(out.echoed["udp"])
    faults = [(a, b + 1) for a, b in windows.values()]
    lost = out.lost_before("udp", t_end)

    def around(n: int) -> tuple[float, float]:  # when the datagrams before and after n came back
        return (max((t for m, t in echoed if m < n), default=0.0),
                min((t for m, t in echoed if m > n), default=t_end))
    in_faults = [n for n in lost if any(around(n)[0] <= b and around(n)[1] >= a for a, b in faults)]
    edges = [t_start] + [x for w in faults for x in w] + [t_end]
    calm = list(zip(edges[::2], edges[1::2]))
    print(f"  {i} policy updates; TCP {len(out.echoed['tcp'])} lines, UDP {len(out.echoed['udp'])} datagrams "
          f"echoed ({len(lost) - len(in_faults)} lost during the updates, {len(in_faults)} during the faults); "
          f"longest gap during the updates TCP {max(_gap(out, 'tcp', a, b) for a, b in calm):.2f}s, "
          f"UDP {max(_gap(out, 'udp', a, b) for a, b in calm):.2f}s; "
          f"denied prober: {denied['tries']} tries, {len(denied['passed'])} through")
    assert denied["tries"]["tcp"] > 50 and denied["passed"] == [], denied["passed"][:10]
