"""Deterministic benchmark scenarios S1-S5 (../shared/notes/performance.md), built directly
from model values: no YAML, no validation, so 100k pods take seconds, not minutes.

Every builder takes `scale` (1.0 = the published shape; QUICK mode uses less) and `seed`; the
same (scale, seed) always gives the same cluster, object for object.

Placement is realistic: each node has a /24 pod CIDR and hands out addresses in order
(.2, .3, ...), pods are spread over nodes by a seeded shuffle then round robin (the scheduler
spreads replicas), so the pods of one namespace or selector are scattered over the cluster and
their addresses do not collapse into a few CIDRs.

Shapes (full scale):
  S1  Antrea XL (TestInitXLargeScaleWithSmallNamespaces): 25k namespaces x (4 pods, 3
      policies: default-deny-all, np-1 and np-2 each selecting 2 pods and allowing ingress
      from the same 2 pods), Ingress+Egress types; 1,000 nodes (100 pods each).
  S2  Antrea dense namespace (TestInitXLargeScaleWithOneNamespace): 1 namespace, 10k pods,
      10k policies each selecting every pod and allowing ingress from every pod; 100 nodes.
  S3  OpenShift workload (kube-burner network-policy): 24 nodes, 240 namespaces x 10 pods,
      20 policies per namespace, each selecting the 10 local pods with one ingress rule of
      5 single ports + 5 port ranges and 15 peers: 5 remote namespace selectors, 5 remote
      pod selectors (namespace + pod selector), 5 ipBlocks (some with except).
  S4  Churn on S3 state: flip one pod's `role` label, which remote pod selectors of ~400
      policies read; plus `growth`: S3-shaped clusters at 500 and 2,000 pods, with and
      without policies, adding one pod.
  S5  Flow explosion: 100 namespaces x 50 pods = 5,000 pods on 100 nodes (50 per node); in
      namespace `frontend` (all 50 pods on node-0000) 100 policies each select the same
      20 local pods and allow ingress from 50 peer pods (another namespace) plus an ipBlock
      with excepts, on 5 ports (3 single, 2 ranges); plus a self-referencing selector: in
      every namespace a policy `mesh` selecting pods with mesh=on and allowing ingress from
      mesh=on pods of every namespace (half the cluster).
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sdn.policy.model import (
    EGRESS,
    INGRESS,
    NAMESPACE_NAME_LABEL,
    Cluster,
    IPBlock,
    Labels,
    LabelSelector,
    Namespace,
    Node,
    Peer,
    Pod,
    Policy,
    PolicyPort,
    PolicyRule,
    freeze_labels,
)

DEFAULT_SEED = 7
MAX_PODS_PER_NODE = 250  # one /24 per node, .0/.1/.255 reserved

POD_NET = int(ipaddress.IPv4Address("10.0.0.0"))
NODE_NET = int(ipaddress.IPv4Address("100.64.0.0"))


@dataclass(frozen=True)
class Event:
    """One watch event a benchmark replays: pod `pod` gets `labels`."""

    description: str
    pod: str  # ns/name
    labels: Labels


@dataclass
class Scenario:
    name: str
    title: str
    scale: float
    seed: int
    cluster: Cluster
    focus_node: str  # the node whose bridge is compiled on its own
    events: list[Event] = field(default_factory=list)
    shape: dict = field(default_factory=dict)  # intended counts, for the report
    notes: str = ""

    def counts(self) -> dict:
        c = self.cluster
        return {"namespaces": len(c.namespaces), "pods": len(c.pods),
                "policies": len(c.policies), "nodes": len(c.nodes)}


def scaled(n: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(n * scale))


# ---- placement -----------------------------------------------------------------------------

def node_name(i: int) -> str:
    return f"node-{i:04d}"


def make_nodes(count: int) -> dict[str, Node]:
    out = {}
    for i in range(count):
        cidr = f"{ipaddress.IPv4Address(POD_NET + (i << 8))}/24"
        addr = str(ipaddress.IPv4Address(NODE_NET + i + 1))
        out[node_name(i)] = Node(node_name(i), freeze_labels({"bench/node": str(i)}), (cidr,), (addr,))
    return out


class Placer:
    """Hands out (node, IP) pairs: per node addresses .2, .3, ... of its /24."""

    def __init__(self, nodes: int):
        if nodes < 1:
            raise ValueError("need at least one node")
        self.nodes = nodes
        self.used = [0] * nodes

    def take(self, node: int) -> tuple[str, str]:
        slot = self.used[node]
        if slot >= MAX_PODS_PER_NODE:
            raise ValueError(f"node {node_name(node)} is full ({MAX_PODS_PER_NODE} pods)")
        self.used[node] += 1
        ip = str(ipaddress.IPv4Address(POD_NET + (node << 8) + 2 + slot))
        return node_name(node), ip

    def spread(self, specs: list[tuple[str, str, Labels]], rng: random.Random,
               nodes: list[int] | None = None) -> list[Pod]:
        """Place pods (namespace, name, labels) over `nodes` (default all): seeded shuffle,
        then round robin, so every node gets the same number (+-1)."""
        order = list(range(len(specs)))
        rng.shuffle(order)
        targets = list(range(self.nodes)) if nodes is None else nodes
        placed: list[Pod | None] = [None] * len(specs)
        for k, idx in enumerate(order):
            ns, name, labels = specs[idx]
            node, ip = self.take(targets[k % len(targets)])
            placed[idx] = Pod(ns, name, labels, node, (ip,))
        return placed  # type: ignore[return-value]


def nodes_for(pods: int, per_node: int) -> int:
    return max(1, math.ceil(pods / per_node))


def _sel(**labels: str) -> LabelSelector:
    return LabelSelector(freeze_labels(labels))


def _ns_sel(name: str) -> LabelSelector:
    return LabelSelector(((NAMESPACE_NAME_LABEL, name),))


BOTH = frozenset({INGRESS, EGRESS})


def _add(cluster: Cluster, pol: Policy) -> None:
    cluster.policies[(pol.form, pol.namespace, pol.name)] = pol


def _with_labels(labels: Labels, **changes: str | None) -> Labels:
    d = dict(labels)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return freeze_labels(d)


# ---- S1 ------------------------------------------------------------------------------------

def s1(scale: float = 1.0, seed: int = DEFAULT_SEED, events: int = 20) -> Scenario:
    """Antrea XL: small namespaces, default deny + 2 label-selected allows each."""
    rng = random.Random(f"S1/{seed}")
    n_ns = scaled(25_000, scale)
    n_pods = n_ns * 4
    n_nodes = nodes_for(n_pods, 100)
    c = Cluster(nodes=make_nodes(n_nodes))
    specs = []
    for i in range(n_ns):
        ns = f"s1-{i:05d}"
        c.namespaces[ns] = Namespace(ns, freeze_labels({"app": ns}))
        a1, a2 = freeze_labels({"app-1": "scale-1"}), freeze_labels({"app-2": "scale-2"})
        specs += [(ns, "pod1", a1), (ns, "pod2", a1), (ns, "pod3", a2), (ns, "pod4", a2)]
        _add(c, Policy(ns, "default-deny-all", LabelSelector(), policy_types=BOTH))
        for k in (1, 2):
            sel = _sel(**{f"app-{k}": f"scale-{k}"})
            _add(c, Policy(ns, f"np-{k}", sel, ingress=(PolicyRule(peers=(Peer(pod_selector=sel),)),),
                           policy_types=BOTH))
    for p in Placer(n_nodes).spread(specs, rng):
        c.pods[p.key] = p
    focus = node_name(0)
    candidates = sorted(k for k, p in c.pods.items() if p.node == focus and k.endswith("/pod1"))
    evs = [Event(f"{key}: app-1=scale-1 -> app-2=scale-2 (leaves np-1, joins np-2)", key,
                 freeze_labels({"app-2": "scale-2"}))
           for key in rng.sample(candidates, min(events, len(candidates)))]
    return Scenario("S1", "Antrea XL: 25k namespaces, 100k pods, 75k policies", scale, seed, c, focus,
                    evs, {"namespaces": 25_000, "pods": 100_000, "policies": 75_000, "nodes": 1_000})


# ---- S2 ------------------------------------------------------------------------------------

def s2(scale: float = 1.0, seed: int = DEFAULT_SEED, events: int = 20) -> Scenario:
    """Antrea dense namespace: every policy selects every pod, ingress from every pod."""
    rng = random.Random(f"S2/{seed}")
    n = scaled(10_000, scale)
    n_nodes = nodes_for(n, 100)
    c = Cluster(nodes=make_nodes(n_nodes))
    ns = "s2-dense"
    c.namespaces[ns] = Namespace(ns, freeze_labels({"app": ns}))
    app = freeze_labels({"app-1": "scale-1"})
    sel = _sel(**{"app-1": "scale-1"})
    specs = [(ns, f"pod-{i:05d}", app) for i in range(n)]
    for i in range(n):
        _add(c, Policy(ns, f"np-{i:05d}", sel, ingress=(PolicyRule(peers=(Peer(pod_selector=sel),)),),
                       policy_types=BOTH))
    for p in Placer(n_nodes).spread(specs, rng):
        c.pods[p.key] = p
    focus = node_name(0)
    candidates = sorted(k for k, p in c.pods.items() if p.node == focus)
    evs = [Event(f"{key}: app-1 label removed (leaves every policy)", key, ())
           for key in rng.sample(candidates, min(events, len(candidates)))]
    return Scenario("S2", "Antrea dense: 1 namespace, 10k pods, 10k policies selecting all", scale, seed,
                    c, focus, evs, {"namespaces": 1, "pods": 10_000, "policies": 10_000, "nodes": 100})


# ---- S3 / S4 -------------------------------------------------------------------------------

S3_TEAMS = 24
S3_ROLES = 5


def _s3_cluster(n_ns: int, n_nodes: int, pods_per_ns: int, policies_per_ns: int,
                rng: random.Random, with_policies: bool = True) -> Cluster:
    c = Cluster(nodes=make_nodes(n_nodes))
    teams = max(1, min(S3_TEAMS, n_ns))
    specs = []
    for i in range(n_ns):
        ns = f"s3-{i:04d}"
        c.namespaces[ns] = Namespace(ns, freeze_labels({"team": f"t{i % teams}", "zone": f"z{i % 4}"}))
        for j in range(pods_per_ns):
            specs.append((ns, f"pod-{j:02d}", freeze_labels(
                {"local": "yes", "role": f"r{j % S3_ROLES}", "tier": f"t{j % 2}"})))
        if not with_policies:
            continue
        for p in range(policies_per_ns):
            peers = []
            for k in range(5):  # remote namespaces (by name)
                peers.append(Peer(namespace_selector=_ns_sel(f"s3-{(i + 1 + p * 5 + k) % n_ns:04d}")))
            for k in range(5):  # remote pods: team's namespaces, pods of one role
                peers.append(Peer(pod_selector=_sel(role=f"r{(p + k) % S3_ROLES}"),
                                  namespace_selector=_sel(team=f"t{(i + p + k) % teams}")))
            for k in range(5):  # CIDRs, the odd ones with an except
                base = f"172.{16 + k}.{p}.0"
                ex = (f"172.{16 + k}.{p}.{64 * (1 + i % 3)}/27",) if k % 2 else ()
                peers.append(Peer(ip_block=IPBlock(f"{base}/24", ex)))
            ports = [PolicyPort("TCP", 8000 + 10 * p + k) for k in range(5)]
            ports += [PolicyPort("TCP", 20000 + 1000 * k + 7 * p, 20000 + 1000 * k + 7 * p + 50 + 13 * k)
                      for k in range(5)]
            _add(c, Policy(ns, f"np-{p:02d}", _sel(local="yes"),
                           ingress=(PolicyRule(peers=tuple(peers), ports=tuple(ports)),)))
    for pod in Placer(n_nodes).spread(specs, rng):
        c.pods[pod.key] = pod
    return c


def _role_flip_events(c: Cluster, rng: random.Random, n: int, node: str | None = None) -> list[Event]:
    keys = sorted(k for k, p in c.pods.items() if node is None or p.node == node)
    out = []
    for key in rng.sample(keys, min(n, len(keys))):
        labels = dict(c.pods[key].labels)
        old = labels.get("role", "r0")
        new = f"r{(int(old[1:]) + 1) % S3_ROLES}"
        out.append(Event(f"{key}: role={old} -> role={new}", key, _with_labels(c.pods[key].labels, role=new)))
    return out


def s3(scale: float = 1.0, seed: int = DEFAULT_SEED, events: int = 0) -> Scenario:
    rng = random.Random(f"S3/{seed}")
    n_ns = scaled(240, scale, 2)
    n_nodes = scaled(24, scale, 2)
    c = _s3_cluster(n_ns, n_nodes, 10, 20, rng)
    evs = _role_flip_events(c, rng, events, node_name(0)) if events else []
    return Scenario("S3", "OpenShift workload: 24 nodes, 240 ns x 10 pods, 20 policies/ns", scale, seed, c,
                    node_name(0), evs,
                    {"namespaces": 240, "pods": 2_400, "policies": 4_800, "nodes": 24})


def s4(scale: float = 1.0, seed: int = DEFAULT_SEED, events: int = 20) -> Scenario:
    """S3 state; events flip one pod's role label (read by remote pod selectors)."""
    rng = random.Random(f"S4/{seed}")
    n_ns = scaled(240, scale, 2)
    n_nodes = scaled(24, scale, 2)
    c = _s3_cluster(n_ns, n_nodes, 10, 20, rng)
    focus = node_name(0)
    evs = _role_flip_events(c, rng, events, focus)
    return Scenario("S4", "Churn on S3: one pod label flip touching many policies", scale, seed, c, focus,
                    evs, {"namespaces": 240, "pods": 2_400, "policies": 4_800, "nodes": 24})


def s4_growth(pods: int, with_policies: bool, seed: int = DEFAULT_SEED, nodes: int = 24) -> tuple[Cluster, Pod]:
    """An S3-shaped cluster of `pods` pods (10 per namespace) with or without its policies,
    and one more pod to add (the event)."""
    rng = random.Random(f"S4g/{pods}/{seed}")
    n_ns = max(2, pods // 10)
    c = _s3_cluster(n_ns, nodes, 10, 20, rng, with_policies)
    # The new pod: namespace 0, on the least loaded node, next free address there.
    per_node: dict[str, int] = dict.fromkeys(c.nodes, 0)
    for p in c.pods.values():
        if p.node is not None:
            per_node[p.node] += 1
    node = min(sorted(per_node), key=lambda n: per_node[n])
    idx = int(node.split("-")[1])
    ip = str(ipaddress.IPv4Address(POD_NET + (idx << 8) + 2 + per_node[node]))
    new = Pod("s3-0000", "pod-new", freeze_labels({"local": "yes", "role": "r0", "tier": "t0"}), node, (ip,))
    return c, new


# ---- S5 ------------------------------------------------------------------------------------

def s5(scale: float = 1.0, seed: int = DEFAULT_SEED, events: int = 20) -> Scenario:
    rng = random.Random(f"S5/{seed}")
    n_ns = scaled(100, scale, 3)
    per_ns = 50
    n_policies = scaled(100, scale)
    local = 20
    n_nodes = n_ns  # 50 pods per node
    c = Cluster(nodes=make_nodes(n_nodes))
    placer = Placer(n_nodes)
    # frontend: all of its pods on node-0000 (the node whose flows explode).
    fe = "frontend"
    c.namespaces[fe] = Namespace(fe, freeze_labels({"idx": "0"}))
    fe_specs = []
    for j in range(per_ns):
        labels = {"app": "web", "mesh": "on" if j % 2 == 0 else "off"}
        if j < local:
            labels["tier"] = "front"
        fe_specs.append((fe, f"web-{j:02d}", freeze_labels(labels)))
    for p in placer.spread(fe_specs, rng, nodes=[0]):
        c.pods[p.key] = p
    others = []
    for i in range(1, n_ns):
        ns = f"s5-{i:03d}"
        c.namespaces[ns] = Namespace(ns, freeze_labels({"idx": str(i)}))
        for j in range(per_ns):
            others.append((ns, f"pod-{j:02d}", freeze_labels({"app": f"a{j % 5}",
                                                               "mesh": "on" if (i + j) % 2 == 0 else "off"})))
    for p in placer.spread(others, rng, nodes=list(range(1, n_nodes))):
        c.pods[p.key] = p
    ranges = [(9000, 9099), (30000, 30255 + 0)]
    for q in range(n_policies):
        peer_ns = 1 + q % (n_ns - 1)
        ports = [PolicyPort("TCP", 80 + q % 7), PolicyPort("TCP", 443), PolicyPort("UDP", 53)]
        ports += [PolicyPort("TCP", lo + q % 5, hi) for lo, hi in ranges]
        peers = (Peer(namespace_selector=_sel(idx=str(peer_ns))),
                 Peer(ip_block=IPBlock(f"192.168.{q % 256}.0/24",
                                       (f"192.168.{q % 256}.0/26", f"192.168.{q % 256}.200/29"))))
        _add(c, Policy(fe, f"allow-{q:03d}", _sel(tier="front"),
                       ingress=(PolicyRule(peers=peers, ports=tuple(ports)),)))
    mesh = _sel(mesh="on")
    for ns in sorted(c.namespaces):
        _add(c, Policy(ns, "mesh", mesh, ingress=(PolicyRule(
            peers=(Peer(pod_selector=mesh, namespace_selector=LabelSelector()),),
            ports=(PolicyPort("TCP", 8443),)),)))
    evs = []
    keys = sorted(k for k in c.pods if not k.startswith(fe + "/"))
    for key in rng.sample(keys, min(events, len(keys))):
        old = dict(c.pods[key].labels)["mesh"]
        new = "off" if old == "on" else "on"
        evs.append(Event(f"{key}: mesh={old} -> mesh={new} (peer of every mesh policy)", key,
                         _with_labels(c.pods[key].labels, mesh=new)))
    return Scenario("S5", "Flow explosion: 100 policies x 50 peers x 20 local pods x 5 ports + mesh",
                    scale, seed, c, node_name(0), evs,
                    {"namespaces": 100, "pods": 5_000, "policies": 200, "nodes": 100})


def copy_cluster(c: Cluster) -> Cluster:
    """An independent Cluster holding the same (immutable) objects."""
    return Cluster(namespaces=dict(c.namespaces), pods=dict(c.pods), nodes=dict(c.nodes),
                   policies=dict(c.policies))


BUILDERS: dict[str, Callable[..., Scenario]] = {"S1": s1, "S2": s2, "S3": s3, "S4": s4, "S5": s5}

# QUICK mode: every scenario small enough that the whole run takes < 2 min on 2 cores.
QUICK_SCALES = {"S1": 0.02, "S2": 0.01, "S3": 0.1, "S4": 0.05, "S5": 0.15}
FULL_SCALES = dict.fromkeys(BUILDERS, 1.0)


def build(name: str, scale: float = 1.0, seed: int = DEFAULT_SEED, events: int | None = None) -> Scenario:
    builder = BUILDERS[name]
    if events is None:
        return builder(scale, seed)
    return builder(scale, seed, events)


__all__ = [
    "BUILDERS",
    "DEFAULT_SEED",
    "FULL_SCALES",
    "QUICK_SCALES",
    "Event",
    "Placer",
    "Scenario",
    "build",
    "copy_cluster",
    "make_nodes",
    "s4_growth",
]
