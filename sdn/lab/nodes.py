"""Nodes of the lab: one network namespace each, with its own ovsdb-server and ovs-vswitchd
(userspace datapath: one per namespace is an OVS limit), an underlay link, tunnel ports, and
(enforce fabric) a link to the fabric switch.

    PREFIX_underlay      a Linux bridge `br-ul`; each node's `ul0` is plugged into it
    PREFIX-NODE          the node: ovsdb-server + ovs-vswitchd (state dir nodes/NODE/)
        br-phy           netdev bridge holding `ul0`; the node's underlay address (its Node
                         InternalIP) sits on br-phy's internal port, so ovs/route learns the
                         underlay (the "br-phy" recipe of OVS userspace native tunnelling)
        br-sdn           the pod bridge (fail_mode secure, programmed by the node's agent):
                         tunnel port `tun0` (VXLAN or Geneve, remote_ip=flow: the flows set
                         tun_dst) at ofport 1; pods' veths from 10 on (the CNI plugin).
                         Made by sdn/node_setup.py, as by the agent and on the Vagrant VMs
                         enforce fabric: `fab0` at ofport 2, a veth to the fabric switch
    PREFIX_fabric        enforce fabric: the fabric switch `fabric`, port 100+i towards the
                         i-th node in name order (sdn/layout.py)

Nothing here creates an interface outside the lab's own namespaces: every veth is made with
`ip -n NS link add ... peer ... netns NS2`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from sdn.layout import (
    FABRIC,
    FABRIC_UPLINK_OFPORT,
    FIRST_FABRIC_OFPORT,
    GATEWAY_OFPORT,
    GATEWAY_PORT_MAC,
    TUNNEL_OFPORT,
)
from sdn.node_setup import NodeBridge, SetupError, setup
from sdn.ovs.instance import OvsInstance, add_netns, del_netns, netns_exists, run_cmd

BRIDGE = "br-sdn"  # sdn.layout.BRIDGE_NAME
PHY_BRIDGE = "br-phy"
UNDERLAY_BRIDGE = "br-ul"
TUNNEL_PORT = "tun0"
UPLINK_PORT = "fab0"
FABRIC_BRIDGE = FABRIC  # the program of the fabric switch is named "fabric": so is its bridge
FABRIC_DPID = 0xFAB
TUNNEL_TYPES = ("vxlan", "geneve")
# Shared with the Vagrant lab (vagrant/provision/bridge.sh): br-sdn and its tunnel port.


def node_netns(prefix: str, node: str) -> str:
    return f"{prefix}-{node}"


def underlay_netns(prefix: str) -> str:
    return f"{prefix}_underlay"  # '_' is never in a Kubernetes name: no node can clash


def fabric_netns(prefix: str) -> str:
    return f"{prefix}_fabric"


def phy_mac(address: str) -> str:
    """The MAC of a node's underlay port: 0a:5a + its IPv4 address (stable, unique)."""
    return "0a:5a:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(address).packed)


def node_ovs(rundir: Path, netns: str) -> OvsInstance:
    return OvsInstance(rundir, netns=netns, create_netns=True)


def _netns(ovs: OvsInstance) -> str:
    """The network namespace of a lab switch (every one runs in its own)."""
    if ovs.netns is None:
        raise ValueError(f"{ovs.rundir}: a lab switch runs in a network namespace")
    return ovs.netns


def create_underlay(prefix: str) -> str:
    ns = underlay_netns(prefix)
    if not netns_exists(ns):
        add_netns(ns)
    run_cmd(["ip", "-n", ns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"])
    run_cmd(["ip", "-n", ns, "link", "set", UNDERLAY_BRIDGE, "up"])
    return ns


def host_on_underlay(underlay: dict, netns: str, ifname: str, peer: str, address: str) -> None:
    """A plain host (the control plane, the external host) in its own namespace on the
    underlay: a veth into the underlay bridge, its address, TX checksums computed in the kernel
    (the nodes' underlay ends in an OVS userspace datapath, which forwards what a veth sends
    with its checksum left to the NIC: every reply would be dropped)."""
    if not netns_exists(netns):
        add_netns(netns)
    run_cmd(["ip", "-n", netns, "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", underlay["netns"]])
    run_cmd(["ip", "-n", underlay["netns"], "link", "set", peer, "master", UNDERLAY_BRIDGE, "up"])
    run_cmd(["ip", "-n", netns, "addr", "add", f"{address}/{underlay['prefixlen']}", "dev", ifname])
    run_cmd(["ip", "-n", netns, "link", "set", ifname, "up"])
    run_cmd(["ip", "netns", "exec", netns, "ethtool", "-K", ifname, "tx", "off"])


def start_node(ovs: OvsInstance, *, prefix: str, slot: int, dpid: int, address: str,
               underlay_prefixlen: int, controller: str | list[str] | None,
               tunnel: str = "vxlan", gateway: tuple[str, str, str] | None = None,
               gateway_ofport: int = GATEWAY_OFPORT) -> None:
    """Start the node's OVS and build br-phy (underlay) and br-sdn (pods, tunnel; with
    `gateway` = (pod CIDR, cluster CIDR, service CIDR or "") also the gateway port into the
    node's stack)."""
    if tunnel not in TUNNEL_TYPES:
        raise ValueError(f"tunnel must be one of {TUNNEL_TYPES}, not {tunnel!r}")
    ovs.start()
    ns = _netns(ovs)
    ul = underlay_netns(prefix)
    peer = f"n{slot}"
    run_cmd(["ip", "-n", ns, "link", "add", "ul0", "type", "veth", "peer", "name", peer, "netns", ul])
    run_cmd(["ip", "-n", ul, "link", "set", peer, "master", UNDERLAY_BRIDGE, "up"])
    run_cmd(["ip", "-n", ns, "link", "set", "ul0", "up"])
    ovs.vsctl("add-br", PHY_BRIDGE, "--", "set", "bridge", PHY_BRIDGE, "datapath_type=netdev",
              f"other-config:hwaddr={phy_mac(address)}", "other-config:disable-in-band=true",
              f"other-config:datapath-id={0xF000 + dpid:016x}",
              "--", "add-port", PHY_BRIDGE, "ul0")
    run_cmd(["ip", "-n", ns, "addr", "add", f"{address}/{underlay_prefixlen}", "dev", PHY_BRIDGE])
    run_cmd(["ip", "-n", ns, "link", "set", PHY_BRIDGE, "up"])
    node_bridge(ovs, dpid=dpid, controller=controller, tunnel=tunnel, local_ip=address, gateway=gateway,
                gateway_ofport=gateway_ofport)
    got = ovs.ofport(TUNNEL_PORT)
    if got != TUNNEL_OFPORT:
        raise RuntimeError(f"{ns}: tunnel port got ofport {got}, not {TUNNEL_OFPORT}")


def node_bridge(ovs: OvsInstance, *, dpid: int, controller: str | list[str] | None, tunnel: str,
                local_ip: str, gateway: tuple[str, str, str] | None = None,
                gateway_ofport: int = GATEWAY_OFPORT) -> None:
    """br-sdn, its tunnel port and its gateway port, made by the code the agent
    runs at start and the Vagrant VMs' provisioning too (sdn/node_setup.py), against this
    node's private OVS (netdev datapath)."""
    if not 0 <= dpid < 2 ** 64:
        raise ValueError(f"dpid {dpid} out of range")
    gw: dict = {}
    if gateway is not None:
        pod_cidr, cluster_cidr, service_cidr = gateway
        net = ipaddress.ip_network(pod_cidr)
        gw = {"gateway_ip": f"{net[1]}/{net.prefixlen}", "gateway_mac": GATEWAY_PORT_MAC,
              "gateway_ofport": gateway_ofport, "cluster_cidr": cluster_cidr, "service_cidr": service_cidr or "",
              "netns": ovs.netns}
    controllers = tuple([controller] if isinstance(controller, str) else controller or [])
    try:
        setup(NodeBridge(dpid=f"{dpid:016x}", db=ovs.db_remote, bridge=BRIDGE, datapath_type="netdev",
                         controllers=controllers, tunnel=tunnel, local_ip=local_ip, tunnel_port=TUNNEL_PORT,
                         tunnel_ofport=TUNNEL_OFPORT, timeout=int(ovs.cmd_timeout), env=ovs.env, **gw))
    except SetupError as e:
        raise RuntimeError(f"{ovs.netns}: {e}") from None


def set_neighbours(ovs: OvsInstance, others: dict[str, str]) -> None:
    """Tell the node's tunnel code the underlay MAC of every other node (address -> MAC), so
    the first tunnelled packet is not dropped while OVS resolves the next hop with ARP."""
    for address, mac in others.items():
        ovs.appctl("tnl/neigh/set", PHY_BRIDGE, address, mac)


def start_fabric(ovs: OvsInstance, controller: str | list[str] | None) -> None:
    ovs.start()
    ovs.add_bridge(FABRIC_BRIDGE, dpid=FABRIC_DPID, fail_mode="secure", controller=controller)


def link_fabric(node: OvsInstance, fabric: OvsInstance, slot: int, fabric_ofport: int, node_name: str) -> None:
    """A veth between the node's br-sdn (ofport 2) and the fabric switch (`fabric_ofport`).
    Both ends say what they are in external_ids (sdn-role, and sdn-node on the fabric side)."""
    peer = f"n{slot}"
    run_cmd(["ip", "-n", _netns(node), "link", "add", UPLINK_PORT, "type", "veth", "peer", "name",
             peer, "netns", _netns(fabric)])
    run_cmd(["ip", "-n", _netns(fabric), "link", "set", peer, "up"])
    run_cmd(["ip", "-n", _netns(node), "link", "set", UPLINK_PORT, "up"])
    node.vsctl("add-port", BRIDGE, UPLINK_PORT, "--", "set", "interface", UPLINK_PORT,
               f"ofport_request={FABRIC_UPLINK_OFPORT}", "external_ids:sdn-role=fabric-uplink")
    fabric.vsctl("add-port", FABRIC_BRIDGE, peer, "--", "set", "interface", peer,
                 f"ofport_request={fabric_ofport}", *fabric_link_ids(node_name))
    for ovs, port, want in ((node, UPLINK_PORT, FABRIC_UPLINK_OFPORT), (fabric, peer, fabric_ofport)):
        got = ovs.ofport(port)
        if got != want:
            raise RuntimeError(f"{ovs.netns}: port {port} got ofport {got}, not {want}")


def fabric_link_ids(node_name: str) -> list[str]:
    """What the fabric switch's port towards a node says of it: the node, and that the node has
    a gateway port (every lab node has one: the fabric sends it what is for the node's stack)."""
    return ["external_ids:sdn-role=fabric-link", f"external_ids:sdn-node={node_name}",
            "external_ids:sdn-node-gateway=true"]


def renumber_fabric_ports(fabric: OvsInstance, moves: dict[str, tuple[int, int]]) -> None:
    """Move nodes' fabric-side ports to other ofports (the node order changed): node ->
    (slot, new ofport). All are taken off the bridge first, so no move collides with another."""
    for slot, _ in moves.values():
        fabric.vsctl("--if-exists", "del-port", FABRIC_BRIDGE, f"n{slot}")
    for node, (slot, ofport) in moves.items():
        peer = f"n{slot}"
        fabric.vsctl("add-port", FABRIC_BRIDGE, peer, "--", "set", "interface", peer,
                     f"ofport_request={ofport}", *fabric_link_ids(node))
    for slot, ofport in moves.values():
        got = fabric.ofport(f"n{slot}")
        if got != ofport:
            raise RuntimeError(f"{fabric.netns}: port n{slot} got ofport {got}, not {ofport}")


def unlink_fabric(fabric: OvsInstance, slot: int) -> None:
    peer = f"n{slot}"
    fabric.vsctl("--if-exists", "del-port", FABRIC_BRIDGE, peer)
    run_cmd(["ip", "-n", _netns(fabric), "link", "del", peer], check=False)


def fabric_ofports(nodes: list[str]) -> dict[str, int]:
    """The fabric switch's port towards each node (sdn.layout.Layout.fabric_ports)."""
    return {n: FIRST_FABRIC_OFPORT + i for i, n in enumerate(sorted(nodes))}


def remove_underlay(prefix: str) -> None:
    del_netns(underlay_netns(prefix))
