"""Realization on a real switch: a scenario's focus node program in a private ovs-vswitchd.

The worker's `switch` stage (benchmarks/worker.py; on by default as root with Open vSwitch,
`python -m benchmarks --no-switch` turns it off) calls `realize`:

  cold install  the focus node's program (sdn.engine.Engine, the controller's compiler) into
                an empty bridge, alternately by our code (read the switch, sdn.switch.reconcile
                plan, one atomic ONF bundle through sdn.switch.channel, commit reply awaited:
                the controller's bridge worker minus os-ken) and by `ovs-ofctl --bundle
                add-flows` of the same flows (timed as a process); medians, ratio ours/ovs-ofctl
  events        the scenario's pod label events, one after the other: Engine.apply -> the
                focus bridge's flow diff -> reconcile.plan_diff -> one bundle on the same
                connection. Timed from the event (Engine.apply called) to the diff, to the
                bundle sent (its commit request handed to the socket) and to the bundle
                committed (the commit reply read)
  read-back     every installed flow read back and planned against the engine's program:
                the switch must hold exactly that program (an empty plan); and that program
                against a fresh compile of the cluster after the events (`reference`), so a
                wrong diff cannot pass for a right one

Wall time (time.perf_counter) and CPU time (time.process_time of this process: our side
only, ovs-vswitchd's work is in neither) are recorded for each step.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from itertools import count
from pathlib import Path

from benchmarks.stats import clock, pct, same_flows
from sdn.ovs.instance import OvsInstance

BRIDGE = "br-bench"
PROGRAMS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ip")
NOT_AVAILABLE = "not run: needs root and Open vSwitch"
_seq = count(1)


def unavailable() -> str | None:
    """Why a private OVS cannot run here (None: it can)."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if os.geteuid() != 0 or missing:
        why = ["not root"] if os.geteuid() != 0 else []
        why += [f"missing {', '.join(missing)}"] if missing else []
        return f"{NOT_AVAILABLE} ({'; '.join(why)})"
    return None


def _stamped_channel(target: str):
    """A DirectChannel that notes when the benchmark's thread last handed bytes to the socket
    (apply_plan's last send is the bundle's commit request); replies the reader thread sends
    (echo) are not noted."""
    from sdn.switch.ofclient import DirectChannel

    class Stamped(DirectChannel):
        sent = (0.0, 0.0)  # (perf_counter, process_time) after the last send

        def send(self, data: bytes) -> None:
            super().send(data)
            if threading.get_ident() == owner:
                self.sent = (time.perf_counter(), time.process_time())

    owner = threading.get_ident()
    return Stamped(target)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _ms(values: list[float]) -> dict:
    return {"p50": pct(values, 50) * 1e3, "p99": pct(values, 99) * 1e3, "max": max(values) * 1e3}


def cold_install(ovs: OvsInstance, ch, program, work: Path, rounds: int) -> dict:
    """`rounds` x (empty bridge, ovs-ofctl --bundle add-flows; empty bridge, ours)."""
    from sdn.switch import channel, reconcile

    flow_file = work / "flows.txt"
    flow_file.write_text(program.render())
    ours, ours_cpu, ours_bundle, ofctl, ofctl_cpu = [], [], [], [], []
    for _ in range(rounds):
        ovs.del_flows(BRIDGE)
        c0, t = _children_cpu(), time.perf_counter()
        ovs.ofctl("--bundle", "add-flows", BRIDGE, str(flow_file), timeout=3600)
        ofctl.append(time.perf_counter() - t)
        ofctl_cpu.append(_children_cpu() - c0)
        ovs.del_flows(BRIDGE)
        stop = clock()
        result = channel.apply_plan(ch, reconcile.plan(channel.read_flows(ch), program.flows))
        wall, cpu = stop()
        if not result.committed:
            raise RuntimeError(f"cold install bundle not committed: {result.describe_failure()}")
        ours.append(wall)
        ours_cpu.append(cpu)
        ours_bundle.append(result.seconds)
    med_ours, med_ofctl = statistics.median(ours), statistics.median(ofctl)
    return {"flows": len(program.flows), "rounds": rounds,
            "ours_s": ours, "ours_cpu_s": ours_cpu, "ours_bundle_s": ours_bundle,
            "ovs_ofctl_s": ofctl, "ovs_ofctl_cpu_s": ofctl_cpu,
            "ours_median_s": med_ours, "ours_cpu_median_s": statistics.median(ours_cpu),
            "ovs_ofctl_median_s": med_ofctl, "ovs_ofctl_cpu_median_s": statistics.median(ofctl_cpu),
            "ratio": med_ours / med_ofctl if med_ofctl else None,
            "ours_flows_per_s": len(program.flows) / med_ours if med_ours else None}


def replay(engine, ch, focus: str, pods: list, view: dict) -> list[dict]:
    """Each pod (an event) through Engine.apply and, if the focus bridge changed, one bundle.
    `view` (flow key -> Flow the switch holds) follows every committed bundle."""
    from sdn.switch import channel, reconcile

    samples = []
    for pod in pods:
        w0, c0 = time.perf_counter(), time.process_time()
        change = engine.apply(upserts=[pod]).get(focus)
        w_diff, c_diff = time.perf_counter(), time.process_time()
        s = {"event": pod.key, "diff_s": w_diff - w0, "diff_cpu_s": c_diff - c0, "bundle": False,
             "flow_mods": 0, "policies_recomputed": len(getattr(engine.last_delta, "policies", ()) or ())}
        if change is not None and not change.empty:
            plan = reconcile.plan_diff(change, view)
            result = channel.apply_plan(ch, plan)
            w_done, c_done = time.perf_counter(), time.process_time()
            if not result.committed:
                raise RuntimeError(f"bundle for event {pod.key} not committed: {result.describe_failure()}")
            w_sent, c_sent = ch.sent
            s.update(bundle=True, flow_mods=result.messages, changes=plan.summary(),
                     sent_s=w_sent - w0, sent_cpu_s=c_sent - c0, committed_s=w_done - w0,
                     committed_cpu_s=c_done - c0)
            for f in change.delete:
                view.pop(f.key, None)
            for f in (*change.add, *change.modify):
                view[f.key] = f
        # What the live controller does today on top (sdn.switch.desired.LiveCompiler asks the
        # engine for whole programs; the bridge worker plans the whole table): not in the
        # latency above, measured after it.
        stop = clock()
        reconcile.plan(tuple(view.values()), engine.program(focus).flows)
        s["whole_table_replan_s"], s["whole_table_replan_cpu_s"] = stop()
        samples.append(s)
    return samples


def summarize(samples: list[dict]) -> dict:
    sent = [s for s in samples if s["bundle"]]
    out = {"n": len(samples), "bundles": len(sent), "diff_ms": _ms([s["diff_s"] for s in samples]),
           "diff_cpu_ms": _ms([s["diff_cpu_s"] for s in samples]),
           "whole_table_replan_ms": _ms([s["whole_table_replan_s"] for s in samples])}
    if sent:
        mods = [s["flow_mods"] for s in sent]
        out.update(sent_ms=_ms([s["sent_s"] for s in sent]), sent_cpu_ms=_ms([s["sent_cpu_s"] for s in sent]),
                   committed_ms=_ms([s["committed_s"] for s in sent]),
                   committed_cpu_ms=_ms([s["committed_cpu_s"] for s in sent]),
                   flow_mods={"median": statistics.median(mods), "max": max(mods), "min": min(mods),
                              "total": sum(mods)})
    return out


def read_back(ch, program) -> dict:
    """The switch's flows against the program: the plan that would repair them must be empty."""
    from sdn.switch import channel, reconcile

    stop = clock()
    installed = channel.read_flows(ch)
    plan = reconcile.plan(installed, program.flows)
    wall, cpu = stop()
    return {"installed": len(installed), "program": len(program.flows), "diff": len(plan),
            "diff_detail": plan.summary(), "equal": plan.empty and len(installed) == len(program.flows),
            "seconds": wall, "cpu_seconds": cpu}


def realize(cluster, focus: str, event_pods: list, rounds: int = 3, reference=None) -> dict:
    """The whole stage on `cluster` (the state before the events; not changed: the engine
    works on a copy). `event_pods`: the pods as each event leaves them, in order.
    `reference`: a fresh compile (flows.compiler.Program) of the focus node after the events."""
    from benchmarks.scenarios import copy_cluster
    from sdn.engine import Engine

    why = unavailable()
    if why:
        return {"skipped": why}
    out: dict = {"focus_node": focus}
    stop = clock()
    engine = Engine(copy_cluster(cluster), nodes=[focus])
    out["engine_init_s"], out["engine_init_cpu_s"] = stop()
    program = engine.program(focus)
    work = Path(tempfile.mkdtemp(prefix="sdnbs", dir="/tmp"))
    ovs = OvsInstance(work / "ovs", netns=f"sdnbs{os.getpid()}-{next(_seq)}")
    try:
        stop = clock()
        ovs.start()
        ovs.add_bridge(BRIDGE, dpid=0xBE03)
        out["ovs_start_s"] = stop()[0]
        with _stamped_channel(f"unix:{ovs.mgmt(BRIDGE)}") as ch:
            out["cold_install"] = cold_install(ovs, ch, program, work, rounds)
            out["after_cold_install"] = read_back(ch, program)
            view = {f.key: f for f in program.flows}
            samples = replay(engine, ch, focus, event_pods, view)
            out["events"] = summarize(samples) if samples else {"n": 0}
            out["samples"] = samples
            final = engine.program(focus)
            out["read_back"] = read_back(ch, final)
        out["flows_after_events"] = out["read_back"]["program"]
        if reference is not None:
            out["vs_full_compile"] = same_flows(final.flows, reference.flows)
        return out
    finally:
        ovs.stop()
        shutil.rmtree(work, ignore_errors=True)
