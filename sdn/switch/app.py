"""The os-ken application: a thin shim between switches and the controller core.

os-ken accepts the connections, does the OpenFlow handshake and tells us when a datapath
enters MAIN_DISPATCHER (connected, datapath-id known) or dies. Everything else -- reading
flows, bundles -- goes as raw bytes through `OskenChannel`: `SwitchSocket` stands in for the
socket os-ken's Datapath reads, picks out the replies to our own requests (by xid) before
os-ken parses them (parsing 100k flow stats into os-ken objects would cost seconds), and hands
everything else to os-ken unchanged. Our requests go out through `Datapath.send`, the same
queue os-ken's own messages use.

os-ken has no hook for the accepted socket, so `install_socket_wrapper` replaces the module
function that wraps it into a Datapath (os_ken.controller.controller.datapath_connection_factory)
with a copy that wraps the socket first. The wrapper also makes unix-socket listeners work
(os-ken sets TCP_NODELAY on every socket, which a unix socket refuses) and lets a dead
connection actually end (see SwitchSocket._end).

Every handler is guarded: os-ken would otherwise stop dispatching to an app whose handler
raised (notes/os-ken.md, pitfall 1); an error is logged and counted, and the app carries on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
from typing import ClassVar, Protocol

import os_ken.base.app_manager  # noqa: F401 - must come first (os-ken's circular imports)
from os_ken.base import app_manager
from os_ken.controller import controller as of_controller
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from flows import wire
from sdn.switch.channel import Channel, ChannelClosed

log = logging.getLogger("sdn.switch.app")

_DIVERTED = (wire.OFPT_ERROR, wire.OFPT_EXPERIMENTER, wire.OFPT_MULTIPART_REPLY, wire.OFPT_BARRIER_REPLY)


class Core(Protocol):
    """What the app tells the controller."""

    def datapath_up(self, dpid: int, channel: Channel) -> None: ...
    def datapath_down(self, dpid: int | None, channel: Channel) -> None: ...
    def handler_failed(self, where: str, error: BaseException) -> None: ...


class OskenChannel(Channel):
    """Raw bytes to a switch through its os-ken Datapath."""

    def __init__(self, address):
        super().__init__()
        self.address = address
        self.datapath = None

    def send(self, data: bytes) -> None:
        dp = self.datapath
        if dp is None or self.closed:
            raise ChannelClosed(f"switch {self.name} is not connected ({self.closed or 'no datapath'})")
        if not dp.send(data):
            self.fail_pending("os-ken's datapath is terminating")
            raise ChannelClosed(f"switch {self.name} disconnected")

    def accepts(self, msg: bytes) -> bool:
        """Divert msg to our transactions? Only replies and errors: a switch's own requests
        (echo) must still reach os-ken even if their xid falls into one of our blocks."""
        _, mtype, _, xid = wire.header(msg)
        return mtype in _DIVERTED and self.wants(xid)


class SwitchSocket:
    """The socket os-ken's Datapath sees: passes through everything but our replies."""

    def __init__(self, sock: socket.socket, address):
        self._sock = sock
        self._unix = sock.family == socket.AF_UNIX
        self._inbuf = bytearray()
        self._out = bytearray()
        self.channel = OskenChannel(address)
        self.datapath = None  # set by the connection factory
        self._ended = False

    def setsockopt(self, level, option, value):
        if self._unix and level == socket.IPPROTO_TCP:
            return None  # TCP_NODELAY means nothing on a unix socket
        return self._sock.setsockopt(level, option, value)

    def recv(self, n: int) -> bytes:
        while not self._out:
            data = self._sock.recv(1 << 20)  # socket.timeout propagates: os-ken retries
            if not data:
                self.channel.fail_pending("connection closed by the switch")
                self._end()
                return b""
            self._inbuf += data
            try:
                msgs, used = wire.split_messages(self._inbuf)
            except wire.WireError as e:
                self.channel.fail_pending(str(e))
                raise OSError(f"garbled OpenFlow stream: {e}") from None
            del self._inbuf[:used]
            ch = self.channel
            for msg in msgs:
                if ch.accepts(msg):
                    ch.dispatch(msg)
                else:
                    self._out += msg
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def sendall(self, data) -> None:
        self._sock.sendall(data)

    def _end(self) -> None:
        """Let os-ken's send thread finish. With the native hub (the os-ken 4.x default)
        hub.kill() is a no-op, so after the receive loop ends, Datapath.serve() would wait
        forever for a send thread blocked on its empty queue: the datapath would never reach
        DEAD_DISPATCHER and nobody would learn that the switch went away. A final message with
        close_socket=True ends that thread."""
        if self._ended:
            return
        self._ended = True
        dp = self.datapath
        if dp is not None:
            threading.Thread(target=dp.send, args=(b"", True), name="osken-send-stop", daemon=True).start()

    def close(self) -> None:
        self.channel.fail_pending("connection closed")
        self._end()
        self._sock.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


_original_factory = None


def datapath_connection_factory(sock, address) -> None:
    """os-ken's own factory (os_ken.controller.controller), with the socket wrapped and the
    Datapath known to the wrapper."""
    wrapped = SwitchSocket(sock, address)
    with contextlib.closing(of_controller.Datapath(wrapped, address)) as datapath:
        wrapped.datapath = datapath
        try:
            datapath.serve()
        except Exception:
            log.exception("error on the connection of datapath %s from %r",
                          f"{datapath.id:016x}" if datapath.id else "?", address)


def install_socket_wrapper() -> None:
    """Make os-ken hand every accepted switch connection to our factory (idempotent)."""
    global _original_factory
    if _original_factory is not None:
        return
    _original_factory = of_controller.datapath_connection_factory
    of_controller.datapath_connection_factory = datapath_connection_factory


_core: Core | None = None


def attach(core: Core) -> None:
    """The controller core the app reports to (set before os-ken instantiates the app)."""
    global _core
    _core = core


def guarded(handler):
    """Log and report any exception of an event handler instead of letting it escape."""

    @functools.wraps(handler)
    def wrapper(self, ev):
        try:
            return handler(self, ev)
        except Exception as e:
            log.exception("handler %s failed on %s", handler.__name__, type(ev).__name__)
            if _core is not None:
                try:
                    _core.handler_failed(handler.__name__, e)
                except Exception:  # noqa: BLE001
                    pass
            return None

    return wrapper


class SwitchApp(app_manager.OSKenApp):
    """Bridges connect here; the core learns which datapath is up and gets its channel."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @guarded
    def state_change(self, ev):
        dp = ev.datapath
        sock = dp.socket
        if not isinstance(sock, SwitchSocket):
            log.error("datapath from %s is not wrapped (install_socket_wrapper not called); ignored", dp.address)
            return
        ch = sock.channel
        if ev.state == MAIN_DISPATCHER:
            ch.datapath = dp
            ch.name = f"{dp.id:016x}"
            if _core is not None:
                _core.datapath_up(dp.id, ch)
        elif ev.state == DEAD_DISPATCHER:
            ch.fail_pending("datapath disconnected")
            if _core is not None:
                _core.datapath_down(dp.id, ch)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    @guarded
    def error(self, ev):
        # Our own requests' errors are diverted to their transactions; these are not ours.
        msg = ev.msg
        log.warning("switch %016x sent an error for a message we did not track: %s",
                    msg.datapath.id or 0, wire.decode_error(msg.buf).name)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @guarded
    def port_status(self, ev):
        # OVSDB is the source of truth for ports; this is only for the log.
        msg = ev.msg
        log.debug("switch %016x: port %s %s", msg.datapath.id or 0, msg.desc.port_no,
                  {0: "added", 1: "deleted", 2: "modified"}.get(msg.reason, msg.reason))
