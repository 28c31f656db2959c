"""The os-ken shim without a switch: guarded handlers, and the socket wrapper that takes the
replies to our own requests out of the stream before os-ken parses it."""

from __future__ import annotations

import logging
import socket
import struct

import pytest

from flows import wire
from sdn.switch import app
from sdn.switch.channel import ChannelClosed, Transaction


class FakeCore:
    def __init__(self):
        self.failures = []

    def handler_failed(self, where, error):
        self.failures.append((where, type(error).__name__))


def test_a_raising_handler_is_logged_and_reported_not_propagated(caplog):
    core = FakeCore()
    app.attach(core)
    try:
        class Shim:
            @app.guarded
            def on_event(self, ev):
                raise KeyError("boom")

        with caplog.at_level(logging.ERROR, logger="sdn.switch.app"):
            assert Shim().on_event(object()) is None
        assert core.failures == [("on_event", "KeyError")]
        assert "handler on_event failed" in caplog.text
    finally:
        app.attach(None)


def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(2)
    return app.SwitchSocket(a, "test"), b


def _msg(mtype: int, xid: int, body: bytes = b"") -> bytes:
    return struct.pack("!BBHI", 4, mtype, 8 + len(body), xid) + body


def test_replies_to_our_xids_are_diverted_everything_else_passes():
    sock, switch = _pair()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # ignored on a unix socket
        ch = sock.channel
        xid = ch.allocate(3)
        tx = Transaction(xid, xid + 2, xid + 2)
        ch.register(tx)
        stream = (_msg(wire.OFPT_BARRIER_REPLY, xid)  # ours
                  + _msg(wire.OFPT_ECHO_REQUEST, xid + 1)  # the switch's own request: os-ken's
                  + _msg(wire.OFPT_BARRIER_REPLY, 12345)  # not ours
                  + _msg(wire.OFPT_BARRIER_REPLY, xid + 2))  # ours, and final
        switch.sendall(stream[:13])  # split mid-message: framing must hold
        switch.sendall(stream[13:])
        passed = b""
        while len(passed) < 16:
            passed += sock.recv(4096)
        assert passed == _msg(wire.OFPT_ECHO_REQUEST, xid + 1) + _msg(wire.OFPT_BARRIER_REPLY, 12345)
        tx.wait(1, "test")
        assert [wire.header(m)[3] for m in tx.messages] == [xid, xid + 2]
    finally:
        sock.close()
        switch.close()


def test_end_of_stream_fails_what_waits():
    sock, switch = _pair()
    ch = sock.channel
    xid = ch.allocate(1)
    tx = Transaction(xid, xid, xid)
    ch.register(tx)
    switch.close()
    assert sock.recv(8) == b""
    with pytest.raises(ChannelClosed, match="closed by the switch"):
        tx.wait(1, "a request")
    sock.close()
