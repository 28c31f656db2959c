"""Delegated IPAM: run the IPAM plugin the configuration names (the standard `host-local`)
the way a runtime runs a plugin: found in CNI_PATH, the same CNI_* environment with the
command set, the network configuration on stdin, its result or error object on stdout.

The configuration is handed on in the newest CNI version both plugins speak (Debian's
host-local 1.1.1 speaks up to 1.0.0, whose ADD result has the same shape as 1.1.0's).
"""

from __future__ import annotations

import json
import os
import subprocess
from ipaddress import IPv4Interface, ip_address, ip_interface, ip_network
from pathlib import Path

from sdn.cni.config import IPAddress, NetConfig, Route
from sdn.cni.spec import (
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_IPAM_EXHAUSTED,
    SUPPORTED_VERSIONS,
    CniError,
    Request,
)

TIMEOUT = 30.0


def find(req: Request, name: str) -> Path:
    """The plugin executable `name` in CNI_PATH, as libcni's FindInPath looks for it."""
    for d in req.path:
        exe = Path(d) / name
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    raise CniError(ERR_INVALID_CONFIG, f"ipam.type {name}: no executable {name} in CNI_PATH "
                   f"({':'.join(req.path) or 'empty'})",
                   "install the standard plugins (Debian: containernetworking-plugins, in /usr/lib/cni) "
                   "and put their directory in CNI_PATH")


def _version(exe: Path, wanted: str, environ: dict) -> str:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))
    proc = subprocess.run([str(exe)], input=json.dumps({"cniVersion": wanted}).encode(),
                          env=dict(environ, CNI_COMMAND="VERSION"), capture_output=True, timeout=TIMEOUT)
    try:
        theirs = json.loads(proc.stdout)["supportedVersions"]
    except (ValueError, KeyError, TypeError):
        raise CniError(ERR_INTERNAL, f"{exe.name} VERSION did not answer a version list",
                       proc.stdout.decode(errors="replace")[:500]) from None
    both = [v for v in theirs if v in SUPPORTED_VERSIONS and key(v) <= key(wanted)]
    if not both:
        raise CniError(ERR_INVALID_CONFIG, f"{exe.name} speaks none of this plugin's CNI versions up to {wanted}",
                       f"it speaks {', '.join(theirs)}")
    return max(both, key=key)


def call(req: Request, conf: NetConfig, command: str) -> dict | None:
    """Run the delegated IPAM plugin for `command`; its result (ADD), or None. Its error comes
    back as a CniError with its code and message."""
    assert conf.ipam.delegate is not None
    exe = find(req, conf.ipam.delegate)
    environ = dict(req.environ)
    version = _version(exe, conf.cni_version, environ)
    stdin = json.dumps(dict(conf.raw, cniVersion=version)).encode()
    try:
        proc = subprocess.run([str(exe)], input=stdin, env=dict(environ, CNI_COMMAND=command),
                              capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CniError(ERR_INTERNAL, f"{exe.name} {command} did not finish within {TIMEOUT:.0f}s") from None
    out = proc.stdout.decode(errors="replace")
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    if proc.returncode != 0:
        doc = doc if isinstance(doc, dict) else {}
        msg = doc.get("msg") or proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
        code = doc["code"] if isinstance(doc.get("code"), int) else ERR_INTERNAL
        if "no IP addresses available" in msg:
            code = ERR_IPAM_EXHAUSTED
        raise CniError(code, f"{exe.name} {command}: {msg}", doc.get("details", ""))
    return doc if isinstance(doc, dict) else None


def ipv4_of(result: dict | None, conf: NetConfig) -> tuple[IPv4Interface, IPAddress, list[Route]]:
    """The IPv4 address, gateway and routes of a delegated ADD result."""
    ips = [ip for ip in (result or {}).get("ips", []) if ip_interface(ip["address"]).version == 4]
    if not ips:
        raise CniError(ERR_INTERNAL, f"{conf.ipam.delegate} returned no IPv4 address", json.dumps(result))
    address = IPv4Interface(ips[0]["address"])
    gateway = ip_address(ips[0]["gateway"]) if ips[0].get("gateway") else conf.ipam.gateway
    routes = [Route(ip_network(r["dst"], strict=False), ip_address(r["gw"]) if r.get("gw") else gateway)
              for r in (result or {}).get("routes", []) if ip_network(r["dst"], strict=False).version == 4]
    return address, gateway, routes
