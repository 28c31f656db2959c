"""Cluster DNS of the kubernetes-mode lab: CoreDNS (built by `make k8s` from the Go module proxy,
tools/coredns) behind the kube-dns Service, and the pods' resolv.conf.

- objects(): what kubeadm's CoreDNS add-on makes in kube-system (ServiceAccount, ClusterRole
  and binding, the Corefile's ConfigMap, a Deployment, the kube-dns Service on 53 UDP/TCP at
  the service range's tenth address), applied at `lab up --kubernetes`;
- the kubelet stand-in runs the coredns binary for a pod whose image is CoreDNS, with the
  Corefile of its ConfigMap volume and a kubeconfig holding a token of the pod's service
  account (a TokenRequest bound to the pod, as a kubelet projects one);
- for every other pod (dnsPolicy ClusterFirst) it writes the resolv.conf a kubelet gives it,
  at /etc/netns/NETNS/resolv.conf: what `ip netns exec NETNS` mounts over /etc/resolv.conf,
  so any program run in the pod's namespace resolves like the pod.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path

from sdn.k8s.binaries import binary

NAMESPACE = "kube-system"
APP_LABEL = {"k8s-app": "kube-dns"}
IMAGE = "registry.k8s.io/coredns/coredns:v1.15.0"
PORT = 53
KUBECONFIG_ENV = "SDN_POD_KUBECONFIG"  # the Corefile names the pod's kubeconfig through it
NETNS_ETC = Path("/etc/netns")


def cluster_dns_ip(service_cidr: str) -> str:
    """The cluster DNS Service's address: the range's tenth (10.96.0.10), as kubeadm picks it."""
    return str(ipaddress.ip_network(service_cidr)[10])


def corefile(domain: str) -> str:
    """Service and pod names of the cluster domain and reverse lookups; nothing forwarded
    outside the cluster (the lab has no upstream resolver)."""
    return (".:53 {\n"
            "    errors\n"
            f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
            f"        kubeconfig {{${KUBECONFIG_ENV}}}\n"
            "        pods insecure\n"
            "        fallthrough in-addr.arpa ip6.arpa\n"
            "        ttl 30\n"
            "    }\n"
            "    cache 30\n"
            "    loadbalance\n"
            "}\n")


def objects(service_cidr: str, domain: str) -> list[dict]:
    """The cluster DNS add-on's objects (kubeadm's, minus what the lab has no use for)."""
    meta = {"namespace": NAMESPACE, "labels": dict(APP_LABEL)}
    ports = [{"name": "dns", "port": PORT, "protocol": "UDP"}, {"name": "dns-tcp", "port": PORT, "protocol": "TCP"}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": corefile(domain)}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": dict(APP_LABEL)},
                  "template": {"metadata": {"labels": dict(APP_LABEL)}, "spec": {
                      "serviceAccountName": "coredns", "dnsPolicy": "Default",
                      "containers": [{"name": "coredns", "image": IMAGE, "args": ["-conf", "/etc/coredns/Corefile"],
                                      "ports": [{"name": "dns", "containerPort": PORT, "protocol": "UDP"},
                                                {"name": "dns-tcp", "containerPort": PORT, "protocol": "TCP"}],
                                      "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns"}]}],
                      "volumes": [{"name": "config-volume", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
         "spec": {"selector": dict(APP_LABEL), "clusterIP": cluster_dns_ip(service_cidr), "ports": ports}},
    ]


def is_coredns(pod: dict) -> bool:
    """A pod the kubelet runs CoreDNS for: its (only) container's image is CoreDNS."""
    images = [c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or []]
    return any(i.rsplit("/", 1)[-1].split(":")[0] == "coredns" for i in images)


def is_addon(pod: dict) -> bool:
    """The cluster's DNS pods: real pods, but not the lab's own (no matrix row of their own)."""
    meta = pod.get("metadata") or {}
    return meta.get("namespace") == NAMESPACE and (meta.get("labels") or {}).get("k8s-app") == APP_LABEL["k8s-app"]


def corefile_of(pod: dict, configmaps: dict[str, dict]) -> str:
    """The Corefile of the pod's ConfigMap volume (the name -conf gives, under its mount)."""
    spec = pod["spec"]
    container = spec["containers"][0]
    args = container.get("args") or []
    conf = args[args.index("-conf") + 1] if "-conf" in args else "/etc/coredns/Corefile"
    for mount in container.get("volumeMounts") or []:
        if conf.startswith(mount["mountPath"].rstrip("/") + "/"):
            vol = next(v for v in spec.get("volumes") or [] if v["name"] == mount["name"])
            key = conf[len(mount["mountPath"].rstrip("/")) + 1:]
            data = configmaps[vol["configMap"]["name"]].get("data") or {}
            if key in data:
                return data[key]
    raise RuntimeError(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}: no ConfigMap volume holds {conf}")


def start_coredns(netns: str, key: str, corefile_text: str, kubeconfig: Path, workdir: Path, log: Path,
                  timeout: float = 30.0) -> int:
    """Run coredns in the pod's namespace; returns its pid once it listens on port 53 (the
    kubernetes plugin first waits for its informers to sync with the API)."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "Corefile"
    conf.write_text(corefile_text)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{KUBECONFIG_ENV: str(kubeconfig)})
    with open(log, "ab") as logf:
        p = subprocess.Popen(["ip", "netns", "exec", netns, binary("coredns"), "-conf", str(conf)],
                             cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"coredns of pod {key} exited ({p.returncode}); last lines of {log}:\n"
                               f"{log.read_text(errors='replace')[-1500:]}")
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hlnu", f"sport = :{PORT}"],
                             capture_output=True, text=True, check=False)
        if out.stdout.strip():
            return p.pid  # `ip netns exec` execs coredns: the same process
        time.sleep(0.2)
    p.kill()
    p.wait()
    raise RuntimeError(f"coredns of pod {key} did not listen on port {PORT} within {timeout:.0f}s; see {log}")


def resolv_conf(namespace: str, nameserver: str, domain: str) -> str:
    """A ClusterFirst pod's resolv.conf, as the kubelet writes it."""
    return (f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver}\n"
            "options ndots:5\n")


def write_resolv_conf(netns: str, text: str) -> Path:
    path = NETNS_ETC / netns / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def remove_resolv_conf(netns: str) -> bool:
    """Remove /etc/netns/NETNS (the pod's resolv.conf); whether there was one."""
    path = NETNS_ETC / netns
    if not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
