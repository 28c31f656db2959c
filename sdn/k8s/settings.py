"""The node agent's settings: one YAML file (deploy/configmap.yaml mounts it as
/etc/sdn/sdn.yaml), camelCase keys as in Kubernetes objects, every key optional."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from typing import Any

import yaml

from sdn.k8s.resources import (
    ALPHA_NETWORK_POLICIES,
    BETA_NETWORK_POLICIES,
    NAMESPACES,
    NETWORK_POLICIES,
    NODES,
    PODS,
    Resource,
)

TUNNELS = ("geneve", "vxlan")
ENFORCE = ("host", "fabric")


class SettingsError(ValueError):
    """A bad settings file: which file, which key, what was expected."""


@dataclass(frozen=True)
class Settings:
    bridge: str = "br-sdn"  # the node's OVS bridge (the CNI plugin plugs pods into it)
    ovsdb: str = "unix:/run/openvswitch/db.sock"
    openflow: str = "tcp:127.0.0.1:6653"  # where the bridge connects to the controller
    pod_cidr: str = "node"  # "node": the Node's spec.podCIDR; or a fixed IPv4 CIDR
    tunnel: str = "geneve"
    mtu: int = 1450  # pod interfaces: 1500 minus the tunnel's overhead
    enforce: str = "host"  # host: each node judges its pods; fabric: one fabric bridge does
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9470  # /metrics, /healthz, /readyz, /status
    alpha_policies: bool = True  # watch the v1alpha1 CRD (deploy/crd-v1alpha1-networkpolicys.yaml)
    beta_policies: bool = False  # watch extensions/v1beta1 (only servers <= 1.15 serve it)
    resync_seconds: float = 600.0
    watch_timeout_seconds: float = 300.0
    # the longest pause between retries while the API server is unreachable (jittered,
    # exponential from 0.25 s): what a change made during an outage waits at most once it is back
    api_retry_max_seconds: float = 1.5
    cni_network: str = "sdn"
    ipam_data_dir: str = "/var/lib/cni/networks"  # the CNI IPAM's reservations (host-local's layout)
    # The agent makes its node's bridge, tunnel port and gateway port at start (sdn/node_setup.py)
    setup_node: bool = False
    datapath_type: str = "system"  # the bridge's datapath when the agent makes it (netdev: userspace)
    cluster_cidr: str = ""  # the pod network, routed through the gateway port ("": no gateway port)
    service_cidr: str = ""  # the Services' ClusterIP range (a pod's packet to it goes to the node first)

    def resources(self) -> tuple[Resource, ...]:
        """The resources the agent watches with these settings."""
        out = [NAMESPACES, PODS, NODES, NETWORK_POLICIES]
        if self.alpha_policies:
            out.append(ALPHA_NETWORK_POLICIES)
        if self.beta_policies:
            out.append(BETA_NETWORK_POLICIES)
        return tuple(out)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join("CIDR" if p == "cidr" else p.capitalize() for p in rest)


_KEYS = {_camel(f.name): f for f in fields(Settings)}
# the annotation of a setting (a string: postponed annotations) -> what a value must be
_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float), "bool": bool}


def parse_settings(doc: object, origin: str = "<settings>") -> Settings:
    """A parsed YAML mapping -> Settings; SettingsError names the file and the key."""
    if doc is None:
        return Settings()
    if not isinstance(doc, dict):
        raise SettingsError(f"{origin}: must be a mapping of settings")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        f = _KEYS.get(key)
        if f is None:
            raise SettingsError(f"{origin}: {key}: unknown setting (known: {', '.join(_KEYS)})")
        want = _PYTHON_TYPES[str(f.type)]
        if (isinstance(value, bool) and f.type != "bool") or not isinstance(value, want):
            raise SettingsError(f"{origin}: {key}: must be {f.type}, not {value!r}")
        values[f.name] = value
    s = Settings(**values)
    checks = [
        ("tunnel", s.tunnel in TUNNELS, f"one of {', '.join(TUNNELS)}"),
        ("enforce", s.enforce in ENFORCE, f"one of {', '.join(ENFORCE)}"),
        ("metricsPort", 0 < s.metrics_port < 65536, "a port number"),
        ("mtu", 576 <= s.mtu <= 9000, "between 576 and 9000"),
        ("resyncSeconds", s.resync_seconds >= 0, "0 (off) or more"),
        ("watchTimeoutSeconds", s.watch_timeout_seconds >= 1, "at least 1"),
        ("apiRetryMaxSeconds", 0.1 <= s.api_retry_max_seconds <= 300, "between 0.1 and 300"),
    ]
    checks.append(("datapathType", s.datapath_type in ("system", "netdev"), "system or netdev"))
    for key, value in (("clusterCIDR", s.cluster_cidr), ("serviceCIDR", s.service_cidr)):
        if value:
            try:
                ok = ipaddress.ip_network(value).version == 4
            except ValueError:
                ok = False
            checks.append((key, ok, '"" or an IPv4 CIDR'))
    if s.pod_cidr != "node":
        try:
            ok = ipaddress.ip_network(s.pod_cidr).version == 4
        except ValueError:
            ok = False
        checks.append(("podCIDR", ok, '"node" or an IPv4 CIDR'))
    for key, ok, expected in checks:
        if not ok:
            raise SettingsError(f"{origin}: {key}: must be {expected}")
    return s


def load_settings(path: str | None) -> Settings:
    """The settings file at `path` (None: the defaults)."""
    if path is None:
        return Settings()
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise SettingsError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    return parse_settings(doc, path)
