"""The lab's external host: a network namespace outside the cluster, on the nodes' underlay,
serving TCP and UDP (sdn.lab.serve), with each node's pod CIDR routed through that node (as a
routed network learns them, e.g. from BGP: replies come back the way requests went). Pods
reach it through their node's gateway, masqueraded to the node's address; it reaches pods
through those routes (its own address kept: ingress ipBlock rules judge it) or a NodePort.

    PREFIX_ext (192.168.50.253)   the address below the control plane's, or the highest free one
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from sdn.lab import nodes as N
from sdn.lab import pods as P
from sdn.ovs.instance import run_cmd

TCP_PORT = 80
UDP_PORT = 81
NAME = "external"


def ext_netns(prefix: str) -> str:
    return f"{prefix}_ext"  # '_' is never in a Kubernetes name: no node can clash


def pick_address(network: ipaddress.IPv4Network | ipaddress.IPv6Network, taken: set[str]) -> str:
    """The highest free address of the underlay, leaving the very highest to a control plane."""
    free = [str(a) for a in reversed(list(network.hosts())) if str(a) not in taken]
    return free[1] if len(free) > 1 else free[0]


def start(prefix: str, underlay: dict, address: str, routes: dict[str, str], logs: Path) -> dict:
    """Make the external host and start its server; returns its record (lab.json "external")."""
    ns = ext_netns(prefix)
    N.host_on_underlay(underlay, ns, "ext0", "next", address)
    for cidr, via in sorted(routes.items()):
        route(ns, cidr, via)
    pid = P.start_server(ns, NAME, [TCP_PORT], [UDP_PORT], logs / "external.log")
    return {"netns": ns, "address": address, "tcp_port": TCP_PORT, "udp_port": UDP_PORT, "server_pid": pid}


def route(netns: str, cidr: str, via: str) -> None:
    """The external host reaches the pods of `cidr` through the node at `via`."""
    run_cmd(["ip", "-n", netns, "route", "replace", cidr, "via", via])


def masquerade(node_netns: str, cluster_cidr: str, uplink: str = N.PHY_BRIDGE) -> None:
    """Traffic from pods to outside the cluster leaves the node with the node's address (as
    every CNI's default SNAT does); idempotent."""
    rule = ["-s", cluster_cidr, "!", "-d", cluster_cidr, "-o", uplink, "-j", "MASQUERADE",
            "-m", "comment", "--comment", "sdn: pods to outside the cluster"]
    pre = ["ip", "netns", "exec", node_netns, "iptables", "-t", "nat"]
    if run_cmd(pre + ["-C", "POSTROUTING", *rule], check=False).returncode != 0:
        run_cmd(pre + ["-A", "POSTROUTING", *rule])
