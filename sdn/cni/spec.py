"""The CNI contract this plugin speaks: versions, error codes, the environment, the result.

Written against the CNI specification v1.1.0 (SPEC.md of containernetworking/cni, tag
spec-v1.1.0: STATUS and GC besides ADD, DEL, CHECK and VERSION); 1.0.0 and 0.4.0 are accepted
too (the 0.4.0 result adds ``"version": "4"`` to each IP; STATUS and GC need 1.1.0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
SINCE_1_1 = ("STATUS", "GC")  # commands a configuration must say cniVersion 1.1.0 for

# Well-known error codes (SPEC.md, "Error").
ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50  # STATUS: the plugin cannot service ADD requests now
# Plugin-specific codes (100 and up).
ERR_IPAM_EXHAUSTED = 100
ERR_INTERFACE = 101  # creating or configuring the veth pair failed
ERR_OVS = 102  # ovs-vsctl failed (not a transient "cannot reach OVSDB": that is 11)
ERR_CHECK = 103  # CHECK found the container's networking differs from what ADD set up
ERR_INTERNAL = 104  # a bug: an unexpected exception

# libcni's ValidateContainerID and ValidateInterfaceName (pkg/utils/utils.go).
_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
IFNAMSIZ = 15

# Which variables each command needs (as the reference plugins' skel package checks them).
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "VERSION": (),
    "STATUS": (),
    "GC": (),
}


class CniError(Exception):
    """An error the runtime sees as the spec's error object (code, msg, details)."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Request:
    """The CNI_* environment of one invocation, validated for its command."""

    command: str
    container_id: str = ""
    netns: str | None = None
    ifname: str = ""
    args: Mapping[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict)  # as given: handed on to a delegated plugin

    @property
    def pod_key(self) -> str:
        """"namespace/name" from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME): the identity the
        controller maps ports by, so ADD cannot do without it."""
        ns, name = self.args.get("K8S_POD_NAMESPACE"), self.args.get("K8S_POD_NAME")
        if not ns or not name:
            raise CniError(ERR_INVALID_ENV,
                           "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME "
                           "(the pod this interface belongs to)",
                           f"CNI_ARGS gave: {dict(self.args)}")
        return f"{ns}/{name}"


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS: "K1=V1;K2=V2" (empty or missing: none)."""
    out: dict[str, str] = {}
    for pair in text.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r} (want KEY=VALUE)",
                           f"CNI_ARGS={text}")
        out[key] = value
    return out


def parse_env(environ: Mapping[str, str]) -> Request:
    """The invocation's CNI_* variables; raises CniError code 4 naming what is wrong."""
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(ERR_INVALID_ENV, "required env variable CNI_COMMAND missing")
    if command not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}",
                       f"expected one of {', '.join(COMMANDS)}")
    missing = [v for v in _REQUIRED[command] if not environ.get(v)]
    if missing:
        raise CniError(ERR_INVALID_ENV,
                       f"required env variables [{', '.join(missing)}] missing for {command}")
    if command == "VERSION":
        return Request(command)
    if command in SINCE_1_1:
        return Request(command, path=tuple(p for p in environ.get("CNI_PATH", "").split(":") if p),
                       environ=dict(environ))
    cid = environ["CNI_CONTAINERID"]
    if not _CONTAINER_ID.match(cid):
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_CONTAINERID {cid!r}",
                       "must start with a letter or digit and contain only letters, digits, "
                       "'_', '.' and '-'")
    ifname = environ["CNI_IFNAME"]
    if (len(ifname) > IFNAMSIZ or ifname in (".", "..")
            or any(c in "/:" or c.isspace() for c in ifname)):
        raise CniError(ERR_INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}",
                       f"at most {IFNAMSIZ} characters, no '/', ':' or whitespace")
    netns = environ.get("CNI_NETNS") or None
    if netns is not None and not netns.startswith("/"):
        raise CniError(ERR_INVALID_ENV, f"CNI_NETNS {netns!r} is not a path",
                       "the spec wants the namespace's path, e.g. /run/netns/NAME or "
                       "/proc/PID/ns/net")
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return Request(command, cid, netns, ifname, parse_args(environ.get("CNI_ARGS", "")), path, dict(environ))


def version_result(cni_version: str | None) -> dict:
    """The VERSION answer: the version asked about (or the latest) and all we speak."""
    return {"cniVersion": cni_version or LATEST_VERSION,
            "supportedVersions": list(SUPPORTED_VERSIONS)}


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    sandbox: str | None = None  # the netns path; None for the host side

    def to_json(self) -> dict:
        out = {"name": self.name, "mac": self.mac}
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out


def add_result(cni_version: str, interfaces: Sequence[Interface], address, gateway, interface_index: int,
               routes: Sequence[tuple[str, str | None]], dns: Mapping, more: Sequence[tuple] = ()) -> dict:
    """The ADD result in ``cni_version``'s shape (0.4.0 adds ``"version"`` per IP); `more`:
    further (address, gateway) pairs on the same interface (the IPv6 one)."""
    ips = []
    for addr, gw in [(address, gateway), *more]:
        ip = {"address": str(addr), "gateway": str(gw), "interface": interface_index}
        if cni_version == "0.4.0":
            ip = {"version": str(addr.version), **ip}
        ips.append(ip)
    return {
        "cniVersion": cni_version,
        "interfaces": [i.to_json() for i in interfaces],
        "ips": ips,
        "routes": [{"dst": dst, **({"gw": gw} if gw else {})} for dst, gw in routes],
        "dns": dict(dns),
    }
