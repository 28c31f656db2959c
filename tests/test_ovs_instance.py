"""The private Open vSwitch harness (sdn.ovs.instance / sdn.ovs.trace) against a real OVS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdn.ovs.instance import OvsCommandError, OvsInstance, netns_exists, netns_list
from sdn.ovs.trace import TraceError, normalize_ct_state, parse_trace
from sdn.proc import alive as _alive

from .conftest import require_ovs, unique_name

pytestmark = pytest.mark.ovs


def _our_daemons(rundir: Path) -> list[str]:
    """Command lines of live processes that mention ``rundir`` (our daemons)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or not _alive(int(d.name)):
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(rundir) in cmd:
            found.append(f"{d.name}: {cmd}")
    return found


# --------------------------------------------------------------------------- lifecycle

def test_start_stop_leaves_nothing(tmp_path_factory):
    require_ovs()
    ns = unique_name("ss")
    rundir = tmp_path_factory.mktemp(ns, numbered=False)
    inst = OvsInstance(rundir, netns=ns)
    try:
        with inst:
            assert inst.running
            assert netns_exists(ns)
            assert inst.vswitchd_ctl.name == f"ovs-vswitchd.{inst.vswitchd_pid}.ctl"
            inst.add_bridge("br0", dpid=0x2A)
            assert inst.datapath_id("br0") == 0x2A
            assert inst.vsctl("get", "bridge", "br0", "other-config:datapath-id").strip() \
                == '"000000000000002a"'
            assert inst.vsctl("get", "bridge", "br0", "fail_mode").strip() == "secure"
            # the netdev datapath's tap lives in the private namespace, not in ours
            links = subprocess.run(["ip", "-n", ns, "link"], capture_output=True,
                                   text=True).stdout
            assert "ovs-netdev" in links
            pids = (inst.vswitchd_pid, inst.ovsdb_pid)
        assert not inst.running
        assert not any(_alive(p) for p in pids)
        assert ns not in netns_list()
        assert _our_daemons(rundir) == []
        inst.stop()  # idempotent
    finally:
        inst.stop()


def test_stop_after_crash(tmp_path_factory):
    """A fresh object on the rundir of a crashed instance cleans up (stale pid files)."""
    require_ovs()
    ns = unique_name("cr")
    rundir = tmp_path_factory.mktemp(ns, numbered=False)
    inst = OvsInstance(rundir, netns=ns)
    try:
        inst.start()
        inst.add_bridge("br0", dpid=1)
        inst.add_veth_port("br0", "vcr1", unique_name("cp"), ip_cidr="10.77.0.1/24")
        pod_ns = [n for n in netns_list() if n.startswith(ns.rsplit("-", 1)[0]) and n != ns]
        os.kill(inst.vswitchd_pid, signal.SIGKILL)
        # a "new process" knows only the rundir and the netns name
        again = OvsInstance(rundir, netns=ns)
        again.stop()
        again.stop()
        assert ns not in netns_list()
        assert not (set(pod_ns) & set(netns_list()))
        assert _our_daemons(rundir) == []
        # and the rundir can be used again
        with OvsInstance(rundir, netns=ns) as third:
            third.add_bridge("br0", dpid=1)
            assert third.dump_flows("br0") == ""
        assert ns not in netns_list()
    finally:
        inst.stop()


# --------------------------------------------------------------------------- flows

FLOWS = textwrap.dedent("""\
    table=0,priority=100,ip,actions=ct(table=1,zone=1)
    table=0,priority=0,actions=drop
    table=1,priority=200,cookie=0x12,ct_state=+trk+est,ip,actions=output:2
    table=1,priority=100,ct_state=+trk+new,tcp,tp_dst=80,actions=ct(commit,zone=1),output:2
    table=1,priority=0,actions=drop
""")


@pytest.fixture(scope="module")
def ovs_ports(ovs):
    """br0 with two internal ports p1 (1) and p2 (2), enough for traces."""
    ovs.add_internal_port("br0", "p1", ofport_request=1)
    ovs.add_internal_port("br0", "p2", ofport_request=2)
    return ovs


def test_add_and_dump_flows(ovs):
    ovs.del_flows("br0")
    assert ovs.dump_flows("br0") == ""
    ovs.add_flows("br0", FLOWS)
    assert ovs.flow_lines("br0") == [
        "priority=100,ip actions=ct(table=1,zone=1)",
        "priority=0 actions=drop",
        "cookie=0x12, table=1, priority=200,ct_state=+est+trk,ip actions=output:2",
        "table=1, priority=100,ct_state=+new+trk,tcp,tp_dst=80 "
        "actions=ct(commit,zone=1),output:2",
        "table=1, priority=0 actions=drop",
    ]
    with_stats = ovs.dump_flows("br0", stats=True)
    assert "n_packets=0" in with_stats and "duration=" in with_stats
    assert "OFPST_FLOW" not in with_stats
    assert ovs.flow_lines("br0", "table=1,tcp") == [
        "table=1, priority=100,ct_state=+new+trk,tcp,tp_dst=80 "
        "actions=ct(commit,zone=1),output:2"]
    # raw ofctl with a bridge name as target works from outside the namespace
    assert "table=1" in ovs.ofctl("dump-flows", "br0", "--no-stats")
    ovs.replace_flows("br0", "priority=0,actions=NORMAL")
    assert ovs.flow_lines("br0") == ["priority=0 actions=NORMAL"]
    ovs.del_flows("br0", "priority=0", strict=True)
    assert ovs.flow_lines("br0") == []


def test_bad_flow_raises_with_ovs_message(ovs):
    ovs.replace_flows("br0", "priority=1,actions=drop")
    with pytest.raises(OvsCommandError) as ei:
        ovs.add_flows("br0", "priority=5,ip,actions=drop\npriority=5,bogus=1,actions=drop")
    assert "unknown keyword bogus" in str(ei.value)
    assert "-:2:" in ei.value.stderr
    assert "add-flows" in str(ei.value)
    with pytest.raises(OvsCommandError, match="OFPBAC_MATCH_INCONSISTENT"):
        ovs.add_flows("br0", "priority=5,arp,actions=ct(commit)")
    # the bundle is atomic: the good first line was not installed either
    assert ovs.flow_lines("br0") == ["priority=1 actions=drop"]


# --------------------------------------------------------------------------- trace

def test_trace_ct_pipeline(ovs_ports):
    ovs = ovs_ports
    ovs.replace_flows("br0", FLOWS)
    flow80 = "tcp,in_port=1,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80"
    flow22 = "tcp,in_port=1,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=22"

    new80 = ovs.trace("br0", flow80, ct_next=["trk,new"])
    assert new80.verdict == "output:2"
    assert new80.output_ports == [2] and new80.output_port_names == ["p2"]
    assert not new80.dropped
    assert new80.tables == [0, 1]
    assert new80.step_tuples == [
        (0, 0, 100, "ip", "ct(table=1,zone=1)"),
        (1, 0, 100, "ct_state=+new+trk,tcp,tp_dst=80", "ct(commit,zone=1),output:2"),
    ]
    assert new80.passes[1].ct_state == "new|trk"
    assert new80.passes[0].datapath_actions.startswith("ct(zone=1),recirc(")
    # datapath actions use datapath port numbers, not OpenFlow ones
    dp_p2 = next(n for n, (name, _) in ovs.port_map().items() if name == "p2")
    assert new80.datapath_actions == f"ct(commit,zone=1),{dp_p2}"

    new22 = ovs.trace("br0", flow22, ct_next="+trk+new")
    assert new22.verdict == "drop" and new22.dropped and new22.output_ports == []
    assert new22.datapath_actions == "drop"
    assert new22.steps[-1].as_tuple() == (1, 0, 0, "", "drop")

    est22 = ovs.trace("br0", flow22, ct_next=["trk|est"])
    assert est22.verdict == "output:2"
    assert est22.steps[-1].cookie == 0x12 and est22.steps[-1].priority == 200
    assert est22.steps[-1].match == "ct_state=+est+trk,ip"

    # no --ct-next: OVS assumes trk,new
    default = ovs.trace("br0", flow22)
    assert default.passes[1].ct_state_default and default.dropped

    udp = ovs.trace("br0", "udp,in_port=1")
    assert udp.dropped and udp.steps[-1].priority == 0

    arp = ovs.trace("br0", "arp,in_port=1")
    assert arp.dropped and not arp.recirculated and arp.tables == [0]


def test_trace_resubmit_and_errors(ovs_ports):
    ovs = ovs_ports
    ovs.replace_flows("br0", textwrap.dedent("""\
        table=0,priority=100,ip,actions=resubmit(,1),resubmit(,2)
        table=1,priority=10,ip,actions=load:0x5->NXM_NX_REG0[],resubmit(,3)
        table=2,priority=10,ip,actions=output:2
        table=3,priority=10,reg0=5,actions=output:LOCAL
        table=0,priority=10,arp,actions=NORMAL
    """))
    t = ovs.trace("br0", "tcp,in_port=1")
    assert [(s.table, s.depth) for s in t.steps] == [(0, 0), (1, 1), (3, 2), (2, 1)]
    assert t.steps[0].actions == "resubmit(,1),resubmit(,2)"
    assert t.steps[1].actions == "load:0x5->NXM_NX_REG0[],resubmit(,3)"
    assert t.steps[2].actions == "LOCAL"
    assert sorted(t.output_ports) == [2, 65534]
    assert sorted(t.output_port_names) == ["br0", "p2"]
    flood = ovs.trace("br0", "arp,in_port=1,dl_dst=ff:ff:ff:ff:ff:ff")
    assert sorted(flood.output_ports) == [2, 65534]  # not back to in_port

    with pytest.raises(TraceError, match="unknown field foo"):
        ovs.trace("br0", "tcp,foo=1")
    with pytest.raises(TraceError, match="unknown bridge"):
        ovs.trace("nosuchbr", "tcp")
    with pytest.raises(ValueError):
        ovs.trace("br0", "tcp", ct_next=["trk,-est"])


def test_normalize_ct_state():
    assert normalize_ct_state("+trk+est") == "trk,est"
    assert normalize_ct_state("trk|new") == "trk,new"
    assert normalize_ct_state(["trk", "rel"]) == "trk,rel"
    with pytest.raises(ValueError):
        normalize_ct_state("trk,bogus")


def test_parse_trace_canned():
    text = textwrap.dedent("""\
        Flow: tcp,in_port=1,nw_src=10.0.0.1

        bridge("br0")
        -------------
         0. ip, priority 100
            ct(table=1,zone=1)
            drop
             -> A clone of the packet is forked to recirculate. The forked pipeline will be resumed at table 1.

        Final flow: unchanged
        Megaflow: recirc_id=0,eth,ip,in_port=1,nw_frag=no
        Datapath actions: ct(zone=1),recirc(0x1)

        ===============================================================================
        recirc(0x1) - resume conntrack with ct_state=est|trk
        ===============================================================================

        Flow: recirc_id=0x1,ct_state=est|trk,ct_zone=1,eth,tcp,in_port=1

        bridge("br0")
        -------------
            thaw
                Resuming from table 1
        12. ct_state=+est+trk,ip, priority 200, cookie 0xabc
            output:2
            output:1
             >> skipping output to input port

        Final flow: unchanged
        Megaflow: recirc_id=0x1,ct_state=+est+trk,eth,ip,in_port=1,nw_frag=no
        Datapath actions: clone(3),4
    """)
    r = parse_trace(text, {3: ("p2", 2), 4: ("p3", 7)})
    assert r.step_tuples == [(0, 0, 100, "ip", "ct(table=1,zone=1)"),
                             (12, 0xABC, 200, "ct_state=+est+trk,ip", "output:2,output:1")]
    assert r.steps[1].notes == ("skipping output to input port",)
    assert r.steps[1].recirc == 1
    assert r.passes[1].recirc_id == 1 and r.passes[1].ct_state == "est|trk"
    assert r.datapath_actions == "clone(3),4"
    assert r.datapath_ports == [3, 4] and r.output_ports == [2, 7]
    assert r.verdict == "output:2,7"


# --------------------------------------------------------------------------- real traffic

SERVER = textwrap.dedent("""\
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(1)
    s.settimeout(20)
    print("ready", flush=True)
    c, _ = s.accept()
    c.settimeout(10)
    data = b""
    while not data.endswith(b"\\n"):
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.sendall(b"echo:" + data)
    c.close()
""")

CLIENT = textwrap.dedent("""\
    import socket, sys
    payload = b"x" * 100000 + b"\\n"   # several segments: checksums must be right
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    c.sendall(payload)
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data == b"echo:" + payload, len(data)
    print("ok", flush=True)
""")


def tcp_exchange(server_ns: str, server_ip: str, client_ns: str, port: int = 8080) -> None:
    """Run a TCP echo server in one namespace and a client in another (bounded)."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER,
                            server_ip, str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        line = ""
        while time.monotonic() < deadline:
            assert srv.stdout is not None
            line = srv.stdout.readline()
            if line or srv.poll() is not None:
                break
        assert line.strip() == "ready", srv.stderr.read() if srv.stderr else ""
        cli = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT,
                              server_ip, str(port)], capture_output=True, text=True, timeout=30)
        assert cli.returncode == 0 and cli.stdout.strip() == "ok", cli.stderr
        srv.wait(timeout=15)
        assert srv.returncode == 0, srv.stderr.read() if srv.stderr else ""
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(timeout=5)
        for f in (srv.stdout, srv.stderr):
            if f:
                f.close()


def _plug_two_pods(inst: OvsInstance, subnet: str) -> tuple[str, str, str]:
    """Two pods on br0 with NORMAL forwarding; returns (pod_a_ns, pod_a_ip, pod_b_ns)."""
    pod_a, pod_b = unique_name("pa"), unique_name("pb")
    a = inst.add_veth_port("br0", "va" + pod_a[-6:], pod_a, mac="02:00:00:00:00:0a",
                           ip_cidr=f"{subnet}.1/24", ofport_request=11,
                           external_ids={"pod": "a", "iface-id": "default/a"})
    b = inst.add_veth_port("br0", "vb" + pod_b[-6:], pod_b, mac="02:00:00:00:00:0b",
                           ip_cidr=f"{subnet}.2/24", ofport_request=12)
    assert (a, b) == (11, 12)
    assert inst.vsctl("get", "interface", "va" + pod_a[-6:], "external_ids:iface-id").strip() \
        == '"default/a"'
    inst.replace_flows("br0", "priority=0,actions=NORMAL")
    return pod_a, f"{subnet}.1", pod_b


def test_two_pods_exchange_tcp(ovs_factory):
    inst = ovs_factory(bridges={"br0": 1})
    pod_a, ip_a, pod_b = _plug_two_pods(inst, "10.91.0")
    # the pod ends really are in the pods, with TX offload off
    out = inst.pod_exec(pod_a, "ethtool", "-k", "eth0")
    assert "tx-checksumming: off" in out
    tcp_exchange(pod_a, ip_a, pod_b)
    assert int(inst.dump_flows("br0", stats=True).split("n_packets=")[1].split(",")[0]) > 0
    # with the flows gone (fail_mode=secure), nothing passes
    inst.del_flows("br0")
    res = subprocess.run(["ip", "netns", "exec", pod_b, "ping", "-c1", "-W1", ip_a],
                         capture_output=True, timeout=10)
    assert res.returncode != 0
    inst.del_port("br0", "vb" + pod_b[-6:])
    assert "vb" + pod_b[-6:] not in inst.vsctl("list-ports", "br0")
    inst.delete_netns(pod_b)
    assert pod_b not in netns_list()
    inst.stop()
    assert pod_a not in netns_list() and pod_b not in netns_list()


def test_two_instances_at_once(ovs_factory):
    one = ovs_factory(bridges={"br0": 1})
    two = ovs_factory(bridges={"br0": 2})
    assert one.netns != two.netns
    a1 = _plug_two_pods(one, "10.92.0")
    a2 = _plug_two_pods(two, "10.93.0")
    tcp_exchange(*a1)
    tcp_exchange(*a2)
    assert one.datapath_id("br0") == 1 and two.datapath_id("br0") == 2
    one.replace_flows("br0", "priority=5,actions=drop")
    assert two.flow_lines("br0") == ["priority=0 actions=NORMAL"]
    assert one.trace("br0", "tcp,in_port=11").dropped
    assert two.trace("br0", "tcp,in_port=11,dl_dst=ff:ff:ff:ff:ff:ff").output_ports == [
        65534, 12] or sorted(two.trace(
            "br0", "tcp,in_port=11,dl_dst=ff:ff:ff:ff:ff:ff").output_ports) == [12, 65534]
