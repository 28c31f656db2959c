"""The lab's lifecycle and CLI contract: `lab up` twice is refused and changes nothing, `lab
down` cleans up after a crash (agents and switches killed with SIGKILL, a half-written record,
a `lab up` killed half-way), `lab pods -o json` has the documented shape and names usable
namespaces, nodes can be added to a running lab, Geneve works as well as VXLAN, and without
root the lab says so and stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sdn.lab import probe as PR
from sdn.lab.lab import Lab, LabError
from sdn.lab.state import State
from sdn.ovs.instance import netns_list
from tests.e2e_model import namespace_doc, node_doc
from tests.lab_harness import lab_state_dir, new_pod_doc

pytestmark = pytest.mark.ovs

SDNCTL = [sys.executable, "-m", "sdn.cli"]
REPO = Path(__file__).resolve().parent.parent


def small_cluster(nodes=("node-1", "node-2")) -> list[dict]:
    # node-1 and node-2 from Node objects; any other only from the pods' spec.nodeName
    docs = [node_doc(n) for n in nodes if n in ("node-1", "node-2")] + [namespace_doc("x")]
    docs += [new_pod_doc("x/a", {"pod": "a"}, node=nodes[0]), new_pod_doc("x/b", {"pod": "b"}, node=nodes[-1])]
    return docs


def leftovers(lab: Lab) -> dict:
    return {"netns": [n for n in netns_list() if n.startswith((lab.prefix + "-", lab.prefix + "_"))],
            "processes": lab.teardown.our_processes(), "state": lab.state.dir.exists()}


def clean(lab: Lab) -> bool:
    return leftovers(lab) == {"netns": [], "processes": [], "state": False}


@pytest.fixture
def lab(request):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root", pytrace=False)
    lab = Lab(State(lab_state_dir(request.node.name[5:9])))
    lab.down()
    try:
        yield lab
    finally:
        lab.down()
        assert clean(lab), leftovers(lab)


def all_reach(lab: Lab, probes=((80, "TCP"), (80, "UDP"))) -> dict:
    doc = lab.matrix(list(probes), timeout=0.5)
    return {(m["protocol"], s, d): v for m in doc["matrices"] for s, row in m["measured"].items()
            for d, v in row.items()}


def test_up_twice_is_refused_and_changes_nothing(lab):
    lab.up_docs(small_cluster())
    before = (lab.state.record_path.read_text(), lab.state.manifests_path.read_text(), leftovers(lab))
    with pytest.raises(LabError, match="already running"):
        lab.up_docs(small_cluster(("node-7",)))
    after = (lab.state.record_path.read_text(), lab.state.manifests_path.read_text(), leftovers(lab))
    assert before == after
    assert set(all_reach(lab).values()) == {PR.ALLOWED}


def test_pods_json_shape_and_namespaces(lab):
    lab.up_docs(small_cluster())
    out = subprocess.run(SDNCTL + ["lab", "--state-dir", str(lab.state.dir), "pods", "-o", "json"],
                         capture_output=True, text=True, check=True)
    pods = json.loads(out.stdout)
    assert [(p["namespace"], p["name"]) for p in pods] == [("x", "a"), ("x", "b")]
    for p in pods:
        assert set(p) == {"namespace", "name", "node", "ip", "netns", "ports"}
        assert p["ports"] == [{"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                              {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"}]
        # the namespace is a real one: `ip netns exec NETNS ...` sees the pod's address
        addr = subprocess.run(["ip", "netns", "exec", p["netns"], "ip", "-4", "-o", "addr", "show", "eth0"],
                              capture_output=True, text=True, check=True).stdout
        assert f" {p['ip']}/24 " in addr
        offload = subprocess.run(["ip", "netns", "exec", p["netns"], "ethtool", "-k", "eth0"],
                                 capture_output=True, text=True, check=True).stdout
        assert "tx-checksumming: off" in offload
    assert {p["node"] for p in pods} == {"node-1", "node-2"}
    assert pods[0]["ip"].startswith("10.244.1.") and pods[1]["ip"].startswith("10.244.2.")


def test_down_after_a_crash(lab):
    lab.up_docs(small_cluster())
    record = lab.state.load()
    # SIGKILL an agent and a switch, and leave a half-written record behind
    os.kill(record["controllers"]["node-1"]["pid"], signal.SIGKILL)
    os.kill(int((Path(record["nodes"]["node-2"]["rundir"]) / "ovs-vswitchd.pid").read_text()), signal.SIGKILL)
    half = dict(record, pods={}, controllers={}, phase="starting")
    lab.state.save(half)
    assert leftovers(lab)["netns"]
    removed = Lab(State(lab.state.dir)).down()
    assert clean(lab), leftovers(lab)
    assert removed["netns"]


def test_down_after_up_killed_half_way(lab):
    manifest = lab.state.dir.with_name(lab.state.dir.name + ".yaml")
    manifest.write_text(yaml.safe_dump_all(small_cluster(("node-1", "node-2", "node-3"))))
    try:
        proc = subprocess.Popen(SDNCTL + ["lab", "--state-dir", str(lab.state.dir), "up", "-f", str(manifest)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # kill it once it made a node or two
            if len(leftovers(lab)["netns"]) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert leftovers(lab)["netns"], "the up was killed before it made anything"
        out = subprocess.run(SDNCTL + ["lab", "--state-dir", str(lab.state.dir), "down"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert clean(lab), leftovers(lab)
    finally:
        manifest.unlink(missing_ok=True)


def test_add_a_node_to_a_running_lab_with_geneve(lab):
    lab.up_docs(small_cluster(("node-1",)), tunnel="geneve")
    report = lab.apply_docs([node_doc("node-2"), new_pod_doc("x/c", {"pod": "c"}, node="node-2")])
    assert report == ["Node node-2 created", "Pod x/c created"]
    pods = {p["name"]: p for p in lab.pods()}
    assert pods["c"]["node"] == "node-2" and pods["c"]["ip"].startswith("10.244.2.")
    got = all_reach(lab)
    assert set(got.values()) == {PR.ALLOWED}, got
    assert lab.status()["problems"] == []
    # and away again: its pods go with it
    report = lab.delete_docs([node_doc("node-2")])
    assert report == ["Node node-2 deleted", "Pod x/c deleted (with Node node-2)"]
    assert [p["name"] for p in lab.pods()] == ["a", "b"]
    assert set(all_reach(lab).values()) == {PR.ALLOWED}
    assert lab.status()["problems"] == []
    assert not [n for n in netns_list() if n.endswith("-node-2") and n.startswith(lab.prefix)]


def test_cli_status_and_not_root(lab, tmp_path):
    out = subprocess.run(SDNCTL + ["lab", "--state-dir", str(lab.state.dir), "status"], capture_output=True,
                         text=True)
    assert out.returncode == 3 and "no lab is running" in out.stderr
    # as an unprivileged user: a clear message, exit 1, nothing made
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(nobody + SDNCTL + ["lab", "--state-dir", str(tmp_path / "x"), "up", "-f",
                                            str(REPO / "examples")], capture_output=True, text=True,
                         cwd="/", env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode == 1, out
    assert "needs root" in out.stderr
    out = subprocess.run(nobody + ["make", "-s", "-C", str(REPO), "demo-root"], capture_output=True, text=True)
    assert out.returncode != 0 and "make demo needs root" in out.stderr


def test_fabric_wiring_and_renumbering(tmp_path):
    """The fabric switch's links (sdn/lab/nodes.py): node side ofport 2, fabric side 100+i in
    node name order, roles in external_ids; a node that sorts first moves the others up."""
    from sdn.lab import nodes as N
    from sdn.ovs.instance import OvsInstance
    from tests.conftest import unique_name
    made = []

    def ovs(tag):
        o = OvsInstance(Path("/run") / unique_name(tag), netns=unique_name(tag))
        made.append(o)
        return o
    try:
        fabric = ovs("fab")
        N.start_fabric(fabric, controller=None)
        nodes = {}
        for slot, name in enumerate(["node-1", "node-2"]):
            nodes[name] = ovs(f"n{slot}")
            nodes[name].start()
            nodes[name].add_bridge(N.BRIDGE, dpid=slot + 1)
        ports = N.fabric_ofports(list(nodes))
        for slot, name in enumerate(["node-1", "node-2"]):
            N.link_fabric(nodes[name], fabric, slot, ports[name], name)
        assert {n: fabric.ofport(f"n{i}") for i, n in enumerate(["node-1", "node-2"])} == {"node-1": 100, "node-2": 101}
        assert all(o.ofport(N.UPLINK_PORT) == 2 for o in nodes.values())
        ids = fabric.vsctl("get", "interface", "n1", "external_ids")
        assert 'sdn-node=node-2' in ids and 'sdn-role=fabric-link' in ids
        # node-0 joins: everyone moves up by one, then it takes 100
        ports = N.fabric_ofports(["node-0", "node-1", "node-2"])
        N.renumber_fabric_ports(fabric, {"node-1": (0, ports["node-1"]), "node-2": (1, ports["node-2"])})
        nodes["node-0"] = ovs("n2")
        nodes["node-0"].start()
        nodes["node-0"].add_bridge(N.BRIDGE, dpid=3)
        N.link_fabric(nodes["node-0"], fabric, 2, ports["node-0"], "node-0")
        assert [fabric.ofport(f"n{i}") for i in range(3)] == [101, 102, 100]
    finally:
        for o in reversed(made):
            o.stop()
            shutil.rmtree(o.rundir, ignore_errors=True)
