"""The desired tables of each live bridge: the cluster from the manifests, placed where OVSDB
says the pods are plugged in.

Offline (`sdnctl compile`) the layout invents ofports and MACs; here they are real: a pod is
local to a node's bridge when its interface is on that bridge (sdn.switch.ovsdb), with the
ofport OVS gave it and the MAC in `attached-mac` (else the 0a:58:<IPv4> convention). Pods
elsewhere are reached through the bridge's tunnel port, by their node's pod CIDRs (or their
own addresses when the node has none). A bridge without a tunnel port gets no routes: sending
to a guessed port number could hand traffic to a pod.

Fabric enforcement (`enforce="fabric"`, as `sdnctl compile --enforce fabric` offline): node
bridges only guard and deliver, sending every pod packet up their fabric uplink; the bridge of
the node named `fabric` is the fabric switch, which judges every rule and routes each node's
pod addresses out of that node's fabric link (both found by their OVSDB roles).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flows.compiler import Program
from flows.flow import FlowDiff
from flows.ir import Bridge, Gateway, NodeGateway, PodPort, Route
from flows.recheck import ENFORCE as ENFORCE_EXISTING
from flows.recheck import EXISTING_CONNECTIONS
from sdn.layout import FABRIC, GATEWAY_MAC, Layout, pod_mac
from sdn.policy.model import Cluster, Pod
from sdn.switch.ovsdb import BridgeView

if TYPE_CHECKING:
    from sdn.engine import Engine


@dataclass
class Desired:
    programs: dict[str, Program]
    bridges: dict[str, Bridge]
    port_maps: dict[str, dict[str, int]]  # node -> pod -> ofport (what is plugged where)
    addresses: dict[str, str] = field(default_factory=dict)  # node -> tunnel address
    cluster: Cluster | None = None  # the cluster compiled (OVSDB addresses filled in)
    problems: list[str] = field(default_factory=list)
    # Per bridge, the flow difference from the programs of the previous compile (an
    # incremental engine update); None when the programs were built afresh.
    changes: dict[str, FlowDiff] | None = None


def with_ovsdb_addresses(cluster: Cluster, views: dict[str, BridgeView | None]) -> Cluster:
    """A copy of the cluster where pods without an IP in the manifests get the one recorded
    in OVSDB (the CNI knows the address before any manifest does)."""
    pods = dict(cluster.pods)
    for view in views.values():
        if view is None:
            continue
        for key, port in view.pods().items():
            pod = pods.get(key)
            if pod is not None and not pod.ips and port.ips:
                pods[key] = dataclasses.replace(pod, ips=port.ips)
    return Cluster(dict(cluster.namespaces), pods, dict(cluster.nodes), dict(cluster.policies))


def _cidrs(cluster: Cluster, layout: Layout, node: str, placement: dict[str, str]) -> tuple[str, ...]:
    """A node's pod CIDRs, or the addresses of the pods placed on it."""
    info = layout.nodes[node]
    return info.pod_cidrs or tuple(
        ip + ("/32" if ipaddress.ip_address(ip).version == 4 else "/128")
        for p in sorted(cluster.pods.values(), key=lambda p: p.key) if placement.get(p.key) == node
        for ip in p.ips)


def fabric_bridge(cluster: Cluster, layout: Layout, view: BridgeView, placement: dict[str, str],
                  problems: list[str]) -> Bridge:
    """The fabric switch: no pods; every node's pod addresses out of that node's link."""
    links = view.fabric_links()
    routes = []
    for node in sorted(layout.nodes):
        if node not in links:
            problems.append(f"{FABRIC}: no fabric link to node {node} (external_ids sdn-role=fabric-link, "
                            f"sdn-node={node}); its pods are unreachable through the fabric")
            continue
        routes += [Route(cidr, links[node], None, node) for cidr in _cidrs(cluster, layout, node, placement)]
    gateways = []
    for node, port in sorted(view.fabric_gateways().items()):
        if node not in layout.nodes:
            continue
        addresses = node_addresses(cluster, node)
        if not addresses:
            problems.append(f"{FABRIC}: node {node} has a gateway port but no Node object with a pod CIDR or "
                            f"address: traffic from the node is judged like any other")
        gateways.append(NodeGateway(port.ofport, node, addresses, _cidrs(cluster, layout, node, placement),
                                    port.service_cidrs))
    return Bridge(view.name, (), tuple(routes), tuple(sorted(links.values())), GATEWAY_MAC, "fabric",
                  node_gateways=tuple(gateways))


def live_bridge(cluster: Cluster, layout: Layout, node: str, view: BridgeView,
                placement: dict[str, str], problems: list[str], enforce: str = "host") -> Bridge:
    """The bridge description of `node` from its OVSDB view."""
    pods = []
    for key, port in sorted(view.pods().items()):
        pod = cluster.pods.get(key)
        if pod is None:
            problems.append(f"{node}: interface {port.name} belongs to pod {key}, which the manifests "
                            f"do not declare; it gets no forwarding")
            continue
        if not pod.ips:
            problems.append(f"{node}: pod {key} has no IP (manifests or OVSDB external_ids:ip)")
            continue
        pods.append(PodPort(key, port.ofport, port.mac or pod_mac(pod), pod.ips))
    if enforce == "fabric":
        uplink = view.uplink_ofport
        if uplink is None:
            problems.append(f"{node}: no fabric uplink (external_ids sdn-role=fabric-uplink) on bridge "
                            f"{view.name}; its pods reach only each other")
            return Bridge(view.name, tuple(pods), (), (), GATEWAY_MAC, "fabric-node")
        return Bridge(view.name, tuple(pods), (Route("0.0.0.0/0", uplink, None, FABRIC),), (uplink,),
                      GATEWAY_MAC, "fabric-node", node_gateway(cluster, node, view.gateway, problems))
    routes = []
    tunnel = view.tunnel_ofport
    if tunnel is not None:
        for other in sorted(layout.nodes.values(), key=lambda n: n.name):
            if other.name == node:
                continue
            for cidr in _cidrs(cluster, layout, other.name, placement):
                routes.append(Route(cidr, tunnel, other.address, other.name))
    return Bridge(view.name, tuple(pods), tuple(routes), (tunnel,) if tunnel is not None else (),
                  GATEWAY_MAC, "host", node_gateway(cluster, node, view.gateway, problems))


def node_gateway(cluster: Cluster, node: str, port, problems: list[str]) -> Gateway | None:
    """The bridge's gateway into the node's stack, with the node's own addresses: the first
    address of each of its pod CIDRs (the gateway port's) and its Node addresses."""
    if port is None:
        return None
    addresses = node_addresses(cluster, node)
    if not addresses:
        problems.append(f"{node}: gateway port {port.name} but no Node object with a pod CIDR or address: "
                        f"traffic from the node is judged like any other")
    if not port.mac:
        problems.append(f"{node}: gateway port {port.name} has no MAC in OVSDB; nothing is sent to the node")
        return None
    return Gateway(port.ofport, port.mac, addresses, port.service_cidrs)


def node_addresses(cluster: Cluster, node: str) -> tuple[str, ...]:
    """A node's own addresses: the first of each of its pod CIDRs (its gateway port's) and its
    Node addresses."""
    info = cluster.nodes.get(node)
    addresses = [str(ipaddress.ip_network(cidr, strict=False)[1]) for cidr in (info.pod_cidrs if info else ())]
    addresses += list(info.addresses if info else ())
    return tuple(dict.fromkeys(addresses))


class LiveCompiler:
    """The programs of every bridge OVSDB shows: one sdn.engine.Engine over the cluster, its
    bridges described from OVSDB. A batch of changed objects (the Kubernetes agent's) recomputes only
    the policies it can affect and only their flows; new manifests, or an OVSDB view that
    changed (a pod plugged in or out, a bridge appearing), build the engine again."""

    def __init__(self, enforce: str = "host", existing_connections: str = ENFORCE_EXISTING):
        if enforce not in ("host", "fabric"):
            raise ValueError(f"enforce must be host or fabric, not {enforce!r}")
        if existing_connections not in EXISTING_CONNECTIONS:
            raise ValueError(f"--existing-connections must be one of {', '.join(EXISTING_CONNECTIONS)}, "
                             f"not {existing_connections!r}")
        self.enforce = enforce
        self.existing_connections = existing_connections
        self.engine: Engine | None = None
        self._views: dict[str, BridgeView | None] = {}
        self._views_key: tuple | None = None
        self._cluster: Cluster | None = None
        self._problems: list[str] = []

    @staticmethod
    def _key(views: dict[str, BridgeView | None]) -> tuple:
        return tuple(sorted((n, None if v is None else v.compiled_inputs()) for n, v in views.items()))

    def _placement(self, layout: Layout) -> dict[str, str]:
        placement = dict(layout.pod_node)
        for node, view in self._views.items():  # where a pod is plugged in wins over spec.nodeName
            if view is not None:
                for key in view.pods():
                    placement[key] = node
        return placement

    def _bridge(self, layout: Layout, name: str, mode: str) -> Bridge | None:
        view, cluster = self._views.get(name), self._cluster
        if view is None or cluster is None:  # (the engine asks only after compile set both)
            return None
        placement = self._placement(layout)
        if self.enforce == "fabric" and name == FABRIC:
            bridge = fabric_bridge(cluster, layout, view, placement, self._problems)
        else:
            bridge = live_bridge(cluster, layout, name, view, placement, self._problems, self.enforce)
        return dataclasses.replace(bridge, existing_connections=self.existing_connections)

    def _with_address(self, obj):
        """A pod without an IP in the API gets the one OVSDB recorded (as with_ovsdb_addresses)."""
        if isinstance(obj, Pod) and not obj.ips:
            for view in self._views.values():
                port = view.pods().get(obj.key) if view is not None else None
                if port is not None and port.ips:
                    return dataclasses.replace(obj, ips=port.ips)
        return obj

    def compile(self, cluster: Cluster, views: dict[str, BridgeView | None],
                previous: dict[str, Program] | None = None, upserts=None, deletes=()) -> Desired:
        from sdn.engine import Engine

        key = self._key(views)
        changes = None
        engine = self.engine
        if engine is None or upserts is None or key != self._views_key:
            self._views, self._views_key, self._problems = dict(views), key, []
            self._cluster = with_ovsdb_addresses(cluster, views)
            nodes = [n for n, v in sorted(views.items()) if v is not None]
            self.engine = None
            self.engine = engine = Engine(self._cluster, nodes=nodes, enforce=self.enforce,
                                          previous=previous, bridge_factory=self._bridge)
        else:
            try:
                changes = engine.apply([self._with_address(o) for o in upserts], list(deletes))
            except Exception:
                self.engine = None  # rebuilt from the whole cluster next time
                raise
        programs = engine.programs()
        bridges = {n: c.bridge for n, c in engine.compilers.items()}
        port_maps = {n: {p.pod: p.ofport for p in b.pods} for n, b in bridges.items()}
        addresses = {n: info.address for n, info in engine.layout.nodes.items()}
        if changes is not None:
            empty = FlowDiff((), (), ())
            changes = {n: changes.get(n, empty) for n in programs}
        return Desired(programs, bridges, port_maps, addresses, self._cluster, list(self._problems), changes)
