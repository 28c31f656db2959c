"""One bridge's worker: keeps the installed flows equal to the desired program.

Each bridge has a thread that wakes when the desired program changes, when its switch
connects or reconnects, or when a retry is due. It knows what is installed (`view`) only from
two sources: a fresh read of the switch (after every connect, and after anything went wrong)
or a bundle the switch confirmed as committed. The difference goes out as one atomic bundle;
nothing is sent when there is none, so a restarted controller facing an up-to-date switch
sends nothing at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows import pipeline as P
from flows.compiler import Program
from flows.flow import Flow, FlowDiff
from sdn.switch import channel as chan
from sdn.switch import reconcile

log = logging.getLogger("sdn.switch.bridge")

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


def flow_origin(program: Program | None, flow: Flow | None) -> str:
    """Which policy rule (or pipeline part) a flow implements, for messages."""
    if flow is None:
        return "an undecoded flow"
    if program is None:
        return f"cookie {flow.cookie:#x}"
    kind = P.cookie_kind(flow.cookie)
    by_conj = program.by_conj()
    if flow.conjunctions:
        rules = [str(by_conj[c.id].id) for c in flow.conjunctions if c.id in by_conj]
        return "clause of " + (", ".join(rules) or "unknown rules")
    cid = flow.get("conj_id")
    if cid is not None and cid.value in by_conj:
        return f"rule {by_conj[cid.value].id}"
    if kind == P.KIND_RULE:
        info = program.by_cookie().get(flow.cookie)
        return f"rule {info.id}" if info else "an unknown rule"
    if kind == P.KIND_DEFAULT:
        iso = dict(program.defaults).get(flow.cookie)
        return (f"default deny of {iso.address} ({iso.direction}, {', '.join(iso.policies)})"
                if iso else "an unknown default deny")
    if kind == P.KIND_PIPELINE:
        table = P.BY_ID.get(flow.table)
        return f"pipeline table {table.name if table else flow.table}"
    return f"cookie {flow.cookie:#x} (not ours)"


@dataclass
class Counters:
    bundles: int = 0  # committed
    failed_bundles: int = 0
    flow_mods: int = 0  # messages inside committed or failed bundles
    resyncs: int = 0  # full reads of the switch
    connects: int = 0


@dataclass
class BridgeStatus:
    node: str
    bridge: str | None
    dpid: int | None
    connected: bool
    desired_generation: int
    realized_generation: int
    desired_flows: int
    installed_flows: int | None
    in_sync: bool
    last_error: str
    last_bundle: dict | None
    last_sync: dict | None = None
    counters: Counters = field(default_factory=Counters)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["dpid"] = None if self.dpid is None else f"{self.dpid:016x}"
        d["counters"] = dict(self.counters.__dict__)
        return d


class BridgeAgent:
    """The worker of one node's bridge. Thread-safe: the controller calls `set_desired`,
    `connected` and `disconnected` from its threads; the worker thread does all switch I/O."""

    def __init__(self, node: str):
        self.node = node
        self.bridge: str | None = None
        self.dpid: int | None = None
        self._cv = threading.Condition()
        self._program: Program | None = None
        self._generation = 0
        self._realized = 0
        self._channel: chan.Channel | None = None
        # What the switch holds as far as we know, by flow key: the flows of the last program
        # committed (or confirmed by a read); None = unknown, read the switch first.
        self._view: dict[tuple, Flow] | None = None
        self._view_program: Program | None = None  # the program `_view` was made from
        # Incremental changes (the engine's flow differences): the desired flows by key and
        # the keys where they may differ from `_view`. While both are known, a change is sent
        # as a bundle of just those keys (reconcile.plan_diff), never re-planning the table;
        # _dirty None = plan the whole table against `_view`.
        self._want: dict[tuple, Flow] | None = None
        self._dirty: set | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN
        self._stopping = False
        self._busy = False
        self.last_error = ""
        self.last_bundle: dict | None = None
        # Called with the plan of each committed bundle, before the generation counts as
        # realized (the core purges the datapath flow cache there; see core.py).
        self.after_commit: Callable[[Any], None] | None = None
        self.last_sync: dict | None = None
        # Called with the flows read from the switch before the first plan against them; True
        # when it gave this worker a new program meanwhile (the core compiles again with the
        # hints they hold: sdn/switch/hints.py), which is then planned instead.
        self.before_plan: Callable[[list], bool] | None = None
        self.counters = Counters()
        self._thread = threading.Thread(target=self._run, name=f"bridge-{node}", daemon=True)

    def start(self) -> BridgeAgent:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the operation in flight (a bundle is never abandoned half-sent by us;
        if the process dies anyway, OVS discards the open bundle with the connection)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout)

    # -- inputs
    def set_desired(self, program: Program, generation: int, change: FlowDiff | None = None) -> None:
        """The program to install. `change`: its flow difference from the program given
        before (sdn.engine's), so that only the changed keys are planned and sent."""
        with self._cv:
            if change is not None and self._program is not None:
                if self._want is None:
                    self._want = {f.key: f for f in self._program.flows}
                for f in change.delete:
                    self._want.pop(f.key, None)
                for f in change.modify + change.add:
                    self._want[f.key] = f
                if self._dirty is not None:
                    self._dirty.update(f.key for f in change.delete + change.modify + change.add)
            else:
                self._want = None
                self._dirty = None
            self._program = program
            self._generation = generation
            self.bridge = program.bridge
            self._retry_at = 0.0
            self._cv.notify_all()

    def connected(self, channel: chan.Channel, dpid: int) -> None:
        with self._cv:
            self._channel = channel
            self.dpid = dpid
            self._view = None  # whatever we knew, the switch may have restarted: read it
            self._view_program = None
            self._dirty = None
            self._retry_at = 0.0
            self._backoff = BACKOFF_MIN
            self.counters.connects += 1
            self._cv.notify_all()
        log.info("%s: switch %016x connected; reading its flows", self.node, dpid)

    def disconnected(self, channel: chan.Channel) -> None:
        with self._cv:
            if channel is not self._channel:
                return
            self._channel = None
            self._view = None
            self._view_program = None
            self._dirty = None
            self._cv.notify_all()
        log.warning("%s: switch disconnected; a running switch keeps its flows (fail_mode=secure); "
                    "they are read and reconciled when it connects again",
                    self.node)

    def resync(self) -> None:
        """Read the switch again and repair any drift (someone edited its flows)."""
        with self._cv:
            self._view = None
            self._view_program = None
            self._dirty = None
            self._retry_at = 0.0
            self._cv.notify_all()

    @property
    def channel(self) -> chan.Channel | None:
        return self._channel

    @property
    def program(self) -> Program | None:
        return self._program

    def status(self) -> BridgeStatus:
        with self._cv:
            view = self._view
            return BridgeStatus(
                self.node, self.bridge, self.dpid, self._channel is not None, self._generation,
                self._realized, len(self._program.flows) if self._program else 0,
                None if view is None else len(view),
                self._channel is not None and self._program is not None and view is not None
                and self._realized == self._generation and not self._busy,
                self.last_error, self.last_bundle, self.last_sync, Counters(**self.counters.__dict__))

    def installed_per_table(self) -> dict[int, int] | None:
        """Flows known to be installed, per table (read back, or confirmed by a committed
        bundle); None while unknown (not connected, or not read yet)."""
        with self._cv:
            view = self._view
            if view is None:
                return None
            out: dict[int, int] = {}
            for f in view.values():
                out[f.table] = out.get(f.table, 0) + 1
            return out

    def wait_realized(self, generation: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._realized < generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    # -- the worker
    def _due(self) -> bool:
        if self._channel is None or self._program is None:
            return False
        if time.monotonic() < self._retry_at:
            return False
        return self._view is None or self._realized != self._generation

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._due():
                    timeout = None
                    if self._retry_at and self._channel is not None:
                        timeout = max(0.0, self._retry_at - time.monotonic())
                    self._cv.wait(timeout if timeout is not None else 1.0)
                if self._stopping:
                    return
                ch, program, generation, view = self._channel, self._program, self._generation, self._view
                if ch is None or program is None:  # not so: _due() said both are there
                    continue
                diff = None
                if view is not None and self._dirty is not None:
                    # incremental: only the keys changed since the switch was last in sync
                    keys, self._dirty = self._dirty, set()
                    want = self._want if self._want is not None else {}
                    diff = {k: want.get(k) for k in keys}
                    if all(view.get(k) == f for k, f in diff.items()):
                        self._realized = generation  # nothing to send
                        self._view_program = program
                        self._cv.notify_all()
                        continue
                elif view is not None and self._view_program is not None and (
                        program is self._view_program or program.flows == self._view_program.flows):
                    self._realized = generation  # recompiled, same tables: nothing to send
                    self._view_program = program
                    self._want, self._dirty = None, set()  # in sync: follow changes from here
                    self._cv.notify_all()
                    continue
                else:
                    # the whole table: changes from now on are relative to this program
                    self._want, self._dirty = None, set()
                self._busy = True
            try:
                if diff is not None and view is not None:  # (a diff is made only against a view)
                    self._sync_diff(ch, program, generation, view, diff)
                else:
                    self._sync(ch, program, generation, view)
            except (chan.ChannelClosed, chan.SwitchTimeout) as e:
                self._failed(ch, f"{e}", discarded=False)
            except Exception as e:
                log.exception("%s: reconcile failed", self.node)
                self._failed(ch, f"internal error: {e!r}", discarded=False)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _sync(self, ch: chan.Channel, program: Program, generation: int, view: dict | None) -> None:
        """One bundle taking the switch from `view` (None: read it first) to the whole program."""
        started = time.monotonic()
        if view is None:
            installed = chan.read_flows(ch)
            self.counters.resyncs += 1
            log.info("%s: read %d installed flows in %.2fs", self.node, len(installed), time.monotonic() - started)
            if self.before_plan is not None and self.before_plan(installed):
                with self._cv:
                    program, generation = self._program or program, self._generation
        read = time.monotonic()
        plan = reconcile.plan(installed if view is None else list(view.values()), program.flows)
        planned = time.monotonic()
        self.last_sync = {"generation": generation, "read": view is None,
                          "flows_read": len(installed) if view is None else None,
                          "read_seconds": round(read - started, 4), "plan_seconds": round(planned - read, 4),
                          "changes": plan.summary()}
        self._send(ch, program, generation, plan, started, {
            "read_seconds": round(read - started, 4) if view is None else None,
            "plan_seconds": round(planned - read, 4)})

    def _sync_diff(self, ch: chan.Channel, program: Program, generation: int, view: dict,
                   diff: dict) -> None:
        """One bundle for the keys in `diff` (key -> desired flow, None = absent)."""
        started = time.monotonic()
        add, modify, delete = [], [], []
        for key, f in diff.items():
            have = view.get(key)
            if f is None:
                if have is not None:
                    delete.append(have)
            elif have is None:
                add.append(f)
            elif have != f:
                modify.append(f)
        plan = reconcile.plan_diff(FlowDiff(tuple(add), tuple(modify), tuple(delete)), view)
        planned = time.monotonic()
        self.last_sync = {"generation": generation, "read": False, "flows_read": None, "read_seconds": 0.0,
                          "plan_seconds": round(planned - started, 4), "changes": plan.summary(),
                          "incremental": True}
        self._send(ch, program, generation, plan, started, {
            "read_seconds": None, "plan_seconds": round(planned - started, 4), "incremental": True}, diff)

    def _send(self, ch: chan.Channel, program: Program, generation: int, plan: reconcile.Plan, started: float,
              timing: dict, diff: dict | None = None) -> None:
        """The tail of both syncs: nothing to send, or one bundle, committed (after-commit
        hook, then realized) or rejected (each rejection logged with its policy rule)."""
        if plan.empty:
            self._succeeded(ch, program, generation, None, diff)
            return
        result = chan.apply_plan(ch, plan)
        summary = dict(result.summary, sync_seconds=round(time.monotonic() - started, 4), **timing)
        self.counters.flow_mods += result.messages
        if result.committed:
            self.counters.bundles += 1
            s = plan.summary()
            log.info("%s: bundle committed (generation %d%s): %d added, %d modified, %d deleted in %d messages, "
                     "%.3fs%s", self.node, generation, ", incremental" if diff is not None else "", s["add"],
                     s["modify"], s["delete"], s["messages"], result.seconds,
                     f"; removed flows of unknown cookies {', '.join(f'{c:#x}' for c in plan.delete_cookies)}"
                     if plan.delete_cookies else "")
            if self.after_commit is not None:
                try:
                    self.after_commit(plan)
                except Exception:
                    log.exception("%s: after-commit hook failed", self.node)
            self._succeeded(ch, program, generation, summary, diff)
            return
        self.counters.failed_bundles += 1
        for r in result.rejections[:10]:
            flow = r.op.flow if r.op is not None else None
            log.error("%s: switch rejected %s -- %s: %s", self.node,
                      r.op.describe() if r.op else f"the bundle ({r.stage})",
                      flow_origin(program, flow), r.error.name)
        reason = f"bundle {'discarded' if result.discarded else 'not committed'}: {result.describe_failure()}"
        self._failed(ch, reason, summary, discarded=True)

    def _succeeded(self, ch, program: Program, generation: int, bundle: dict | None,
                   diff: dict | None = None) -> None:
        with self._cv:
            if ch is not self._channel:
                return
            if diff is None:
                self._view = {f.key: f for f in program.flows}
            elif self._view is not None:  # (None: a resync asked for a read meanwhile)
                for key, f in diff.items():
                    if f is None:
                        self._view.pop(key, None)
                    else:
                        self._view[key] = f
            self._view_program = program
            self._realized = generation
            self._backoff = BACKOFF_MIN
            self._retry_at = 0.0
            self.last_error = ""
            if bundle is not None:
                self.last_bundle = bundle
            self._cv.notify_all()

    def _failed(self, ch, reason: str, bundle: dict | None = None, *, discarded: bool) -> None:
        with self._cv:
            self.last_error = reason
            if bundle is not None:
                self.last_bundle = bundle
            self._view = None  # read the switch again before the next attempt
            self._view_program = None
            self._dirty = None
            delay = self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._retry_at = time.monotonic() + delay
            self._cv.notify_all()
        log.error("%s: %s; %s; retrying in %.1fs", self.node, reason,
                  "nothing changed on the switch" if discarded else "the switch will be read again", delay)
