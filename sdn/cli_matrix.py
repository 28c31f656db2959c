"""`sdnctl policy matrix`: the predicted reachability of every ordered pod pair, from the
manifests alone (the semantic evaluator; no switch, no lab). Rows are sources, columns
destinations, as in `sdnctl lab matrix`."""

from __future__ import annotations

import json

import click

from sdn.cli_output import console_out, escape

ROWS_COLUMNS = "rows: source (from), columns: destination (to)"


def predicted(cluster, keys: list[str], port: int, protocol: str) -> dict[str, dict[str, bool]]:
    """{source: {destination: allowed}} for every ordered pair of `keys` (pods with an IP)."""
    from sdn.policy.evaluate import evaluate
    pods = cluster.pods
    return {s: {d: evaluate(cluster, pods[s], pods[d], port, protocol).allowed for d in keys} for s in keys}


def render(doc: dict, console) -> None:
    """One grid per (protocol, port): ✓ allowed, ✗ denied, with the axes named."""
    keys = doc["pods"]
    width = max([len(k) for k in keys] + [4])
    cell = max(len(k) for k in keys)
    for m in doc["matrices"]:
        allowed = sum(v for row in m["allowed"].values() for v in row.values())
        console.print(f"[bold]{m['protocol']}/{m['port']}[/bold] predicted by the semantic evaluator from the "
                      f"manifests; {ROWS_COLUMNS}")
        console.print(escape(" " * width + " " + " ".join(k.center(cell) for k in keys)))
        for s in keys:
            cells = [("[green]✓[/green]" if m["allowed"][s][d] else "[red]✗[/red]").join(
                     (" " * ((cell - 1) // 2), "" if d == keys[-1] else " " * (cell - 1 - (cell - 1) // 2)))
                     for d in keys]
            console.print(escape(s.ljust(width)) + " " + " ".join(cells))
        console.print(f"[dim]✓ allowed  ✗ denied; {allowed} of {len(keys) ** 2} pairs allowed[/dim]")


@click.command("matrix")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR",
              help="Manifests (YAML/JSON, List, directories; '-' for stdin). Repeatable.")
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535), metavar="P",
              help="Destination port (default 80). Repeatable.")
@click.option("--protocol", "protocols", multiple=True,
              type=click.Choice(["TCP", "UDP", "SCTP"], case_sensitive=False),
              help="TCP (default), UDP or SCTP. Repeatable: every port on every protocol.")
@click.option("-n", "--namespace", "namespaces", multiple=True, metavar="NS",
              help="Only pods of this namespace (as sources and destinations). Repeatable.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def matrix_cmd(files, ports, protocols, namespaces, output):
    """Who may open a connection to whom: every ordered pod pair, predicted from the manifests
    alone (no switch). Rows are sources, columns destinations."""
    from sdn.cli import UsageProblem, load
    cluster = load(files)
    keys = sorted((k for k, p in cluster.pods.items() if p.ips and (not namespaces or p.namespace in namespaces)),
                  key=lambda k: tuple(k.split("/", 1)))
    if not keys:
        raise UsageProblem("no pods with an address (status.podIP) in the input"
                           + (f" in namespace(s) {', '.join(namespaces)}" if namespaces else ""))
    without_ip = sorted(k for k, p in cluster.pods.items() if not p.ips)
    probes = [(p, proto.upper()) for proto in (protocols or ("TCP",)) for p in (ports or (80,))]
    doc = {"rows": "from", "columns": "to", "pods": keys,
           "without_address": without_ip,
           "matrices": [{"port": port, "protocol": proto, "allowed": predicted(cluster, keys, port, proto)}
                        for port, proto in probes]}
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    render(doc, console_out())
    if without_ip:
        console_out().print(f"[yellow]left out (no status.podIP):[/yellow] {escape(', '.join(without_ip))}")
