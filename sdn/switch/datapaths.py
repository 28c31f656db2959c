"""Which node each switch is: OVSDB's view of every node's bridge (sdn.switch.ovsdb), the
switches that connected before OVSDB named them (by datapath id), and the warning when a
bridge OVSDB knows does not connect."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from sdn.switch.channel import Channel
from sdn.switch.ovsdb import BridgeView

log = logging.getLogger("sdn.switch.datapaths")


def _relevant(v: BridgeView | None) -> tuple | None:
    return None if v is None else v.compiled_inputs()


class Datapaths:
    """Datapath id <-> node, from OVSDB. Thread-safe."""

    def __init__(self, nodes: Iterable[str]):
        self._lock = threading.Lock()
        self.views: dict[str, BridgeView | None] = dict.fromkeys(nodes)
        self.pending: dict[int, Channel] = {}  # dpid -> channel, not yet mapped to a node
        self._dirty = False  # a view changed in a way that needs a recompile
        self._absent_since: dict[str, float] = {}  # node -> when its switch was last seen missing
        self._warned_at: dict[str, float] = {}

    def node_of(self, dpid: int) -> str | None:
        for node, view in self.views.items():
            if view is not None and view.datapath_id == dpid:
                return node
        return None

    def connected(self, dpid: int, channel: Channel) -> str | None:
        """A switch connected: its node, or None (kept until OVSDB names it)."""
        with self._lock:
            node = self.node_of(dpid)
            if node is None:
                self.pending[dpid] = channel
                log.info("switch %016x connected; waiting for OVSDB to say which node it is", dpid)
            return node

    def disconnected(self, dpid: int | None, channel: Channel) -> None:
        with self._lock:
            if dpid is not None and self.pending.get(dpid) is channel:
                del self.pending[dpid]

    def update(self, node: str, view: BridgeView | None) -> Channel | None:
        """OVSDB's new view of a node's bridge; returns the channel of its switch if that
        connected before OVSDB named it."""
        with self._lock:
            if _relevant(view) != _relevant(self.views.get(node)):
                self._dirty = True
            self.views[node] = view
            if view is not None and view.datapath_id in self.pending:
                return self.pending.pop(view.datapath_id)
            return None

    def snapshot(self) -> dict[str, BridgeView | None]:
        """The views now, and clears the "changed" mark (a compile is about to use them)."""
        with self._lock:
            self._dirty = False
            return dict(self.views)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def absent_since(self, node: str) -> float | None:
        return self._absent_since.get(node)

    def check_switches(self, connected: dict[str, bool], grace: float = 10.0) -> None:
        """Warn (with backoff) about bridges OVSDB shows whose switch has not connected."""
        now = time.monotonic()
        for node, is_up in connected.items():
            view = self.views.get(node)
            if view is None or is_up:
                self._absent_since.pop(node, None)
                self._warned_at.pop(node, None)
                continue
            since = self._absent_since.setdefault(node, now)
            last = self._warned_at.get(node)
            interval = grace if last is None else min(300.0, 2 * (last - since) or grace)
            if now - since >= grace and (last is None or now - last >= interval):
                self._warned_at[node] = now
                target = ", ".join(view.controllers) or "none"
                log.warning("%s: bridge %s (datapath-id %s) has not connected for %.0fs; its controller is %s "
                            "(OVS reports %s). Is ovs-vswitchd running, and can it reach that target?",
                            node, view.name, f"{view.datapath_id:016x}" if view.datapath_id else "?",
                            now - since, target, "connected" if view.controller_connected else "not connected")
