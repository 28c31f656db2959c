"""CNI 1.1's STATUS and GC for `sdn-cni`.

* STATUS: exit 0 when an ADD could succeed now: the namespace of ovs-vswitchd exists, OVSDB
  answers, the bridge exists, a delegated IPAM plugin is in CNI_PATH, and the IPAM range has a
  free address; else error 50 ("the
  plugin is not available") naming what is missing.
* GC: "cni.dev/valid-attachments" lists every (containerID, ifname) the runtime still uses;
  the ports this plugin attached to the bridge for any other attachment of this network (its
  address inside this network's subnet), their veth pairs and their address reservations are
  removed. Nothing is printed on success.
"""

from __future__ import annotations

from ipaddress import ip_address

from sdn.cni import delegate, ovs, veth
from sdn.cni.config import VALID_ATTACHMENTS, NetConfig
from sdn.cni.ipam import Store
from sdn.cni.spec import (
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    ERR_NOT_AVAILABLE,
    CniError,
    Request,
)


def _needs_1_1(req: Request, conf: NetConfig) -> None:
    if conf.cni_version in ("0.4.0", "1.0.0"):
        raise CniError(ERR_INCOMPATIBLE_VERSION,
                       f"{req.command} needs cniVersion 1.1.0 in the configuration (it has {conf.cni_version})")


def cmd_status(req: Request, conf: NetConfig) -> None:
    _needs_1_1(req, conf)

    def unavailable(msg: str, details: str = "") -> CniError:
        return CniError(ERR_NOT_AVAILABLE, f"not available: {msg}", details)

    if conf.ovs_netns and not veth.netns_exists(conf.ovs_netns):
        raise unavailable(f"ovsNetns {conf.ovs_netns} does not exist",
                          "it names the network namespace where this node's ovs-vswitchd runs")
    vsctl = ovs.Vsctl(conf.ovsdb, conf.ovs_timeout)
    try:
        present = ovs.bridge_exists(vsctl, conf.bridge)
    except CniError as e:
        raise unavailable(e.msg, e.details) from None
    if not present:
        raise unavailable(f"bridge {conf.bridge} does not exist in {conf.ovsdb}",
                          "the node agent creates it; is it running?")
    if conf.ipam.delegate:
        try:
            delegate.find(req, conf.ipam.delegate)
        except CniError as e:
            raise unavailable(e.msg, e.details) from None
    try:
        free = Store(conf.ipam).free_addresses()
    except CniError as e:
        raise unavailable(e.msg, e.details) from None
    if free == 0:
        raise unavailable(f"IPAM: no free address in {conf.ipam.subnet} "
                          f"(range {conf.ipam.range_start}-{conf.ipam.range_end})")


def cmd_gc(req: Request, conf: NetConfig) -> None:
    _needs_1_1(req, conf)
    valid = conf.valid_attachments
    if valid is None:
        raise CniError(ERR_INVALID_CONFIG, f"GC needs {VALID_ATTACHMENTS} in the configuration",
                       "the attachments the runtime still uses; an empty list removes them all")
    vsctl = ovs.Vsctl(conf.ovsdb, conf.ovs_timeout)
    for port, ids in sorted(ovs.attached_ports(vsctl, conf.bridge).items()):
        if (ids["container-id"], ids["ifname"]) in valid:
            continue
        try:
            ours = ip_address(ids.get("ip", "")) in conf.ipam.subnet
        except ValueError:
            ours = False
        if not ours:
            continue  # another network's port on the same bridge
        ovs.del_port(vsctl, port)
        veth.delete(conf.ovs_netns, port)
    # A delegated host-local keeps the same store (format, place, lock): collected here too,
    # as host-local before CNI 1.1 has no GC of its own.
    Store(conf.ipam).collect(valid)
