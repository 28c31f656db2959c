"""The controller's state: inputs (manifests, each node's OVSDB), the compiled programs, one
worker per bridge, and the datapaths os-ken reports. No os-ken import: the app calls
`datapath_up` / `datapath_down`, the control API and the main loop call the rest.

Generations: every recompile (a manifest or a port changed) is a new generation; each bridge
reports the generation it has realized, so "every bridge has the resulting flows" is
`realized_generation >= generation` everywhere (`wait`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable

from flows import pipeline as P
from flows.compiler import CompileError, Program
from flows.wire import InstalledFlow
from sdn.policy.manifests import ManifestError, load_paths
from sdn.policy.model import Cluster
from sdn.switch import channel as chan
from sdn.switch.bridge import BridgeAgent
from sdn.switch.desired import Desired, LiveCompiler
from sdn.switch.ovsdb import BridgeView, OvsdbMonitor

log = logging.getLogger("sdn.switch.core")

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class NodeSpec:
    """`--bridge NODE[/BRIDGE]=OVSDB`: a node, its OVSDB remote and (optionally) bridge name."""

    node: str
    ovsdb: str
    bridge: str | None = None

    @classmethod
    def parse(cls, text: str) -> "NodeSpec":
        name, sep, remote = text.partition("=")
        if not sep or not name or not remote:
            raise ValueError(f"--bridge {text!r}: expected NODE=OVSDB_REMOTE or NODE/BRIDGE=OVSDB_REMOTE "
                             f"(e.g. node-1=unix:/run/openvswitch/db.sock)")
        node, _, bridge = name.partition("/")
        if not remote.startswith(("unix:", "tcp:", "ssl:")):
            if remote.startswith("/"):
                remote = "unix:" + remote
            else:
                raise ValueError(f"--bridge {text!r}: OVSDB remote must be unix:PATH or tcp:HOST:PORT")
        return cls(node, remote, bridge or None)

    @property
    def ovs_rundir(self) -> str | None:
        """Where this OVS keeps its sockets (ovs-vswitchd's control socket for ofproto/trace)."""
        return os.path.dirname(self.ovsdb[5:]) if self.ovsdb.startswith("unix:") else None


def manifest_stamp(paths: list[str]) -> tuple:
    """What changes when any manifest file is added, removed or rewritten."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.endswith(MANIFEST_SUFFIXES) and not f.startswith("."):
                        full = os.path.join(root, f)
                        try:
                            st = os.stat(full)
                            out.append((full, st.st_mtime_ns, st.st_size))
                        except OSError:
                            pass
        else:
            try:
                st = os.stat(p)
                out.append((p, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((p, None, None))
    return tuple(out)


def _vswitchd_ctl(rundir: str) -> str | None:
    """ovs-vswitchd's control socket in an OVS run directory (by its pid file)."""
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    ctl = os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")
    return ctl if os.path.exists(ctl) else None


class ControllerCore:
    def __init__(self, manifests: list[str], nodes: list[NodeSpec],
                 targets: dict[str, tuple[str | None, Callable[[], None] | None]] | None = None,
                 enforce: str = "host", existing_connections: str = "enforce"):
        """`targets`: per node, the OpenFlow target to keep configured on its bridge (None:
        leave the bridge's configuration alone) and what to prepare when its OVSDB connects.
        `enforce`: "host" (each node's bridge judges its pods) or "fabric" (node bridges guard
        and deliver; the node named `fabric` is the fabric switch that judges every rule)."""
        if enforce not in ("host", "fabric"):
            raise ValueError(f"--enforce must be host or fabric, not {enforce!r}")
        self.enforce = enforce
        self._live = LiveCompiler(enforce, existing_connections)  # the compiler state kept between changes
        targets = targets or {}
        if len({n.node for n in nodes}) != len(nodes):
            raise ValueError("a node is given twice with --bridge")
        self.manifests = list(manifests)
        self.nodes = {n.node: n for n in nodes}
        self.targets = dict(targets)
        self._lock = threading.RLock()
        self._compile_lock = threading.Lock()
        self.changed = threading.Event()  # wakes the main loop
        self.cluster: Cluster | None = None
        self.views: dict[str, BridgeView | None] = {n: None for n in self.nodes}
        self.programs: dict[str, Program] = {}
        self.port_maps: dict[str, dict[str, int]] = {}
        self.desired: Desired | None = None
        self.generation = 0
        self.manifest_error = ""
        self.compile_error = ""
        self.problems: list[str] = []
        self.handler_errors = 0
        self._stamp: tuple | None = None
        self._views_dirty = False
        self._pending: dict[int, chan.Channel] = {}  # dpid -> channel, not yet mapped to a node
        self._absent_since: dict[str, float] = {}  # node -> when its switch was last seen missing
        self._warned_at: dict[str, float] = {}
        self.agents = {n: BridgeAgent(n) for n in self.nodes}
        for n, agent in self.agents.items():
            agent.after_commit = self._purger(self.nodes[n])
        self.monitors = {
            n.node: OvsdbMonitor(n.ovsdb, n.bridge, self._view_callback(n.node),
                                 *self.targets.get(n.node, (None, None)), name=n.node)
            for n in nodes}

    # -- lifecycle
    def start(self) -> None:
        for a in self.agents.values():
            a.start()
        for m in self.monitors.values():
            m.start()

    def stop(self) -> None:
        for m in self.monitors.values():
            m.stop(2.0)
        for a in self.agents.values():
            a.stop(10.0)

    # -- after a commit
    def _purger(self, spec: NodeSpec):
        """After a bundle that changed the rule or default-deny tables, drop the datapath's
        cached flows (`revalidator/purge`) so every packet meets the new tables at once. OVS
        revalidates its cache after table changes anyway, but the userspace datapath of OVS 3.1
        was seen keeping a stale megaflow that let a now-denied connection through
        (docs/lab.md); a purge costs one upcall per active flow."""
        judged = {P.EGRESS_RULE, P.EGRESS_DEFAULT, P.INGRESS_RULE, P.INGRESS_DEFAULT}

        def purge(plan) -> None:
            if spec.ovs_rundir is None:
                return
            if not any(f.table in judged for f in (*plan.add, *plan.modify, *plan.delete)):
                return
            ctl = _vswitchd_ctl(spec.ovs_rundir)
            if ctl is None:
                return
            done = subprocess.run(["ovs-appctl", "-t", ctl, "revalidator/purge"], capture_output=True,
                                  text=True, timeout=10)
            if done.returncode != 0:
                log.warning("%s: revalidator/purge failed: %s", spec.node, done.stderr.strip())
        return purge

    # -- os-ken side
    def datapath_up(self, dpid: int, channel: chan.Channel) -> None:
        with self._lock:
            node = self._node_of_dpid(dpid)
            if node is None:
                self._pending[dpid] = channel
                log.info("switch %016x connected; waiting for OVSDB to say which node it is", dpid)
                return
        self.agents[node].connected(channel, dpid)

    def datapath_down(self, dpid: int | None, channel: chan.Channel) -> None:
        with self._lock:
            if dpid is not None and self._pending.get(dpid) is channel:
                del self._pending[dpid]
        for a in self.agents.values():
            a.disconnected(channel)

    def handler_failed(self, where: str, error: BaseException) -> None:
        with self._lock:
            self.handler_errors += 1

    def _node_of_dpid(self, dpid: int) -> str | None:
        for node, view in self.views.items():
            if view is not None and view.datapath_id == dpid:
                return node
        return None

    # -- OVSDB side
    def _view_callback(self, node: str):
        def relevant(v: BridgeView | None):
            return None if v is None else (v.name, v.datapath_id, v.pods(), v.tunnel_ofport, v.uplink_ofport,
                                           v.fabric_links())

        def changed(view: BridgeView | None) -> None:
            with self._lock:
                if relevant(view) != relevant(self.views.get(node)):
                    self._views_dirty = True  # controller/fail_mode changes need no recompile
                self.views[node] = view
                waiting = None
                if view is not None and view.datapath_id in self._pending:
                    waiting = self._pending.pop(view.datapath_id)
            if waiting is not None:
                self.agents[node].connected(waiting, view.datapath_id)
            self.changed.set()
        return changed

    # -- inputs -> programs
    def poll(self) -> None:
        """One turn of the main loop: reload manifests that changed, recompile if needed, and
        say so when a switch OVSDB knows does not connect."""
        self._check_switches()
        stamp = manifest_stamp(self.manifests) if self.manifests else None
        with self._lock:
            reload = bool(self.manifests) and stamp != self._stamp
            dirty = self._views_dirty
        if reload:
            self.reload(stamp)
        elif dirty:
            self.recompile()

    def _check_switches(self, grace: float = 10.0) -> None:
        now = time.monotonic()
        for node, agent in self.agents.items():
            view = self.views.get(node)
            if view is None or agent.channel is not None:
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

    def set_cluster(self, cluster: Cluster, upserts=(), deletes=(), full: bool = False) -> int:
        """The cluster from another source (the Kubernetes API instead of manifest files):
        compile it for every bridge and return the generation to wait for (`wait`). The
        hints (`upserts`, `deletes`, `full`) are accepted for an incremental compiler; the
        programs are recompiled whole for now. A compile error keeps the bridges' tables and
        shows in `status` (compile_error); the returned generation is then the previous one."""
        with self._compile_lock:
            with self._lock:
                self.cluster = cluster
                self.manifest_error = ""
            changes = None if full else (list(upserts), list(deletes))
            return self._recompile_locked(changes)["generation"]

    def reload(self, stamp: tuple | None = None) -> dict:
        """Read the manifests again and recompile (the control API's `reload`)."""
        if not self.manifests:
            return self.recompile()
        with self._compile_lock:
            stamp = manifest_stamp(self.manifests) if stamp is None else stamp
            try:
                cluster, warnings = load_paths(self.manifests)
            except (ManifestError, OSError) as e:
                msg = str(e)
                with self._lock:
                    self._stamp = stamp
                    if msg != self.manifest_error:
                        log.error("manifests: %s (keeping the last good input)", msg)
                    self.manifest_error = msg
                    return {"generation": self.generation, "error": msg}
            for w in warnings:
                log.warning("manifests: %s", w)
            with self._lock:
                self._stamp = stamp
                self.cluster = cluster
                self.manifest_error = ""
            return self._recompile_locked()

    def recompile(self) -> dict:
        with self._compile_lock:
            return self._recompile_locked()

    def _recompile_locked(self, changes: tuple[list, list] | None = None) -> dict:
        """Compile for every bridge: incrementally from `changes` (upserts, deletes) when
        given and the OVSDB views are unchanged, else from the whole cluster."""
        with self._lock:
            cluster = self.cluster
            views = dict(self.views)
            previous = dict(self.programs)
            self._views_dirty = False
        if cluster is None:
            return {"generation": self.generation, "error": self.manifest_error or "no manifests loaded"}
        started = time.monotonic()
        try:
            upserts, deletes = changes if changes is not None else (None, ())
            desired = self._live.compile(cluster, views, previous, upserts, deletes)
        except (CompileError, ValueError, KeyError) as e:
            msg = f"cannot compile: {e}"
            log.error("%s (the switches keep their last tables)", msg)
            with self._lock:
                self.compile_error = msg
                return {"generation": self.generation, "error": msg}
        with self._lock:
            self.generation += 1
            gen = self.generation
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

    # -- questions
    def status(self) -> dict:
        with self._lock:
            gen = self.generation
            out = {
                "generation": gen,
                "manifests": self.manifests,
                "enforce": self.enforce,
                "manifest_error": self.manifest_error,
                "compile_error": self.compile_error,
                "problems": list(self.problems),
                "handler_errors": self.handler_errors,
                "unmapped_datapaths": [f"{d:016x}" for d in self._pending],
            }
        bridges = []
        for node, agent in sorted(self.agents.items()):
            st = agent.status().to_json()
            mon = self.monitors[node]
            spec = self.nodes[node]
            st["ovsdb"] = {"remote": spec.ovsdb, "connected": mon.status.connected, "error": mon.status.last_error}
            st["ovs_rundir"] = spec.ovs_rundir
            view = self.views.get(node)
            if view is not None and not st["connected"]:
                since = self._absent_since.get(node)
                st["waiting"] = (f"bridge {view.name} has not connected"
                                 + (f" for {time.monotonic() - since:.0f}s" if since else "")
                                 + f" (its controller: {', '.join(view.controllers) or 'none'})")
            bridges.append(st)
        out["bridges"] = bridges
        # Bridges without a program yet (OVSDB not reached) are reported, not waited for.
        programmed = [b for b in bridges if b["desired_generation"] > 0]
        out["in_sync"] = bool(programmed) and all(b["in_sync"] for b in programmed)
        out["all_bridges_programmed"] = len(programmed) == len(bridges)
        return out

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

    def place(self, node: str):
        """What a live trace needs of this node's bridge (a livetrace.NodePlace), or None while
        it has no program, no OVS run directory or no OVSDB view."""
        from sdn.switch.livetrace import NodePlace
        with self._lock:
            desired = self.desired
            view = self.views.get(node)
        if desired is None or node not in desired.bridges or view is None or self.nodes[node].ovs_rundir is None:
            return None
        bridge = desired.bridges[node]
        return NodePlace(node, bridge.name, desired.programs[node], self.nodes[node].ovs_rundir,
                         desired.addresses.get(node, ""), {p.pod: (p.ofport, p.mac) for p in bridge.pods},
                         view.tunnel_ofport)

    def trace(self, src: str, dst: str, port: str) -> dict:
        """A new connection src -> dst:port through the live bridges (ofproto/trace)."""
        from sdn.switch.livetrace import trace_connection
        with self._lock:
            desired = self.desired
        if desired is None or desired.cluster is None:
            raise KeyError("nothing compiled yet")
        places = {n: p for n in desired.bridges if (p := self.place(n)) is not None}
        names = {ip: p.key for p in desired.cluster.pods.values() for ip in p.ips}
        return trace_connection(desired.cluster, places, names, src, dst, port)

    def installed(self, node: str | None = None, bridge: str | None = None) -> tuple[BridgeAgent, list[InstalledFlow]]:
        """Read the flows of a bridge now, with counters."""
        agent = self.agent_for(node, bridge)
        ch = agent.channel
        if ch is None:
            raise chan.ChannelClosed(f"the switch of {agent.node} is not connected")
        return agent, chan.read_flows(ch)
