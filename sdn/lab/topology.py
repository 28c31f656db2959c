"""From manifests to a lab plan: which nodes, their addresses and pod CIDRs, where each pod goes.

Nodes come from Node objects and from pods' spec.nodeName (a node named only by a pod gets a
free pod CIDR 10.244.N.0/24 and underlay address 192.168.50.(10+N)); with neither, the lab has
one node, node-1, as `sdnctl compile` assumes. Pods without spec.nodeName are spread over the
nodes in name order, the way `sdnctl compile` places them offline (sdn/layout.py), so the
offline tables and the lab's agree. What the lab decided is written back into the manifests
the controllers read: Node objects with spec.podCIDR and an InternalIP, every pod with its
spec.nodeName and, once plugged in, status.podIP.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any

from sdn.layout import DEFAULT_NODE

DEFAULT_CIDR = "10.244.{n}.0/24"
DEFAULT_ADDRESS = "192.168.50.{n}"
POD_MTU = 1450  # 1500 on the underlay minus the VXLAN/Geneve header


@dataclass(frozen=True)
class NodePlan:
    name: str
    address: str  # underlay address: the Node's InternalIP, the tunnel endpoint
    cidr: str  # pod CIDR

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.cidr)[1])


def doc_key(doc: dict) -> tuple[str, str, str, str]:
    """(API group, kind, namespace, name): what `kubectl apply` replaces. Namespaced objects
    without a namespace are in "default"."""
    kind = doc.get("kind", "")
    meta = doc.get("metadata") or {}
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    ns = "" if kind in ("Namespace", "Node") else (meta.get("namespace") or "default")
    return group, kind, ns, meta.get("name", "")


def describe_key(key: tuple[str, str, str, str]) -> str:
    group, kind, ns, name = key
    what = f"{kind} {ns + '/' if ns else ''}{name}"
    return f"{what} ({group})" if kind == "NetworkPolicy" and group != "networking.k8s.io" else what


def pod_key(doc: dict) -> str:
    _, _, ns, name = doc_key(doc)
    return f"{ns}/{name}"


def node_doc_info(doc: dict) -> tuple[str | None, str | None]:
    """(pod CIDR, InternalIP) of a Node document, if it has them."""
    spec = doc.get("spec") or {}
    cidr = spec.get("podCIDR") or next(iter(spec.get("podCIDRs") or []), None)
    address = None
    for entry in (doc.get("status") or {}).get("addresses") or []:
        if entry.get("type") == "InternalIP":
            address = entry.get("address")
            break
    return cidr, address


def pod_ports(doc: dict) -> list[dict]:
    """Every containerPort of every container: [{name, containerPort, protocol}]."""
    out = []
    for c in (doc.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            out.append({"name": p.get("name"), "containerPort": int(p["containerPort"]),
                        "protocol": p.get("protocol") or "TCP"})
    return out


def served(ports: list[dict]) -> tuple[list[int], list[int]]:
    """(TCP ports, UDP ports) a pod's server listens on (SCTP: the kernel here has none)."""
    tcp = sorted({p["containerPort"] for p in ports if p["protocol"] == "TCP"})
    udp = sorted({p["containerPort"] for p in ports if p["protocol"] == "UDP"})
    return tcp, udp


def plan_nodes(docs: list[dict], existing: dict[str, NodePlan] | None = None) -> dict[str, NodePlan]:
    """Every node the documents need (plus `existing`), with address and pod CIDR."""
    plans: dict[str, NodePlan] = dict(existing or {})
    declared: dict[str, tuple[str | None, str | None]] = {}
    for doc in docs:
        if doc.get("kind") == "Node":
            declared[doc["metadata"]["name"]] = node_doc_info(doc)
    named = {(d.get("spec") or {}).get("nodeName") for d in docs if d.get("kind") == "Pod"}
    names = set(declared) | {n for n in named if n} | set(plans)
    if not names:
        names = {DEFAULT_NODE}
    used_cidrs = {ipaddress.ip_network(p.cidr) for p in plans.values()}
    used_cidrs |= {ipaddress.ip_network(c) for c, _ in declared.values() if c}
    used_addrs = {p.address for p in plans.values()} | {a for _, a in declared.values() if a}
    n = 1
    for name in sorted(names):
        if name in plans:
            continue
        cidr, address = declared.get(name, (None, None))
        if cidr is None:
            while any(ipaddress.ip_network(DEFAULT_CIDR.format(n=n)).overlaps(u) for u in used_cidrs):
                n += 1
            cidr = DEFAULT_CIDR.format(n=n)
            used_cidrs.add(ipaddress.ip_network(cidr))
        if address is None:
            k = 11
            while DEFAULT_ADDRESS.format(n=k) in used_addrs:
                k += 1
            address = DEFAULT_ADDRESS.format(n=k)
            used_addrs.add(address)
        plans[name] = NodePlan(name, address, cidr)
    return plans


def check_nodes(plans: dict[str, NodePlan]) -> list[str]:
    """Problems that make a lab impossible: overlapping pod CIDRs, shared addresses, IPv6."""
    problems = []
    items = sorted(plans.values(), key=lambda p: p.name)
    for i, a in enumerate(items):
        net = ipaddress.ip_network(a.cidr)
        if net.version != 4 or ipaddress.ip_address(a.address).version != 4:
            problems.append(f"node {a.name}: the lab supports IPv4 pod CIDRs and node addresses only")
            continue
        if net.prefixlen > 29:
            problems.append(f"node {a.name}: pod CIDR {a.cidr} is too small")
        for b in items[i + 1:]:
            if net.overlaps(ipaddress.ip_network(b.cidr)):
                problems.append(f"nodes {a.name} and {b.name}: pod CIDRs {a.cidr} and {b.cidr} overlap")
            if a.address == b.address:
                problems.append(f"nodes {a.name} and {b.name}: both have address {a.address}")
    return problems


def cluster_cidr(cidrs: list[str]) -> str:
    """The smallest network holding every node's pod CIDR (the cluster's pod network)."""
    nets = [ipaddress.ip_network(c) for c in cidrs]
    out = nets[0]
    while not all(n.subnet_of(out) for n in nets):  # type: ignore[arg-type]  # the lab gives its nodes CIDRs of one family
        out = out.supernet()
    return str(out)


def underlay_prefix(addresses: list[str]) -> int:
    """The prefix length of one underlay subnet holding every node address (at most /24)."""
    ips = [ipaddress.ip_address(a) for a in addresses]
    prefix = 24
    while prefix > 8:
        nets = {ipaddress.ip_network(f"{ip}/{prefix}", strict=False) for ip in ips}
        if len(nets) == 1:
            return prefix
        prefix -= 1
    return prefix


def spread(pod_docs: list[dict], nodes: list[str], counts: dict[str, int] | None = None,
           round_robin: bool = True) -> dict[str, str]:
    """Pod key -> node for pods without spec.nodeName. round_robin (at `lab up`): in key
    order over the nodes in name order, like sdn/layout.py; else to the node with the fewest
    pods (a pod applied later)."""
    out = {}
    ordered = sorted(nodes)
    counts = dict(counts or {})
    i = 0
    for doc in sorted(pod_docs, key=pod_key):
        if (doc.get("spec") or {}).get("nodeName"):
            continue
        if round_robin:
            node = ordered[i % len(ordered)]
            i += 1
        else:
            node = min(ordered, key=lambda n: (counts.get(n, 0), n))
        counts[node] = counts.get(node, 0) + 1
        out[pod_key(doc)] = node
    return out


def node_manifest(plan: NodePlan, doc: dict | None) -> dict:
    """The Node object the controllers read: the user's (labels and all) with the lab's pod
    CIDR and InternalIP."""
    out: dict[str, Any] = copy.deepcopy(doc) if doc else {"apiVersion": "v1", "kind": "Node",
                                                          "metadata": {"name": plan.name}}
    out.setdefault("spec", {})
    out["spec"]["podCIDR"] = plan.cidr
    out["spec"]["podCIDRs"] = [plan.cidr]
    status = out.setdefault("status", {})
    addrs = [a for a in status.get("addresses") or [] if a.get("type") != "InternalIP"]
    status["addresses"] = [{"type": "InternalIP", "address": plan.address}] + addrs
    return out


def pod_manifest(doc: dict, node: str, ip: str | None) -> dict:
    """A Pod as the lab runs it: on `node`, with its real address (or none yet)."""
    out = copy.deepcopy(doc)
    out.setdefault("metadata", {}).setdefault("namespace", "default")
    out.setdefault("spec", {})["nodeName"] = node
    status = out.setdefault("status", {})
    for k in ("podIP", "podIPs", "hostIP"):
        status.pop(k, None)
    if ip:
        status["phase"] = "Running"
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    else:
        status["phase"] = "Pending"
    return out


def requested_ip(doc: dict, cidr: str) -> str | None:
    """The address a manifest asks for (status.podIP), if it lies inside the node's pod CIDR
    and is not its network, gateway or broadcast address."""
    ip = (doc.get("status") or {}).get("podIP")
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    net = ipaddress.ip_network(cidr)
    if addr.version != 4 or addr not in net or addr in (net.network_address, net[1], net.broadcast_address):
        return None
    return str(addr)


def namespaces_of(docs: list[dict]) -> set[str]:
    out = set()
    for d in docs:
        k = doc_key(d)
        if k[1] == "Namespace":
            out.add(k[3])
        elif k[2]:
            out.add(k[2])
    return out


def implicit_namespaces(docs: list[dict]) -> list[dict]:
    """Namespace objects for namespaces that objects use but nobody declared (the API server
    would refuse those objects; the lab creates the namespace, labelled only with its name)."""
    declared = {doc_key(d)[3] for d in docs if d.get("kind") == "Namespace"}
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            for ns in sorted(namespaces_of(docs) - declared)]


def merge(docs: list[dict], updates: list[dict]) -> list[dict]:
    """`docs` with each of `updates` replacing the object of the same identity, or appended."""
    out = list(docs)
    index = {doc_key(d): i for i, d in enumerate(out)}
    for u in updates:
        k = doc_key(u)
        if k in index:
            out[index[k]] = u
        else:
            index[k] = len(out)
            out.append(u)
    return out


def sort_docs(docs: list[dict]) -> list[dict]:
    order = {"Node": 0, "Namespace": 1, "Pod": 2, "NetworkPolicy": 3}

    def key(d: dict) -> Any:
        g, kind, ns, name = doc_key(d)
        return order.get(kind, 9), ns, name, g
    return sorted(docs, key=key)
