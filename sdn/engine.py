"""Objects in, flow differences out: the incremental path from Kubernetes events to the flows
of every bridge.

`Engine` keeps the rule set (sdn.policy.incremental.RuleSet), the placement of pods on
bridges (sdn.layout) and one `flows.compiler.BridgeCompiler` per bridge. `apply` takes changed
objects and returns, per bridge, the flows to add, modify and delete; the programs it keeps
are always equal in behaviour to a fresh compile of the same cluster (tests/test_engine.py).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable

from flows.bulk import freeze_all
from flows.compiler import BridgeCompiler, Program
from flows.flow import Flow, FlowDiff
from flows.ir import Bridge
from sdn.layout import FABRIC, Layout, build_layout
from sdn.policy.incremental import Obj, RuleDelta, RuleSet
from sdn.policy.model import Cluster, Node, Pod


@contextlib.contextmanager
def bulk():
    """Pause the cyclic garbage collector during a large compile, then move what survived
    into the permanent generation: with millions of long-lived model and flow objects, full
    collections during the build cost as much as the build itself (and none of these objects
    form cycles that need collecting)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        freeze_all()


def _placement(pod: Pod | None) -> tuple | None:
    return None if pod is None else (pod.node, pod.ips)


BridgeFactory = Callable[[Layout, str, str], "Bridge | None"]


def layout_bridge(layout: Layout, name: str, mode: str) -> Bridge | None:
    """The offline bridge description (sdn.layout): invented ofports, the tunnel on port 1."""
    if name == FABRIC:
        return layout.fabric_bridge()
    return layout.bridge(name, mode) if name in layout.nodes else None


class Engine:
    """Incremental compiler for the bridges of a cluster (or of some of its nodes).

    `bridge_factory(layout, name, mode)` describes a bridge (its pods' ofports and MACs, its
    routes); by default the offline layout does, a live controller passes one that reads
    OVSDB. It may return None for a bridge not known yet.
    """

    def __init__(self, cluster: Cluster, nodes: Iterable[str] | None = None, enforce: str = "host",
                 port_maps: dict[str, dict[str, int]] | None = None,
                 previous: dict[str, Program] | None = None,
                 bridge_factory: BridgeFactory = layout_bridge):
        if enforce not in ("host", "fabric"):
            raise ValueError(f"enforce must be host or fabric, not {enforce!r}")
        self.enforce = enforce
        self.port_maps = dict(port_maps or {})
        self.only = None if nodes is None else list(nodes)
        self.bridge_factory = bridge_factory
        self.compilers: dict[str, BridgeCompiler] = {}
        with bulk():
            self.ruleset = RuleSet(cluster)
            self.layout = build_layout(cluster, self.port_maps)
            rules, isolation = self.ruleset.all_rules(), self.ruleset.all_isolation()
            for name, bridge in self._bridges().items():
                c = BridgeCompiler(bridge, (previous or {}).get(name))
                c.update(upsert=rules, isolate=isolation, diff=False)
                self.compilers[name] = c
        self.last_delta = RuleDelta()

    @property
    def cluster(self) -> Cluster:
        return self.ruleset.cluster

    def _names(self) -> list[str]:
        names = sorted(self.layout.nodes) if self.only is None else list(self.only)
        if self.enforce == "fabric" and self.only is None:
            names.append(FABRIC)
        if self.enforce == "host":
            names = [n for n in names if n != FABRIC]
        return names

    def _bridges(self) -> dict[str, Bridge]:
        mode = "host" if self.enforce == "host" else "fabric-node"
        out = {}
        for name in self._names():
            bridge = self.bridge_factory(self.layout, name, mode)
            if bridge is not None:
                out[name] = bridge
        return out

    def program(self, name: str) -> Program:
        return self.compilers[name].program()

    def programs(self) -> dict[str, Program]:
        return {n: c.program() for n, c in self.compilers.items()}

    def refresh_bridges(self) -> dict[str, FlowDiff]:
        """Describe every bridge again (after OVSDB or placement changes); flow differences of
        the bridges whose description changed, appeared or went away."""
        diffs: dict[str, FlowDiff] = {}
        self.layout = build_layout(self.cluster, self.port_maps)
        bridges = self._bridges()
        for name in [n for n in self.compilers if n not in bridges]:
            gone = self.compilers.pop(name)
            diffs[name] = FlowDiff((), (), tuple(gone.program().flows))
        for name, bridge in bridges.items():
            compiler = self.compilers.get(name)
            if compiler is None:
                compiler = self.compilers[name] = BridgeCompiler(bridge)
                compiler.update(upsert=self.ruleset.all_rules(), isolate=self.ruleset.all_isolation(),
                                diff=False)
                diffs[name] = FlowDiff(tuple(compiler.program().flows), (), ())
            elif bridge != compiler.bridge:
                d = compiler.set_bridge(bridge)
                if d:
                    diffs[name] = d
        return diffs

    def apply(self, upserts: Iterable[Obj] = (), deletes: Iterable[Obj] = (),
              port_maps: dict[str, dict[str, int]] | None = None) -> dict[str, FlowDiff]:
        """Apply changed objects (and, optionally, new port maps from OVSDB); returns the flow
        difference of every bridge that changed."""
        upserts, deletes = list(upserts), list(deletes)
        deleted = {id(o) for o in deletes}
        relayout = port_maps is not None and port_maps != self.port_maps
        for obj in upserts + deletes:
            if isinstance(obj, Node):
                relayout = True
            elif isinstance(obj, Pod):
                old = self.cluster.pods.get(obj.key)
                relayout |= _placement(old) != _placement(None if id(obj) in deleted else obj)
        if port_maps is not None:
            self.port_maps = dict(port_maps)
        delta = self.ruleset.apply(upserts, deletes)
        self.last_delta = delta
        diffs: dict[str, list[FlowDiff]] = {}
        if relayout:
            for name, d in self.refresh_bridges().items():
                diffs.setdefault(name, []).append(d)
        if not delta.empty:
            for name, compiler in self.compilers.items():
                change = compiler.update(delta.upsert, delta.delete, delta.isolate, delta.unisolate)
                if change:
                    diffs.setdefault(name, []).append(change)
        return {name: _merge(ds) for name, ds in diffs.items() if any(ds)}


def _merge(diffs: list[FlowDiff]) -> FlowDiff:
    """Successive differences of one bridge as one (per flow key: first state -> last state)."""
    if len(diffs) == 1:
        return diffs[0]
    existed: dict[tuple, bool] = {}
    last: dict[tuple, Flow | tuple[Flow]] = {}  # key -> Flow now, or the deleted Flow wrapped in a tuple
    for d in diffs:
        for f in d.add:
            existed.setdefault(f.key, False)
            last[f.key] = f
        for f in d.modify:
            existed.setdefault(f.key, True)
            last[f.key] = f
        for f in d.delete:
            existed.setdefault(f.key, True)
            last[f.key] = (f,)
    add: list[Flow] = []
    modify: list[Flow] = []
    delete: list[Flow] = []
    for key, was in existed.items():
        now = last[key]
        if isinstance(now, tuple):  # gone: deleted if it was there before
            if was:
                delete.append(now[0])
        elif was:
            modify.append(now)
        else:
            add.append(now)
    return FlowDiff(tuple(sorted(add)), tuple(sorted(modify)), tuple(sorted(delete)))


__all__ = ["Engine", "Layout"]
