"""`sdnctl lab`: the local multi-node lab (network namespaces, one Open vSwitch per node).

    sdnctl lab up -f CLUSTER.yaml [--enforce host|fabric] [--kubernetes]
    sdnctl lab apply -f FILE.yaml
    sdnctl lab delete -f FILE.yaml
    sdnctl lab pods -o json
    sdnctl lab matrix [--port P] [--protocol TCP|UDP] [-o json|table] [--check]
    sdnctl lab status
    sdnctl lab exec NS/POD -- CMD...
    sdnctl lab kubeconfig
    sdnctl lab kubectl ARGS...
    sdnctl lab down

Other tools drive these names and outputs: keep them.
"""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.markup import escape

from sdn.cli_output import CommandProblem
from sdn.lab.state import DEFAULT_STATE_DIR, ENV_STATE_DIR, State

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class LabFailure(CommandProblem):
    def show(self, file=None) -> None:
        err.print(f"[red]error:[/red] {escape(self.message)}")


def _lab(ctx: click.Context, verbose: bool = False, say=None):
    from sdn.lab.lab import Lab
    if os.geteuid() != 0:
        raise LabFailure("sdnctl lab needs root (network namespaces, private Open vSwitch daemons): "
                         "run it as root")
    log = (lambda m: err.print(f"[dim]{escape(m)}[/dim]")) if verbose else say
    return Lab(State(ctx.obj["state_dir"]), log=log)


def _run(fn, *args, **kwargs):
    from sdn.lab.base import LabError
    try:
        return fn(*args, **kwargs)
    except LabError as e:
        raise LabFailure(str(e), e.exit_code) from None


files_option = click.option("-f", "--filename", "files", multiple=True, required=True, metavar="FILE|DIR",
                            help="Manifests (YAML/JSON, List, directories; '-' for stdin). Repeatable.")
timeout_option = click.option("--timeout", default=90.0, show_default=True, type=float,
                              help="Seconds to wait for every bridge to have the flows.")


@click.group("lab")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, envvar=ENV_STATE_DIR,
              metavar="DIR", help=f"The lab's state directory (also ${ENV_STATE_DIR}); one lab per directory.")
@click.pass_context
def lab_group(ctx: click.Context, state_dir: str) -> None:
    """A multi-node lab on this machine: nodes, pods and agents in network namespaces."""
    ctx.ensure_object(dict)
    ctx.obj["state_dir"] = state_dir


@lab_group.command("up")
@files_option
@click.option("--enforce", type=click.Choice(["host", "fabric"]), default="host", show_default=True,
              help="host: each node bridge judges its pods; fabric: a fabric switch judges all pod traffic.")
@click.option("--tunnel", type=click.Choice(["vxlan", "geneve"]), default="vxlan", show_default=True,
              help="Tunnel ports between node bridges.")
@click.option("--kubernetes", is_flag=True,
              help="A real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), "
                   "per node a kubelet stand-in, kube-proxy and the agent of deploy/; objects go through the API.")
@click.option("--existing-connections", type=click.Choice(["enforce", "keep"]), default="enforce",
              show_default=True,
              help="enforce: a policy change cuts the established connections it no longer allows; "
                   "keep: they skip the rule tables for good.")
@timeout_option
@click.option("-v", "--verbose", is_flag=True, help="Say what is being made.")
@click.pass_context
def up_cmd(ctx, files, enforce, tunnel, kubernetes, existing_connections, timeout, verbose):
    """Nodes, namespaces, pods and policies from manifests; returns when every bridge has its flows."""
    from sdn.cli_output import progress
    with progress("lab up: nodes, pods, agents") as say:
        lab = _lab(ctx, verbose, say)
        res = _run(lab.up, list(files), enforce, tunnel, timeout, kubernetes, existing_connections)
    mode = ", kubernetes (`sdnctl lab kubectl get pods -A`)" if res.get("kubernetes") else ""
    click.echo(f"lab up: {len(res['nodes'])} node(s) ({', '.join(res['nodes'])}), {res['pods']} pod(s), "
               f"enforce {res['enforce']}{mode}, ready in {res['seconds']}s (state {lab.state.dir})")


@lab_group.command("apply")
@files_option
@timeout_option
@click.pass_context
def apply_cmd(ctx, files, timeout):
    """Create or update objects; returns once every bridge has the resulting flows."""
    lab = _lab(ctx)
    for line in _run(lab.apply, list(files), timeout):
        click.echo(line)


@lab_group.command("delete")
@files_option
@timeout_option
@click.option("--ignore-not-found", is_flag=True, help="Objects that do not exist are not an error.")
@click.pass_context
def delete_cmd(ctx, files, timeout, ignore_not_found):
    """Delete the named objects; returns once every bridge has the resulting flows."""
    lab = _lab(ctx)
    for line in _run(lab.delete, list(files), timeout, ignore_not_found):
        click.echo(line)


@lab_group.command("pods")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def pods_cmd(ctx, output):
    """The lab's pods: node, address, network namespace (for `ip netns exec`), ports."""
    pods = _run(_lab(ctx).pods)
    if output == "json":
        click.echo(json.dumps(pods, indent=2))
        return
    rows = [("POD", "NODE", "IP", "NETNS", "PORTS")]
    for p in pods:
        ports = ",".join(f"{x['containerPort']}/{x['protocol']}" for x in p["ports"])
        rows.append((f"{p['namespace']}/{p['name']}", p["node"], p["ip"] or "-", p["netns"], ports))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])


SYMBOL = {"allowed": ("✓", "green"), "denied": ("✗", "red"), "refused": ("R", "yellow"), "error": ("E", "magenta")}


def render_matrix(doc: dict, console: Console, check: bool) -> None:
    from sdn.lab import matrix_targets as MT
    keys = doc["pods"]
    width = max([len(k) for k in keys] + [4])
    cell = max(len(k) for k in keys) if keys else 3
    for m in doc["matrices"]:
        measured, predicted = m["measured"], m["predicted"]
        diffs = {(d["from"], d["to"]) for d in m["differences"]}
        title = f"[bold]{m['protocol']}/{m['port']}[/bold] measured with real packets"
        head = " " * width + " " + " ".join(k.center(cell) for k in keys)
        if check:
            gap = "   "
            console.print(f"{title}".ljust(0) + "  |  [bold]predicted[/bold] by the semantic evaluator")
            console.print(escape(head) + gap + escape(" ".join(k.center(cell) for k in keys)))
        else:
            console.print(title)
            console.print(escape(head))
        for s in keys:
            parts = []
            for d in keys:
                sym, colour = SYMBOL[measured[s][d]]
                text = sym.center(cell)
                if (s, d) in diffs:
                    parts.append(f"[bold white on red]{text}[/bold white on red]")
                else:
                    parts.append(f"[{colour}]{text}[/{colour}]")
            line = escape(s.ljust(width)) + " " + " ".join(parts)
            if check:
                pred = []
                for d in keys:
                    ok = predicted[s][d]
                    sym, colour = ("✓", "green") if ok else ("✗", "red")
                    text = sym.center(cell)
                    pred.append(f"[bold white on red]{text}[/bold white on red]" if (s, d) in diffs
                                else f"[{colour}]{text}[/{colour}]")
                line += "   " + " ".join(pred)
            console.print(line)
        total = len(keys) * len(keys)
        if check:
            if m["differences"]:
                MT.print_differences(console, m["differences"], f"of {total} cells")
            else:
                console.print(f"[green]all {total} cells agree with the semantic evaluator[/green]")
    console.print(f"[dim]✓ reached  ✗ no answer within {doc['timeout']}s  R refused (reached, port closed); "
                  f"{sum(len(doc['pods']) ** 2 for _ in doc['matrices'])} probes in {doc['seconds']}s; "
                  f"rows: source (from), columns: destination (to)[/dim]")


@lab_group.command("matrix")
@click.option("--port", "ports", multiple=True, type=click.IntRange(1, 65535), metavar="P",
              help="Port to probe (default 80). Repeatable.")
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(["TCP", "UDP"], case_sensitive=False),
              help="TCP (default) or UDP. Repeatable: every port on every protocol.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--check", is_flag=True, help="Compare with the semantic evaluator; exit 1 on any difference.")
@click.option("--timeout", default=0.5, show_default=True, type=click.FloatRange(0.05, 30),
              help="Seconds a probe waits before it counts as denied.")
@click.option("--to-service", "services", multiple=True, metavar="NS/NAME",
              help="Also probe this Service's ClusterIP from every pod (kubernetes mode). Repeatable.")
@click.option("--external", is_flag=True, help="Also probe the external host from every pod.")
@click.pass_context
def matrix_cmd(ctx, ports, protocols, output, check, timeout, services, external):
    """Probe every ordered pod pair in parallel: real TCP connects and UDP round trips;
    with --to-service / --external, also every pod to those destinations."""
    from sdn.lab import matrix_targets as MT
    probes = [(p, proto.upper()) for proto in (protocols or ("TCP",)) for p in (ports or (80,))]
    lab = _lab(ctx)
    columns = [_run(MT.service_column, lab, s) for s in services]
    if external:
        columns.append(_run(MT.external_column, lab.state.load() or {}))
    doc = _run(lab.matrix, probes, timeout)
    if columns:
        doc = _run(MT.add_columns, lab, doc, columns, timeout)
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        render_matrix(doc, _console(), check)
        for m in doc["matrices"] if columns else ():
            MT.render_columns(m, _console(), check, SYMBOL)
    if check and not all(m["agree"] for m in doc["matrices"]):
        sys.exit(1)


@lab_group.command("status")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def status_cmd(ctx, output):
    """The lab: nodes, their switch and agent (connected, generations, flows, errors), pods."""
    st = _run(_lab(ctx).status)
    if output == "json":
        click.echo(json.dumps(st, indent=2))
        sys.exit(1 if st["problems"] else 0)
    c = _console()
    c.print(f"[bold]lab[/bold] {st['state_dir']} (prefix {st['prefix']}): {st['phase']}, enforce {st['enforce']}, "
            f"tunnel {st['tunnel']}, since {st['created']}")
    sup = st.get("supervisor")
    if sup:
        c.print("  [bold]supervisor[/bold] " + (f"pid {sup['pid']}: restarts a dead agent (back-off 0.5s doubling, "
                                                  f"at most 10s)" if sup["running"] else "[red]DOWN[/red]"))
    k8s = st.get("kubernetes")
    if k8s:
        cp = k8s["control_plane"]
        parts = [f"{name} {'[green]healthy[/green]' if c['healthy'] else '[red]DOWN[/red]'}"
                 for name, c in cp["components"].items()]
        c.print(f"  [bold]control plane[/bold] {cp.get('version') or '?'} at {cp['url']} ({cp['netns']}): "
                + ", ".join(parts))
    for n in st["nodes"]:
        a = n["agent"]
        ovs = "[green]ovs running[/green]" if n["ovs"] else "[red]ovs DOWN[/red]"
        if not a.get("running"):
            agent = "[red]agent not running[/red]"
        elif "error" in a:
            agent = f"[red]agent: {escape(a['error'])}[/red]"
        else:
            conn = "[green]connected[/green]" if a.get("connected") else "[red]not connected[/red]"
            agent = (f"agent pid {a['pid']} {conn}, generation {a.get('realized_generation')}/"
                     f"{a.get('desired_generation')} realized/desired, {a.get('desired_flows')} flows")
        where = f"{n['address']}, pods {n['pod_cidr']}" if n.get("address") else "fabric switch"
        node_k8s = (k8s or {}).get("nodes", {}).get(n["name"])
        if n.get("restarts"):
            agent += f", [yellow]restarts {n['restarts']}[/yellow]"
        elif "restarts" in n:
            agent += ", restarts 0"
        if node_k8s:
            agent += "".join(f", {what.replace('_', '-')} {'running' if d['running'] else '[red]DOWN[/red]'}"
                             for what, d in node_k8s.items())
        c.print(f"  [bold]{n['name']}[/bold] ({n['netns']}, {where}): {ovs}, {agent}")
        if a.get("last_error"):
            c.print(f"    [red]last error:[/red] {escape(str(a['last_error']))}")
    for p in st["pods"]:
        srv = "serving" if p["server"] else "[red]server DOWN[/red]"
        c.print(f"  pod {p['pod']:<20} {p['node']:<10} {p['ip'] or '-':<15} {p['netns']}  {srv}")
    for prob in st["problems"]:
        c.print(f"[yellow]problem:[/yellow] {escape(prob)}")
    sys.exit(1 if st["problems"] else 0)


@lab_group.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("pod", metavar="NS/POD")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(ctx, pod, command):
    """Run COMMAND inside a pod's network namespace (as kubectl exec runs it in the pod);
    its exit status is passed through."""
    import subprocess
    command = command[1:] if command[:1] == ("--",) else command
    if not command:
        raise LabFailure("no command to run: sdnctl lab exec NS/POD -- CMD...", 2)
    pods = {f"{p['namespace']}/{p['name']}": p for p in _run(_lab(ctx).pods)}
    if pod not in pods:
        raise LabFailure(f"no pod {pod} in the lab (pods: {', '.join(sorted(pods)) or 'none'})", 2)
    if not pods[pod].get("netns"):
        raise LabFailure(f"pod {pod} is not running yet (no network namespace)")
    sys.exit(subprocess.call(["ip", "netns", "exec", pods[pod]["netns"], *command]))


@lab_group.command("kubeconfig")
@click.pass_context
def kubeconfig_cmd(ctx):
    """The path of the lab's admin kubeconfig (kubernetes mode). The API server listens on the
    lab's underlay: use it inside the control-plane namespace, or through `sdnctl lab kubectl`."""
    kube = _run(_lab(ctx).kube)
    click.echo(str(kube.cp.admin_kubeconfig))


@lab_group.command("kubectl", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def kubectl_cmd(ctx, args):
    """Run the built kubectl against the lab's API server as its admin (exit status passed through)."""
    kube = _run(_lab(ctx).kube)
    sys.exit(kube.kubectl(list(args)))


@lab_group.command("down")
@click.pass_context
def down_cmd(ctx):
    """Remove every namespace, interface and process of the lab (also after a crash)."""
    lab = _lab(ctx)
    removed = _run(lab.down)
    if not removed["netns"] and not removed["processes"]:
        click.echo(f"lab down: nothing was running (state {lab.state.dir})")
    else:
        click.echo(f"lab down: removed {len(removed['netns'])} network namespace(s) and "
                   f"{len(removed['processes'])} process(es) besides the switch daemons")


def register(main: click.Group) -> None:
    main.add_command(lab_group)
