"""The agent sets up its node at start (sdn/agent_setup.py -> sdn/node_setup.py), idempotently,
on a real private Open vSwitch in its own network namespace: a node without a bridge gets one
(fail_mode secure, its controller, the tunnel port at its InternalIP, the gateway port with
the pod CIDR's first address and the route for the cluster's pod network); setting it up again
is a no-op (nothing changed, the controller row and the flows kept); bad settings change
nothing."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

import pytest

from sdn.agent_setup import node_bridge
from sdn.k8s.settings import Settings
from sdn.node_setup import NodeBridge, SetupError, setup

pytestmark = pytest.mark.ovs

NODE = {"metadata": {"name": "node-7"}, "spec": {"podCIDR": "10.244.7.0/24"},
        "status": {"addresses": [{"type": "Hostname", "address": "node-7"},
                                 {"type": "InternalIP", "address": "192.168.56.17"}]}}
CONTROLLER = "tcp:127.0.0.1:6653"


def agent_bridge(ovs, node: dict = NODE, **settings) -> NodeBridge:
    """What the agent computes at start from its settings and its Node, aimed at `ovs` (the
    agent itself runs in the node's namespace; here the test runs outside it)."""
    s = Settings(ovsdb=ovs.db_remote, tunnel="vxlan", setup_node=True, datapath_type="netdev",
                 cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/16", **settings)
    return replace(node_bridge(s, node, CONTROLLER), netns=ovs.netns, env=ovs.env, timeout=30)


def test_a_node_without_a_bridge_gets_one_and_a_second_start_changes_nothing(ovs_factory):
    ovs = ovs_factory()
    get = lambda *a: ovs.vsctl("get", *a).strip().strip('"')  # noqa: E731
    assert "br-sdn" not in ovs.vsctl("list-br").split()
    changes = setup(agent_bridge(ovs))
    assert changes[0].startswith("bridge br-sdn created (dpid 00000000c0a83811, netdev")
    assert get("bridge", "br-sdn", "fail_mode") == "secure"
    assert get("bridge", "br-sdn", "other-config:datapath-id") == f"{int(ipaddress.ip_address('192.168.56.17')):016x}"
    assert ovs.vsctl("get-controller", "br-sdn").split() == [CONTROLLER]
    assert ovs.ofport("tun0") == 1 and get("interface", "tun0", "options:local_ip") == "192.168.56.17"
    assert get("interface", "tun0", "external_ids:sdn-role") == "tunnel"
    assert ovs.ofport("sdn-gw") == 2 and get("interface", "sdn-gw", "external_ids:sdn-role") == "gateway"
    assert get("interface", "sdn-gw", "external_ids:sdn-service-cidrs") == "10.96.0.0/16"
    addr = json.loads(ovs.netns_exec(ovs.netns, "ip", "-j", "-4", "addr", "show", "sdn-gw"))
    assert [f"{a['local']}/{a['prefixlen']}" for a in addr[0]["addr_info"]] == ["10.244.7.1/24"]
    route = json.loads(ovs.netns_exec(ovs.netns, "ip", "-j", "-4", "route", "show", "10.244.0.0/16"))
    assert route and route[0]["dev"] == "sdn-gw"
    assert ovs.netns_exec(ovs.netns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"

    # the agent starts again (a restart, a new version of the DaemonSet): nothing changes
    controller_row = ovs.vsctl("get", "bridge", "br-sdn", "controller").strip()
    ovs.ofctl("add-flow", "br-sdn", "table=0,priority=7,actions=drop")
    assert setup(agent_bridge(ovs)) == []
    assert ovs.vsctl("get", "bridge", "br-sdn", "controller").strip() == controller_row
    assert "priority=7" in ovs.dump_flows("br-sdn")


def test_an_existing_bridge_keeps_its_datapath_id_and_what_differs_is_repaired(ovs_factory):
    """A bridge made before (the lab, the Vagrant provisioning) keeps its datapath-id; what the
    agent needs and is missing (the gateway port, a controller) is added, nothing else."""
    ovs = ovs_factory()
    setup(NodeBridge(dpid="00000000000000a1", db=ovs.db_remote, datapath_type="netdev", controllers=(CONTROLLER,),
                     tunnel="vxlan", local_ip="192.168.56.17", env=ovs.env, timeout=30))
    changes = setup(agent_bridge(ovs))
    assert ovs.vsctl("get", "bridge", "br-sdn", "other-config:datapath-id").strip().strip('"') == "00000000000000a1"
    assert not any(c.startswith(("bridge ", "tunnel port")) for c in changes), changes
    assert any(c.startswith("gateway port sdn-gw added") for c in changes), changes
    ovs.vsctl("del-controller", "br-sdn")
    assert setup(agent_bridge(ovs)) == [f"bridge br-sdn: controller {CONTROLLER}"]


def test_a_node_without_a_pod_cidr_gets_no_gateway_and_a_clear_error(ovs_factory):
    ovs = ovs_factory()
    node = {**NODE, "spec": {}}
    with pytest.raises(SetupError, match="node node-7: no pod CIDR"):
        setup(agent_bridge(ovs, node))
    assert "br-sdn" not in ovs.vsctl("list-br").split()  # nothing made
    # without an InternalIP: no tunnel, and no datapath-id to make a bridge with
    bare = {"metadata": {"name": "node-8"}, "spec": {"podCIDR": "10.244.8.0/24"}, "status": {}}
    with pytest.raises(SetupError, match="does not exist and no datapath-id"):
        setup(agent_bridge(ovs, bare))
    assert "br-sdn" not in ovs.vsctl("list-br").split()
