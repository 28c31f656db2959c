"""Talking to one switch in bytes: requests matched to replies by xid, flow stats, bundles.

A `Channel` is anything that can send raw OpenFlow bytes to a switch and is handed the
messages that come back: the os-ken connection of a bridge (sdn.switch.app) or a direct
connection to a bridge's management socket (sdn.switch.ofclient). The two operations on top
are the whole conversation the controller needs: read every installed flow back, and apply a
plan as ONE atomic ONF bundle.

A bundle goes: open, every flow_mod as a bundle-add, then a barrier. OVS checks each message
as it is added and keeps the bundle open without the ones it rejected, so committing blindly
would commit a partial change; the barrier reply proves every add was judged. Only with no
error is the bundle committed; otherwise it is discarded and the errors are reported with the
flows that caused them. Nothing is cached about the switch here: callers update their view
only from a `BundleResult` that says committed.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flows import wire
from flows.flow import Flow
from sdn.switch.reconcile import ADD, DELETE, DELETE_COOKIE, DELETE_RAW, MODIFY, REPLACE, Op, Plan

CHUNK_BYTES = 1 << 20  # bytes handed to the transport at once


class ChannelClosed(ConnectionError):
    """The connection to the switch went away while a request was outstanding."""


class SwitchTimeout(TimeoutError):
    """The switch did not answer in time."""


class Transaction:
    """The replies to a block of xids [lo, hi]; complete when `final` is answered (a
    multipart reply without the MORE flag, any other reply, or an error)."""

    def __init__(self, lo: int, hi: int, final: int):
        self.lo, self.hi = lo, hi
        self.final = final
        self.messages: list[bytes] = []
        self.errors: list[wire.OFError] = []
        self._done = threading.Event()
        self._answered = False
        self.closed: str | None = None

    def expect(self, final: int) -> None:
        """Wait next for the answer to `final` (another xid of the block)."""
        self.final = final
        self._answered = False
        self._done.clear()

    def offer(self, xid: int, mtype: int, msg: bytes) -> None:
        if mtype == wire.OFPT_ERROR:
            self.errors.append(wire.decode_error(msg))
        else:
            self.messages.append(msg)
        if xid == self.final:
            if mtype == wire.OFPT_MULTIPART_REPLY and wire.multipart_reply_info(msg)[1] & wire.OFPMPF_REPLY_MORE:
                return
            self._answered = True
            self._done.set()

    def close(self, reason: str) -> None:
        self.closed = reason
        self._done.set()

    def wait(self, timeout: float, what: str) -> None:
        if not self._done.wait(timeout):
            raise SwitchTimeout(f"no answer from the switch to {what} within {timeout:.0f}s")
        if not self._answered:
            raise ChannelClosed(f"connection lost during {what}: {self.closed}")


class Channel:
    """Base of the transports: xid allocation and reply routing. Subclasses implement
    `send(data)` and call `dispatch(msg)` for every message they receive."""

    name = "switch"

    def __init__(self):
        self._lock = threading.Lock()
        # Our xids live in the upper half, away from os-ken's own handshake requests.
        self._next_xid = 0x80000000 + random.randrange(1 << 30)
        self._pending: list[Transaction] = []
        self._bundle_ids = itertools.count(random.randrange(1 << 24))
        self.closed: str | None = None

    def allocate(self, n: int) -> int:
        """A block of n consecutive xids (never wrapping)."""
        with self._lock:
            if self._next_xid + n >= 1 << 32:
                self._next_xid = 0x80000000
            first = self._next_xid
            self._next_xid += n
            return first

    def register(self, tx: Transaction) -> None:
        with self._lock:
            if self.closed:
                raise ChannelClosed(f"connection to {self.name} is closed: {self.closed}")
            self._pending.append(tx)

    def unregister(self, tx: Transaction) -> None:
        with self._lock:
            if tx in self._pending:
                self._pending.remove(tx)

    def dispatch(self, msg: bytes) -> bool:
        """Hand a received message to the transaction waiting for its xid; False if none is."""
        _, mtype, _, xid = wire.header(msg)
        with self._lock:
            for tx in self._pending:
                if tx.lo <= xid <= tx.hi:
                    break
            else:
                return False
        tx.offer(xid, mtype, msg)
        return True

    def wants(self, xid: int) -> bool:
        with self._lock:
            return any(tx.lo <= xid <= tx.hi for tx in self._pending)

    def fail_pending(self, reason: str) -> None:
        with self._lock:
            self.closed = reason
            pending, self._pending = self._pending, []
        for tx in pending:
            tx.close(reason)

    def next_bundle_id(self) -> int:
        return next(self._bundle_ids) & 0xFFFFFFFF

    def send(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# ---- reading flows -------------------------------------------------------------------------

def read_flows(ch: Channel, timeout: float = 120.0, table: int = wire.OFPTT_ALL, cookie: int = 0,
               cookie_mask: int = 0) -> list[wire.InstalledFlow]:
    """Every installed flow (of `table`, under the cookie filter), with counters."""
    xid = ch.allocate(1)
    tx = Transaction(xid, xid, xid)
    ch.register(tx)
    try:
        ch.send(wire.flow_stats_request(xid, table, cookie, cookie_mask))
        tx.wait(timeout, "a flow stats request")
    finally:
        ch.unregister(tx)
    if tx.errors:
        raise SwitchError(f"flow stats request refused: {tx.errors[0]}", tx.errors)
    return wire.decode_flow_stats(m for m in tx.messages if m[1] == wire.OFPT_MULTIPART_REPLY)


def barrier(ch: Channel, timeout: float = 30.0) -> None:
    xid = ch.allocate(1)
    tx = Transaction(xid, xid, xid)
    ch.register(tx)
    try:
        ch.send(wire.barrier_request(xid))
        tx.wait(timeout, "a barrier")
    finally:
        ch.unregister(tx)


class SwitchError(RuntimeError):
    def __init__(self, message: str, errors: list | None = None):
        super().__init__(message)
        self.errors = errors or []


# ---- bundles -------------------------------------------------------------------------------

@dataclass
class Rejection:
    """One error the switch sent during a bundle, with the op (flow) that caused it."""

    error: wire.OFError
    op: Op | None
    stage: str  # add | commit | open

    def __str__(self) -> str:
        what = self.op.describe() if self.op is not None else f"the bundle {self.stage}"
        return f"{self.error.name} for {what}"


@dataclass
class BundleResult:
    committed: bool
    plan: Plan
    messages: int
    seconds: float
    rejections: list[Rejection] = field(default_factory=list)
    discarded: bool = False

    @property
    def summary(self) -> dict:
        return dict(self.plan.summary(), committed=self.committed, seconds=round(self.seconds, 4))

    def describe_failure(self) -> str:
        return "; ".join(str(r) for r in self.rejections[:5]) or "no error detail"


def encode_op(op: Op, xid: int) -> bytes:
    flow, i = op.flow, op.installed
    if op.kind in (ADD, REPLACE) and flow is not None:
        return wire.flow_mod(flow, wire.OFPFC_ADD, xid)
    if op.kind == MODIFY and flow is not None:
        return wire.flow_mod(flow, wire.OFPFC_MODIFY_STRICT, xid)
    if op.kind == DELETE and flow is not None:
        return wire.delete_flow_strict(flow, xid)
    if op.kind == DELETE_RAW and i is not None:
        return wire.delete_flow_strict(Flow(i.table, i.priority, ()), xid, match=i.match_raw)
    if op.kind == DELETE_COOKIE:
        return wire.delete_by_cookie(op.cookie, xid)
    raise ValueError(f"unknown op {op.kind}, or its flow missing")


def apply_plan(ch: Channel, plan: Plan, *, timeout: float | None = None,
               encode: Callable[[Op, int], bytes] = encode_op) -> BundleResult:
    """Send `plan` as one atomic, ordered ONF bundle; commit it only if every message was
    accepted. Raises ChannelClosed / SwitchTimeout if the switch goes away (then nothing was
    committed unless the commit itself was in flight; callers resync from a fresh read)."""
    started = time.monotonic()
    n = plan.messages
    if n == 0:
        return BundleResult(True, plan, 0, 0.0)
    limit = timeout if timeout is not None else 30.0 + n / 5000.0
    flags = wire.BUNDLE_ATOMIC | wire.BUNDLE_ORDERED
    first = ch.allocate(n + 4)
    open_xid, barrier_xid, commit_xid, discard_xid = first, first + n + 1, first + n + 2, first + n + 3
    bundle = ch.next_bundle_id()
    tx = Transaction(first, discard_xid, barrier_xid)
    ch.register(tx)
    try:
        parts = [wire.bundle_ctrl(open_xid, bundle, wire.BUNDLE_OPEN_REQUEST, flags)]
        size = 0
        xid = first + 1
        bundled, add, modify = wire.bundled_flow_mod, wire.OFPFC_ADD, wire.OFPFC_MODIFY_STRICT
        # The bulk (adds, replacements, modifies) is encoded straight from the plan's flows, in
        # the order of Plan.ops(); Op values are only made to name a rejected message.
        for command, flows in ((add, plan.add), (add, plan.replace), (modify, plan.modify)):
            for f in flows:
                msg = bundled(f, command, xid, bundle, flags)
                xid += 1
                parts.append(msg)
                size += len(msg)
                if size >= CHUNK_BYTES:
                    ch.send(b"".join(parts))
                    parts, size = [], 0
        for op in plan.delete_ops():
            msg = wire.bundle_add(encode(op, xid), bundle, flags)
            xid += 1
            parts.append(msg)
            size += len(msg)
            if size >= CHUNK_BYTES:
                ch.send(b"".join(parts))
                parts, size = [], 0
        parts.append(wire.barrier_request(barrier_xid))
        ch.send(b"".join(parts))
        tx.wait(limit, f"a bundle of {n} flow_mods")
        rejections = _rejections(tx, plan, first)
        if rejections:
            tx.expect(discard_xid)
            ch.send(wire.bundle_ctrl(discard_xid, bundle, wire.BUNDLE_DISCARD_REQUEST, flags))
            try:
                tx.wait(10.0, "a bundle discard")
            except SwitchTimeout:
                pass  # OVS drops an idle open bundle after 10 s anyway
            return BundleResult(False, plan, n, time.monotonic() - started, rejections, True)
        tx.expect(commit_xid)
        ch.send(wire.bundle_ctrl(commit_xid, bundle, wire.BUNDLE_COMMIT_REQUEST, flags))
        tx.wait(limit, "a bundle commit")
        rejections = _rejections(tx, plan, first)
        committed = not rejections and any(
            (wire.decode_bundle_ctrl(m) or (0, -1, 0))[1] == wire.BUNDLE_COMMIT_REPLY
            and wire.header(m)[3] == commit_xid for m in tx.messages)
        return BundleResult(committed, plan, n, time.monotonic() - started, rejections)
    finally:
        ch.unregister(tx)


def _rejections(tx: Transaction, plan: Plan, first: int) -> list[Rejection]:
    if not tx.errors:
        return []
    out = []
    ops = plan.ops()
    n = len(ops)
    for e in tx.errors:
        k = e.xid - first - 1
        if 0 <= k < n:
            out.append(Rejection(e, ops[k], "add"))
        elif e.xid == first:
            out.append(Rejection(e, None, "open"))
        else:
            out.append(Rejection(e, None, "commit"))
    # The error naming the failing flow is more useful than the bundle's own MSG_FAILED.
    out.sort(key=lambda r: r.op is None)
    return out
