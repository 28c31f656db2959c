"""Cluster objects -> the compiled tables of each node's bridge (host mode)."""

from __future__ import annotations

from dataclasses import dataclass

from flows.compiler import Program, compile_bridge
from flows.ir import Isolation, Rule
from sdn.layout import Layout, build_layout
from sdn.policy.model import Cluster
from sdn.policy.rules import cluster_rules


@dataclass
class Compiled:
    """Everything `sdnctl` shows: the layout, the rule IR and the per-node programs."""

    cluster: Cluster
    layout: Layout
    rules: list[Rule]
    isolation: list[Isolation]
    programs: dict[str, Program]


def compile_cluster(cluster: Cluster, nodes: list[str] | None = None,
                    port_maps: dict[str, dict[str, int]] | None = None,
                    previous: dict[str, Program] | None = None) -> Compiled:
    """Compile the bridges of `nodes` (default: every node)."""
    layout = build_layout(cluster, port_maps)
    rules, isolation = cluster_rules(cluster)
    wanted = sorted(layout.nodes) if nodes is None else nodes
    for n in wanted:
        if n not in layout.nodes:
            raise KeyError(f"unknown node {n!r} (known: {', '.join(sorted(layout.nodes))})")
    programs = {n: compile_bridge(layout.bridge(n), rules, isolation, (previous or {}).get(n))
                for n in wanted}
    return Compiled(cluster, layout, rules, isolation, programs)
