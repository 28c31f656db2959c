"""Objects and helpers for the tests that run the official client against an API server."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdn.k8s.resources import WATCHED, resource_for
from sdn.policy.manifests import add_object
from sdn.policy.model import Cluster

# What the random streams draw from: v1 specs, alpha specs, namespace annotations.
POLICY_SPECS = [
    {"podSelector": {}},
    {"podSelector": {"matchLabels": {"role": "db"}},
     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}],
                  "ports": [{"port": 80}]}]},
    {"podSelector": {}, "policyTypes": ["Egress"],
     "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]},
    {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In",
                                           "values": ["a", "c"]}]},
     "ingress": [{"ports": [{"port": "serve-81-tcp"}, {"protocol": "UDP", "port": 80}]}]},
    {"podSelector": {"matchLabels": {"pod": "b"}},
     "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.2.0.0/16"]}}]}]},
]
ALPHA_SPECS = [
    {"podSelector": {"role": "db"},
     "allowIncoming": {"from": [{"pods": {"role": "web"}}],
                       "toPorts": [{"port": 80, "protocol": "TCP"}]}},
    {"podSelector": {}, "allowIncoming": {"from": [{"namespaces": {"ns": "x"}}]}},
    {"podSelector": {"matchLabels": {"a": "b"}}},  # invalid: the alpha selector is a plain map
]
ANNOTATIONS = [
    {},
    {"net.alpha.kubernetes.io/network-isolation": "on"},
    {"net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "DefaultDeny"}}'},
]


def namespace(name: str, labels: dict | None = None, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "labels": labels or {"ns": name}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def pod(ns: str, name: str, ip: str | None, labels: dict | None = None,
        node: str = "node-1") -> dict:
    ports = [{"containerPort": p, "protocol": proto, "name": f"serve-{p}-{proto.lower()}"}
             for p in (80, 81) for proto in ("TCP", "UDP")]
    doc = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": labels or {"pod": name}},
           "spec": {"nodeName": node,
                    "containers": [{"name": "c", "image": "agnhost", "ports": ports}]},
           "status": {"phase": "Running"}}
    if ip:
        doc["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    return doc


def node(name: str, cidr: str, address: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                                     {"type": "Hostname", "address": name}]}}


def policy(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def alpha_policy(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "net.alpha.kubernetes.io/v1alpha1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def reference_cluster(server, resources=WATCHED) -> Cluster:
    """The Cluster a fresh start would build from the server's current objects (invalid
    ones left out, as the informers leave them out); `server` is the real one
    (tests.kube_support.Kube) or the stand-in, both list with `objects(resources)`."""
    from sdn.k8s.informer import to_model

    cluster = Cluster()
    for raw in server.objects(resources):
        model, _ = to_model(resource_for(raw["apiVersion"], raw["kind"]), raw)
        if model is not None:
            add_object(cluster, model)
    return cluster


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
               interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
