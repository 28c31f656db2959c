"""`sdnctl`: compile NetworkPolicy manifests into OVS flow tables, show them, trace packets
through them and explain which policies select a pod. kubectl habits: -f, -o, -n."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import click

from sdn.cli_output import EXIT_USAGE, QUIET, console_out, err, escape, progress, show_error

if TYPE_CHECKING:  # the commands import what they need when they run: `sdnctl --help` stays fast
    from flows.compiler import Program
    from flows.flow import Flow
    from sdn.compile import Compiled
    from sdn.policy.model import Cluster, Pod

FABRIC = "fabric"  # sdn.layout.FABRIC, the fabric switch's node name (tests/test_cli.py checks they agree)


class UsageProblem(click.ClickException):
    exit_code = EXIT_USAGE


def _fail(message: str) -> NoReturn:
    raise UsageProblem(message)


def load(files: Sequence[str]) -> Cluster:
    """Load manifests; warnings to stderr; a ManifestError becomes exit 2 with its message. On a
    terminal a progress line says how many documents of which file are read."""
    from sdn.policy.manifests import ManifestError, load_paths
    if not files:
        _fail("no input: give manifests with -f FILE|DIR (repeatable, '-' for stdin)")
    try:
        with progress(f"loading {', '.join(files)}") as line:
            cluster, warnings = load_paths(list(files),
                                           progress=lambda origin, n: line(f"loading {origin}: {n:,} documents"))
    except ManifestError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename}: {e.strerror}")
    for w in warnings:
        err().print(f"[yellow]warning:[/yellow] {escape(w)}", markup=True, highlight=False, soft_wrap=True)
    if not (cluster.namespaces or cluster.pods or cluster.nodes or cluster.policies):
        _fail(f"no objects in {', '.join(files)}: expected Namespaces, Pods, Nodes or NetworkPolicies "
              f"(an empty input is not an empty cluster)")
    return cluster


def _compile(cluster: Cluster, node: str | None, port_map: str | None = None,
             enforce: str = "host") -> Compiled:
    from flows.compiler import CompileError
    from sdn.compile import compile_cluster
    from sdn.layout import load_port_map
    maps = None
    if port_map:
        if not node:
            _fail("--port-map needs --node")
        try:
            maps = {node: load_port_map(port_map)}
        except (OSError, ValueError) as e:
            _fail(str(e))
    if not cluster.nodes and not cluster.pods:
        _fail("nothing to compile: the input has no Node and no Pod, so no node has a bridge "
              "(add Nodes, or Pods with spec.nodeName)")
    nodes = None if not node or node == FABRIC else [node]
    if node == FABRIC and enforce != "fabric":
        _fail(f"--node {FABRIC} needs --enforce fabric")
    try:
        with progress(f"compiling {len(cluster.policies)} policies for {len(cluster.pods)} pods") as say:
            return compile_cluster(cluster, nodes, maps, enforce=enforce, progress=say)
    except KeyError as e:
        _fail(f"--node: {e.args[0]}")
    except CompileError as e:
        _fail(f"cannot compile: {e}")


def _single_node(compiled: Compiled, node: str | None) -> str:
    if node:
        return node
    nodes = sorted(compiled.programs)
    if len(nodes) == 1:
        return nodes[0]
    _fail(f"the cluster has several nodes ({', '.join(nodes)}): choose one with --node")


def _names(compiled: Compiled) -> dict[str, str]:
    return {ip: p.key for p in compiled.cluster.pods.values() for ip in p.ips}


def _pod(cluster: Cluster, ref: str, namespace: str) -> Pod:
    key = ref if "/" in ref else f"{namespace}/{ref}"
    pod = cluster.pods.get(key)
    if pod is None:
        _fail(f"pod {key} not found in the manifests")
    if not pod.ips:
        _fail(f"pod {key} has no IP (status.podIP) yet")
    return pod


def emit(doc, output: str) -> None:
    """Print a document as JSON or YAML (kubectl's -o json|yaml)."""
    if output == "yaml":
        import yaml
        click.echo(yaml.safe_dump(doc, sort_keys=False), nl=False)
    else:
        click.echo(json.dumps(doc, indent=2))


def program_header(compiled: Compiled, node: str, program: Program) -> str:
    """Comment lines: what was compiled, the ofport map, and the cookie index."""
    lines = [f"# sdnctl compile: node {node}, bridge {program.bridge}, {len(program.flows)} flows",
             f"# ofports: {json.dumps(compiled.layout.port_map(node), sort_keys=True)}"]
    for r in program.rules:
        state = "" if r.active else " (matches nothing)"
        if r.same_as is not None:
            state += f" (identical to {r.same_as}: enforced by its flows)"
        lines.append(f"# cookie {r.cookie:#x} conj {r.conj_id} priority {r.priority}: {r.id}{state}")
    for c, iso in program.defaults:
        lines.append(f"# cookie {c:#x}: {iso.address} {iso.direction}-isolated by {', '.join(iso.policies)}")
    return "\n".join(lines) + "\n"


def program_json(compiled: Compiled, node: str, program: Program) -> dict:
    return {
        "node": node, "bridge": program.bridge,
        "ofports": compiled.layout.port_map(node),
        "rules": [{"rule": str(r.id), "policy": r.id.policy, "direction": r.id.direction,
                   "index": r.id.index, "part": r.id.part, "conj_id": r.conj_id, "table": r.table,
                   "priority": r.priority, "cookie": f"{r.cookie:#x}", "active": r.active,
                   "description": r.description,
                   "same_as": None if r.same_as is None else str(r.same_as)} for r in program.rules],
        "isolation": [{"cookie": f"{c:#x}", "direction": i.direction, "address": i.address,
                       "policies": list(i.policies)} for c, i in program.defaults],
        "flows": [f.render() for f in program.flows],
    }


class LazyGroup(click.Group):
    """A click group whose commands named in `lazy` ({name: ("module:attr", short help)}) are
    imported only when run: the controller, the agent and the lab pull in os-ken, eventlet and
    the Kubernetes client, which offline commands and --help must not pay for. An attr that is
    not a click command is a factory called once (sdn.agent.agent_command)."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main, with every error printed one way ("error: ...", exit codes of
        sdn.cli_output) whichever command raised it."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            show_error(e)
            sys.exit(e.exit_code)
        except click.Abort:
            show_error(click.ClickException("aborted"))
            sys.exit(EXIT_USAGE)
        sys.exit(rv if isinstance(rv, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            module, _, attr = self.lazy[name][0].partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self.add_command(obj if isinstance(obj, click.Command) else obj(), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        limit = formatter.width - 6 - max(len(n) for n in self.list_commands(ctx))
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=self.lazy[name][1]).get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, lazy={
    "agent": ("sdn.agent:agent_command", "Watch the Kubernetes API and program this node's bridge "
                                         "(the DaemonSet's command)."),
    "lab": ("sdn.lab.cli:lab_group", "A multi-node lab on this machine: nodes, pods and agents in network "
                                     "namespaces."),
})
@click.version_option(package_name="sdn-netpol")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr (shown only on a terminal anyway).")
def main(quiet: bool) -> None:
    """Kubernetes NetworkPolicy on Open vSwitch: compile, show, trace, explain."""
    QUIET["on"] = quiet


files_option = click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR",
                            help="Manifests (YAML/JSON, List, directories; '-' for stdin). Repeatable.")
node_option = click.option("--node", help=f"Compile for this node's bridge ('{FABRIC}': the fabric switch).")
enforce_option = click.option("--enforce", type=click.Choice(["host", "fabric"]), default="host", show_default=True,
                              help="host: node bridges judge their pods; fabric: a fabric switch judges all.")


@main.command("compile")
@files_option
@node_option
@enforce_option
@click.option("-o", "--output", type=click.Choice(["ofctl", "json", "yaml"]), default="ofctl", show_default=True)
@click.option("--port-map", metavar="FILE", help='JSON {"ns/pod": ofport} from OVSDB (with --node).')
def compile_cmd(files, node, enforce, output, port_map):
    """Print the OpenFlow tables (loadable with `ovs-ofctl -O OpenFlow13 add-flows`)."""
    compiled = _compile(load(files), node, port_map, enforce)  # each shows its own progress line
    if output in ("json", "yaml"):
        nodes = [node] if node else sorted(compiled.programs)
        emit({"nodes": [program_json(compiled, n, compiled.programs[n]) for n in nodes]}, output)
        return
    node = _single_node(compiled, node)
    program = compiled.programs[node]
    click.echo(program_header(compiled, node, program) + program.render(), nl=False)


def flows_group():
    @main.group("flows")
    def flows() -> None:
        """Show compiled (or installed) flows, grouped by table and policy rule."""
    return flows


flows = flows_group()


@flows.command("show")
@files_option
@node_option
@enforce_option
@click.option("--policy", metavar="[NS/]NAME", help="Only flows of this policy.")
@click.option("--pod", metavar="[NS/]POD", help="Only flows that concern this pod: its address (or a CIDR "
                                               "holding it), port or MAC, and the conj_id and port clauses of its rules.")
@click.option("-n", "--namespace", default="default", show_default=True,
              help="Namespace of --policy or --pod given without one.")
@click.option("--table", metavar="NAME|ID", help="Only this table.")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table", show_default=True)
def flows_show(files, node, enforce, policy, pod, namespace, table, output):
    """Flows by table and by policy/rule, with the pods behind the addresses."""
    from flows import pipeline as P
    from sdn import show
    from sdn.layout import pod_mac
    if policy and "/" not in policy:
        policy = f"{namespace}/{policy}"
    cluster = load(files)
    the_pod = _pod(cluster, pod, namespace) if pod else None
    compiled = _compile(cluster, node, None, enforce)
    node = _single_node(compiled, node)
    program = compiled.programs[node]
    flows: Sequence[Flow] = program.flows
    if the_pod is not None:
        flows = show.pod_flows(flows, the_pod.ips, compiled.layout.ofports.get(node, {}).get(the_pod.key),
                               pod_mac(the_pod))
    if table is not None:
        try:
            P.table_named(table)
        except KeyError:
            _fail(f"--table: unknown table {table!r} (tables: {', '.join(t.name for t in P.TABLES)})")
    if policy and not any(r.id.policy == policy for r in program.rules) and not any(
            policy in i.policies for _, i in program.defaults):
        known = sorted({r.id.policy for r in program.rules} | {p for _, i in program.defaults for p in i.policies})
        _fail(f"--policy: no flows of {policy} on {node} (policies here: {', '.join(known) or 'none'})")
    grouped = show.group_flows(flows, program, _names(compiled), policy, table)
    if output in ("json", "yaml"):
        emit({"node": node, "bridge": program.bridge, "tables": show.to_json(grouped)}, output)
        return
    console = console_out()
    console.print(f"[bold]node {node}[/bold], bridge {program.bridge}: {len(program.flows)} flows, "
                  f"{sum(1 for r in program.rules if r.active)} active rules, "
                  f"{len(program.defaults)} isolated pod addresses"
                  + (f"; {len(flows)} concern {the_pod.key}" if the_pod is not None else ""))
    show.render(grouped, console, wide=output == "wide")


from sdn.cli_live import register as _register_live  # noqa: E402 - live options of flows show / trace
from sdn.cli_policy import policy_group  # noqa: E402
from sdn.cli_trace import trace_cmd as _trace  # noqa: E402 - before cli_live extends it with --live

main.add_command(_trace)
main.add_command(policy_group)

_register_live(main)


if __name__ == "__main__":
    main()
