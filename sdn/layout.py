"""Where pods are plugged in: nodes, their bridges, ofports, MACs and routes.

A live switch tells its port map through OVSDB; offline (`sdnctl compile`), the layout is
derived from the objects alone, deterministically: pods sorted by name get ofports 10, 11, ...
on their node's bridge, the tunnel port is 1, a pod's MAC is 0a:58 followed by its IPv4
address (the convention of OVN-Kubernetes), and each remote node is reached through the tunnel
by its pod CIDR (or, without one, by the addresses of its pods).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field

from flows.ir import Bridge, Gateway, PodPort, Route
from sdn.policy.model import Cluster, Pod

TUNNEL_OFPORT = 1
FABRIC_UPLINK_OFPORT = 2  # a node bridge's link to the fabric switch (fabric mode)
FIRST_FABRIC_OFPORT = 100  # the fabric switch's link to each node, in node name order
FIRST_POD_OFPORT = 10
GATEWAY_MAC = "0a:58:a9:fe:00:01"  # the bridge's own (proxy ARP answers, rewritten eth_src)
GATEWAY_OFPORT = 2  # a host-mode node bridge's port into the node's stack (sdn-gw)
GATEWAY_PORT_MAC = "0a:58:a9:fe:00:02"  # that port's, on the node's side
FABRIC_GATEWAY_OFPORT = 3  # the gateway port of a fabric-node bridge (2 is its fabric uplink)
DEFAULT_NODE = "node-1"
BRIDGE_NAME = "br-sdn"
FABRIC = "fabric"  # the name of the fabric switch in programs and layouts


def pod_mac(pod: Pod) -> str:
    """0a:58:<IPv4 address bytes>, or a stable hash when the pod has no IPv4 address."""
    for ip in pod.ips:
        addr = ipaddress.ip_address(ip)
        if addr.version == 4:
            raw = addr.packed
            break
    else:
        raw = hashlib.blake2b(pod.key.encode(), digest_size=4).digest()
    return "0a:58:" + ":".join(f"{b:02x}" for b in raw)


@dataclass
class NodeInfo:
    name: str
    address: str
    pod_cidrs: tuple[str, ...]
    pods: list[Pod] = field(default_factory=list)


@dataclass
class Layout:
    nodes: dict[str, NodeInfo]
    pod_node: dict[str, str]  # pod key -> node name
    ofports: dict[str, dict[str, int]]  # node -> pod key -> ofport

    def node_of(self, pod: Pod) -> str:
        return self.pod_node[pod.key]

    def port_map(self, node: str) -> dict[str, int]:
        out = {"tunnel": TUNNEL_OFPORT}
        out.update(self.ofports.get(node, {}))
        return out

    def _cidrs(self, info: NodeInfo) -> tuple[str, ...]:
        return info.pod_cidrs or tuple(
            ip + ("/32" if ipaddress.ip_address(ip).version == 4 else "/128")
            for p in info.pods for ip in p.ips)

    def fabric_ports(self) -> dict[str, int]:
        """The fabric switch's port towards each node."""
        return {n: FIRST_FABRIC_OFPORT + i for i, n in enumerate(sorted(self.nodes))}

    def fabric_bridge(self) -> Bridge:
        """The fabric switch: no pods; each node's pod addresses out of that node's port; it
        judges every rule of the cluster."""
        ports = self.fabric_ports()
        routes = tuple(Route(cidr, ports[n], None, n)
                       for n in sorted(self.nodes) for cidr in self._cidrs(self.nodes[n]))
        return Bridge(FABRIC, (), routes, tuple(sorted(ports.values())), GATEWAY_MAC, "fabric")

    def bridge(self, node: str, mode: str = "host", gateway: Gateway | None = None) -> Bridge:
        """The bridge of one node: "host" (judges its own pods' rules, tunnels to the other
        nodes; with its gateway port into the node's stack when given) or "fabric-node" (spoof
        guard and delivery only; every pod packet goes to the fabric switch)."""
        info = self.nodes[node]
        ports = self.ofports.get(node, {})
        pods = tuple(PodPort(p.key, ports[p.key], pod_mac(p), p.ips)
                     for p in sorted(info.pods, key=lambda p: p.key) if p.ips)
        if mode == "fabric-node":
            return Bridge(BRIDGE_NAME, pods, (Route("0.0.0.0/0", FABRIC_UPLINK_OFPORT, None, FABRIC),),
                          (FABRIC_UPLINK_OFPORT,), GATEWAY_MAC, mode)
        routes = []
        for other in sorted(self.nodes.values(), key=lambda n: n.name):
            if other.name == node:
                continue
            for cidr in self._cidrs(other):
                routes.append(Route(cidr, TUNNEL_OFPORT, other.address, other.name))
        return Bridge(BRIDGE_NAME, pods, tuple(routes), (TUNNEL_OFPORT,), GATEWAY_MAC, mode, gateway)

    def gateways(self, service_cidrs: tuple[str, ...] = ()) -> dict[str, Gateway]:
        """Each node's gateway port as `lab up` and the agent make it (sdn/node_setup.py):
        ofport 2, the node's own addresses (its pod CIDRs' first address, its Node address)."""
        out = {}
        for name, info in sorted(self.nodes.items()):
            own = [str(ipaddress.ip_network(c, strict=False)[1]) for c in info.pod_cidrs] + [info.address]
            out[name] = Gateway(GATEWAY_OFPORT, GATEWAY_PORT_MAC, tuple(dict.fromkeys(own)), tuple(service_cidrs))
        return out


def _fallback_address(i: int) -> str:
    # TEST-NET-1 (RFC 5737): documentation addresses, never routed.
    return f"192.0.2.{i + 1}"


def build_layout(cluster: Cluster, port_maps: dict[str, dict[str, int]] | None = None) -> Layout:
    """Place every pod on a node and give it an ofport. Pods without spec.nodeName are spread
    over the nodes in name order; `port_maps` (node -> pod key -> ofport) overrides ofports."""
    names = set(cluster.nodes) | {p.node for p in cluster.pods.values() if p.node}
    if not names:
        names = {DEFAULT_NODE}
    ordered = sorted(names)
    nodes = {}
    for i, name in enumerate(ordered):
        n = cluster.nodes.get(name)
        address = n.addresses[0] if n and n.addresses else _fallback_address(i)
        nodes[name] = NodeInfo(name, address, n.pod_cidrs if n else ())
    pod_node = {}
    spread = 0
    for pod in sorted(cluster.pods.values(), key=lambda p: p.key):
        node = pod.node
        if node is None:
            node = ordered[spread % len(ordered)]
            spread += 1
        nodes[node].pods.append(pod)
        pod_node[pod.key] = node
    ofports: dict[str, dict[str, int]] = {}
    for name, info in nodes.items():
        given = (port_maps or {}).get(name, {})
        used = set(given.values()) | {TUNNEL_OFPORT, FABRIC_UPLINK_OFPORT}
        assigned = {}
        nxt = FIRST_POD_OFPORT
        for pod in sorted(info.pods, key=lambda p: p.key):
            if pod.key in given:
                assigned[pod.key] = given[pod.key]
                continue
            while nxt in used:
                nxt += 1
            assigned[pod.key] = nxt
            used.add(nxt)
        ofports[name] = assigned
    return Layout(nodes, pod_node, ofports)


def load_port_map(path: str) -> dict[str, int]:
    """A port map file: JSON {"ns/pod": ofport, ...} (the shape `sdnctl compile` prints)."""
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object of pod name -> ofport")
    return {k: v for k, v in data.items() if k != "tunnel"}
