"""The desired tables of each live bridge: the cluster from the manifests, placed where OVSDB
says the pods are plugged in.

Offline (`sdnctl compile`) the layout invents ofports and MACs; here they are real: a pod is
local to a node's bridge when its interface is on that bridge (sdn.switch.ovsdb), with the
ofport OVS gave it and the MAC in `attached-mac` (else the 0a:58:<IPv4> convention). Pods
elsewhere are reached through the bridge's tunnel port, by their node's pod CIDRs (or their
own addresses when the node has none). A bridge without a tunnel port gets no routes: sending
to a guessed port number could hand traffic to a pod.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from flows.compiler import Program, compile_bridge
from flows.ir import Bridge, PodPort, Route
from sdn.layout import GATEWAY_MAC, Layout, build_layout, pod_mac
from sdn.policy.model import Cluster
from sdn.policy.rules import cluster_rules
from sdn.switch.ovsdb import BridgeView


@dataclass
class Desired:
    programs: dict[str, Program]
    bridges: dict[str, Bridge]
    port_maps: dict[str, dict[str, int]]  # node -> pod -> ofport (what is plugged where)
    addresses: dict[str, str] = field(default_factory=dict)  # node -> tunnel address
    cluster: Cluster | None = None  # the cluster compiled (OVSDB addresses filled in)
    problems: list[str] = field(default_factory=list)


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


def live_bridge(cluster: Cluster, layout: Layout, node: str, view: BridgeView,
                placement: dict[str, str], problems: list[str]) -> Bridge:
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
    routes = []
    tunnel = view.tunnel_ofport
    if tunnel is not None:
        for other in sorted(layout.nodes.values(), key=lambda n: n.name):
            if other.name == node:
                continue
            cidrs = other.pod_cidrs or tuple(
                ip + ("/32" if ipaddress.ip_address(ip).version == 4 else "/128")
                for p in cluster.pods.values() if placement.get(p.key) == other.name for ip in p.ips)
            for cidr in cidrs:
                routes.append(Route(cidr, tunnel, other.address, other.name))
    return Bridge(view.name, tuple(pods), tuple(routes), (tunnel,) if tunnel is not None else (),
                  GATEWAY_MAC, "host")


def compile_live(cluster: Cluster, views: dict[str, BridgeView | None],
                 previous: dict[str, Program] | None = None) -> Desired:
    """Programs for every node whose bridge OVSDB shows (nodes without a view are skipped)."""
    problems: list[str] = []
    cluster = with_ovsdb_addresses(cluster, views)
    layout = build_layout(cluster)
    placement = dict(layout.pod_node)
    for node, view in views.items():  # where a pod is plugged in wins over spec.nodeName
        if view is not None:
            for key in view.pods():
                placement[key] = node
    rules, isolation = cluster_rules(cluster)
    programs, bridges, port_maps = {}, {}, {}
    for node, view in sorted(views.items()):
        if view is None:
            continue
        bridge = live_bridge(cluster, layout, node, view, placement, problems)
        programs[node] = compile_bridge(bridge, rules, isolation, (previous or {}).get(node))
        bridges[node] = bridge
        port_maps[node] = {p.pod: p.ofport for p in bridge.pods}
    addresses = {n: info.address for n, info in layout.nodes.items()}
    return Desired(programs, bridges, port_maps, addresses, cluster, problems)
