"""Make-before-break with real packets: a long-lived allowed TCP connection between two pod
namespaces survives 200 policy updates that do not concern it -- no reset, no TCP segment
retransmitted for a loss -- and so does a numbered UDP stream whose every datagram comes from a new
source port, so each is a new connection judged by the rule tables in the middle of the
updates: none is lost. A denied pod never gets a single packet through meanwhile."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import OvsFactory, unique_name
from tests.e2e_model import base_cluster, from_, match, netpol, pod_ip, pods, pods_in, port, to
from tests.switch_support import REPO, Controller, add_tunnel, pod_external_ids, write_manifests

pytestmark = pytest.mark.ovs

BRIDGE = "br-sdn"
CLIENT, SERVER, INTRUDER = "x/a", "y/b", "z/a"  # all on node-1
UPDATES = 200


def version(i: int) -> list[dict]:
    """The i-th policy set. Every one allows CLIENT -> SERVER on 5000/TCP and 5001/UDP and
    never lets INTRUDER (namespace z) reach SERVER; what changes around that differs each time:
    extra ports on the same rule (its port clause), extra rules selecting SERVER (its
    applied-to clause flow gains and loses conjunctions), an unrelated egress policy."""
    serve = netpol("y", "serve", match(pod="b"), ingress=[
        from_(pods_in(match(ns="x"), match(pod="a")),
              ports=[port(5000), port(5001, "UDP"), port(7000 + i % 7), port(8000 + i % 3, "UDP", 8010 + i % 5)])])
    docs = base_cluster() + [serve]
    for k in range(i % 4):
        docs.append(netpol("y", f"extra-{k}", match(pod="b"), ingress=[
            from_(pods_in(match(ns="x"), match(pod="c")), ports=[port(6000 + 10 * k + i % 10)])]))
    if i % 3 == 0:
        docs.append(netpol("z", "egress-c", match(pod="c"), egress=[to(pods(match(pod="a")))], types=["Egress"]))
    return docs


def _tcp_counters(ns: str) -> dict[str, int]:
    """The namespace's TCP counters (/proc/net/snmp and /proc/net/netstat)."""
    out: dict[str, int] = {}
    for path, prefix in (("/proc/net/snmp", "Tcp:"), ("/proc/net/netstat", "TcpExt:")):
        lines = subprocess.run(["ip", "netns", "exec", ns, "cat", path], capture_output=True, text=True,
                               check=True).stdout.splitlines()
        head, values = [line.split() for line in lines if line.startswith(prefix)][:2]
        out.update(zip(head[1:], (int(v) for v in values[1:])))
    return out


def _lost_segments(before: dict[str, int], after: dict[str, int]) -> int:
    """Retransmissions not proven spurious. Under CPU load a tail loss probe or an early RTO
    resends a segment that did arrive; the receiver then reports the duplicate (D-SACK). A
    segment really lost on the bridge is retransmitted without such a report."""
    delta = {k: after[k] - before[k] for k in ("RetransSegs", "TCPDSACKRecv", "TCPDSACKOfoRecv")}
    return delta["RetransSegs"] - delta["TCPDSACKRecv"] - delta["TCPDSACKOfoRecv"]


def _start(ns: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netpeer", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"{args[0]} in {ns} did not start: {line}{proc.stdout.read()}"
    return proc


def test_allowed_connection_survives_200_updates_and_denied_pair_never_passes(tmp_path_factory, tmp_path):
    factory = OvsFactory(tmp_path_factory)
    ctl = None
    procs: list[subprocess.Popen] = []
    try:
        ovs = factory()
        ovs.add_bridge(BRIDGE, dpid=0x5D0002)
        add_tunnel(ovs, BRIDGE, "tun0", 1)
        netns = {}
        for key in (CLIENT, SERVER, INTRUDER):
            ns = netns[key] = unique_name("pod")
            ip = pod_ip(key)
            mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
            ovs.add_veth_port(BRIDGE, "v" + key.replace("/", ""), ns, mac=mac, ip_cidr=f"{ip}/24",
                              external_ids=pod_external_ids(key, ip, mac))
        manifests = tmp_path / "manifests"
        write_manifests(manifests, version(0))
        ctl = Controller(manifests, {"node-1": ovs.db_remote})
        ctl.start()
        ctl.wait_in_sync()

        server_out, client_out, denied_out = (tmp_path / f"{n}.json" for n in ("server", "client", "denied"))
        procs.append(_start(netns[SERVER], "server", str(server_out)))
        tcp_before = {k: _tcp_counters(netns[k]) for k in (CLIENT, SERVER)}
        procs.append(_start(netns[CLIENT], "client", pod_ip(SERVER), str(client_out)))
        procs.append(_start(netns[INTRUDER], "denied", pod_ip(SERVER), str(denied_out)))

        started = time.monotonic()
        bundles0 = ctl.bridge("node-1")["counters"]["bundles"]
        for i in range(1, UPDATES + 1):
            write_manifests(manifests, version(i))
            ctl.reload_and_wait()
        took = time.monotonic() - started
        bundles = ctl.bridge("node-1")["counters"]["bundles"] - bundles0
        time.sleep(0.3)

        client, intruder, server = procs[1], procs[2], procs[0]
        for p in (client, intruder):
            p.send_signal(signal.SIGTERM)
            p.wait(10)
        time.sleep(0.3)  # the last datagrams land
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        c, d, s = (json.loads(p.read_text()) for p in (client_out, denied_out, server_out))

        assert bundles == UPDATES, "every update changed the tables and went out as one bundle"
        assert took < 45, f"{UPDATES} updates took {took:.1f}s"
        assert not c["error"] and c["errors"] == 0, c
        assert c["sent"] > 1000 and s["echoed_lines"] >= c["sent"] - 1
        assert c["longest_gap"] < 1.0, c
        for k in (CLIENT, SERVER):
            assert _lost_segments(tcp_before[k], _tcp_counters(netns[k])) <= 0, f"{k} retransmitted a lost segment"
        allowed = s["udp"][pod_ip(CLIENT)]
        assert allowed["missing"] == [] and allowed["count"] >= c["sent"] - 1, allowed
        assert pod_ip(INTRUDER) not in s["udp"], s["udp"]
        assert s["tcp_peers"] == [pod_ip(CLIENT)]
        assert d["udp_sent"] > 1000 and d["tcp_attempts"] > 10 and d["tcp_connected"] == 0, d
        print(f"{UPDATES} updates in {took:.1f}s; client {c}; intruder {d}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if ctl is not None:
            ctl.close()
        factory.close()
