"""`sdn-cni`: the CNI plugin that plugs a pod into its node's Open vSwitch bridge.

A runtime runs it once per command with the CNI_* environment and the network
configuration on stdin (docs/cni.md has the configuration, an example conflist and the
error codes):

* ADD: reserve an address (sdn.cni.ipam), create the veth pair with the pod end in
  CNI_NETNS (MAC 0a:58:<IPv4 bytes>, address, routes via the gateway, TX checksum offload
  off), the host end in ``ovsNetns``, and add the host end to the bridge with the pod's
  identity in the Interface's external_ids; print the result.  A failure undoes what was done.
* DEL: remove the port, the veth pair and the reservation; anything already gone is fine.
* CHECK: compare the pod's interface, address, MAC, routes and port with the records
  (the IPAM reservation, prevResult, the port's external_ids).
* VERSION: the versions this plugin speaks.
* STATUS, GC (CNI 1.1): sdn.cni.lifecycle.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, IPv4Interface, ip_interface
from typing import Any

from sdn.cni import delegate, ovs, veth
from sdn.cni.config import (
    GATEWAY_MAC,
    IPAddress,
    IPInterface,
    NetConfig,
    Route,
    parse_config,
    peek_version,
)
from sdn.cni.ipam import Store
from sdn.cni.lifecycle import cmd_gc, cmd_status
from sdn.cni.spec import (
    ERR_CHECK,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    LATEST_VERSION,
    CniError,
    Interface,
    Request,
    add_result,
    parse_env,
    version_result,
)


def _require_namespaces(req: Request, conf: NetConfig) -> None:
    if not veth.netns_exists(req.netns):
        raise CniError(ERR_INVALID_ENV, f"CNI_NETNS {req.netns} does not exist")
    if not veth.netns_exists(conf.ovs_netns):
        raise CniError(ERR_INVALID_CONFIG, f"ovsNetns {conf.ovs_netns} does not exist",
                       "it names the network namespace where this node's ovs-vswitchd runs")


def external_ids(req: Request, pod: str, mac: str, address: IPInterface, *more) -> dict[str, str]:
    """What the controller learns about the port from OVSDB: whose it is and its addresses
    ("ip": the IPv4 one, then the IPv6 one, comma-separated)."""
    ids = {"k8s.pod": pod, "iface-id": pod, "attached-mac": mac,
           "ip": ",".join(str(a.ip) for a in (address, *more)),
           "container-id": req.container_id, "netns": req.netns or "", "ifname": req.ifname}
    if req.args.get("K8S_POD_UID"):
        ids["k8s.pod-uid"] = req.args["K8S_POD_UID"]
    return ids


def _requested_ip(req: Request) -> IPv4Address | None:
    """CNI_ARGS IP=a.b.c.d (the convention host-local follows): the address the runtime asks for."""
    text = req.args.get("IP")
    if not text:
        return None
    try:
        return IPv4Address(text.split("/")[0])
    except ValueError:
        raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: IP={text} is not an IPv4 address") from None


def cmd_add(req: Request, conf: NetConfig) -> dict:
    pod = req.pod_key
    _require_namespaces(req, conf)
    assert req.netns is not None  # required for ADD by parse_env
    store = Store(conf.ipam)
    host = veth.host_ifname(req.container_id, req.ifname)
    vsctl = ovs.Vsctl(conf.ovsdb, conf.ovs_timeout)
    undo: list[Callable[[], Any]] = []
    address: IPInterface
    gateway, routes, dns = conf.ipam.gateway, list(conf.ipam.routes), dict(conf.dns)
    try:
        if conf.ipam.delegate:
            result = delegate.call(req, conf, "ADD")
            undo.append(lambda: delegate.call(req, conf, "DEL"))
            address, gateway, routes = delegate.ipv4_of(result, conf)
            dns = dns or dict((result or {}).get("dns") or {})
        else:
            address, fresh = store.allocate(req.container_id, req.ifname, _requested_ip(req))
            if fresh:  # never release an address an earlier ADD handed to this container
                undo.append(lambda: store.release(req.container_id, req.ifname))
        six = []  # (address, gateway) of the IPv6 range, when the node has an IPv6 pod CIDR
        six_routes: list[Route] = []
        if conf.ipam.ipv6 is not None:
            six_routes = list(conf.ipam.ipv6.routes)
            store6 = Store(conf.ipam.ipv6)
            address6, fresh6 = store6.allocate(req.container_id, req.ifname)
            if fresh6:
                undo.append(lambda: store6.release(req.container_id, req.ifname))
            six = [(address6, conf.ipam.ipv6.gateway)]
        mac = veth.pod_mac(address.ip)
        veth.create(host, conf.ovs_netns, req.ifname, req.netns, mac, conf.mtu)
        undo.append(lambda: veth.delete(conf.ovs_netns, host))
        veth.configure_pod(req.netns, req.ifname, address, routes)
        if six:
            veth.configure_pod6(req.netns, req.ifname, six[0][0], six[0][1], six_routes, GATEWAY_MAC)
        host_mac = veth.set_up(conf.ovs_netns, host)
        # Even a failed add-port may have committed the row (ovs-vswitchd too slow): it
        # names the address, so it goes first.
        undo.append(lambda: ovs.del_port(vsctl, host))
        ovs.add_port(vsctl, conf.bridge, host, external_ids(req, pod, mac, address, *(a for a, _ in six)))
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # noqa: BLE001 - keep undoing; the original error is what the runtime sees
                pass
        raise
    interfaces = [Interface(host, host_mac), Interface(req.ifname, mac, req.netns)]
    return add_result(conf.cni_version, interfaces, address, gateway, 1,
                      [(str(r.dst), str(r.gw)) for r in [*routes, *six_routes]], dns, six)


def cmd_del(req: Request, conf: NetConfig) -> None:
    host = veth.host_ifname(req.container_id, req.ifname)
    ovs_error = None
    try:
        ovs.del_port(ovs.Vsctl(conf.ovsdb, conf.ovs_timeout), host)
    except CniError as e:
        ovs_error = e
    veth.delete(conf.ovs_netns, host)  # takes the pod end along
    if req.netns:
        try:  # a pod end left behind (its host end moved or renamed by someone)
            veth.delete(req.netns, req.ifname)
        except CniError:
            pass  # a namespace that is going away: DEL must not fail on it
    if ovs_error is not None:
        raise ovs_error  # the address stays reserved while a port row may still name it
    if conf.ipam.delegate:
        delegate.call(req, conf, "DEL")
    else:
        Store(conf.ipam).release(req.container_id, req.ifname)


def _expected_from_prev(prev: Mapping[str, Any], req: Request) -> tuple[str | None, set[IPv4Interface],
                                                                       set[tuple[str, str]]]:
    """(MAC, addresses, routes) prevResult records for the pod interface."""
    try:
        ifaces = prev.get("interfaces", [])
        index = next((i for i, itf in enumerate(ifaces) if itf.get("name") == req.ifname
                      and itf.get("sandbox") in (None, "", req.netns)), None)
        mac = ifaces[index].get("mac") if index is not None else None
        ips = [ip for ip in prev.get("ips", []) if ip.get("interface", index) == index]
        addrs = {ip_interface(ip["address"]) for ip in ips}
        gw = next((ip["gateway"] for ip in ips if ip.get("gateway")), None)
        routes = {(str(ip_interface(r["dst"]).network), r.get("gw") or gw)
                  for r in prev.get("routes", [])}
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CniError(ERR_INVALID_CONFIG, f"prevResult is not a CNI result: {e!r}",
                       json.dumps(prev)) from None
    return mac, {a for a in addrs if a.version == 4}, {(dst, gw) for dst, gw in routes if gw}


def cmd_check(req: Request, conf: NetConfig) -> None:
    assert req.netns is not None  # required for CHECK by parse_env
    problems: list[str] = []
    reserved: IPAddress | None = Store(conf.ipam).lookup(req.container_id, req.ifname)
    if reserved is None:
        problems.append(f"IPAM: no address reserved for container {req.container_id} "
                        f"{req.ifname} in {conf.ipam.store}")
        addrs: set[IPv4Interface] = set()
    else:
        addrs = {IPv4Interface(f"{reserved}/{conf.ipam.subnet.prefixlen}")}
    if conf.ipam.delegate:  # host-local checks its own records; its store is read above too
        try:
            delegate.call(req, conf, "CHECK")
        except CniError as e:
            problems.append(f"IPAM: {e.msg}")
    six = None  # the IPv6 address reserved, when the network has an IPv6 range
    six_routes = set() if conf.ipam.ipv6 is None else {(str(r.dst), str(r.gw)) for r in conf.ipam.ipv6.routes}
    if conf.ipam.ipv6 is not None:
        reserved6 = Store(conf.ipam.ipv6).lookup(req.container_id, req.ifname)
        if reserved6 is None:
            problems.append(f"IPAM: no IPv6 address reserved for container {req.container_id} {req.ifname}")
        else:
            six = ip_interface(f"{reserved6}/{conf.ipam.ipv6.subnet.prefixlen}")
    mac = veth.pod_mac(reserved) if reserved else None
    routes = {(str(r.dst), str(r.gw)) for r in conf.ipam.routes}
    if conf.prev_result is not None:
        prev_mac, prev_addrs, prev_routes = _expected_from_prev(conf.prev_result, req)
        if reserved is not None and prev_addrs and addrs != prev_addrs:
            problems.append(f"prevResult has {sorted(map(str, prev_addrs))} but IPAM reserved "
                            f"{reserved}")
        mac, addrs, routes = prev_mac or mac, prev_addrs or addrs, prev_routes or routes

    link = veth.show(req.netns, req.ifname)
    if link is None:
        problems.append(f"interface {req.ifname} not found in {req.netns}")
    else:
        if mac and link.mac.lower() != mac.lower():
            problems.append(f"{req.ifname}: MAC {link.mac}, expected {mac}")
        if not link.up:
            problems.append(f"{req.ifname} is down")
        if conf.mtu and link.mtu != conf.mtu:
            problems.append(f"{req.ifname}: MTU {link.mtu}, expected {conf.mtu}")
        missing = addrs - set(link.addresses)
        if missing:
            problems.append(f"{req.ifname}: address {', '.join(map(str, sorted(missing)))} "
                            f"missing (has {', '.join(map(str, link.addresses)) or 'none'})")
        if six is not None:
            if six not in link.addresses:
                problems.append(f"{req.ifname}: IPv6 address {six} missing")
            routes6 = six_routes - veth.routes(req.netns, req.ifname, 6)
            problems += [f"{req.ifname}: IPv6 route {dst} via {gw} missing" for dst, gw in sorted(routes6)]
        missing_routes = routes - veth.routes(req.netns, req.ifname)
        if missing_routes:
            problems.append(f"{req.ifname}: routes missing: " + ", ".join(
                f"{dst} via {gw}" for dst, gw in sorted(missing_routes)))
        if not veth.tx_checksum_off(req.netns, req.ifname):
            problems.append(f"{req.ifname}: TX checksum offload is on (TCP breaks on the "
                            f"userspace datapath)")

    host = veth.host_ifname(req.container_id, req.ifname)
    if veth.show(conf.ovs_netns, host) is None:
        problems.append(f"host end {host} not found in "
                        f"{conf.ovs_netns or 'the host namespace'}")
    port = ovs.port_state(ovs.Vsctl(conf.ovsdb, conf.ovs_timeout), host)
    if port is None:
        problems.append(f"OVS: no port {host} in {conf.ovsdb}")
    else:
        if port.bridge != conf.bridge:
            problems.append(f"OVS: port {host} is on bridge {port.bridge}, not {conf.bridge}")
        if port.ofport <= 0:
            problems.append(f"OVS: port {host} has no OpenFlow port (ofport {port.ofport})")
        recorded = {"container-id": req.container_id, "ifname": req.ifname}
        if reserved is not None:
            recorded["ip"] = ",".join([str(reserved)] + ([str(six.ip)] if six is not None else []))
        if mac:
            recorded["attached-mac"] = mac
        for key, want in recorded.items():
            if port.external_ids.get(key) != want:
                problems.append(f"OVS: port {host} external_ids:{key} is "
                                f"{port.external_ids.get(key)!r}, expected {want!r}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CniError(ERR_CHECK, f"CHECK of {req.container_id} {req.ifname}: "
                       f"{problems[0]}{more}", "\n".join(problems))


COMMANDS: dict[str, Callable[[Request, NetConfig], dict | None]] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc,
}


def run(environ: dict[str, str], stdin: bytes) -> tuple[dict | None, int]:
    """One invocation: (what to print on stdout, exit status)."""
    version = peek_version(stdin)
    try:
        req = parse_env(environ)
        if req.command == "VERSION":
            return version_result(version), 0
        conf = parse_config(stdin)
        return COMMANDS[req.command](req, conf), 0
    except CniError as e:
        return e.to_json(version or LATEST_VERSION), 1
    except Exception as e:  # noqa: BLE001 - a bug: still answer in the spec's shape
        err = CniError(ERR_INTERNAL, f"internal error: {e!r}", traceback.format_exc())
        return err.to_json(version or LATEST_VERSION), 1


def main() -> int:
    out, status = run(dict(os.environ), sys.stdin.buffer.read())
    if out is not None:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if status and out is not None:
        print(f"sdn-cni: {out.get('msg')}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
