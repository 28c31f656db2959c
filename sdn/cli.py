"""`sdnctl`: compile NetworkPolicy manifests into OVS flow tables, show them, trace packets
through them and explain which policies select a pod. kubectl habits: -f, -o, -n."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Sequence

import click
import yaml
from rich.console import Console
from rich.markup import escape

from flows import pipeline as P
from flows.compiler import CompileError, Program
from sdn import show
from sdn.compile import Compiled, compile_cluster
from sdn.layout import FABRIC, load_port_map
from sdn.policy.evaluate import evaluate, explain
from sdn.policy.manifests import ManifestError, load_paths
from sdn.policy.model import Cluster, Pod
from sdn.verify import ClusterSimulator

err = Console(stderr=True, highlight=False)


class UsageProblem(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # noqa: A003 - click's name
        err.print(f"[red]error:[/red] {escape(self.message)}", markup=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> None:
    raise UsageProblem(message)


@contextlib.contextmanager
def progress(what: str):
    """A transient status line on stderr while big inputs load and compile, when stderr is a
    terminal (nothing otherwise); yields a function that replaces its text."""
    if not err.is_terminal:
        yield lambda text: None
        return
    with err.status(escape(what)) as status:
        yield lambda text: status.update(escape(text))


def load(files: Sequence[str], say=None) -> Cluster:
    """Load manifests; warnings to stderr; a ManifestError becomes exit 2 with its message.
    `say(text)` (see `progress`) hears how many documents of which file are read."""
    if not files:
        _fail("no input: give manifests with -f FILE|DIR (repeatable, '-' for stdin)")
    counted = None if say is None else (lambda origin, n: say(f"reading {origin}: {n:,} documents"))
    try:
        cluster, warnings = load_paths(list(files), progress=counted)
    except ManifestError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename}: {e.strerror}")
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}", markup=True, highlight=False, soft_wrap=True)
    return cluster


def _compile(cluster: Cluster, node: str | None, port_map: str | None = None,
             enforce: str = "host") -> Compiled:
    maps = None
    if port_map:
        if not node:
            _fail("--port-map needs --node")
        try:
            maps = {node: load_port_map(port_map)}
        except (OSError, ValueError) as e:
            _fail(str(e))
    nodes = None if not node or node == FABRIC else [node]
    if node == FABRIC and enforce != "fabric":
        _fail(f"--node {FABRIC} needs --enforce fabric")
    try:
        return compile_cluster(cluster, nodes, maps, enforce=enforce)
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sdn-netpol")
def main() -> None:
    """Kubernetes NetworkPolicy on Open vSwitch: compile, show, trace, explain."""


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
    with progress("reading manifests") as say:
        cluster = load(files, say)
        say(f"compiling {len(cluster.policies):,} policies over {len(cluster.pods):,} pods")
        compiled = _compile(cluster, node, port_map, enforce)
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
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of --policy given without one.")
@click.option("--table", metavar="NAME|ID", help="Only this table.")
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table", show_default=True)
def flows_show(files, node, enforce, policy, namespace, table, output):
    """Flows by table and by policy/rule, with the pods behind the addresses."""
    if policy and "/" not in policy:
        policy = f"{namespace}/{policy}"
    compiled = _compile(load(files), node, None, enforce)
    node = _single_node(compiled, node)
    program = compiled.programs[node]
    if table is not None:
        try:
            P.table_named(table)
        except KeyError:
            _fail(f"--table: unknown table {table!r} (tables: {', '.join(t.name for t in P.TABLES)})")
    if policy and not any(r.id.policy == policy for r in program.rules) and not any(
            policy in i.policies for _, i in program.defaults):
        known = sorted({r.id.policy for r in program.rules} | {p for _, i in program.defaults for p in i.policies})
        _fail(f"--policy: no flows of {policy} on {node} (policies here: {', '.join(known) or 'none'})")
    grouped = show.group_flows(program.flows, program, _names(compiled), policy, table)
    if output in ("json", "yaml"):
        emit({"node": node, "bridge": program.bridge, "tables": show.to_json(grouped)}, output)
        return
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(f"[bold]node {node}[/bold], bridge {program.bridge}: {len(program.flows)} flows, "
                  f"{sum(1 for r in program.rules if r.active)} active rules, "
                  f"{len(program.defaults)} isolated pod addresses")
    show.render(grouped, console, wide=output == "wide")


def parse_port(text: str, dst: Pod) -> tuple[int, str]:
    """'8080/TCP', '8080' (TCP) or a named port of the destination pod ('http', 'http/UDP')."""
    number, _, proto = text.partition("/")
    proto = (proto or "TCP").upper()
    if proto not in ("TCP", "UDP", "SCTP"):
        _fail(f"--port: unknown protocol {proto!r} (TCP, UDP or SCTP)")
    if number.isdigit():
        port = int(number)
        if not 1 <= port <= 65535:
            _fail("--port: must be 1-65535")
        return port, proto
    resolved = dst.resolve_port(number, proto)
    if resolved is None:
        _fail(f"--port: {dst.key} has no {proto} container port named {number!r}")
    return resolved, proto


def _trace_doc(compiled: Compiled, src: Pod, dst: Pod, port: int, proto: str) -> dict:
    sim = ClusterSimulator(compiled)
    path = sim.connect(src, dst, port, proto.lower())
    verdict = evaluate(compiled.cluster, src, dst, port, proto)
    names = _names(compiled)
    hops = []
    decided_by = []
    for hop in path.hops:
        program = compiled.programs[hop.node]
        by_conj, defaults = program.by_conj(), dict(program.defaults)
        steps = []
        for s in hop.result.steps:
            if s.flow is None:
                steps.append({"table": s.table, "name": P.BY_ID[s.table].name, "flow": None})
                continue
            text = s.flow.render(cookie=False)
            match, _, actions = text.partition(" actions=")
            entry = {"table": s.table, "name": P.BY_ID[s.table].name, "flow": s.flow.render(),
                     "priority": s.flow.priority, "match": match.split(",", 2)[2] if match.count(",") >= 2 else "",
                     "actions": actions}
            kind = P.cookie_kind(s.flow.cookie)
            cid = s.flow.get("conj_id")
            if cid is not None and cid.value in by_conj:
                info = by_conj[cid.value]
                entry["rule"] = str(info.id)
                entry["clauses"] = [c.render() for c in s.clauses]
                decided_by.append(f"allowed by {info.id} on {hop.node}")
            elif kind == P.KIND_RULE:
                info = program.by_cookie().get(s.flow.cookie)
                if info:
                    entry["rule"] = str(info.id)
                    decided_by.append(f"allowed by {info.id} on {hop.node}")
            elif kind == P.KIND_DEFAULT and s.flow.cookie in defaults:
                iso = defaults[s.flow.cookie]
                entry["default_deny"] = {"pod": names.get(iso.address, iso.address),
                                         "direction": iso.direction, "policies": list(iso.policies)}
                decided_by.append(f"dropped by the {iso.direction} default deny of "
                                  f"{names.get(iso.address, iso.address)} (isolated by "
                                  f"{', '.join(iso.policies)}) on {hop.node}")
            steps.append(entry)
        hops.append({"node": hop.node, "outputs": hop.result.outputs, "steps": steps})
    return {
        "from": src.key, "to": dst.key, "port": port, "protocol": proto,
        "verdict": "allowed" if path.delivered else "denied",
        "evaluator": "allowed" if verdict.allowed else "denied",
        "agree": path.delivered == verdict.allowed,
        "reply": None if path.reply_delivered is None else ("delivered" if path.reply_delivered else "dropped"),
        "decided_by": decided_by,
        "egress": {"isolated": verdict.egress.isolated, "allowed_by": [f"{r.policy} {r.direction.lower()}[{r.index}]" for r in verdict.egress.allowed_by]},
        "ingress": {"isolated": verdict.ingress.isolated, "allowed_by": [f"{r.policy} {r.direction.lower()}[{r.index}]" for r in verdict.ingress.allowed_by]},
        "hops": hops,
    }


@main.command("trace")
@files_option
@click.option("--from", "src", required=True, metavar="NS/POD")
@click.option("--to", "dst", required=True, metavar="NS/POD")
@click.option("--port", "port", required=True, metavar="PORT[/PROTO]", help="e.g. 8080/TCP, 53/UDP or a named port.")
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of pods given without one.")
@enforce_option
@click.option("-o", "--output", type=click.Choice(["text", "wide", "json", "yaml"]), default="text", show_default=True)
def trace_cmd(files, src, dst, port, namespace, enforce, output):
    """Follow a new connection through the compiled flows: verdict, deciding rule, flows hit."""
    cluster = load(files)
    src_pod, dst_pod = _pod(cluster, src, namespace), _pod(cluster, dst, namespace)
    number, proto = parse_port(port, dst_pod)
    compiled = _compile(cluster, None, None, enforce)
    doc = _trace_doc(compiled, src_pod, dst_pod, number, proto)
    if output in ("json", "yaml"):
        emit(doc, output)
        return
    wide = output == "wide"
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    colour = "green" if doc["verdict"] == "allowed" else "red"
    console.print(f"[bold]{src_pod.key} -> {dst_pod.key} {number}/{proto}: "
                  f"[{colour}]{doc['verdict'].upper()}[/{colour}][/bold]"
                  + (f" (reply {doc['reply']})" if doc["reply"] else ""))
    for line in doc["decided_by"]:
        console.print(f"  {line}")
    agree = "agrees" if doc["agree"] else "[red]DISAGREES[/red]"
    console.print(f"  semantic evaluator: {doc['evaluator']} ({agree}); egress "
                  f"{'isolated' if doc['egress']['isolated'] else 'not isolated'}"
                  f"{' allowed by ' + ', '.join(doc['egress']['allowed_by']) if doc['egress']['allowed_by'] else ''}; ingress "
                  f"{'isolated' if doc['ingress']['isolated'] else 'not isolated'}"
                  f"{' allowed by ' + ', '.join(doc['ingress']['allowed_by']) if doc['ingress']['allowed_by'] else ''}")
    for hop in doc["hops"]:
        console.print(f"[bold]{hop['node']}[/bold] -> outputs {hop['outputs'] or 'none (dropped)'}")
        for s in hop["steps"]:
            note = f"  [cyan]{s['rule']}[/cyan]" if "rule" in s else ""
            if "default_deny" in s:
                note = f"  [red]default deny of {s['default_deny']['pod']}[/red]"
            if s["flow"] is None:
                console.print(f"  {s['table']:>3} {s['name']:<16} no match: drop")
                continue
            actions = s["actions"] if wide or len(s["actions"]) <= 60 else s["actions"][:57] + "..."
            console.print(f"  {s['table']:>3} {s['name']:<16} {s['priority']:>5} {escape(s['match'] or '*')} "
                          f"-> {escape(actions)}{note}")
    if not doc["agree"]:
        sys.exit(1)


@main.group("policy")
def policy_group() -> None:
    """Questions about policies."""


@policy_group.command("explain")
@files_option
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
def policy_explain(files, pod, namespace, output):
    """Which policies select POD, for which directions, and what they allow."""
    cluster = load(files)
    key = pod if "/" in pod else f"{namespace}/{pod}"
    if key not in cluster.pods:
        _fail(f"pod {key} not found in the manifests")
    doc = explain(cluster, cluster.pods[key])
    if output in ("json", "yaml"):
        emit(doc, output)
        return
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(f"[bold]{doc['pod']}[/bold] {', '.join(doc['ips']) or '(no IP)'} on {doc['node'] or '?'}, "
                  f"labels {', '.join(f'{k}={v}' for k, v in doc['labels'].items()) or 'none'}")
    for direction in ("ingress", "egress"):
        side = doc[direction]
        if not side["isolated"]:
            console.print(f"  {direction}: not isolated (all traffic allowed)")
            continue
        console.print(f"  {direction}: isolated by {len(side['policies'])} polic{'y' if len(side['policies']) == 1 else 'ies'}")
        for pol in side["policies"]:
            console.print(f"    [cyan]{pol['policy']}[/cyan] ({pol['form']}, {pol['origin']}) selects {pol['podSelector']}")
            if not pol["rules"]:
                console.print("      no rules: allows nothing")
            for rule in pol["rules"]:
                console.print(f"      rule {rule['index']}: {escape(_describe_rule(rule, direction))}")


@policy_group.command("status")
@click.option("--agent", "agent_url", default="http://127.0.0.1:9470", show_default=True, metavar="URL",
              help="The node agent's HTTP endpoint (its metricsPort).")
@click.option("-n", "--namespace", help="Only policies of this namespace.")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
def policy_status(agent_url, namespace, output):
    """For each NetworkPolicy: has this node realized its current generation?"""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(agent_url.rstrip("/") + "/status", timeout=10) as resp:
            doc = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as e:
        _fail(f"cannot read the agent's status at {agent_url}: {getattr(e, 'reason', e)}")
    policies = [p for p in doc.get("policies", []) if namespace is None or p["namespace"] == namespace]
    if output in ("json", "yaml"):
        emit({"node": doc.get("node"), "policies": policies}, output)
        return
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    from rich.table import Table as RichTable
    t = RichTable(box=None, header_style="bold", pad_edge=False)
    for col in ("NAMESPACE", "NAME", "FORM", "GENERATION", "REALIZED", "NOTE"):
        t.add_column(col)
    for p in policies:
        realized = "yes" if p["realized"] and p["realized_generation"] == p["observed_generation"] else (
            f"gen {p['realized_generation']}" if p["realized_generation"] is not None else "no")
        t.add_row(p["namespace"], p["name"], p["form"], str(p["observed_generation"] or "-"), realized,
                  escape(p["error"] or ""))
    sync = "in sync" if doc.get("in_sync") else "not in sync"
    console.print(f"node {doc.get('node')}: API {'synced' if doc.get('api_synced') else 'not synced yet'}, "
                  f"bridge {sync}, {len(policies)} polic{'y' if len(policies) == 1 else 'ies'}")
    console.print(t)


def _describe_rule(rule: dict, direction: str) -> str:
    word = "from" if direction == "ingress" else "to"
    if rule["peers"] == "all":
        peers = "anyone"
    elif not rule["peers"]:
        peers = "no one"
    else:
        parts = []
        for p in rule["peers"]:
            if "ipBlock" in p:
                blk = p["ipBlock"]
                parts.append(f"{blk['cidr']}" + (f" except {', '.join(blk['except'])}" if blk.get("except") else ""))
            else:
                sel = " and ".join(f"{k} {v}" for k, v in p.items() if k in ("namespaceSelector", "podSelector"))
                parts.append(f"{sel} ({', '.join(p.get('pods', [])) or 'no pods now'})")
        peers = "; ".join(parts)
    if rule["ports"] == "all":
        ports = "all ports"
    elif not rule["ports"]:
        ports = "no ports"
    else:
        ports = ", ".join(f"{p.get('port', 'all')}{'-' + str(p['endPort']) if p.get('endPort') else ''}/{p['protocol']}"
                          for p in rule["ports"])
    return f"{word} {peers} on {ports}"


from sdn.agent import agent_command  # noqa: E402 - the commands that run services
from sdn.cli_live import register as _register_live  # noqa: E402

_register_live(main)
main.add_command(agent_command())
from sdn.lab.cli import register as _register_lab  # noqa: E402 - `sdnctl lab` (sdn/lab)
_register_lab(main)


if __name__ == "__main__":
    main()
