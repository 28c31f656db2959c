"""The controller core: desired state -> bridges. A source (sdn.sources: manifest files, the
Kubernetes API) hands it whole clusters; it compiles them for every bridge OVSDB shows and
hands each program to that bridge's worker (sdn.switch.bridge). No os-ken import and no input
reading: the app calls `datapath_up` / `datapath_down`, sources call `set_cluster` /
`input_failed`, the control API and the main loop call the rest.

Its helpers live in rooms of their own: which switch is which node (datapaths.py), the
revalidator purge after a commit (purge.py), the status JSON (status.py), live traces
(livetrace.py), the hints a restarted controller reads back from its bridges (hints.py).

Compiles: a batch of changed objects (`set_cluster` with upserts/deletes, the Kubernetes
source) is compiled incrementally (sdn.engine: only the policies it can affect, only their
flows); a whole new cluster (manifests) or a changed OVSDB view builds the engine again, with
the last programs as hints so unchanged rules keep their priorities and conj ids. Every
compile is a new generation; each bridge reports the generation it has realized, so "every
bridge has the resulting flows" is `realized_generation >= generation` everywhere (`wait`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from flows.compiler import CompileError, Program
from flows.wire import InstalledFlow
from sdn.policy.model import Cluster
from sdn.sources.base import Source
from sdn.switch import channel as chan
from sdn.switch import status as status_json
from sdn.switch.bridge import BridgeAgent
from sdn.switch.datapaths import Datapaths
from sdn.switch.desired import Desired, LiveCompiler
from sdn.switch.hints import hint_program
from sdn.switch.livetrace import NodePlace, node_place, trace_compiled
from sdn.switch.nodespec import NodeSpec
from sdn.switch.ovsdb import BridgeView, OvsdbMonitor
from sdn.switch.purge import purger

log = logging.getLogger("sdn.switch.core")

__all__ = ["ControllerCore", "NodeSpec"]


class ControllerCore:
    def __init__(self, nodes: list[NodeSpec],
                 targets: dict[str, tuple[str | None, Callable[[], None] | None]] | None = None,
                 enforce: str = "host", existing_connections: str = "enforce"):
        """`targets`: per node, the OpenFlow target to keep configured on its bridge (None:
        leave the bridge's configuration alone) and what to prepare when its OVSDB connects.
        `enforce`: "host" (each node's bridge judges its pods) or "fabric" (node bridges guard
        and deliver; the node named `fabric` is the fabric switch that judges every rule)."""
        if enforce not in ("host", "fabric"):
            raise ValueError(f"--enforce must be host or fabric, not {enforce!r}")
        if len({n.node for n in nodes}) != len(nodes):
            raise ValueError("a node is given twice with --bridge")
        self.enforce = enforce
        self._live = LiveCompiler(enforce, existing_connections)  # the compiler state kept between changes
        self.nodes = {n.node: n for n in nodes}
        self.targets = dict(targets or {})
        self.sources: list[Source] = []
        self._started = threading.Event()
        self.lock = threading.RLock()
        self._compile_lock = threading.Lock()
        self.changed = threading.Event()  # wakes the main loop
        self.cluster: Cluster | None = None
        self.datapaths = Datapaths(self.nodes)
        self.programs: dict[str, Program] = {}
        self.port_maps: dict[str, dict[str, int]] = {}
        self.desired: Desired | None = None
        self.generation = 0
        self.input_error = ""
        self.compile_error = ""
        self.problems: list[str] = []
        self.handler_errors = 0
        self.agents = {n: BridgeAgent(n) for n in self.nodes}
        self._unhinted: set[str] = set()  # nodes whose program was compiled without a previous one
        for n, agent in self.agents.items():
            agent.after_commit = purger(self.nodes[n])
            agent.before_plan = self._hinter(n)
        self.monitors = {
            n.node: OvsdbMonitor(n.ovsdb, n.bridge, self._view_callback(n.node),
                                 *self.targets.get(n.node, (None, None)), name=n.node)
            for n in nodes}

    @property
    def views(self) -> dict[str, BridgeView | None]:
        return self.datapaths.views

    # -- lifecycle
    def start(self) -> None:
        """Start the bridge workers, the OVSDB monitors, then the sources (a source's first
        input meets the bridges OVSDB shows as soon as it can)."""
        for a in self.agents.values():
            a.start()
        for m in self.monitors.values():
            m.start()
        try:
            for source in self.sources:
                source.start(self)
        finally:
            self._started.set()

    def stop(self) -> None:
        for m in self.monitors.values():
            m.stop(2.0)
        for a in self.agents.values():
            a.stop(10.0)

    def attach(self, source: Source) -> None:
        """An input of this core: started by `start`, polled by `poll`, asked by `reload`."""
        self.sources.append(source)

    # -- os-ken side
    def datapath_up(self, dpid: int, channel: chan.Channel) -> None:
        node = self.datapaths.connected(dpid, channel)
        if node is not None:
            self.agents[node].connected(channel, dpid)

    def datapath_down(self, dpid: int | None, channel: chan.Channel) -> None:
        self.datapaths.disconnected(dpid, channel)
        for a in self.agents.values():
            a.disconnected(channel)

    def handler_failed(self, where: str, error: BaseException) -> None:
        with self.lock:
            self.handler_errors += 1

    # -- OVSDB side
    def _view_callback(self, node: str) -> Callable[[BridgeView | None], None]:
        def changed(view: BridgeView | None) -> None:
            waiting = self.datapaths.update(node, view)
            if waiting is not None and view is not None and view.datapath_id is not None:
                self.agents[node].connected(waiting, view.datapath_id)
            self.changed.set()
        return changed

    # -- the main loop
    def poll(self) -> None:
        """One turn of the main loop: every source looks at its input, the core recompiles
        when an OVSDB view changed, and says so when a switch OVSDB knows does not connect."""
        for source in self.sources:
            source.poll()
        self.datapaths.check_switches({n: a.channel is not None for n, a in self.agents.items()})
        if self.datapaths.dirty:
            self.recompile()

    def reload(self) -> dict:
        """Every source reads its input again (the control API's `reload`); without a
        source, compile the cluster again."""
        if not self.sources:
            return self.recompile()
        self._started.wait(60.0)  # a request may come before the sources started
        result: dict = {}
        for source in self.sources:
            result = source.reload()
            if result.get("error"):
                return result
        return result

    # -- inputs -> programs (the Sink of sdn.sources)
    def set_cluster(self, cluster: Cluster, upserts: Iterable[object] = (), deletes: Iterable[object] = (),
                    full: bool = False) -> int:
        """A cluster from a source: compile it for every bridge (incrementally from `upserts`
        and `deletes` unless `full`) and return the generation to wait for (`wait`). A
        compile error keeps the bridges' tables and shows in `status` (compile_error); the
        returned generation is then the previous one."""
        with self._compile_lock:
            with self.lock:
                self.cluster = cluster
                self.input_error = ""
            changes = None if full else (list(upserts), list(deletes))
            return self._recompile_locked(changes)["generation"]

    def input_failed(self, source: str, error: str) -> int:
        """A source could not deliver a usable input: the bridges keep their tables; the
        error shows in `status` (manifest_error) until the source delivers again."""
        with self.lock:
            self.input_error = error
            return self.generation

    def recompile(self) -> dict:
        with self._compile_lock:
            return self._recompile_locked()

    def _recompile_locked(self, changes: tuple[list, list] | None = None) -> dict:
        """Compile for every bridge: incrementally from `changes` (upserts, deletes) when
        given and the OVSDB views are unchanged, else from the whole cluster."""
        views = self.datapaths.snapshot()
        with self.lock:
            cluster = self.cluster
            previous = dict(self.programs)
        if cluster is None:
            return {"generation": self.generation, "error": self.input_error or "no input loaded yet"}
        started = time.monotonic()
        try:
            upserts, deletes = changes if changes is not None else (None, ())
            desired = self._live.compile(cluster, views, previous, upserts, deletes)
        except (CompileError, ValueError, KeyError) as e:
            msg = f"cannot compile: {e}"
            log.error("%s (the switches keep their last tables)", msg)
            with self.lock:
                self.compile_error = msg
                return {"generation": self.generation, "error": msg}
        with self.lock:
            self.generation += 1
            gen = self.generation
            self._unhinted |= {n for n in desired.programs if n not in previous}
            self._unhinted -= {n for n in desired.programs if n in previous}
            self.programs.update(desired.programs)
            self.port_maps = desired.port_maps
            self.desired = desired
            self.compile_error = ""
            for p in desired.problems:
                if p not in self.problems:
                    log.warning("%s", p)
            self.problems = desired.problems
        for node, program in desired.programs.items():
            change = None if desired.changes is None else desired.changes.get(node)
            self.agents[node].set_desired(program, gen, change)
        log.info("generation %d: compiled %s in %.3fs", gen,
                 ", ".join(f"{n} {len(p.flows)} flows" for n, p in sorted(desired.programs.items())) or "no bridge yet",
                 time.monotonic() - started)
        return {"generation": gen, "error": ""}

    def _hinter(self, node: str) -> Callable[[list[InstalledFlow]], bool]:
        """The bridge worker's `before_plan`: a program compiled without a previous one meets
        the flows its switch holds (a restarted controller): compile again with the
        placements they hold as hints (hints.py), so that unchanged rules are not rewritten."""
        def hint(installed: list[InstalledFlow]) -> bool:
            with self.lock:
                program = self.programs.get(node)
                if node not in self._unhinted or program is None:
                    return False
                self._unhinted.discard(node)
            previous = hint_program(program, installed)
            if previous is None:
                return False
            with self._compile_lock:
                with self.lock:
                    self.programs[node] = previous
                if self._recompile_locked()["error"]:
                    with self.lock:
                        self.programs[node] = program
                    return False
            log.info("%s: compiled again with the priorities and conj ids its flows hold", node)
            return True
        return hint

    # -- questions
    def status(self) -> dict:
        return status_json.render(self)

    def wait(self, generation: int | None, timeout: float) -> dict:
        """Block until every bridge with a program realized `generation` (default: now's)."""
        gen = self.generation if generation is None else generation
        deadline = time.monotonic() + timeout
        ok = True
        for agent in self.agents.values():
            if agent.program is None:
                continue
            ok = agent.wait_realized(gen, max(0.0, deadline - time.monotonic())) and ok
        return {"generation": gen, "realized": ok}

    def agent_for(self, node: str | None = None, bridge: str | None = None) -> BridgeAgent:
        if node is not None:
            if node not in self.agents:
                raise KeyError(f"unknown node {node!r} (controlled: {', '.join(sorted(self.agents))})")
            return self.agents[node]
        matches = [a for a in self.agents.values()
                   if bridge in (a.bridge, a.node) or (a.dpid is not None and bridge in (f"{a.dpid:016x}", f"{a.dpid:x}"))]
        if len(matches) != 1:
            names = ", ".join(f"{a.node} ({a.bridge or '?'})" for a in self.agents.values())
            raise KeyError(f"no single bridge named {bridge!r} (controlled: {names})")
        return matches[0]

    def place(self, node: str) -> NodePlace | None:
        """What a live trace needs of this node's bridge (None while it has no program)."""
        with self.lock:
            desired = self.desired
        return node_place(desired, node, self.views.get(node), self.nodes[node].ovs_rundir)

    def trace(self, src: str, dst: str, port: str) -> dict:
        """A new connection src -> dst:port through the live bridges (ofproto/trace)."""
        with self.lock:
            desired = self.desired
        places = {n: p for n in (desired.bridges if desired else ()) if (p := self.place(n)) is not None}
        return trace_compiled(desired, places, src, dst, port)

    def installed(self, node: str | None = None, bridge: str | None = None) -> tuple[BridgeAgent, list[InstalledFlow]]:
        """Read the flows of a bridge now, with counters."""
        agent = self.agent_for(node, bridge)
        ch = agent.channel
        if ch is None:
            raise chan.ChannelClosed(f"the switch of {agent.node} is not connected")
        return agent, chan.read_flows(ch)
