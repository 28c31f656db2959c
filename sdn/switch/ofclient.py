"""A direct OpenFlow 1.3 connection to a switch, without os-ken: for command-line tools and
tests that read a bridge or program it through its management socket (RUNDIR/BRIDGE.mgmt),
like `ovs-ofctl` does. The controller itself goes through os-ken (sdn.switch.app)."""

from __future__ import annotations

import socket
import struct
import threading
import time

from flows import wire
from sdn.switch.channel import Channel, ChannelClosed, SwitchTimeout


def parse_target(target: str) -> tuple[int, str | tuple[str, int]]:
    """'unix:/path', '/path' (a unix socket), 'tcp:host:port' -> (family, address)."""
    if target.startswith("unix:"):
        return socket.AF_UNIX, target[5:]
    if target.startswith(("/", ".")):
        return socket.AF_UNIX, target
    if target.startswith("tcp:"):
        host, _, port = target[4:].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad OpenFlow target {target!r} (tcp:HOST:PORT)")
        return socket.AF_INET6 if ":" in host else socket.AF_INET, (host.strip("[]"), int(port))
    raise ValueError(f"bad OpenFlow target {target!r} (unix:PATH or tcp:HOST:PORT)")


class DirectChannel(Channel):
    """A connected switch. Use as a context manager; `close()` is idempotent."""

    def __init__(self, target: str, timeout: float = 10.0):
        super().__init__()
        self.name = target
        family, address = parse_target(target)
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(address)
        except OSError as e:
            self._sock.close()
            raise ChannelClosed(f"cannot connect to {target}: {e.strerror or e}") from None
        self._send_lock = threading.Lock()
        self._hello = threading.Event()
        self._version: int | None = None
        self._sock.sendall(wire.hello(self.allocate(1)))
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"of-{target}", daemon=True)
        self._reader.start()
        if not self._hello.wait(timeout):
            self.close()
            raise SwitchTimeout(f"{target} did not say hello within {timeout:.0f}s")
        if self._version is None or self._version < wire.OFP_VERSION:
            self.close()
            raise ChannelClosed(f"{target} does not speak OpenFlow 1.3 (enable it in the bridge's protocols)")

    def __enter__(self) -> DirectChannel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ChannelClosed(f"connection to {self.name} is closed: {self.closed}")
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            self.fail_pending(f"send failed: {e}")
            raise ChannelClosed(f"connection to {self.name} lost: {e}") from None

    def _read_loop(self) -> None:
        buf = bytearray()
        reason = "closed by the switch"
        try:
            while True:
                data = self._sock.recv(1 << 20)
                if not data:
                    break
                buf += data
                msgs, used = wire.split_messages(buf)
                del buf[:used]
                for msg in msgs:
                    self._handle(msg)
        except OSError as e:
            reason = str(e)
        except wire.WireError as e:
            reason = f"garbled stream: {e}"
        self._hello.set()
        self.fail_pending(reason)

    def _handle(self, msg: bytes) -> None:
        _version, mtype, _, xid = wire.header(msg)
        if mtype == wire.OFPT_HELLO:
            self._version = _negotiate(msg)
            self._hello.set()
        elif mtype == wire.OFPT_ECHO_REQUEST:
            self.send(wire.echo_reply(xid, msg[8:]))
        elif mtype == wire.OFPT_ERROR and not self._hello.is_set():
            self._hello.set()  # a HELLO_FAILED before the hello: _version stays None
        else:
            self.dispatch(msg)

    def close(self) -> None:
        if self.closed is None:
            self.fail_pending("closed")
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def _negotiate(hello: bytes) -> int | None:
    """The version both sides support: 1.3 if the switch's bitmap has it."""
    version, _, length, _ = wire.header(hello)
    pos = 8
    while pos + 4 <= length:
        etype, elen = struct.unpack_from("!HH", hello, pos)
        if etype == 1 and elen >= 8:
            bitmap = struct.unpack_from("!I", hello, pos + 4)[0]
            return wire.OFP_VERSION if bitmap & (1 << wire.OFP_VERSION) else None
        pos += (elen + 7) // 8 * 8 or 8
    return wire.OFP_VERSION if version >= wire.OFP_VERSION else None


def connect(target: str, timeout: float = 10.0, retries: int = 0, backoff: float = 0.5) -> DirectChannel:
    """Connect, retrying with exponential backoff."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            return DirectChannel(target, timeout)
        except (ChannelClosed, SwitchTimeout):
            if attempt == retries:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")
