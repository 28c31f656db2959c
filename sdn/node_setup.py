"""A node's pod bridge, tunnel port, gateway port and routes, made the same way everywhere and
idempotently: by the agent at start (sdn/agent.py, from its settings and its Node), by the netns
lab for each node (sdn/lab/nodes.py, through sdn/scripts/ovs-node-bridge.sh) and by the Vagrant
provisioning (vagrant/provision/bridge.sh). Standard library only: the script runs it with any
python3.

    python -m sdn.node_setup --dpid HEX16 [--db unix:PATH] [--bridge br-sdn]
        [--datapath-type system|netdev] [--protocols LIST] [--controller TARGET]...
        [--tunnel vxlan|geneve --local-ip ADDR] [--tunnel-port tun0] [--tunnel-ofport 1]
        [--timeout SECONDS] [--gateway-ip ADDR/LEN --gateway-mac MAC --cluster-cidr CIDR
         [--gateway-port sdn-gw] [--gateway-ofport 2] [--service-cidr CIDR] [--netns NAME]]
        [--verbose]

1. The bridge, in ONE transaction: datapath type, fail_mode=secure, the pinned datapath-id,
   in-band control off, the OpenFlow versions and the controller(s). fail_mode and the
   controller go in the same transaction as the bridge: changing either later, while no
   controller is connected, deletes every flow.
2. The tunnel port: remote_ip=flow (the flows set tun_dst), local_ip the node's underlay
   address, ofport 1 (sdn/layout.py TUNNEL_OFPORT), external_ids:sdn-role=tunnel.
3. The gateway port: an internal port into the node's own stack, ofport 2, sdn-role=gateway and
   attached-mac, the first address of the node's pod CIDR; a route for the cluster's pod CIDR
   through it, IPv4 forwarding on (never for pod veths: interfaces made later do not forward),
   ARP answered only for an interface's own addresses, TX checksum offload off. The Services'
   range is recorded on the port (external_ids:sdn-service-cidrs) for the agent.
4. Checks: the tunnel port got its ofport; the bridge answers OpenFlow on its management socket.

Every step reads what is there first and changes only what differs, so a second run changes
nothing at all (no controller reconnection, no flow lost); setup() returns what it changed.
Exit status 2 for bad arguments, 1 when OVS refuses or a check fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

PROTOCOLS = "OpenFlow10,OpenFlow13,OpenFlow14"
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ: 15 characters at most


class SetupError(RuntimeError):
    """OVS or the kernel refused, or a check failed (exit 1); code 2: bad arguments."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class NodeBridge:
    """What a node's bridge should be. dpid: pinned (set when it differs); None: keep the
    existing bridge's, and make a new one with new_dpid."""

    dpid: str | None = None
    new_dpid: str | None = None
    db: str | None = None
    bridge: str = "br-sdn"
    datapath_type: str = "system"
    protocols: str = PROTOCOLS
    controllers: tuple[str, ...] = ()
    tunnel: str | None = None
    local_ip: str | None = None
    tunnel_port: str = "tun0"
    tunnel_ofport: int = 1
    timeout: int = 60
    gateway_ip: str | None = None  # ADDR/LEN
    gateway_mac: str | None = None
    gateway_port: str = "sdn-gw"
    gateway_ofport: int = 2
    cluster_cidr: str | None = None
    service_cidr: str = ""
    netns: str | None = None  # the node's network namespace (the lab); None: this one
    env: dict[str, str] | None = field(default=None, compare=False)  # OVS_RUNDIR & co. for the tools


def check(cfg: NodeBridge) -> None:
    """SetupError(code 2) naming the first bad option."""
    def bad(msg: str) -> None:
        raise SetupError(msg, 2)
    if not IFNAME.match(cfg.bridge):
        bad(f"--bridge {cfg.bridge}: not a valid interface name (1-15 of A-Za-z0-9_.-)")
    if cfg.datapath_type not in ("system", "netdev"):
        bad("--datapath-type must be system or netdev")
    for dpid in (cfg.dpid, cfg.new_dpid):
        if dpid is not None and not re.fullmatch(r"[0-9a-fA-F]{16}", dpid):
            bad(f"--dpid must be 16 hex digits, not '{dpid}'")
    if not re.fullmatch(r"OpenFlow1[0-5](,OpenFlow1[0-5])*", cfg.protocols):
        bad(f"--protocols {cfg.protocols}: expected e.g. OpenFlow10,OpenFlow13")
    if cfg.timeout < 1:
        bad("--timeout must be a positive number of seconds")
    if cfg.tunnel is not None:
        if cfg.tunnel not in ("vxlan", "geneve"):
            bad("--tunnel must be vxlan or geneve")
        if not _ipv4(cfg.local_ip or ""):
            bad(f"--tunnel needs --local-ip (IPv4), not '{cfg.local_ip or ''}'")
        if not IFNAME.match(cfg.tunnel_port):
            bad(f"--tunnel-port {cfg.tunnel_port}: not a valid interface name")
        if cfg.tunnel_ofport < 1:
            bad("--tunnel-ofport must be a positive number")
    if cfg.gateway_ip is not None:
        if not _ipv4_cidr(cfg.gateway_ip, strict=False):
            bad(f"--gateway-ip must be ADDR/LEN (IPv4), not '{cfg.gateway_ip}'")
        if not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", cfg.gateway_mac or ""):
            bad(f"--gateway-ip needs --gateway-mac (a MAC), not '{cfg.gateway_mac or ''}'")
        if not _ipv4_cidr(cfg.cluster_cidr or ""):
            bad(f"--gateway-ip needs --cluster-cidr (IPv4 CIDR), not '{cfg.cluster_cidr or ''}'")
        if not IFNAME.match(cfg.gateway_port):
            bad(f"--gateway-port {cfg.gateway_port}: not a valid interface name")
        if cfg.gateway_ofport < 1:
            bad("--gateway-ofport must be a positive number")


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _ipv4_cidr(text: str, strict: bool = True) -> bool:
    try:
        return "/" in text and ipaddress.ip_network(text, strict=strict).version == 4
    except ValueError:
        return False


# ------------------------------------------------------------------ the tools
def _run(cfg: NodeBridge, argv: list[str], in_node: bool = False, check_: bool = True) -> str:
    if in_node and cfg.netns:
        argv = ["ip", "netns", "exec", cfg.netns, *argv]
    env = dict(os.environ, **(cfg.env or {}))
    if cfg.db and cfg.db.startswith("unix:") and not (cfg.env or {}).get("OVS_RUNDIR"):
        env["OVS_RUNDIR"] = os.path.dirname(cfg.db[len("unix:"):])  # ovs-ofctl's bridge.mgmt is there
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=cfg.timeout + 5)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"{' '.join(argv)}: {e}") from None
    if check_ and out.returncode != 0:
        raise SetupError(f"{' '.join(argv)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def _vsctl(cfg: NodeBridge, *args: str, check_: bool = True) -> str:
    db = [f"--db={cfg.db}"] if cfg.db else []
    return _run(cfg, ["ovs-vsctl", *db, f"--timeout={cfg.timeout}", *args], check_=check_)


def _value(v: object) -> object:
    """An OVSDB JSON datum as Python: a map -> dict, a set -> list, an atom as is."""
    if isinstance(v, list) and len(v) == 2 and v[0] == "map":
        return {k: _value(x) for k, x in v[1]}
    if isinstance(v, list) and len(v) == 2 and v[0] == "set":
        return [_value(x) for x in v[1]]
    if isinstance(v, list) and len(v) == 2 and v[0] == "uuid":
        return v[1]
    return v


def _row(cfg: NodeBridge, table: str, name: str, columns: tuple[str, ...]) -> dict | None:
    out = _vsctl(cfg, "--format=json", "--data=json", f"--columns={','.join(columns)}", "find", table,
                 f"name={name}")
    rows = json.loads(out).get("data") or []
    return dict(zip(columns, (_value(v) for v in rows[0]))) if rows else None


def _as_list(v: object) -> list:
    return v if isinstance(v, list) else [v]


# ------------------------------------------------------------------ the steps
def setup(cfg: NodeBridge) -> list[str]:
    """Make the node's bridge, tunnel and gateway as `cfg` says; what was changed (empty: the
    node was already right)."""
    check(cfg)
    changes = _bridge(cfg)
    deadline = time.monotonic() + cfg.timeout
    if cfg.tunnel is not None:
        changes += _tunnel(cfg)
    if cfg.gateway_ip is not None:
        changes += _gateway_port(cfg, deadline)
        changes += _gateway_stack(cfg)
    if cfg.tunnel is not None:
        _check_ofport(cfg, deadline)
    while _run(cfg, ["ovs-ofctl", "-O", cfg.protocols, "show", cfg.bridge], check_=False) == "":
        if time.monotonic() > deadline:
            raise SetupError(f"bridge {cfg.bridge} does not answer on its management socket")
        time.sleep(0.05)
    return changes


def _bridge(cfg: NodeBridge) -> list[str]:
    row = _row(cfg, "bridge", cfg.bridge, ("datapath_type", "fail_mode", "other_config", "protocols"))
    want_controllers = list(cfg.controllers)
    if row is None:
        dpid = cfg.dpid or cfg.new_dpid
        if dpid is None:
            raise SetupError(f"bridge {cfg.bridge} does not exist and no datapath-id was given for it", 2)
        sets = [f"datapath_type={cfg.datapath_type}", "fail_mode=secure", f"other-config:datapath-id={dpid}",
                "other-config:disable-in-band=true", f"protocols={cfg.protocols}"]
        args = ["--may-exist", "add-br", cfg.bridge, "--", "set", "bridge", cfg.bridge, *sets]
        if want_controllers:
            args += ["--", "set-controller", cfg.bridge, *want_controllers]
        _vsctl(cfg, *args)
        return [f"bridge {cfg.bridge} created (dpid {dpid}, {cfg.datapath_type}, controller "
                f"{' '.join(want_controllers) or 'none'})"]
    other = row["other_config"] if isinstance(row["other_config"], dict) else {}
    sets, what = [], []
    if row["datapath_type"] != cfg.datapath_type:
        sets.append(f"datapath_type={cfg.datapath_type}")
        what.append(f"datapath_type {row['datapath_type'] or 'system'} -> {cfg.datapath_type}")
    if _as_list(row["fail_mode"]) != ["secure"]:
        sets.append("fail_mode=secure")
        what.append("fail_mode secure")
    if cfg.dpid is not None and other.get("datapath-id") != cfg.dpid:
        sets.append(f"other-config:datapath-id={cfg.dpid}")
        what.append(f"datapath-id {cfg.dpid}")
    if other.get("disable-in-band") != "true":
        sets.append("other-config:disable-in-band=true")
        what.append("in-band control off")
    if sorted(_as_list(row["protocols"])) != sorted(cfg.protocols.split(",")):
        sets.append(f"protocols={cfg.protocols}")
        what.append(f"protocols {cfg.protocols}")
    have_controllers = _vsctl(cfg, "get-controller", cfg.bridge).split()
    args = ["--", "set", "bridge", cfg.bridge, *sets] if sets else []
    if sorted(have_controllers) != sorted(want_controllers) and want_controllers:
        args += ["--", "set-controller", cfg.bridge, *want_controllers]
        what.append(f"controller {' '.join(want_controllers)}")
    if args:
        _vsctl(cfg, *args[1:])
    return [f"bridge {cfg.bridge}: {', '.join(what)}"] if what else []


def _port(cfg: NodeBridge, name: str, want: dict[str, str], external: dict[str, str], options: dict[str, str],
          ofport: int, what: str) -> list[str]:
    """One port of the bridge with its interface's type, options, ofport_request and
    external_ids; changed only where they differ."""
    row = _row(cfg, "interface", name, ("type", "options", "ofport_request", "external_ids", "mac"))
    sets = []
    have_opts = (row or {}).get("options") or {}
    have_ext = (row or {}).get("external_ids") or {}
    if row is None or row["type"] != want["type"]:
        sets.append(f"type={want['type']}")
    for k, v in options.items():
        if have_opts.get(k) != v:
            sets.append(f"options:{k}={v}")
    if row is None or _as_list(row["ofport_request"]) != [ofport]:
        sets.append(f"ofport_request={ofport}")
    if "mac" in want and (row is None or _as_list(row["mac"]) != [want["mac"]]):
        sets.append(f'mac="{want["mac"]}"')
    for k, v in external.items():
        if have_ext.get(k, "") != v:
            sets.append(f'external_ids:{k}="{v}"')
    on_bridge = _vsctl(cfg, "port-to-br", name, check_=False).strip() == cfg.bridge
    if not sets and on_bridge:
        return []
    try:
        _vsctl(cfg, "--may-exist", "add-port", cfg.bridge, name, "--", "set", "interface", name, *sets)
    except SetupError as e:
        raise SetupError(f"could not add {what} {name} to {cfg.bridge}: {e}") from None
    return [f"{what} {name} " + ("added" if row is None else "updated: " + ", ".join(s.split("=")[0] for s in sets))]


def _tunnel(cfg: NodeBridge) -> list[str]:
    return _port(cfg, cfg.tunnel_port, {"type": cfg.tunnel or ""}, {"sdn-role": "tunnel"},
                 {"remote_ip": "flow", "local_ip": cfg.local_ip or ""}, cfg.tunnel_ofport, "tunnel port")


def _gateway_port(cfg: NodeBridge, deadline: float) -> list[str]:
    mac = (cfg.gateway_mac or "").lower()
    changes = _port(cfg, cfg.gateway_port, {"type": "internal", "mac": mac},
                    {"sdn-role": "gateway", "attached-mac": mac, "sdn-service-cidrs": cfg.service_cidr}, {},
                    cfg.gateway_ofport, "gateway port")
    while _run(cfg, ["ip", "link", "show", cfg.gateway_port], in_node=True, check_=False) == "":
        if time.monotonic() > deadline:
            raise SetupError(f"gateway port {cfg.gateway_port} did not appear as an interface")
        time.sleep(0.05)
    return changes


def _gateway_stack(cfg: NodeBridge) -> list[str]:
    """The node's side of the gateway: link, address, route, forwarding, ARP."""
    changes = []
    dev = cfg.gateway_port
    mac = (cfg.gateway_mac or "").lower()
    link = json.loads(_run(cfg, ["ip", "-j", "link", "show", dev], in_node=True) or "[]")[0]
    if link.get("address", "").lower() != mac or "UP" not in link.get("flags", []):
        _run(cfg, ["ip", "link", "set", dev, "address", mac, "up"], in_node=True)
        changes.append(f"{dev} up with MAC {mac}")
    addrs = json.loads(_run(cfg, ["ip", "-j", "-4", "addr", "show", dev], in_node=True) or "[]")
    have = {f"{a['local']}/{a['prefixlen']}" for i in addrs for a in i.get("addr_info", [])}
    if cfg.gateway_ip not in have:
        _run(cfg, ["ip", "addr", "replace", cfg.gateway_ip or "", "dev", dev], in_node=True)
        changes.append(f"{dev} address {cfg.gateway_ip}")
    routes = json.loads(_run(cfg, ["ip", "-j", "-4", "route", "show", cfg.cluster_cidr or ""], in_node=True) or "[]")
    if not any(r.get("dev") == dev and not r.get("gateway") for r in routes):
        _run(cfg, ["ip", "route", "replace", cfg.cluster_cidr or "", "dev", dev], in_node=True)
        changes.append(f"route {cfg.cluster_cidr} dev {dev}")
    # Pods' veths are kernel interfaces of this namespace too: the kernel must neither answer
    # their ARP for the gateway address nor forward what they send, or pod traffic would bypass
    # the bridge's policy. Interfaces made from now on (pod veths) do not forward.
    for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.default.forwarding", "0"),
                       ("net.ipv4.conf.all.arp_ignore", "1")):
        if _run(cfg, ["sysctl", "-n", key], in_node=True).strip() != value:
            _run(cfg, ["sysctl", "-qw", f"{key}={value}"], in_node=True)
            changes.append(f"{key}={value}")
    if shutil.which("ethtool"):
        feats = _run(cfg, ["ethtool", "-k", dev], in_node=True, check_=False)
        if re.search(r"^tx-checksumming: on", feats, re.M):
            _run(cfg, ["ethtool", "-K", dev, "tx", "off"], in_node=True, check_=False)
            changes.append(f"{dev} TX checksum offload off")
    return changes


def _check_ofport(cfg: NodeBridge, deadline: float) -> None:
    while True:
        got = _vsctl(cfg, "get", "interface", cfg.tunnel_port, "ofport").strip()
        if got == str(cfg.tunnel_ofport):
            return
        if re.fullmatch(r"[1-9][0-9]*", got):
            raise SetupError(f"tunnel port {cfg.tunnel_port} got ofport {got}, not {cfg.tunnel_ofport}")
        if time.monotonic() > deadline:
            err = _vsctl(cfg, "get", "interface", cfg.tunnel_port, "error", check_=False).strip()
            raise SetupError(f"tunnel port {cfg.tunnel_port} has no OpenFlow port (ofport={got}, error={err})")
        time.sleep(0.05)


# ------------------------------------------------------------------ the command line
_OPTIONS = {"--db": "db", "--bridge": "bridge", "--datapath-type": "datapath_type", "--dpid": "dpid",
            "--protocols": "protocols", "--tunnel": "tunnel", "--local-ip": "local_ip",
            "--tunnel-port": "tunnel_port", "--tunnel-ofport": "tunnel_ofport", "--timeout": "timeout",
            "--gateway-ip": "gateway_ip", "--gateway-mac": "gateway_mac", "--gateway-port": "gateway_port",
            "--gateway-ofport": "gateway_ofport", "--cluster-cidr": "cluster_cidr",
            "--service-cidr": "service_cidr", "--netns": "netns"}
_NUMBERS = {"tunnel_ofport", "timeout", "gateway_ofport"}


def parse_args(argv: list[str]) -> tuple[NodeBridge, bool]:
    """The command line -> (NodeBridge, verbose); SetupError(code 2) for bad arguments."""
    values: dict = {}
    controllers: list[str] = []
    verbose = False
    i = 0
    while i < len(argv):
        opt = argv[i]
        if opt in ("-h", "--help"):
            raise SetupError(__doc__.split("\n\n")[1], 2)
        if opt == "--verbose":
            verbose, i = True, i + 1
            continue
        if opt != "--controller" and opt not in _OPTIONS:
            raise SetupError(f"unknown option {opt}", 2)
        if i + 1 >= len(argv):
            raise SetupError(f"{opt}: missing value", 2)
        value = argv[i + 1]
        if opt == "--controller":
            controllers.append(value)
        elif _OPTIONS[opt] in _NUMBERS:
            if not re.fullmatch(r"[0-9]+", value):
                raise SetupError(f"{opt} must be a positive number, not '{value}'", 2)
            values[_OPTIONS[opt]] = int(value)
        else:
            values[_OPTIONS[opt]] = value
        i += 2
    if "dpid" not in values:
        raise SetupError("--dpid must be 16 hex digits, not ''", 2)
    return NodeBridge(controllers=tuple(controllers), **values), verbose


def main(argv: list[str] | None = None) -> int:
    prog = os.environ.get("SDN_NODE_SETUP_PROG", "sdn.node_setup")
    try:
        cfg, verbose = parse_args(sys.argv[1:] if argv is None else argv)
        changes = setup(cfg)
    except SetupError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.code
    for c in changes if verbose else ():
        print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
