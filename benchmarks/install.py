"""Cold install of ~100k flows: the controller (os-ken, our encoder, one atomic bundle) against
`ovs-ofctl --bundle add-flows` of the same flows on the same ovs-vswitchd.

    python -m benchmarks.install [--flows 100000] [--rounds 3] [--no-restart] [--json OUT]

`python -m benchmarks` runs it after the scenarios (QUICK: one round, no restart check) and
reports it in results.md; per scenario, benchmarks/switch.py does the same comparison for the
scenario's focus node program through our channel code without os-ken.

Needs root and Open vSwitch (a private instance in its own network namespace is started and
removed). The flows come from manifests: one node with 50 pods and policies whose ingress
rules name distinct /32 ipBlocks, so the tables are what the compiler really produces
(conjunction clause flows, conj_id flows, pipeline) and nothing collapses into CIDRs.

Each round empties the bridge, then either asks the running controller to resync (it reads
the empty switch, plans and sends one bundle: timed from the read to the commit reply, the
controller's own measurement) or runs ovs-ofctl (timed as a process, parsing included). The
ratio is ours / ovs-ofctl on the medians; below 1 means faster than ovs-ofctl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sdn.ovs.instance import OvsInstance, netns_exists

PODS = 50
TARGETS_PER_RULE = 5
PEERS_PER_RULE = 160
BRIDGE = "br-bench"


def manifests(n_flows: int) -> dict:
    """A List of Node, Namespace, Pods and NetworkPolicies compiling to about n_flows flows."""
    items: list[dict] = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
         "spec": {"podCIDR": "10.200.0.0/24"},
         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.1"}]}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench", "labels": {"ns": "bench"}}},
    ]
    for i in range(PODS):
        items.append({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": f"p{i}", "namespace": "bench", "labels": {"group": f"g{i // TARGETS_PER_RULE}"}},
                      "spec": {"nodeName": "node-1"}, "status": {"podIP": f"10.200.0.{10 + i}"}})
    groups = PODS // TARGETS_PER_RULE
    n_rules = max(1, n_flows // (PEERS_PER_RULE + 2))
    address = 0x0B000001
    for r in range(n_rules):
        peers = []
        for _ in range(PEERS_PER_RULE):
            a = address
            address += 2  # never adjacent: no two ipBlocks merge into one CIDR
            peers.append({"ipBlock": {"cidr": f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/32"}})
        items.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                      "metadata": {"name": f"pol-{r}", "namespace": "bench"},
                      "spec": {"podSelector": {"matchLabels": {"group": f"g{r % groups}"}},
                               "ingress": [{"from": peers, "ports": [{"port": 1000 + r}]}]}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _control(path: str, cmd: str, **args) -> dict:
    from sdn.switch.control import request
    return request(path, cmd, timeout=600, **args)


def _wait_sync(control: str, timeout: float) -> dict:
    from sdn.switch.control import ControlError
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = _control(control, "status")
        except ControlError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        b = st["bridges"][0]
        if st["in_sync"] and b["connected"]:
            return b
        if time.monotonic() > deadline:
            raise RuntimeError(f"controller not in sync after {timeout}s: {b}")
        time.sleep(0.05)


def run(n_flows: int, rounds: int, keep: bool = False, restart: bool = True) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sdnbench", dir="/tmp"))
    ns = f"sdnbench{int(time.time()) % 100000}"
    ovs = OvsInstance(work / "ovs", netns=ns)
    ctl = None
    log = None
    try:
        ovs.start()
        ovs.add_bridge(BRIDGE, dpid=0xBE01)
        ovs.vsctl("add-port", BRIDGE, "tun0", "--", "set", "interface", "tun0", "type=vxlan",
                  "options:remote_ip=flow", "ofport_request=1")
        for i in range(PODS):
            ip = f"10.200.0.{10 + i}"
            mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
            ovs.add_internal_port(BRIDGE, f"bp{i}", external_ids={"k8s.pod": f"bench/p{i}", "ip": ip,
                                                                   "attached-mac": mac})
        mdir = work / "manifests"
        mdir.mkdir()
        (mdir / "bench.json").write_text(json.dumps(manifests(n_flows)))
        control = str(work / "ctl.sock")
        log = open(work / "controller.log", "w")  # noqa: SIM115 - both controllers write to it; closed below
        started = time.monotonic()
        ctl = subprocess.Popen([sys.executable, "-m", "sdn.cli", "controller", "-f", str(mdir),
                                "--bridge", f"node-1={ovs.db_remote}", "--listen", f"unix:{work}/of.sock",
                                "--control", control], stdout=log, stderr=subprocess.STDOUT)
        first = _wait_sync(control, 600)
        startup = time.monotonic() - started
        program = _control(control, "program", node="node-1")["program"]
        flows = program["flows"]
        flow_file = work / "flows.txt"
        flow_file.write_text("\n".join(flows) + "\n")
        ours, ofctl, bundle_only = [first["last_bundle"]["sync_seconds"]], [], [first["last_bundle"]["seconds"]]
        for _ in range(rounds):
            ovs.del_flows(BRIDGE)
            t = time.perf_counter()
            ovs.ofctl("--bundle", "add-flows", BRIDGE, str(flow_file), timeout=600)
            ofctl.append(time.perf_counter() - t)
            assert len(ovs.flow_lines(BRIDGE)) == len(flows)
            ovs.del_flows(BRIDGE)
            gen_bundles = _control(control, "status")["bridges"][0]["counters"]["bundles"]
            spy = None
            if os.environ.get("SDN_BENCH_PYSPY"):
                spy = subprocess.Popen([os.environ["SDN_BENCH_PYSPY"], "record", "-o", str(work / f"spy{len(ours)}.txt"),
                                        "-f", "raw", "-d", "6", "-p", str(ctl.pid)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            _control(control, "resync", node="node-1")
            deadline = time.monotonic() + 600
            while True:
                b = _control(control, "status")["bridges"][0]
                if b["counters"]["bundles"] > gen_bundles and b["in_sync"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"resync did not finish: {b}")
                time.sleep(0.02)
            if spy is not None:
                spy.wait()
            ours.append(b["last_bundle"]["sync_seconds"])
            bundle_only.append(b["last_bundle"]["seconds"])
            assert len(ovs.flow_lines(BRIDGE)) == len(flows)
        result = {
            "flows": len(flows),
            "ours_seconds": ours, "ours_bundle_seconds": bundle_only, "ovs_ofctl_seconds": ofctl,
            "ours_median": statistics.median(ours), "ovs_ofctl_median": statistics.median(ofctl),
            "ratio": statistics.median(ours) / statistics.median(ofctl),
            "ours_flows_per_second": len(flows) / statistics.median(ours),
            "controller_start_to_sync_seconds": round(startup, 2),
        }
        if restart:  # a controller facing the full table reads it and sends nothing
            ctl.terminate()
            ctl.wait(30)
            t = time.monotonic()
            ctl = subprocess.Popen([sys.executable, "-m", "sdn.cli", "controller", "-f", str(mdir),
                                    "--bridge", f"node-1={ovs.db_remote}", "--listen", f"unix:{work}/of.sock",
                                    "--control", control], stdout=log, stderr=subprocess.STDOUT)
            after = _wait_sync(control, 600)
            result.update(restart_resync_seconds=round(time.monotonic() - t, 2),
                          restart_flow_mods_sent=after["counters"]["flow_mods"],
                          restart_read_seconds=after["last_sync"]["read_seconds"],
                          restart_plan_seconds=after["last_sync"]["plan_seconds"])
        return result
    finally:
        if ctl is not None and ctl.poll() is None:
            ctl.terminate()
            try:
                ctl.wait(30)
            except subprocess.TimeoutExpired:
                ctl.kill()
        if log is not None:
            log.close()
        ovs.stop()
        if keep:
            print(f"kept {work} (controller.log, flows.txt, manifests)")
        elif not netns_exists(ns):
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.install", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000, help="about how many flows (default 100000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (controller log, flows)")
    ap.add_argument("--no-restart", action="store_true",
                    help="skip the check that a restarted controller facing the full table sends nothing")
    args = ap.parse_args(argv)
    # SIGTERM (python -m benchmarks at its timeout) unwinds run(): the controller and OVS stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = run(args.flows, args.rounds, args.keep, not args.no_restart)
    print(f"cold install of {r['flows']} flows on one bridge:")
    print(f"  controller (read + plan + one bundle, os-ken): {', '.join(f'{s:.2f}' for s in r['ours_seconds'])} s"
          f" -> median {r['ours_median']:.2f} s ({r['ours_flows_per_second']:,.0f} flows/s)")
    print(f"  of which the bundle (encode, send, commit):    {', '.join(f'{s:.2f}' for s in r['ours_bundle_seconds'])} s")
    print(f"  ovs-ofctl --bundle add-flows:                  {', '.join(f'{s:.2f}' for s in r['ovs_ofctl_seconds'])} s"
          f" -> median {r['ovs_ofctl_median']:.2f} s")
    print(f"  ratio ours / ovs-ofctl: {r['ratio']:.2f}")
    print(f"  controller start (load manifests, compile, connect, install): {r['controller_start_to_sync_seconds']:.2f} s")
    if "restart_resync_seconds" in r:
        print(f"  controller restart facing the full table: in sync after {r['restart_resync_seconds']:.2f} s "
              f"(of which reading the {r['flows']} flows back {r['restart_read_seconds']:.2f} s, diffing "
              f"{r['restart_plan_seconds']:.2f} s), {r['restart_flow_mods_sent']} flow_mods sent")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
