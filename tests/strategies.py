"""Hypothesis strategies for whole clusters, as Kubernetes manifest dicts.

Generated clusters go through the manifest loader like hand-written files do, so the loader,
the evaluator, the rule translation and the flow compiler are all exercised together. The
vocabularies are deliberately small so that selectors both hit and miss, named ports resolve
to different numbers on different pods, and ipBlocks and their excepts cut through the pods.

Shape of a generated cluster:
- 2-3 nodes node-1..node-3 with podCIDR 10.244.N.0/24 and InternalIP 192.168.50.1N;
- 2-3 namespaces (x, y, z) with random labels (team, env);
- 2-5 pods per namespace on a random node, IPs from that node's podCIDR (sometimes none),
  random labels (app, tier) and containerPorts named http/dns/metrics with varying numbers
  and protocols;
- 1-5 networking.k8s.io/v1 policies covering every field shape; sometimes an
  extensions/v1beta1 or net.alpha.kubernetes.io/v1alpha1 policy and the namespace
  annotations that switch those on (or leave them off).

Everything generated is valid; `invalid_variants` makes single-fault invalid copies.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from dataclasses import dataclass, field

from hypothesis import strategies as st

from sdn.policy.model import (
    ALPHA_ISOLATION_ANNOTATION,
    BETA_POLICY_ANNOTATION,
    NAMESPACE_NAME_LABEL,
)

API_V1 = "networking.k8s.io/v1"
API_BETA = "extensions/v1beta1"
API_ALPHA = "net.alpha.kubernetes.io/v1alpha1"

PROTOCOLS = ("TCP", "UDP", "SCTP")
NAMESPACES = ("x", "y", "z")
NS_LABELS = {"team": ("red", "blue"), "env": ("prod", "dev")}
POD_LABELS = {"app": ("web", "db", "cache"), "tier": ("fe", "be")}
# Keys selectors may use that no object ever carries (DoesNotExist/NotIn always hold, etc.).
NEVER_SET_KEY = "zone"
# containerPort names and the numbers a pod may give them.
NAMED_PORTS = {"http": (80, 8080, 81), "dns": (53, 5353), "metrics": (9000, 9090, 80)}
UNUSED_PORT_NAME = "grpc"  # a name policies use and no pod declares
PORT_NUMBERS = (53, 80, 81, 443, 5353, 8080, 9000, 9090)
BASE_PROBE_PORTS = (53, 80, 81, 8080, 9000)
HOST_NUMBERS = tuple(range(2, 40))  # last octet of pod IPs: /28 and /30 blocks cut through them


def node_name(n: int) -> str:
    return f"node-{n}"


def node_cidr(n: int) -> str:
    return f"10.244.{n}.0/24"


# ---------------------------------------------------------------------------------------------
# Objects


def node_doc(n: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node_name(n), "labels": {"kubernetes.io/hostname": node_name(n)}},
        "spec": {"podCIDR": node_cidr(n), "podCIDRs": [node_cidr(n)]},
        "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.50.{10 + n}"},
                                 {"type": "Hostname", "address": node_name(n)}]},
    }


def labels_strategy(vocab: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    """A random subset of the vocabulary's keys, each with one of its values."""
    return st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in vocab.items()})


@st.composite
def container_ports(draw) -> list[dict]:
    """containerPorts: some of the named ports (numbers and protocols vary per pod), maybe an
    unnamed one."""
    out = []
    for name, numbers in NAMED_PORTS.items():
        if draw(st.booleans()):
            out.append({"name": name, "containerPort": draw(st.sampled_from(numbers)),
                        "protocol": draw(st.sampled_from(PROTOCOLS))})
    if draw(st.integers(0, 3)) == 0:
        port: dict = {"containerPort": draw(st.sampled_from(PORT_NUMBERS))}
        proto = draw(st.sampled_from((None,) + PROTOCOLS))
        if proto:
            port["protocol"] = proto
        out.append(port)
    return out


def pod_doc(ns: str, name: str, labels: dict, node: int, ip: str | None, ports: list[dict]) -> dict:
    # Ports are split over two containers (names stay unique in the pod).
    half = len(ports) // 2
    containers = [{"name": "main", "image": "agnhost", "ports": ports[:half]},
                  {"name": "side", "image": "agnhost", "ports": ports[half:]}]
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {"nodeName": node_name(node), "containers": containers},
        "status": {"phase": "Running" if ip else "Pending"},
    }
    if ip:
        doc["status"]["podIP"] = ip
        doc["status"]["podIPs"] = [{"ip": ip}]
    return doc


# ---------------------------------------------------------------------------------------------
# Selectors, peers, ports


def _values(vocab: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(vocab), min_size=1, max_size=2, unique=True)


@st.composite
def requirement(draw, vocab: dict[str, tuple[str, ...]]) -> dict:
    """One matchExpressions entry, any operator, keys sometimes absent from every object."""
    key = draw(st.sampled_from(sorted(vocab) + [NEVER_SET_KEY]))
    op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
    req = {"key": key, "operator": op}
    if op in ("In", "NotIn"):
        req["values"] = draw(_values(vocab.get(key, ("a", "b"))))
    return req


@st.composite
def label_selector(draw, vocab: dict[str, tuple[str, ...]]) -> dict:
    """{} (all), matchLabels, matchExpressions, or both."""
    shape = draw(st.sampled_from(("empty", "labels", "exprs", "both")))
    sel: dict = {}
    if shape in ("labels", "both"):
        keys = draw(st.lists(st.sampled_from(sorted(vocab)), min_size=1, max_size=2, unique=True))
        sel["matchLabels"] = {k: draw(st.sampled_from(vocab[k])) for k in keys}
    if shape in ("exprs", "both"):
        sel["matchExpressions"] = draw(st.lists(requirement(vocab), min_size=1, max_size=2))
    return sel


def namespace_vocab(namespaces: list[str]) -> dict[str, tuple[str, ...]]:
    return {**NS_LABELS, NAMESPACE_NAME_LABEL: tuple(namespaces)}


@st.composite
def cidr_block(draw, pod_ips: list[str]) -> str:
    """A CIDR near the pods: around a pod IP or a random 10.244.x.y, a prefix length from /0
    to /32; occasionally with host bits set (valid, the loader warns)."""
    if pod_ips and draw(st.integers(0, 3)):
        base = draw(st.sampled_from(pod_ips))
    else:
        base = f"10.244.{draw(st.integers(0, 4))}.{draw(st.integers(0, 63))}"
    prefixes = (0, 8, 16, 20, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32)
    plen = draw(st.sampled_from(prefixes))
    net = ipaddress.ip_network(f"{base}/{plen}", strict=False)
    if plen < 32 and draw(st.integers(0, 9)) == 0:
        return f"{base}/{plen}"  # host bits set
    return str(net)


@st.composite
def ip_block(draw, pod_ips: list[str]) -> dict:
    """{ipBlock: {cidr, except}} with excepts that are strict subsets of the cidr, chosen
    around pods inside it so they carve pods out."""
    if draw(st.integers(0, 9)) == 0:
        # IPv6 blocks match no (IPv4) pod but still make rules and flows; "::/0 except
        # fd00::/8" is several CIDRs, the IPv6 internet of a dual-stack policy.
        return {"ipBlock": draw(st.sampled_from((
            {"cidr": "fd00::/8"}, {"cidr": "fd00:10:244::/48"}, {"cidr": "2001:db8::/32"},
            {"cidr": "::/0", "except": ["fd00::/8"]})))}
    if draw(st.integers(0, 9)) == 0:
        return {"ipBlock": {"cidr": "0.0.0.0/0"}}
    cidr = draw(cidr_block(pod_ips))
    net = ipaddress.ip_network(cidr, strict=False)
    block: dict = {"cidr": cidr}
    if net.prefixlen < 32 and draw(st.booleans()):
        inside = [ip for ip in pod_ips if ipaddress.ip_address(ip) in net]
        excepts = []
        for _ in range(draw(st.integers(1, 2))):
            if inside and draw(st.integers(0, 3)):
                base = ipaddress.ip_address(draw(st.sampled_from(inside)))
            else:
                base = net.network_address + draw(st.integers(0, min(net.num_addresses - 1, 1 << 16)))
            plen = draw(st.integers(net.prefixlen + 1, 32))
            exc = str(ipaddress.ip_network(f"{base}/{plen}", strict=False))
            if exc not in excepts:
                excepts.append(exc)
        block["except"] = excepts
    return {"ipBlock": block}


@st.composite
def v1_peer(draw, namespaces: list[str], pod_ips: list[str]) -> dict:
    kind = draw(st.sampled_from(("pods", "namespaces", "both", "all-namespaces", "ipBlock")))
    if kind == "pods":
        return {"podSelector": draw(label_selector(POD_LABELS))}
    if kind == "namespaces":
        return {"namespaceSelector": draw(label_selector(namespace_vocab(namespaces)))}
    if kind == "both":
        return {"namespaceSelector": draw(label_selector(namespace_vocab(namespaces))),
                "podSelector": draw(label_selector(POD_LABELS))}
    if kind == "all-namespaces":
        return {"namespaceSelector": {}}
    return draw(ip_block(pod_ips))


def _protocol_field(draw, port: dict) -> dict:
    proto = draw(st.sampled_from((None,) + PROTOCOLS))
    if proto:
        port["protocol"] = proto
    return port


@st.composite
def v1_port(draw, *, end_port: bool = True) -> dict:
    """A NetworkPolicyPort: number, range (v1 only), name, or protocol only; protocol TCP,
    UDP, SCTP or absent (TCP)."""
    kinds = ("number", "range", "name", "protocol") if end_port else ("number", "name", "protocol")
    kind = draw(st.sampled_from(kinds))
    port: dict = {}
    if kind == "number":
        port["port"] = draw(st.sampled_from(PORT_NUMBERS))
    elif kind == "range":
        start = draw(st.sampled_from(PORT_NUMBERS + (1, 1000)))
        length = draw(st.sampled_from((0, 1, 2, 9, 100, 1000, 65535)))
        port["port"] = start
        port["endPort"] = min(65535, start + length)
    elif kind == "name":
        port["port"] = draw(st.sampled_from(tuple(NAMED_PORTS) + (UNUSED_PORT_NAME,)))
    if kind == "protocol":
        port["protocol"] = draw(st.sampled_from(PROTOCOLS))
        return port
    return _protocol_field(draw, port)


def _absent_empty_or(draw, items: st.SearchStrategy) -> list | None:
    """None (field absent), [] or a non-empty list."""
    shape = draw(st.sampled_from(("absent", "empty", "list", "list")))
    if shape == "absent":
        return None
    if shape == "empty":
        return []
    return draw(st.lists(items, min_size=1, max_size=3))


V4_INTERNET = {"ipBlock": {"cidr": "0.0.0.0/0"}}
V6_INTERNET = {"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}


@st.composite
def v1_rule(draw, peers_key: str, namespaces: list[str], pod_ips: list[str]) -> dict:
    rule: dict = {}
    if draw(st.integers(0, 7)) == 0:
        # The dual-stack idiom: "the internet", per address family, in rules of their own.
        peers = draw(st.sampled_from(([V4_INTERNET], [V6_INTERNET], [V4_INTERNET, V6_INTERNET])))
    else:
        peers = _absent_empty_or(draw, v1_peer(namespaces, pod_ips))
    if peers is not None:
        rule[peers_key] = peers
    ports = _absent_empty_or(draw, v1_port())
    if ports is not None:
        rule["ports"] = ports
    return rule


@st.composite
def sibling_rules(draw, rules: list[dict], peers_key: str, namespaces: list[str],
                  pod_ips: list[str]) -> list[dict]:
    """Rules as people write them next to each other, which share targets and so often a
    priority level: the same peers on other ports, the same ports for other peers, or the
    dual-stack idiom (IPv4 and IPv6 "internet" in rules of their own, ports drawn apart)."""
    base = rules[0]
    kind = draw(st.sampled_from(("same-peers", "same-ports", "dual-stack")))
    if kind == "same-peers":
        sib = {k: v for k, v in base.items() if k != "ports"}
        ports = _absent_empty_or(draw, v1_port())
        if ports is not None:
            sib["ports"] = ports
    elif kind == "same-ports":
        sib = {k: v for k, v in base.items() if k != peers_key}
        sib[peers_key] = draw(st.lists(v1_peer(namespaces, pod_ips), min_size=1, max_size=2))
    else:
        base = {**{k: v for k, v in base.items() if k != peers_key}, peers_key: [V4_INTERNET]}
        sib = {peers_key: [V6_INTERNET]}
        ports = _absent_empty_or(draw, v1_port())
        if ports is not None:
            sib["ports"] = ports
    pair = [base, copy.deepcopy(sib)]
    if draw(st.booleans()):
        pair.reverse()
    return pair + rules[1:]


@st.composite
def v1_policy(draw, ns: str, name: str, namespaces: list[str], pod_ips: list[str]) -> dict:
    spec: dict = {"podSelector": draw(label_selector(POD_LABELS))}
    types = draw(st.sampled_from((None, None, ["Ingress"], ["Egress"], ["Ingress", "Egress"],
                                  ["Egress", "Ingress"])))
    if types is not None:
        spec["policyTypes"] = types
    for key, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = _absent_empty_or(draw, v1_rule(peers_key, namespaces, pod_ips))
        if rules and draw(st.integers(0, 3)) == 0:
            rules = draw(sibling_rules(rules, peers_key, namespaces, pod_ips))
        if rules is not None:
            spec[key] = rules
    return {"apiVersion": API_V1, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


@st.composite
def beta_policy(draw, ns: str, name: str, namespaces: list[str]) -> dict:
    """extensions/v1beta1: ingress only, a peer is exactly one selector, no endPort; an absent
    from/ports means all, an empty list nothing."""
    peer = st.one_of(
        st.builds(lambda s: {"podSelector": s}, label_selector(POD_LABELS)),
        st.builds(lambda s: {"namespaceSelector": s}, label_selector(namespace_vocab(namespaces))),
    )

    @st.composite
    def rule(draw2) -> dict:
        out: dict = {}
        peers = _absent_empty_or(draw2, peer)
        if peers is not None:
            out["from"] = peers
        ports = _absent_empty_or(draw2, v1_port(end_port=False))
        if ports is not None:
            out["ports"] = ports
        return out

    spec: dict = {"podSelector": draw(label_selector(POD_LABELS))}
    rules = _absent_empty_or(draw, rule())
    if rules is not None:
        spec["ingress"] = rules
    return {"apiVersion": API_BETA, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


@st.composite
def alpha_policy(draw, ns: str, name: str, namespaces: list[str]) -> dict:
    """net.alpha.kubernetes.io/v1alpha1: plain label maps; one allowIncoming rule or none."""
    spec: dict = {"podSelector": draw(labels_strategy(POD_LABELS))}
    if draw(st.integers(0, 4)):
        allow: dict = {}
        ns_labels = st.one_of(labels_strategy(NS_LABELS),
                              st.sampled_from(namespaces).map(lambda n: {NAMESPACE_NAME_LABEL: n}))
        peer = st.one_of(st.builds(lambda s: {"pods": s}, labels_strategy(POD_LABELS)),
                         st.builds(lambda s: {"namespaces": s}, ns_labels))
        peers = _absent_empty_or(draw, peer)
        if peers is not None:
            allow["from"] = peers
        ports = _absent_empty_or(draw, v1_port(end_port=False))
        if ports is not None:
            allow["toPorts"] = ports
        spec["allowIncoming"] = allow
    return {"apiVersion": API_ALPHA, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


# ---------------------------------------------------------------------------------------------
# Whole clusters


@dataclass
class World:
    """What the policy strategies need to know about the objects (names, addresses)."""

    namespaces: list[str]
    pod_ips: list[str]
    ns_docs: list[dict] = field(default_factory=list)
    node_docs: list[dict] = field(default_factory=list)
    pod_docs: list[dict] = field(default_factory=list)


ALPHA_VALUES = ("on", "off", "yes")
BETA_VALUES = (json.dumps({"ingress": {"isolation": "DefaultDeny"}}),
               json.dumps({"ingress": {"isolation": "DefaultDeny"}}),
               json.dumps({"ingress": {}}))


@st.composite
def world(draw, legacy: bool = False) -> World:
    """Nodes, namespaces and pods (no policies). With `legacy`, namespaces may carry the 2016
    isolation annotations."""
    n_nodes = draw(st.integers(2, 3))
    nodes = list(range(1, n_nodes + 1))
    namespaces = sorted(draw(st.lists(st.sampled_from(NAMESPACES), min_size=2, max_size=3,
                                      unique=True)))
    w = World(namespaces, [])
    w.node_docs = [node_doc(n) for n in nodes]
    for ns in namespaces:
        meta: dict = {"name": ns, "labels": draw(labels_strategy(NS_LABELS))}
        if legacy:
            ann = {}
            alpha = draw(st.sampled_from((None,) + ALPHA_VALUES))
            if alpha:
                ann[ALPHA_ISOLATION_ANNOTATION] = alpha
            beta = draw(st.sampled_from((None,) + BETA_VALUES))
            if beta:
                ann[BETA_POLICY_ANNOTATION] = beta
            if ann:
                meta["annotations"] = ann
        w.ns_docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    used: dict[int, set[int]] = {n: set() for n in nodes}
    for ns in namespaces:
        for i in range(draw(st.integers(2, 5))):
            node = draw(st.sampled_from(nodes))
            ip = None
            if draw(st.integers(0, 9)):  # one pod in ten has no IP yet
                host = draw(st.sampled_from([h for h in HOST_NUMBERS if h not in used[node]]))
                used[node].add(host)
                ip = f"10.244.{node}.{host}"
                w.pod_ips.append(ip)
            w.pod_docs.append(pod_doc(ns, f"p{i}", draw(labels_strategy(POD_LABELS)), node, ip,
                                      draw(container_ports())))
    return w


@st.composite
def any_policy(draw, w: World, name: str, legacy: bool) -> dict:
    ns = draw(st.sampled_from(w.namespaces))
    if legacy:
        form = draw(st.sampled_from(("v1", "v1", "beta", "alpha")))
        if form == "beta":
            return draw(beta_policy(ns, name, w.namespaces))
        if form == "alpha":
            return draw(alpha_policy(ns, name, w.namespaces))
    return draw(v1_policy(ns, name, w.namespaces, w.pod_ips))


@dataclass
class Generated:
    """A generated cluster: the world's documents and the policies, kept apart so a test can
    mutate one policy or one pod."""

    world: World
    policies: list[dict]
    legacy: bool

    def documents(self) -> list[dict]:
        """Fresh copies of every document (loading never shares state between compiles)."""
        return copy.deepcopy(self.world.node_docs + self.world.ns_docs + self.world.pod_docs
                             + self.policies)


@st.composite
def wide_policy(draw, w: World, name: str) -> dict:
    """A v1 policy whose rule is wide in all three dimensions: every pod of a namespace, from
    pods of several namespaces, on several ports (for the flow-count property)."""
    ns = draw(st.sampled_from(w.namespaces))
    peers = [{"namespaceSelector": {}}] if draw(st.booleans()) else [
        {"namespaceSelector": draw(label_selector(namespace_vocab(w.namespaces)))},
        {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.1.0/28"]}}]
    ports = draw(st.lists(v1_port(), min_size=2, max_size=4))
    direction, peers_key = draw(st.sampled_from((("ingress", "from"), ("egress", "to"))))
    spec = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            direction: [{peers_key: peers, "ports": ports}]}
    return {"apiVersion": API_V1, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


@st.composite
def clusters(draw, min_policies: int = 1, max_policies: int = 5, wide: bool = False) -> Generated:
    """A valid cluster: 2-3 nodes, 2-3 namespaces, 2-5 pods each, 1-5 policies; about one
    cluster in three has alpha/beta policies and the annotations that enable them. With `wide`,
    one more policy with a rule wide in peers, targets and ports."""
    legacy = draw(st.integers(0, 2)) == 0
    w = draw(world(legacy))
    policies = [draw(any_policy(w, f"np-{i}", legacy))
                for i in range(draw(st.integers(min_policies, max_policies)))]
    if wide:
        policies.append(draw(wide_policy(w, "wide")))
    return Generated(w, policies, legacy)


# ---------------------------------------------------------------------------------------------
# Changes (for change-then-revert) and invalid variants


@st.composite
def changed(draw, g: Generated) -> tuple[str, Generated]:
    """(description, g with one change): a policy replaced, added or removed, the ports or
    peers of one rule changed, or one pod or namespace relabelled."""
    # Rules of one list share their targets, hence often a priority level: the first of
    # several changing while its siblings do not is the interesting case for stable priorities.
    tweakable = sorted(((i, key) for i, p in enumerate(g.policies) if p["apiVersion"] == API_V1
                        for key in ("ingress", "egress") if p["spec"].get(key)),
                       key=lambda ik: -len(g.policies[ik[0]]["spec"][ik[1]]))
    kinds = ["tweak-ports", "tweak-peers"] if tweakable else []
    if g.policies:
        kinds += ["replace", "remove"]
    kinds += ["add", "relabel", "relabel-namespace"]
    kind = draw(st.sampled_from(kinds))
    w = copy.deepcopy(g.world)
    policies = copy.deepcopy(g.policies)
    if kind.startswith("tweak"):
        # One rule of one policy changes; its neighbours (same targets) do not.
        i, key = draw(st.sampled_from(tweakable))
        rules = policies[i]["spec"][key]
        j = 0 if draw(st.booleans()) else draw(st.integers(0, len(rules) - 1))
        if kind == "tweak-ports":
            # Half the time "all ports": the rule then overlaps its neighbours.
            new_ports = None if draw(st.booleans()) else _absent_empty_or(draw, v1_port())
            rules[j].pop("ports", None)
            if new_ports is not None:
                rules[j]["ports"] = new_ports
        else:
            peers_key = "from" if key == "ingress" else "to"
            new_peers = None if draw(st.booleans()) else _absent_empty_or(
                draw, v1_peer(w.namespaces, w.pod_ips))
            rules[j].pop(peers_key, None)
            if new_peers is not None:
                rules[j][peers_key] = new_peers
        meta = policies[i]["metadata"]
        what = f"{kind} of {meta['namespace']}/{meta['name']} {key}[{j}]"
    elif kind == "relabel-namespace":
        i = draw(st.integers(0, len(w.ns_docs) - 1))
        ns = w.ns_docs[i]
        ns["metadata"]["labels"] = draw(labels_strategy(NS_LABELS))
        what = f"relabelled namespace {ns['metadata']['name']}"
    elif kind == "add":
        pol = draw(any_policy(w, f"np-{len(policies)}", g.legacy))
        policies.append(pol)
        what = f"added {pol['metadata']['namespace']}/{pol['metadata']['name']}"
    elif kind == "remove":
        i = draw(st.integers(0, len(policies) - 1))
        pol = policies.pop(i)
        what = f"removed {pol['metadata']['namespace']}/{pol['metadata']['name']}"
    elif kind == "replace":
        i = draw(st.integers(0, len(policies) - 1))
        old = policies[i]["metadata"]
        new = draw(any_policy(w, old["name"], g.legacy))
        new["metadata"]["namespace"] = old["namespace"]
        policies[i] = new  # in a legacy cluster the form may change too: then a new object
        what = f"replaced {old['namespace']}/{old['name']}"
    else:
        i = draw(st.integers(0, len(w.pod_docs) - 1))
        pod = w.pod_docs[i]
        pod["metadata"]["labels"] = draw(labels_strategy(POD_LABELS))
        what = f"relabelled pod {pod['metadata']['namespace']}/{pod['metadata']['name']}"
    return what, Generated(w, policies, g.legacy)


def _first_v1(g: Generated) -> dict | None:
    for p in g.policies:
        if p["apiVersion"] == API_V1:
            return p
    return None


def invalid_variants(g: Generated) -> list[tuple[str, list[dict]]]:
    """Single-fault invalid copies of `g`, as (fault, documents): every one must be rejected."""
    out = []

    def variant(fault: str, mutate) -> None:
        docs = g.documents()
        pols = [d for d in docs if d.get("kind") == "NetworkPolicy" and d["apiVersion"] == API_V1]
        if pols:
            mutate(pols[0]["spec"])
            out.append((fault, docs))

    def ingress_rule(spec: dict, rule: dict) -> None:
        spec.setdefault("ingress", []).append(rule)
        spec["policyTypes"] = ["Ingress", "Egress"]

    variant("except outside cidr", lambda s: ingress_rule(
        s, {"from": [{"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.2.0/28"]}}]}))
    variant("except equal to cidr", lambda s: ingress_rule(
        s, {"from": [{"ipBlock": {"cidr": "10.244.1.0/24", "except": ["10.244.1.0/24"]}}]}))
    variant("endPort < port", lambda s: ingress_rule(s, {"ports": [{"port": 81, "endPort": 80}]}))
    variant("endPort with a named port",
            lambda s: ingress_rule(s, {"ports": [{"port": "http", "endPort": 80}]}))
    variant("ipBlock with a selector", lambda s: ingress_rule(
        s, {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}))
    variant("empty peer", lambda s: ingress_rule(s, {"from": [{}]}))
    variant("bad protocol", lambda s: ingress_rule(s, {"ports": [{"protocol": "ICMP"}]}))
    variant("bad operator", lambda s: s.__setitem__(
        "podSelector", {"matchExpressions": [{"key": "app", "operator": "Equals",
                                              "values": ["web"]}]}))
    variant("values with Exists", lambda s: s.__setitem__(
        "podSelector", {"matchExpressions": [{"key": "app", "operator": "Exists",
                                              "values": ["web"]}]}))
    variant("In without values", lambda s: s.__setitem__(
        "podSelector", {"matchExpressions": [{"key": "app", "operator": "In"}]}))
    variant("bad CIDR", lambda s: ingress_rule(s, {"from": [{"ipBlock": {"cidr": "10.244.1.0/33"}}]}))
    variant("port 0", lambda s: ingress_rule(s, {"ports": [{"port": 0}]}))
    variant("typo in a field", lambda s: ingress_rule(s, {"from": [{"namspaceSelector": {}}]}))
    return out


def probe_pool(docs: list[dict]) -> list[tuple[int, str]]:
    """(port, protocol) probes: every number in play (containerPorts, policy ports and both
    edges of every range, one past each) and a few fixed ones, on every protocol."""
    numbers = set(BASE_PROBE_PORTS)
    for d in docs:
        if d["kind"] == "Pod":
            for c in d["spec"]["containers"]:
                numbers |= {p["containerPort"] for p in c.get("ports", ())}
        elif d["kind"] == "NetworkPolicy":
            for port in _policy_ports(d):
                if isinstance(port.get("port"), int):
                    lo = port["port"]
                    hi = port.get("endPort", lo)
                    numbers |= {lo, hi, lo - 1, hi + 1}
    numbers = {n for n in numbers if 1 <= n <= 65535}
    return [(n, p) for n in sorted(numbers) for p in PROTOCOLS]


def _policy_ports(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    out = []
    for key in ("ingress", "egress"):
        for rule in spec.get(key) or ():
            out += rule.get("ports") or []
    allow = spec.get("allowIncoming") or {}
    out += allow.get("toPorts") or []
    return out
