"""The network configuration on stdin: parsed and validated once, defaults filled in.

Every problem is a CniError naming the field and what was expected: code 6 when stdin is
not a JSON object, 1 for a cniVersion we do not speak, 7 for anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import Any

from sdn.cni.spec import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    IFNAMSIZ,
    SUPPORTED_VERSIONS,
    CniError,
)

# What the plugin handles, of either family (a network config is of one family)
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface

DEFAULT_BRIDGE = "br-sdn"  # sdn.layout.BRIDGE_NAME (not imported: keeps the plugin's start fast)
GATEWAY_MAC = "0a:58:a9:fe:00:01"  # sdn.layout.GATEWAY_MAC: the pods' next hop (IPv6 neighbor)
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_OVS_TIMEOUT = 10.0
DEFAULT_DATA_DIR = Path("/var/lib/cni/networks")
IPAM_TYPE = "sdn-ipam"
HOST_LOCAL = "host-local"
NETNS_RUN_DIR = Path("/run/netns")  # where `ip netns add NAME` puts NAME
# SPEC.md "Configuration format": the network name.
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress


@dataclass(frozen=True)
class IpamConfig:
    """One IPv4 range: addresses ``range_start``..``range_end`` of ``subnet``, minus the
    network, broadcast and gateway addresses; reservations live in ``store``."""

    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress
    store: Path  # <dataDir>/<network name>, as host-local lays it out
    routes: tuple[Route, ...]
    # "host-local": the standard IPAM plugin allocates (found in CNI_PATH, sdn.cni.delegate);
    # its store has the same format and place, so CHECK, GC and STATUS read it directly.
    delegate: str | None = None
    index: int = 0  # the range set: host-local's last_reserved_ip.<index>
    ipv6: IpamConfig | None = None  # an IPv6 range besides (the node has an IPv6 pod CIDR)


@dataclass(frozen=True)
class NetConfig:
    cni_version: str
    name: str
    bridge: str
    ovsdb: str
    ovs_netns: str | None  # a path; None: the plugin's own namespace
    ovs_timeout: float
    mtu: int | None
    ipam: IpamConfig
    dns: Mapping[str, Any]
    prev_result: Mapping[str, Any] | None
    raw: Mapping[str, Any]  # the configuration as given (handed on to a delegated IPAM plugin)
    # GC (CNI 1.1): the attachments the runtime still uses, as (container id, ifname); None
    # when the configuration has no "cni.dev/valid-attachments".
    valid_attachments: frozenset[tuple[str, str]] | None = None


def peek_version(data: bytes) -> str | None:
    """The cniVersion of stdin, if it has one: errors are reported in that version."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    v = obj.get("cniVersion") if isinstance(obj, dict) else None
    return v if isinstance(v, str) and v else None


def _bad(msg: str, details: str = "") -> CniError:
    return CniError(ERR_INVALID_CONFIG, msg, details)


def _get(obj: Mapping, key: str, kind: type | tuple[type, ...], where: str, default=None):
    value = obj.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _bad(f"{where}{key}: expected {names}, got {json.dumps(value)}")
    return value


def _address(text: Any, field: str, version: int = 4):
    try:
        if not isinstance(text, str):
            raise ValueError
        addr = ip_address(text)
    except ValueError:
        raise _bad(f"ipam.{field}: {text!r} is not an IP address") from None
    if addr.version != version:
        raise _bad(f"ipam.{field}: {text} is IPv{addr.version}, in an IPv{version} range")
    return addr


def _network(text: Any, field: str, version: int = 4):
    example = "10.244.1.0/24" if version == 4 else "fd00:10:244:1::/64"
    if not isinstance(text, str):
        raise _bad(f"{field}: expected a CIDR string like \"{example}\", got "
                   f"{json.dumps(text)}")
    try:
        net = ip_network(text)
    except ValueError as e:
        try:
            fixed = ip_network(text, strict=False)
        except ValueError:
            raise _bad(f"{field}: {text!r} is not a CIDR ({e})") from None
        raise _bad(f"{field}: {text} has host bits set; did you mean {fixed}?") from None
    if net.version != version:
        raise _bad(f"{field}: {text} is IPv{net.version}; the pod's first address is IPv4 "
                   f"(its MAC and the controller's port map follow it): give an IPv6 range in "
                   f"ipam.ranges, after the IPv4 one" if version == 4 else
                   f"{field}: {text} is IPv{net.version}, in the IPv6 range set")
    return net


def _in(addr: IPAddress, subnet: IPNetwork, field: str) -> IPAddress:
    if addr not in subnet:
        raise _bad(f"ipam.{field}: {addr} is outside ipam.subnet {subnet}")
    return addr


def parse_ipam(ipam: Any, network_name: str) -> IpamConfig:
    if not isinstance(ipam, dict):
        raise _bad("ipam: required, an object like "
                   '{"type": "sdn-ipam", "subnet": "10.244.1.0/24"}')
    kind = ipam.get("type", IPAM_TYPE)
    if kind not in (IPAM_TYPE, HOST_LOCAL):
        raise _bad(f"ipam.type: {kind!r} is not supported: \"{IPAM_TYPE}\" (this plugin allocates, with "
                   f"host-local's fields and on-disk format) or \"{HOST_LOCAL}\" (the standard plugin, "
                   f"found in CNI_PATH)")
    common = {"dataDir": ipam.get("dataDir", str(DEFAULT_DATA_DIR))}
    if kind == HOST_LOCAL:  # host-local adds no route unless told
        common["routes"] = ipam.get("routes", [])
    elif "routes" in ipam:
        common["routes"] = ipam["routes"]
    v6 = None
    if "ranges" in ipam:
        v4_fields, v6_fields = _ranges(ipam["ranges"])
        if v6_fields is not None and kind == HOST_LOCAL:
            raise _bad("ipam.ranges: an IPv6 range with host-local is not supported; use "
                       f"\"{IPAM_TYPE}\", which gives the pod both addresses")
        fields = dict(v4_fields, **common)
        if v6_fields is not None:
            v6 = _range(dict(v6_fields, **common), network_name, 6, "ipam.ranges[1][0].", 1)
    else:
        fields = dict(ipam, **common)
    config = _range(fields, network_name, 4, "ipam.", 0)
    return IpamConfig(**{**config.__dict__, "delegate": HOST_LOCAL if kind == HOST_LOCAL else None, "ipv6": v6})


def _range(ipam: dict, network_name: str, version: int, where: str, index: int) -> IpamConfig:
    """One range (host-local's fields): subnet, rangeStart, rangeEnd, gateway, routes."""
    if "subnet" not in ipam:
        raise _bad(f"{where}subnet: required (the node's pod CIDR, e.g. \"10.244.1.0/24\")")
    subnet = _network(ipam["subnet"], f"{where}subnet", version)
    if subnet.max_prefixlen - subnet.prefixlen < 2:
        raise _bad(f"{where}subnet: {subnet} is too small: a pod needs an address besides the "
                   f"network, gateway and broadcast addresses (/30 or larger)")
    gateway = _in(_address(ipam.get("gateway", str(subnet[1])), "gateway", version), subnet, "gateway")
    if gateway in (subnet.network_address, subnet.broadcast_address):
        raise _bad(f"{where}gateway: {gateway} is the network or broadcast address of {subnet}")
    start = _in(_address(ipam.get("rangeStart", str(subnet[1])), "rangeStart", version), subnet,
                "rangeStart")
    end = _in(_address(ipam.get("rangeEnd", str(subnet[-2])), "rangeEnd", version), subnet, "rangeEnd")
    if int(start) > int(end):
        raise _bad(f"{where}rangeStart {start} is after {where}rangeEnd {end}")
    never = {subnet.network_address, subnet.broadcast_address, gateway}
    if int(end) - int(start) + 1 <= sum(start <= a <= end for a in never):
        raise _bad(f"ipam: range {start}-{end} holds no address besides the network, "
                   f"broadcast and gateway ({gateway}) addresses")
    data_dir = _get(ipam, "dataDir", str, "ipam.", str(DEFAULT_DATA_DIR))
    if not data_dir.startswith("/"):
        raise _bad(f"ipam.dataDir: {data_dir!r} must be an absolute path")
    default = "0.0.0.0/0" if version == 4 else "::/0"
    routes_json = _get(ipam, "routes", list, "ipam.", [{"dst": default}])
    routes = []
    for i, r in enumerate(routes_json):
        if not isinstance(r, dict) or "dst" not in r:
            raise _bad(f"ipam.routes[{i}]: expected {{\"dst\": CIDR, \"gw\": IP (optional)}}, "
                       f"got {json.dumps(r)}")
        try:
            family: int = ip_network(r["dst"], strict=False).version
        except (TypeError, ValueError):
            family = version
        if family != version:
            continue  # the other family's route: for the other range
        gw = _address(r["gw"], f"routes[{i}].gw", version) if "gw" in r else gateway
        routes.append(Route(_network(r["dst"], f"ipam.routes[{i}].dst", version),
                            _in(gw, subnet, f"routes[{i}].gw")))
    return IpamConfig(subnet, start, end, gateway, Path(data_dir) / network_name, tuple(routes), None, index)


def _ranges(ranges: Any) -> tuple[dict, dict | None]:
    """host-local's "ranges" (a list of range sets, each a list of ranges): the IPv4 range
    (the pod's first address, the one the controller knows it by) and an IPv6 one, if any."""
    if not isinstance(ranges, list) or not all(isinstance(rs, list) for rs in ranges):
        raise _bad("ipam.ranges: a list of range sets, each a list of {subnet, rangeStart, rangeEnd, gateway}")
    found: dict[int, dict] = {}
    for i, rs in enumerate(ranges):
        for j, r in enumerate(rs):
            if not isinstance(r, dict) or "subnet" not in r:
                raise _bad(f"ipam.ranges[{i}][{j}]: expected an object with a subnet, got {json.dumps(r)}")
            try:
                found.setdefault(ip_network(r["subnet"], strict=False).version, r)
            except (TypeError, ValueError):
                raise _bad(f"ipam.ranges[{i}][{j}].subnet: {r['subnet']!r} is not a CIDR") from None
    if 4 not in found:
        raise _bad("ipam.ranges: no IPv4 range (the pod's first address on the node bridge is IPv4)")
    return found[4], found.get(6)


def netns_path(name_or_path: str) -> str:
    """A namespace given by name (``ip netns`` style) or by path, as a path."""
    return name_or_path if "/" in name_or_path else str(NETNS_RUN_DIR / name_or_path)


def parse_config(data: bytes) -> NetConfig:
    """The network configuration from stdin bytes."""
    try:
        conf = json.loads(data)
    except ValueError as e:
        raise CniError(ERR_DECODE, "failed to decode the network configuration on stdin "
                       "(not JSON)", str(e)) from None
    if not isinstance(conf, dict):
        raise CniError(ERR_DECODE, "the network configuration on stdin must be a JSON object",
                       f"got {type(conf).__name__}")
    version = conf.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise _bad("cniVersion: required (\"1.1.0\", \"1.0.0\" or \"0.4.0\")")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"incompatible CNI version {version}",
                       f"this plugin supports {', '.join(SUPPORTED_VERSIONS)}")
    name = conf.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _bad(f"name: required, letters, digits, '_', '.' and '-' (got {json.dumps(name)})")
    bridge = _get(conf, "bridge", str, "", DEFAULT_BRIDGE)
    if not bridge or len(bridge) > IFNAMSIZ:
        raise _bad(f"bridge: {bridge!r} is not a bridge name (1..{IFNAMSIZ} characters)")
    ovsdb = _get(conf, "ovsdb", str, "", DEFAULT_OVSDB)
    if not re.match(r"^(unix|tcp|ssl):.+", ovsdb):
        raise _bad(f"ovsdb: {ovsdb!r} is not an OVSDB remote (unix:PATH, tcp:IP:PORT or "
                   f"ssl:IP:PORT)")
    ovs_netns = _get(conf, "ovsNetns", str, "")
    timeout = float(_get(conf, "ovsTimeout", (int, float), "", DEFAULT_OVS_TIMEOUT))
    if timeout < 1:
        raise _bad(f"ovsTimeout: {timeout} is below 1 second")
    mtu = _get(conf, "mtu", int, "")
    if mtu is not None and not 68 <= mtu <= 65535:
        raise _bad(f"mtu: {mtu} is outside 68..65535")
    dns = _get(conf, "dns", dict, "", {})
    prev = _get(conf, "prevResult", dict, "")
    return NetConfig(version, name, bridge, ovsdb, netns_path(ovs_netns) if ovs_netns else None,
                     timeout, mtu, parse_ipam(conf.get("ipam"), name), dns, prev, conf,
                     _attachments(conf.get(VALID_ATTACHMENTS)))


VALID_ATTACHMENTS = "cni.dev/valid-attachments"


def _attachments(value: Any) -> frozenset[tuple[str, str]] | None:
    """GC's list of {"containerID": ..., "ifname": ...} objects."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad(f"{VALID_ATTACHMENTS}: must be a list of {{containerID, ifname}} objects")
    out = set()
    for i, item in enumerate(value):
        if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)
                and isinstance(item.get("ifname"), str) and item["containerID"] and item["ifname"]):
            raise _bad(f"{VALID_ATTACHMENTS}[{i}]: needs a containerID and an ifname (got {json.dumps(item)})")
        out.add((item["containerID"], item["ifname"]))
    return frozenset(out)
