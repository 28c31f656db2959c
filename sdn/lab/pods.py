"""Pods of the lab: a network namespace each, plugged in by our CNI plugin (`sdn-cni`, as a
container runtime would call it), and one server process serving its containerPorts.

The CNI plugin picks the address from the node's pod CIDR (its persistent IPAM store lives in
the lab's state directory), sets MAC 0a:58+IP, the default route through the node's gateway
address, turns TX checksum offload off (the userspace datapath needs it for TCP), and records
the pod's identity on the OVS Interface (external_ids k8s.pod), which is how the node's agent
learns the pod's ofport.

A pod whose manifest carries a status.podIP inside its node's pod CIDR asks for that address
(the upstream e2e model and the examples give fixed addresses, and ipBlock rules name them):
the ADD runs with an IPAM range of that one address, so the plugin still reserves it in its
store (a taken address fails the ADD, and the lab falls back to any free address).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sdn.lab.topology import POD_MTU

CNI_IFNAME = "eth0"
CNI_VERSION = "1.0.0"


class PodError(RuntimeError):
    pass


def pod_netns(prefix: str, key: str) -> str:
    ns, name = key.split("/", 1)
    return f"{prefix}-{ns}_{name}"  # '_' is never in a Kubernetes name: unambiguous


def container_id(prefix: str, key: str) -> str:
    ns, name = key.split("/", 1)
    return f"{prefix}-{ns}-{name}-{uuid.uuid4().hex[:8]}"


def cni_command() -> list[str]:
    """The plugin: the `sdn-cni` console script of this Python environment, else the module."""
    here = Path(sys.executable).parent / "sdn-cni"
    if here.exists():
        return [str(here)]
    found = shutil.which("sdn-cni")
    if found:
        return [found]
    return [sys.executable, "-m", "sdn.cni.plugin"]


def cni_config(*, network: str, ovsdb: str, ovs_netns: str, cidr: str, gateway: str,
               data_dir: Path, bridge: str, request: str | None = None) -> dict:
    ipam = {"type": "sdn-ipam", "subnet": cidr, "gateway": gateway, "dataDir": str(data_dir)}
    if request:
        ipam["rangeStart"] = ipam["rangeEnd"] = request
    return {"cniVersion": CNI_VERSION, "name": network, "type": "sdn-cni", "bridge": bridge,
            "ovsdb": ovsdb, "ovsNetns": ovs_netns, "mtu": POD_MTU, "ipam": ipam}


def cni(command: str, config: dict, cid: str, netns: str, key: str,
        timeout: float = 60.0) -> dict | None:
    """Run the plugin like a runtime: CNI_* environment, the configuration on stdin."""
    ns, name = key.split("/", 1)
    env = dict(os.environ)
    env.update(CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS=f"/run/netns/{netns}",
               CNI_IFNAME=CNI_IFNAME, CNI_PATH=str(Path(sys.executable).parent),
               CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}")
    try:
        proc = subprocess.run(cni_command(), input=json.dumps(config), env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PodError(f"CNI {command} for pod {key} timed out after {timeout}s") from None
    out = None
    if proc.stdout.strip():
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            out = None
    if proc.returncode != 0:
        msg = (out or {}).get("msg") or proc.stderr.strip() or proc.stdout.strip()
        details = (out or {}).get("details") or ""
        err = PodError(f"CNI {command} for pod {key} failed: {msg}")
        err.code = (out or {}).get("code")  # type: ignore[attr-defined]
        err.details = details  # type: ignore[attr-defined]
        raise err
    return out


def result_ip(result: dict) -> str:
    for ip in (result or {}).get("ips", []):
        addr = ip.get("address", "")
        if addr and ":" not in addr:
            return addr.split("/")[0]
    raise PodError(f"CNI result without an IPv4 address: {json.dumps(result)}")


def start_server(netns: str, key: str, tcp: list[int], udp: list[int], log: Path,
                 timeout: float = 15.0) -> int:
    """Start the pod's server inside its namespace; returns its pid once it is listening."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "sdn.lab.serve", "--daemon", "--name", key,
            "--tcp", ",".join(map(str, tcp)), "--udp", ",".join(map(str, udp))]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=logf, start_new_session=True, close_fds=True)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 64)
                if not chunk:
                    break
                line += chunk
        words = line.split()
        if len(words) != 2 or words[0] != b"ready" or not words[1].isdigit():
            proc.kill()
            proc.wait()
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise PodError(f"the server of pod {key} did not start (log {log}):\n{tail}")
    finally:
        proc.stdout.close()
    proc.wait(timeout=timeout)  # the parent exits at once; the server is its child
    return int(words[1])
