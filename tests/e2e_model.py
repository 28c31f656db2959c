"""The world of the upstream NetworkPolicy e2e suite, as manifest documents, and its vocabulary.

Upstream (kubernetes test/e2e/network/netpol) runs every case on one model: namespaces x, y, z
labelled ns=<name>, pods a, b, c in each labelled pod=<name>, each serving ports 80 and 81 on
TCP, UDP and SCTP from containerPorts named serve-<port>-<proto>; every pod probes every pod.
Here the same model is plain data (a list of Kubernetes manifest dicts) so that any consumer can
replay it: the semantic evaluator, the flow simulator, a real OVS lab.

Expectations are written like upstream's Reachability tables: a default verdict plus ordered
exceptions, the last matching exception winning (`ExpectPeer`, `ExpectAllIngress`,
`ExpectAllEgress`). A pod reaching itself is always allowed. Nothing here evaluates policies:
expectations are written by hand from the intent of each case.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
SERVED_PORTS = (80, 81)
SERVED_PROTOCOLS = ("TCP", "UDP", "SCTP")
NODES = {
    "node-1": {"podCIDR": "10.244.1.0/24", "internalIP": "192.168.50.11"},
    "node-2": {"podCIDR": "10.244.2.0/24", "internalIP": "192.168.50.12"},
}


def pod_keys() -> list[str]:
    """The nine pods, "x/a" .. "z/c", in a stable order."""
    return [f"{ns}/{name}" for ns in NAMESPACES for name in POD_NAMES]


def node_of(key: str) -> str:
    """Pods alternate between the two nodes in pod_keys() order: x/a node-1, x/b node-2, ..."""
    return "node-1" if pod_keys().index(key) % 2 == 0 else "node-2"


def pod_ip(key: str) -> str:
    """10.244.<node>.<10 + index>: inside its node's podCIDR, unique in the cluster."""
    node = 1 if node_of(key) == "node-1" else 2
    return f"10.244.{node}.{10 + pod_keys().index(key)}"


def port_name(port: int, protocol: str) -> str:
    return f"serve-{port}-{protocol.lower()}"


# ---------------------------------------------------------------------------------------------
# Manifest builders


def namespace_doc(
    name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict:
    """A Namespace; labels default to upstream's ns=<name>."""
    meta: dict = {"name": name, "labels": dict(labels) if labels is not None else {"ns": name}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def pod_doc(
    key: str,
    labels: dict[str, str] | None = None,
    names: dict[tuple[int, str], str] | None = None,
) -> dict:
    """A running pod of the model: one container per served (port, protocol), as upstream.

    labels default to pod=<name>; `names` renames chosen containerPorts, {(80, "TCP"): "web"}.
    """
    ns, name = key.split("/")
    names = names or {}
    containers = [
        {
            "name": f"cont-{port}-{proto.lower()}",
            "ports": [
                {
                    "containerPort": port,
                    "protocol": proto,
                    "name": names.get((port, proto), port_name(port, proto)),
                }
            ],
        }
        for port in SERVED_PORTS
        for proto in SERVED_PROTOCOLS
    ]
    ip = pod_ip(key)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": dict(labels) if labels is not None else {"pod": name},
        },
        "spec": {"nodeName": node_of(key), "containers": containers},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def node_doc(name: str) -> dict:
    info = NODES[name]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": info["podCIDR"], "podCIDRs": [info["podCIDR"]]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": info["internalIP"]},
                {"type": "Hostname", "address": name},
            ]
        },
    }


def base_cluster() -> list[dict]:
    """The upstream model before any policy: 2 nodes, 3 namespaces, 9 pods (fresh dicts)."""
    docs = [node_doc(n) for n in NODES]
    docs += [namespace_doc(ns) for ns in NAMESPACES]
    docs += [pod_doc(key) for key in pod_keys()]
    return docs


def match(**labels: str) -> dict:
    """A label selector with matchLabels only; match() is the empty selector (all)."""
    return {"matchLabels": dict(labels)} if labels else {}


def expr(key: str, operator: str, *values: str) -> dict:
    """A label selector with one matchExpressions requirement."""
    req: dict = {"key": key, "operator": operator}
    if operator in ("In", "NotIn"):
        req["values"] = list(values)
    return {"matchExpressions": [req]}


def netpol(
    ns: str,
    name: str,
    pod_selector: dict,
    ingress: list | None = None,
    egress: list | None = None,
    types: list[str] | None = None,
    api_version: str = "networking.k8s.io/v1",
) -> dict:
    """A NetworkPolicy; ingress/egress/types None = the field is absent from the manifest."""
    spec: dict = {"podSelector": pod_selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": api_version,
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def beta_netpol(ns: str, name: str, pod_selector: dict, ingress: list | None = None) -> dict:
    """An extensions/v1beta1 NetworkPolicy (Kubernetes 1.3-1.6: ingress only)."""
    return netpol(ns, name, pod_selector, ingress=ingress, api_version="extensions/v1beta1")


def alpha_netpol(
    ns: str,
    name: str,
    pod_labels: dict[str, str],
    sources: list | None = None,
    to_ports: list | None = None,
) -> dict:
    """A 2016 net.alpha.kubernetes.io/v1alpha1 policy: podSelector is a plain label map,
    allowIncoming.from[] holds {"pods": labels} or {"namespaces": labels}, toPorts port lists."""
    allow: dict = {}
    if sources is not None:
        allow["from"] = sources
    if to_ports is not None:
        allow["toPorts"] = to_ports
    return {
        "apiVersion": "net.alpha.kubernetes.io/v1alpha1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": dict(pod_labels), "allowIncoming": allow},
    }


# ---------------------------------------------------------------------------------------------
# Rule builders (field absent when not given, as in a hand-written manifest)

NS_METADATA = "kubernetes.io/metadata.name"


def from_(*peers: dict, ports: list | None = None) -> dict:
    """An ingress rule; no peers given = the `from` field absent."""
    rule: dict = {}
    if peers:
        rule["from"] = list(peers)
    if ports is not None:
        rule["ports"] = ports
    return rule


def to(*peers: dict, ports: list | None = None) -> dict:
    """An egress rule; no peers given = the `to` field absent."""
    rule: dict = {}
    if peers:
        rule["to"] = list(peers)
    if ports is not None:
        rule["ports"] = ports
    return rule


def pods(selector: dict) -> dict:
    return {"podSelector": selector}


def namespaces(selector: dict) -> dict:
    return {"namespaceSelector": selector}


def pods_in(ns_selector: dict, pod_selector: dict) -> dict:
    return {"namespaceSelector": ns_selector, "podSelector": pod_selector}


def ip_block(cidr: str, *excepts: str) -> dict:
    block: dict = {"cidr": cidr}
    if excepts:
        block["except"] = list(excepts)
    return {"ipBlock": block}


def port(
    number: int | str | None = None, protocol: str | None = None, end: int | None = None
) -> dict:
    """A NetworkPolicyPort: number or name, protocol (absent = TCP), endPort."""
    out: dict = {}
    if number is not None:
        out["port"] = number
    if protocol is not None:
        out["protocol"] = protocol
    if end is not None:
        out["endPort"] = end
    return out


def host(key: str) -> str:
    """The /32 of a pod's IP."""
    return f"{pod_ip(key)}/32"


def deny_ingress(ns: str, name: str = "deny-ingress") -> dict:
    return netpol(ns, name, match(), ingress=[])


# ---------------------------------------------------------------------------------------------
# Cases, steps, probes and expectations


def reach(default: bool, *exceptions: tuple[str, str, bool]) -> dict:
    """A Reachability table: `default` for every pair, then exceptions in order (last wins).

    An exception is (source pattern, destination pattern, allowed); a pattern is "*" (every
    pod), "ns/*" (every pod of a namespace) or "ns/name".
    """
    for src, dst, allowed in exceptions:
        _check_pattern(src)
        _check_pattern(dst)
        if not isinstance(allowed, bool):
            raise TypeError(f"verdict must be a bool, not {allowed!r}")
    return {"default": default, "exceptions": tuple(exceptions)}


def peer(src: str, dst: str, allowed: bool) -> tuple[str, str, bool]:
    """upstream Expect / ExpectPeer: traffic from src pattern to dst pattern."""
    return (src, dst, allowed)


def ingress_to(dst: str, allowed: bool) -> tuple[str, str, bool]:
    """upstream ExpectAllIngress: every pod to dst."""
    return ("*", dst, allowed)


def egress_from(src: str, allowed: bool) -> tuple[str, str, bool]:
    """upstream ExpectAllEgress: src to every pod."""
    return (src, "*", allowed)


def _check_pattern(pattern: str) -> None:
    if pattern == "*":
        return
    ns, _, name = pattern.partition("/")
    if ns not in NAMESPACES or (name != "*" and name not in POD_NAMES):
        raise ValueError(f"bad pod pattern {pattern!r}: want '*', 'ns/*' or 'ns/name'")


def _matches(pattern: str, key: str) -> bool:
    if pattern == "*" or pattern == key:
        return True
    return pattern.endswith("/*") and key.split("/")[0] == pattern[:-2]


@dataclass(frozen=True)
class Probe:
    """Every pod connects to every pod on (port, protocol); `expect` is a reach() table."""

    port: int
    protocol: str
    expect: dict


@dataclass(frozen=True)
class Step:
    """Apply manifests (create or replace), delete objects (kind, namespace, name), then probe."""

    apply: tuple[dict, ...] = ()
    delete: tuple[tuple[str, str, str], ...] = ()
    probes: tuple[Probe, ...] = ()

    def __post_init__(self) -> None:
        if not self.probes:
            raise ValueError("every step must probe something")


@dataclass(frozen=True)
class E2ECase:
    name: str
    steps: tuple[Step, ...]
    upstream: str = ""  # title of the upstream test this case restates ("" for our own cases)


def tcp(port: int, expect: dict) -> Probe:
    return Probe(port, "TCP", expect)


def udp(port: int, expect: dict) -> Probe:
    return Probe(port, "UDP", expect)


def sctp(port: int, expect: dict) -> Probe:
    return Probe(port, "SCTP", expect)


def step(*probes: Probe, apply: Iterable[dict] = (), delete: Iterable[tuple] = ()) -> Step:
    return Step(apply=tuple(apply), delete=tuple(tuple(d) for d in delete), probes=probes)


def case(name: str, *steps: Step, upstream: str = "") -> E2ECase:
    return E2ECase(name=name, steps=steps, upstream=upstream)


def expected_matrix(probe: Probe, pods: Iterable) -> dict[tuple[str, str], bool]:
    """The expected verdict of every ordered pair of `pods` (keys "x/a" or Pod objects)."""
    keys = [p if isinstance(p, str) else p.key for p in pods]
    table = probe.expect
    out = {}
    for src in keys:
        for dst in keys:
            allowed = table["default"]
            for src_pat, dst_pat, verdict in table["exceptions"]:
                if _matches(src_pat, src) and _matches(dst_pat, dst):
                    allowed = verdict
            out[(src, dst)] = True if src == dst else allowed
    return out


# ---------------------------------------------------------------------------------------------
# Replaying steps as manifest documents


def doc_identity(doc: dict) -> tuple[str, str, str, str]:
    """(API group, kind, namespace, name): what `kubectl apply` replaces."""
    group = doc.get("apiVersion", "").rpartition("/")[0]
    meta = doc.get("metadata", {})
    return (group, doc["kind"], meta.get("namespace", ""), meta["name"])


def apply_step(docs: list[dict], step: Step) -> list[dict]:
    """The documents in force after `step`: its deletions, then its applies (a new list).

    A delete names (kind, namespace, name) and removes that object of every API group (so one
    tuple deletes a NetworkPolicy whatever its form); deleting nothing is an error in the case.
    """
    out = list(docs)
    for kind, ns, name in step.delete:
        kept = [d for d in out if doc_identity(d)[1:] != (kind, ns, name)]
        if len(kept) == len(out):
            raise KeyError(f"step deletes {kind} {ns}/{name}, which does not exist")
        out = kept
    for doc in step.apply:
        doc = copy.deepcopy(doc)
        ident = doc_identity(doc)
        for i, old in enumerate(out):
            if doc_identity(old) == ident:
                out[i] = doc
                break
        else:
            out.append(doc)
    return out


def replay(case: E2ECase) -> Iterator[tuple[int, Step, list[dict]]]:
    """(index, step, documents in force after it) for each step, starting from base_cluster()."""
    docs = base_cluster()
    for i, st in enumerate(case.steps):
        docs = apply_step(docs, st)
        yield i, st, docs
