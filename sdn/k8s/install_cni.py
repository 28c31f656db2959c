"""Install the CNI plugin on a node: the `sdn-cni` executable into the CNI bin directory and
`10-sdn.conflist` into the CNI config directory, for the node's pod CIDR.

Run by the DaemonSet's init container (deploy/daemonset.yaml) with the host directories
mounted; the pod CIDR comes from the settings or, with `podCIDR: node`, from the Node
object (spec.podCIDRs, assigned by the node IPAM controller, waited for if not yet set).
Files are written next to their final name and renamed, so the kubelet never reads half of
one. The conflist follows docs/cni.md.

    python -m sdn.k8s.install_cni --node NODE --config /etc/sdn/sdn.yaml \\
        --cni-bin-dir /host/opt/cni/bin --cni-conf-dir /host/etc/cni/net.d
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shutil
import sys
import time
from typing import Any

from sdn.k8s.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

CONFLIST = "10-sdn.conflist"
PLUGIN = "sdn-cni"


def render_conflist(settings: Settings, pod_cidr: str, pod_cidr6: str | None = None) -> dict:
    """The network configuration list for a node whose pods live in `pod_cidr` (IPv4) and, on
    a dual-stack node, also get an address of `pod_cidr6` (IPv6)."""
    net = ipaddress.IPv4Network(pod_cidr, strict=False)
    if net.num_addresses < 4:
        raise ValueError(f"pod CIDR {pod_cidr} is too small (at least a /30)")
    gateway = net.network_address + 1
    v4 = {"subnet": str(net), "gateway": str(gateway), "rangeStart": str(gateway + 1),
          "rangeEnd": str(net.broadcast_address - 1)}
    ipam: dict = {"type": "sdn-ipam", **v4, "dataDir": settings.ipam_data_dir, "routes": [{"dst": "0.0.0.0/0"}]}
    if pod_cidr6:
        net6 = ipaddress.IPv6Network(pod_cidr6, strict=False)
        ipam = {"type": "sdn-ipam", "ranges": [[v4], [{"subnet": str(net6), "gateway": str(net6[1])}]],
                "dataDir": settings.ipam_data_dir, "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    return {
        "cniVersion": "1.0.0",
        # CNI 1.1 runtimes pick the newest they speak (STATUS and GC need 1.1.0); older ones
        # read cniVersion.
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": settings.cni_network,
        "plugins": [{
            "type": PLUGIN,
            "bridge": settings.bridge,
            "ovsdb": settings.ovsdb,
            "mtu": settings.mtu,
            "ipam": ipam,
        }],
    }


def node_pod_cidrs(api_client: Any, node: str, timeout: float = 300.0,
                   interval: float = 2.0) -> tuple[str, str | None]:
    """The node's IPv4 pod CIDR, waiting until the node IPAM controller has set one, and its
    IPv6 pod CIDR if it has one (a dual-stack node gets both at once)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + timeout
    while True:
        try:
            spec = core.read_node(node).spec
            cidrs = [] if spec is None else \
                list(spec.pod_cidrs or []) or ([spec.pod_cidr] if spec.pod_cidr else [])
            by_family: dict[int, str] = {}
            for cidr in cidrs:
                by_family.setdefault(ipaddress.ip_network(cidr, strict=False).version, cidr)
            if 4 in by_family:
                return by_family[4], by_family.get(6)
            problem = "has no IPv4 spec.podCIDR yet"
        except ApiException as e:
            problem = f"cannot be read: {e.status} {e.reason}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"node {node} {problem}")
        log.info("node %s %s; waiting", node, problem)
        time.sleep(interval)


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(settings: Settings, pod_cidr: str, binary: str, cni_bin_dir: str,
            cni_conf_dir: str, pod_cidr6: str | None = None) -> list[str]:
    """Copy the plugin and write the conflist; returns the paths written."""
    os.makedirs(cni_bin_dir, exist_ok=True)
    os.makedirs(cni_conf_dir, exist_ok=True)
    plugin = os.path.join(cni_bin_dir, PLUGIN)
    tmp = f"{plugin}.tmp{os.getpid()}"
    shutil.copyfile(binary, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, plugin)  # never a half-copied executable, even while pods start
    conflist = os.path.join(cni_conf_dir, CONFLIST)
    text = json.dumps(render_conflist(settings, pod_cidr, pod_cidr6), indent=2) + "\n"
    _write_atomically(conflist, text.encode(), 0o644)
    return [plugin, conflist]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdn.k8s.install_cni",
                                     description="Install sdn-cni and its conflist on a node.")
    parser.add_argument("--node", required=True)
    parser.add_argument("--config", help="the settings file (default: built-in defaults)")
    parser.add_argument("--kubeconfig", help="default: the in-cluster service account")
    parser.add_argument("--binary", default="/opt/sdn/bin/sdn-cni")
    parser.add_argument("--cni-bin-dir", default="/host/opt/cni/bin")
    parser.add_argument("--cni-conf-dir", default="/host/etc/cni/net.d")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        settings = load_settings(args.config)
        pod_cidr, pod_cidr6 = settings.pod_cidr, None
        if pod_cidr == "node":
            from sdn.k8s.connect import api_client

            pod_cidr, pod_cidr6 = node_pod_cidrs(api_client(args.kubeconfig), args.node)
        for path in install(settings, pod_cidr, args.binary, args.cni_bin_dir,
                            args.cni_conf_dir, pod_cidr6):
            log.info("wrote %s", path)
    except (SettingsError, OSError, ValueError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
