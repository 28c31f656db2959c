"""Cluster objects -> the compiled tables of each node's bridge (host mode)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flows.compiler import Program, compile_bridge
from flows.ir import Gateway, Isolation, Rule
from sdn.layout import FABRIC, Layout, build_layout
from sdn.policy.model import Cluster
from sdn.policy.rules import cluster_rules


@dataclass
class Compiled:
    """Everything `sdnctl` shows: the layout, the rule IR and the per-node programs."""

    cluster: Cluster
    layout: Layout
    rules: list[Rule]
    isolation: list[Isolation]
    programs: dict[str, Program]  # node name (and FABRIC in fabric mode) -> program
    enforce: str = "host"
    gateways: dict[str, Gateway] = field(default_factory=dict)  # node -> its gateway port, if modelled


def compile_cluster(cluster: Cluster, nodes: list[str] | None = None,
                    port_maps: dict[str, dict[str, int]] | None = None,
                    previous: dict[str, Program] | None = None,
                    enforce: str = "host", progress: Callable[[str], None] | None = None,
                    gateways: dict[str, Gateway] | None = None) -> Compiled:
    """Compile the bridges of `nodes` (default: every node); `progress` hears what is being done.

    enforce "host": each node bridge judges its own pods. enforce "fabric": node bridges only
    guard and deliver, and the program named `FABRIC` (always compiled) judges every rule.
    `gateways` (host mode): node -> its bridge's gateway port into the node's stack.
    """
    if enforce not in ("host", "fabric"):
        raise ValueError(f"enforce must be host or fabric, not {enforce!r}")
    say = progress or (lambda _text: None)
    layout = build_layout(cluster, port_maps)
    say(f"computing the rules of {len(cluster.policies)} policies")
    rules, isolation = cluster_rules(cluster)
    wanted = sorted(layout.nodes) if nodes is None else nodes
    for n in wanted:
        if n not in layout.nodes:
            raise KeyError(f"unknown node {n!r} (known: {', '.join(sorted(layout.nodes))})")
    mode = "host" if enforce == "host" else "fabric-node"
    prev = previous or {}
    programs = {}
    for i, n in enumerate(wanted, 1):
        say(f"compiling node {n} ({i} of {len(wanted)}): {len(rules)} rules")
        gw = (gateways or {}).get(n) if mode == "host" else None
        programs[n] = compile_bridge(layout.bridge(n, mode, gw), rules, isolation, prev.get(n))
    if enforce == "fabric":
        say("compiling the fabric switch")
        programs[FABRIC] = compile_bridge(layout.fabric_bridge(), rules, isolation, prev.get(FABRIC))
    return Compiled(cluster, layout, rules, isolation, programs, enforce, dict(gateways or {}))
