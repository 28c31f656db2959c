"""The agent's node set-up at start: its Node (InternalIP, spec.podCIDR) and its settings turned
into the node's bridge, tunnel port and gateway port (sdn/node_setup.py, the code the lab and
the Vagrant provisioning run too). Idempotent: an agent restarted on a set-up node changes
nothing (no controller reconnection, no flow lost)."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from sdn.k8s.settings import Settings
from sdn.layout import GATEWAY_OFPORT, GATEWAY_PORT_MAC, TUNNEL_OFPORT
from sdn.node_setup import NodeBridge, SetupError, setup


def internal_ip(node: dict) -> str | None:
    """The Node's InternalIP (IPv4), as the kubelet reports it."""
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and ipaddress.ip_address(a["address"]).version == 4:
            return a["address"]
    return None


def node_bridge(settings: Settings, node: dict, controller: str) -> NodeBridge:
    """What this node's bridge should be: the tunnel's local end at the Node's InternalIP (no
    tunnel without one), the gateway port holding the first address of the pod CIDR when the
    settings name the cluster's pod network (host enforcement). A new bridge's datapath-id is
    the InternalIP (unique in a cluster); an existing bridge keeps its own."""
    name = (node.get("metadata") or {}).get("name", "?")
    address = internal_ip(node)
    pod_cidr = settings.pod_cidr if settings.pod_cidr != "node" else (node.get("spec") or {}).get("podCIDR")
    gateway: dict = {}
    if settings.cluster_cidr and settings.enforce == "host":
        if not pod_cidr:
            raise SetupError(f"node {name}: no pod CIDR (spec.podCIDR, or the settings' podCIDR) for the gateway port")
        net = ipaddress.ip_network(pod_cidr)
        gateway = {"gateway_ip": f"{net[1]}/{net.prefixlen}", "gateway_mac": GATEWAY_PORT_MAC,
                   "gateway_ofport": GATEWAY_OFPORT, "cluster_cidr": settings.cluster_cidr,
                   "service_cidr": settings.service_cidr}
    return NodeBridge(new_dpid=f"{int(ipaddress.ip_address(address)):016x}" if address else None, db=settings.ovsdb,
                      bridge=settings.bridge, datapath_type=settings.datapath_type, controllers=(controller,),
                      tunnel=settings.tunnel if address else None, local_ip=address, tunnel_ofport=TUNNEL_OFPORT,
                      **gateway)


def setup_node(settings: Settings, api_client: Any, node: str, controller: str, wait: float = 60.0) -> list[str]:
    """Read this node's Node (retrying while the API server does not answer, up to `wait`
    seconds), then set the node up; what was changed."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + wait
    while True:
        try:
            obj = api_client.sanitize_for_serialization(core.read_node(node))
            break
        except ApiException as e:
            if e.status == 404:
                raise SetupError(f"node {node}: no such Node in the API") from None
            why = f"{e.status} {e.reason}"
        except Exception as e:  # noqa: BLE001 - connection refused, timeouts: the API server is not up yet
            why = str(e)
        if time.monotonic() > deadline:
            raise SetupError(f"node {node}: cannot read its Node from the API server: {why}")
        time.sleep(1.0)
    return setup(node_bridge(settings, obj, controller))
