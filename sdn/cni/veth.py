"""The pod's veth pair: created, addressed, inspected and deleted with iproute2 and ethtool.

Commands run inside a namespace through ``nsenter --net=PATH`` because CNI names
namespaces by path (``ip -n`` only takes names).  The pair is created in one step with each
end already in its namespace and under its final name: the host end in the namespace of
ovs-vswitchd, the pod end (CNI_IFNAME, with its MAC and MTU) in CNI_NETNS.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_interface

from sdn.cni.config import IPAddress, IPInterface, Route
from sdn.cni.spec import ERR_INTERFACE, CniError

COMMAND_TIMEOUT = 20.0


def host_ifname(container_id: str, ifname: str) -> str:
    """"veth" + 8 hex digits of a hash of (container id, ifname): stable, so DEL finds it
    from the environment alone, and within IFNAMSIZ (15)."""
    return "veth" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:8]


def pod_mac(ip: IPAddress) -> str:
    """0a:58 followed by the IPv4 address bytes: sdn.layout.pod_mac's convention."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ip.packed)


def _run(argv: Sequence[str], netns: str | None = None, *, input: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["nsenter", f"--net={netns}"] if netns else []) + list(argv)
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
    except FileNotFoundError as e:
        raise CniError(ERR_INTERFACE, f"{e.filename}: not found (iproute2, ethtool and "
                       f"util-linux's nsenter are needed)") from None
    except subprocess.TimeoutExpired:
        raise CniError(ERR_INTERFACE, f"timed out after {COMMAND_TIMEOUT}s: "
                       f"{' '.join(cmd)}") from None
    if check and proc.returncode != 0:
        raise CniError(ERR_INTERFACE, f"{' '.join(argv)} failed"
                       + (f" in {netns}" if netns else "") + f": {proc.stderr.strip()}",
                       f"command: {' '.join(cmd)}\ninput:\n{input}" if input else
                       f"command: {' '.join(cmd)}")
    return proc


def netns_exists(netns: str | None) -> bool:
    """Whether the namespace path is there (None: the plugin's own, always there)."""
    return netns is None or os.path.exists(netns)


def create(host: str, host_netns: str | None, ifname: str, netns: str, mac: str,
           mtu: int | None) -> None:
    """The pair: ``host`` in ``host_netns``, ``ifname`` with ``mac`` in ``netns``."""
    mtu_args = ["mtu", str(mtu)] if mtu else []
    proc = _run(["ip", "link", "add", host, *mtu_args, "type", "veth", "peer", "name", ifname,
                 "address", mac, *mtu_args, "netns", netns], host_netns, check=False)
    if proc.returncode != 0:
        hint = ""
        if "File exists" in proc.stderr:
            hint = (f"; {host} or {ifname} already exists: an earlier ADD for this container "
                    f"and ifname that was not DELeted?")
        raise CniError(ERR_INTERFACE, f"cannot create veth pair {host} <-> {ifname} "
                       f"(in {netns}): {proc.stderr.strip()}{hint}")


def configure_pod(netns: str, ifname: str, address: IPInterface,
                  routes: Sequence[Route]) -> None:
    """Address, link up, routes; TX checksum offload off (the OVS userspace datapath sends
    TCP segments with unfinished checksums otherwise: ICMP works, TCP silently does not)."""
    lines = [f"addr add {address} dev {ifname}", f"link set {ifname} up"]
    lines += [f"route add {r.dst} via {r.gw} dev {ifname}" for r in routes]
    _run(["ip", "-batch", "-"], netns, input="\n".join(lines) + "\n")
    _run(["ethtool", "-K", ifname, "tx", "off"], netns)


def configure_pod6(netns: str, ifname: str, address, gateway, routes: Sequence[Route],
                   gateway_mac: str) -> None:
    """The pod's IPv6 address, routed like its IPv4 one: everything via the gateway. The bridge
    forwards by address and answers no neighbor solicitation, so the address gets no on-link
    prefix route (noprefixroute), no duplicate-address wait (nodad: the IPAM made it unique),
    and the gateway a permanent neighbor entry with the bridge's gateway MAC."""
    lines = [f"addr add {address} dev {ifname} noprefixroute nodad",
             f"neigh replace {gateway} lladdr {gateway_mac} dev {ifname} nud permanent"]
    lines += [f"route add {r.dst} via {r.gw} dev {ifname} onlink" for r in routes]
    _run(["ip", "-6", "-batch", "-"], netns, input="\n".join(lines) + "\n")


def set_up(netns: str | None, name: str) -> str:
    """Bring ``name`` up; returns its MAC."""
    _run(["ip", "link", "set", name, "up"], netns)
    link = show(netns, name)
    if link is None:
        raise CniError(ERR_INTERFACE, f"{name} vanished right after it was created")
    return link.mac


def delete(netns: str | None, name: str) -> bool:
    """Delete link ``name`` (a veth end takes its peer along); False if it was not there."""
    if not netns_exists(netns):
        return False
    proc = _run(["ip", "link", "del", name], netns, check=False)
    if proc.returncode == 0:
        return True
    if "Cannot find device" in proc.stderr or "does not exist" in proc.stderr:
        return False
    raise CniError(ERR_INTERFACE, f"cannot delete {name}" + (f" in {netns}" if netns else "")
                   + f": {proc.stderr.strip()}")


@dataclass(frozen=True)
class LinkState:
    name: str
    mac: str
    up: bool
    mtu: int
    addresses: tuple[IPInterface, ...]  # global ones, IPv4 and IPv6


def show(netns: str | None, name: str) -> LinkState | None:
    """The link's state, or None if there is no such link (or namespace)."""
    if not netns_exists(netns):
        return None
    proc = _run(["ip", "-j", "addr", "show", "dev", name], netns, check=False)
    if proc.returncode != 0:
        return None
    (link,) = json.loads(proc.stdout)
    addrs = tuple(ip_interface(f"{a['local']}/{a['prefixlen']}")
                  for a in link.get("addr_info", []) if a.get("family") in ("inet", "inet6")
                  and a.get("scope") != "link")
    return LinkState(link["ifname"], link.get("address", ""), "UP" in link.get("flags", []),
                     link.get("mtu", 0), addrs)


def routes(netns: str, ifname: str, family: int = 4) -> set[tuple[str, str]]:
    """(destination, gateway) of the IPv4 (or IPv6) routes through ``ifname`` with a gateway."""
    out = _run(["ip", "-j", f"-{family}", "route", "show", "dev", ifname], netns).stdout
    found = set()
    for r in json.loads(out or "[]"):
        if r.get("gateway"):
            dst = ("0.0.0.0/0" if family == 4 else "::/0") if r["dst"] == "default" else r["dst"]
            if "/" not in dst:
                dst += "/32" if family == 4 else "/128"
            found.add((dst, r["gateway"]))
    return found


def tx_checksum_off(netns: str, ifname: str) -> bool:
    out = _run(["ethtool", "-k", ifname], netns).stdout
    return any(line.strip() == "tx-checksumming: off" for line in out.splitlines())
