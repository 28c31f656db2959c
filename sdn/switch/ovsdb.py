"""One node's OVSDB through the `ovs` library's IDL: which port of the bridge is which pod, its
ofport, the bridge's datapath-id and controller -- kept current as they change.

The IDL keeps a replica of the tables we register and reconnects by itself (with backoff); a
thread per database runs it and hands a fresh `BridgeView` to a callback whenever what we use
changed. Nothing here shells out to ovs-vsctl.

A pod's interface is recognised by its external_ids, whichever convention wrote them:
`k8s.pod=NS/NAME` (ours), `pod_namespace` + `pod_name` (Antrea), or `iface-id` as `NS/NAME` or
`NS_NAME` (OVN-Kubernetes; Kubernetes names cannot contain "_"). `attached-mac` and `ip`
(comma-separated, prefix lengths ignored) are read when present. The tunnel port is the
bridge's interface of a tunnel type (vxlan, geneve, gre, stt) or marked
`sdn-role=tunnel`; with fabric enforcement, `sdn-role=fabric-uplink` marks a node bridge's
link to the fabric switch and `sdn-role=fabric-link` + `sdn-node=NODE` the fabric switch's
port towards each node.

With `controller` set, the monitor also keeps the bridge's OpenFlow configuration as restart
safety needs it (notes/openvswitch.md): fail_mode=secure and our controller in ONE transaction
(changing either alone while no controller is set flushes every flow), the datapath-id pinned
in other-config, in-band control off, OpenFlow 1.3 enabled.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():  # ovs.poller imports eventlet when installed (os-ken brings it)
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import ovs.db.idl
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream

log = logging.getLogger("sdn.switch.ovsdb")

TUNNEL_TYPES = ("vxlan", "geneve", "gre", "stt")
_COLUMNS = {
    "Open_vSwitch": ["bridges"],
    "Bridge": ["name", "datapath_id", "ports", "controller", "fail_mode", "other_config", "protocols"],
    "Port": ["name", "interfaces"],
    "Interface": ["name", "ofport", "type", "external_ids", "mac_in_use"],
    "Controller": ["target", "is_connected"],
}


@dataclass(frozen=True)
class PortInfo:
    name: str
    ofport: int  # -1 while OVS has not (or could not) open it
    type: str = ""
    pod: str | None = None  # "ns/name"
    mac: str | None = None
    ips: tuple[str, ...] = ()
    role: str | None = None  # external_ids:sdn-role: tunnel | fabric-uplink | fabric-link | gateway
    peer_node: str | None = None  # external_ids:sdn-node (a fabric link: the node behind it)
    service_cidrs: tuple[str, ...] = ()  # external_ids:sdn-service-cidrs (the gateway: ClusterIPs)
    # external_ids:sdn-node-gateway=true (a fabric link: the node behind it has a gateway port)
    node_gateway: bool = False

    @property
    def is_tunnel(self) -> bool:
        return self.role == "tunnel" or (self.role is None and self.type in TUNNEL_TYPES)


@dataclass(frozen=True)
class BridgeView:
    """What the controller uses of one bridge, as OVSDB has it now."""

    name: str
    datapath_id: int | None
    ports: tuple[PortInfo, ...] = ()
    fail_mode: str = ""
    controllers: tuple[str, ...] = ()
    pinned_dpid: str | None = None
    controller_connected: bool = False  # OVS's own view (Controller.is_connected)

    def pods(self) -> dict[str, PortInfo]:
        """Pods plugged into the bridge with a usable ofport."""
        return {p.pod: p for p in self.ports if p.pod and p.ofport > 0}

    @property
    def tunnel_ofport(self) -> int | None:
        ports = sorted(p.ofport for p in self.ports if p.is_tunnel and p.ofport > 0)
        return ports[0] if ports else None

    @property
    def uplink_ofport(self) -> int | None:
        """A node bridge's link to the fabric switch (fabric enforcement)."""
        ports = sorted(p.ofport for p in self.ports if p.role == "fabric-uplink" and p.ofport > 0)
        return ports[0] if ports else None

    @property
    def gateway(self) -> PortInfo | None:
        """The node's gateway port (external_ids sdn-role=gateway), when it has one."""
        ports = sorted((p for p in self.ports if p.role == "gateway" and p.ofport > 0), key=lambda p: p.ofport)
        return ports[0] if ports else None

    def compiled_inputs(self) -> tuple:
        """What of this view the compiled tables depend on (a controller or fail_mode change:
        nothing): a recompile and a new engine follow when it changes."""
        return (self.name, self.datapath_id, self.pods(), self.tunnel_ofport, self.uplink_ofport,
                self.fabric_links(), self.gateway, self.fabric_gateways())

    def fabric_gateways(self) -> dict[str, PortInfo]:
        """The fabric switch's links towards nodes that have a gateway port."""
        return {p.peer_node: p for p in self.ports
                if p.role == "fabric-link" and p.peer_node and p.ofport > 0 and p.node_gateway}

    def fabric_links(self) -> dict[str, int]:
        """The fabric switch's port towards each node."""
        return {p.peer_node: p.ofport for p in self.ports
                if p.role == "fabric-link" and p.peer_node and p.ofport > 0}


def pod_identity(external_ids: dict[str, str]) -> str | None:
    """The pod ("ns/name") an interface belongs to, from its external_ids."""
    key = external_ids.get("k8s.pod")
    if key and "/" in key:
        return key
    ns, name = external_ids.get("pod_namespace"), external_ids.get("pod_name")
    if ns and name:
        return f"{ns}/{name}"
    iface = external_ids.get("iface-id", "")
    if "/" in iface:
        return iface
    if "_" in iface:
        ns, _, name = iface.partition("_")
        return f"{ns}/{name}"
    return None


def _ips(text: str) -> tuple[str, ...]:
    out = []
    for part in text.replace(" ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_interface(part).ip))
        except ValueError:
            log.warning("ignoring bad ip %r in interface external_ids", part)
    return tuple(out)


def _scalar(value, default=None):
    """An optional OVSDB column (a list of 0 or 1 values in the Python IDL) as a value."""
    if isinstance(value, list):
        return value[0] if value else default
    return value if value is not None else default


def fetch_schema(remote: str, timeout: float = 5.0) -> dict:
    """The Open_vSwitch schema from the server itself (no schema file needed)."""
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), timeout * 1000)
    if error:
        raise ConnectionError(f"cannot connect to OVSDB at {remote}: {_strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
    finally:
        rpc.close()
    if error:
        raise ConnectionError(f"OVSDB at {remote} did not send its schema: {_strerror(error)}")
    if reply.error:
        raise ConnectionError(f"OVSDB at {remote} refused get_schema: {reply.error}")
    return reply.result


def _strerror(error: int) -> str:
    return os.strerror(error) if isinstance(error, int) and error > 0 else str(error)


@dataclass
class MonitorStatus:
    connected: bool = False
    last_error: str = ""
    since: float = field(default_factory=time.time)


class OvsdbMonitor:
    """A thread that follows one bridge of one OVSDB.

    `bridge`: its name; None picks the only bridge (or `br-sdn` among several).
    `on_change(view | None)`: called from the monitor thread with the new view (None when the
    bridge is absent). `controller`: an OpenFlow target ("unix:/run/sdn/ofp.sock") to keep
    configured on the bridge, or None to leave its configuration alone; `prepare()` runs each
    time the database connects, before anything is configured (makes the target exist).
    """

    def __init__(self, remote: str, bridge: str | None, on_change: Callable[[BridgeView | None], None],
                 controller: str | None = None, prepare: Callable[[], None] | None = None, name: str = ""):
        self.remote = remote
        self.bridge = bridge
        self.on_change = on_change
        self.controller = controller
        self.prepare = prepare
        self.name = name or remote
        self.status = MonitorStatus()
        self.view: BridgeView | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ovsdb-{self.name}", daemon=True)
        self._warned_choice = False

    def start(self) -> OvsdbMonitor:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # -- the thread
    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                schema = fetch_schema(self.remote)
                delay = 0.5
                self._monitor(schema)
            except Exception as e:  # noqa: BLE001 - keep following the database whatever happens
                self._set_error(str(e))
                log.warning("%s: %s; retrying in %.1fs", self.name, e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _set_error(self, message: str) -> None:
        if self.status.connected or self.status.last_error != message:
            self.status = MonitorStatus(False, message)

    def _monitor(self, schema_json: dict) -> None:
        helper = ovs.db.idl.SchemaHelper(schema_json=schema_json)
        for table, columns in _COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovs.db.idl.Idl(self.remote, helper, leader_only=False)
        seqno = None
        was_connected = False
        try:
            while not self._stop.is_set():
                idl.run()
                connected = idl._session.is_connected() and idl.has_ever_connected()
                if connected != was_connected:
                    was_connected = connected
                    if connected:
                        self.status = MonitorStatus(True, "")
                        log.info("%s: connected to OVSDB %s", self.name, self.remote)
                        self._prepare()
                    else:
                        self._set_error(f"lost the connection to OVSDB {self.remote}; reconnecting")
                        log.warning("%s: lost the connection to OVSDB %s; reconnecting with backoff",
                                    self.name, self.remote)
                if idl.change_seqno != seqno and idl.has_ever_connected():
                    seqno = idl.change_seqno
                    view = self._read(idl)
                    if view != self.view:
                        self.view = view
                        self._deliver(view)
                    if view is not None and self.controller:
                        self._ensure_config(idl, view)
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.timer_wait(250)
                poller.block()
        finally:
            idl.close()

    def _prepare(self) -> None:
        if self.prepare is None:
            return
        try:
            self.prepare()
        except OSError as e:
            self.status = MonitorStatus(True, f"cannot prepare the controller target: {e}")
            log.error("%s: cannot prepare the controller target %s: %s", self.name, self.controller, e)

    def _deliver(self, view: BridgeView | None) -> None:
        try:
            self.on_change(view)
        except Exception:
            log.exception("%s: change handler failed", self.name)

    def _pick(self, idl) -> Any | None:  # an ovs.db.idl.Row of table Bridge
        rows = list(idl.tables["Bridge"].rows.values())
        if self.bridge is not None:
            return next((r for r in rows if r.name == self.bridge), None)
        if len(rows) == 1:
            return rows[0]
        named = next((r for r in rows if r.name == "br-sdn"), None)
        if named is None and rows and not self._warned_choice:
            self._warned_choice = True
            log.warning("%s: OVSDB %s has bridges %s; name one with NODE/BRIDGE=%s", self.name,
                        self.remote, ", ".join(sorted(r.name for r in rows)), self.remote)
        return named

    def _read(self, idl) -> BridgeView | None:
        br = self._pick(idl)
        if br is None:
            return None
        ports = []
        for port in br.ports:
            for iface in port.interfaces:
                ext = dict(iface.external_ids)
                ofport = _scalar(iface.ofport, -1)
                ports.append(PortInfo(iface.name, int(ofport) if ofport is not None else -1, iface.type or "",
                                      pod_identity(ext), ext.get("attached-mac") or None,
                                      _ips(ext.get("ip", "") or ext.get("ip_address", "")),
                                      ext.get("sdn-role") or None, ext.get("sdn-node") or None,
                                      tuple(c for c in (ext.get("sdn-service-cidrs") or "").split(",") if c),
                                      ext.get("sdn-node-gateway") == "true"))
        dpid = _scalar(br.datapath_id)
        return BridgeView(br.name, int(dpid, 16) if dpid else None, tuple(sorted(ports, key=lambda p: p.name)),
                          _scalar(br.fail_mode, "") or "", tuple(sorted(c.target for c in br.controller)),
                          dict(br.other_config).get("datapath-id"),
                          any(bool(c.is_connected) for c in br.controller))

    def _ensure_config(self, idl, view: BridgeView) -> None:
        br = self._pick(idl)
        if br is None:  # gone since it was read: the next change reads again
            return
        other = dict(br.other_config)
        protocols = list(br.protocols)
        needs = []
        if view.controllers != (self.controller,):
            needs.append(f"controller {self.controller}")
        if view.fail_mode != "secure":
            needs.append("fail_mode=secure")
        if view.pinned_dpid is None and view.datapath_id is not None:
            needs.append(f"datapath-id {view.datapath_id:016x} pinned")
        if other.get("disable-in-band") != "true":
            needs.append("in-band off")
        if protocols and "OpenFlow13" not in protocols:
            needs.append("OpenFlow13")
        if not needs:
            return
        txn = ovs.db.idl.Transaction(idl)
        txn.add_comment(f"sdn controller: {', '.join(needs)}")
        if view.controllers != (self.controller,):
            ctrl = txn.insert(idl.tables["Controller"])
            ctrl.target = self.controller
            br.controller = [ctrl]
        br.fail_mode = "secure"
        if view.pinned_dpid is None and view.datapath_id is not None:
            br.setkey("other_config", "datapath-id", f"{view.datapath_id:016x}")
        br.setkey("other_config", "disable-in-band", "true")
        if protocols and "OpenFlow13" not in protocols:
            br.protocols = protocols + ["OpenFlow13"]
        status = txn.commit_block()
        if status in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
            log.info("%s: configured bridge %s: %s", self.name, view.name, ", ".join(needs))
        elif status != ovs.db.idl.Transaction.TRY_AGAIN:
            log.error("%s: could not configure bridge %s (%s): %s", self.name, view.name,
                      ovs.db.idl.Transaction.status_to_string(status), txn.get_error())
