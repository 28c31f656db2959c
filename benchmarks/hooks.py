"""Extension points for the later parts of issue 7 (installing programs into a real
ovs-vswitchd through the controller; comparing with OVN).

A hook is a function `hook(ctx: HookContext) -> dict` run inside a scenario's worker process
after the built-in stages. Its dict (JSON-serialisable: numbers, strings, lists, dicts) is
stored in results.json under `stages["hook:<name>"]` and printed in the "Extra stages" section
of results.md; a key `seconds` is plotted with the compile times, a key `flows` next to the
flow counts. An exception is recorded as that stage's error; the other stages still report.

Register with the decorator in a module of your own:

    from benchmarks.hooks import register

    @register("install")
    def install(ctx):
        prog = ctx.program(ctx.scenario.focus_node)
        ...  # start a private OVS (sdn.ovs.instance), bundle prog.flows, time it
        return {"seconds": t, "flows": len(prog.flows)}

and run `python -m benchmarks --hook mypackage.mymodule:install` (the module is imported in
the worker, which registers the hook); a bare name runs a hook registered by a module this
package already imports. Hooks see the worker's state through `HookContext` and must not
change the cluster (later hooks share it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOOKS: dict[str, Callable[[HookContext], dict]] = {}


def register(name: str):
    def deco(fn: Callable[[HookContext], dict]):
        HOOKS[name] = fn
        return fn
    return deco


@dataclass
class HookContext:
    scenario: Any  # benchmarks.scenarios.Scenario (state after the incremental events)
    rules: list  # flows.ir.Rule, for the cluster's current state
    isolation: list  # flows.ir.Isolation
    layout: Any  # sdn.layout.Layout
    programs: dict = field(default_factory=dict)  # node -> flows.compiler.Program already compiled
    quick: bool = False
    options: dict = field(default_factory=dict)

    def program(self, node: str):
        """The node's compiled program for the current state (compiled now if not cached)."""
        from flows.compiler import compile_bridge
        if node not in self.programs:
            self.programs[node] = compile_bridge(self.layout.bridge(node), self.rules, self.isolation)
        return self.programs[node]


def resolve(spec: str) -> tuple[str, Callable[[HookContext], dict]]:
    """'name' (registered) or 'package.module:function' -> (name, function)."""
    if ":" in spec:
        mod, fn = spec.split(":", 1)
        module = importlib.import_module(mod)
        return fn, getattr(module, fn)
    if spec not in HOOKS:
        raise KeyError(f"no benchmark hook {spec!r} (registered: {', '.join(sorted(HOOKS)) or 'none'})")
    return spec, HOOKS[spec]
