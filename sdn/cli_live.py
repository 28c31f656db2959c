"""The live half of `sdnctl`: run the controller, and ask a running one about real switches.

  sdnctl controller -f DIR --bridge NODE[/BRIDGE]=OVSDB ...   program bridges (runs until SIGTERM)
  sdnctl status                                               per bridge: connected, generations, errors
  sdnctl flows show --node NODE | --bridge BR                 installed flows, grouped, with counters
  sdnctl flows diff --node NODE | --bridge BR                 desired vs installed; exit 1 if they differ
  sdnctl trace --live --from A --to B --port P                ofproto/trace on the real bridges

`register(main)` adds these to the click group of sdn.cli: new commands, and options on the
existing `flows show` and `trace` that switch them to the live switch (the offline behaviour
is unchanged without them).
"""

from __future__ import annotations

import json
import sys

import click

from sdn.cli_output import EXIT_DIFFERS, EXIT_UNREACHABLE, EXIT_USAGE, CommandProblem, escape
from sdn.cli_output import console_out as _console

CONTROL_HELP = ("The running controller's control socket (default: /run/sdn/controller.sock if it exists, "
                "else the agents of the lab that is up, $SDN_LAB_DIR).")
control_option = click.option("--control", metavar="SOCKET", envvar="SDN_CONTROL", help=CONTROL_HELP)


def _where(control: str | None):
    """--control, else the node agent's socket, else the lab that is up (sdn.cli_locate)."""
    from sdn.cli_locate import NotFound, where
    try:
        return where(control)
    except NotFound as e:
        raise CommandProblem(str(e), EXIT_UNREACHABLE) from None


def _ask(control: str | None, cmd: str, **args) -> dict:
    """One request to the controller that serves the node or bridge in `args` (in a lab: that
    node's agent; for a bridge, the agent that has it)."""
    from sdn.cli_locate import Lab, UnknownNode, node_socket
    from sdn.switch.control import ControlError, request
    target = _where(control)
    try:
        if not isinstance(target, Lab):
            return request(target, cmd, **args)
        if args.get("node"):
            return request(node_socket(target, args["node"]), cmd, **args)
        last = None
        for sock in target.controls.values():
            try:
                return request(sock, cmd, **args)
            except ControlError as e:
                if not e.bad_request:
                    raise
                last = e
        raise last or ControlError("the lab has no agent", reached=False)
    except UnknownNode as e:
        raise CommandProblem(str(e), EXIT_USAGE) from None
    except ControlError as e:
        raise CommandProblem(str(e), EXIT_USAGE if e.bad_request else EXIT_UNREACHABLE) from None


# ---- controller ----------------------------------------------------------------------------

@click.command("controller")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR", required=True,
              help="Manifests to enforce (re-read when they change). Repeatable.")
@click.option("--bridge", "bridges", multiple=True, metavar="NODE[/BRIDGE]=OVSDB",
              help="A node's OVSDB (unix:PATH or tcp:HOST:PORT) and optionally its bridge name "
                   "(default: the only bridge, or br-sdn). Repeatable.")
@click.option("--listen", default="unix:/run/sdn/openflow.sock", show_default=True, metavar="TARGET",
              help="Where bridges connect: unix:PATH or tcp:HOST:PORT. Also set as each bridge's controller.")
@control_option
@click.option("--poll", default=0.5, show_default=True, type=float, help="Seconds between manifest checks.")
@click.option("--no-configure", is_flag=True,
              help="Leave the bridges' OVSDB configuration alone (controller, fail_mode, datapath-id).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-file", metavar="FILE", help="Also log to this file.")
@click.option("--enforce", type=click.Choice(["host", "fabric"]), default="host", show_default=True,
              help="host: each node bridge judges its pods; fabric: node bridges guard and deliver, and the "
                   "bridge of node 'fabric' is the fabric switch that judges every rule.")
@click.option("--fabric", "fabric", metavar="[BRIDGE=]OVSDB",
              help="A fabric switch (an OVS bridge standing in for a ToR or hypervisor switch) that "
                   "judges every rule of the cluster, matching addresses only: the same as "
                   "--bridge fabric[/BRIDGE]=OVSDB --enforce fabric.")
@click.option("--settle", type=float, default=0.5, show_default=True, metavar="SECONDS",
              help="How long a manifest modified in place must stay unchanged before it is read (a file "
                   "renamed into place is read at once).")
def controller_cmd(files, bridges, listen, control, poll, no_configure, log_level, log_file, enforce, fabric,
                   settle):
    """Program real Open vSwitch bridges from the manifests, through os-ken (OpenFlow 1.3).

    Each change goes to each bridge as one atomic bundle of only the difference; a restart
    reads what is installed and sends nothing if nothing changed. Stops on SIGTERM/SIGINT."""
    from sdn.layout import FABRIC
    from sdn.switch.control import DEFAULT_SOCKET
    from sdn.switch.controller import Options, run
    from sdn.switch.core import NodeSpec
    control = control or DEFAULT_SOCKET
    try:
        nodes = [NodeSpec.parse(b) for b in bridges]
        if fabric:
            bridge, _sep, remote = fabric.rpartition("=") if "=" in fabric else ("", "", fabric)
            nodes.append(NodeSpec.parse(f"{FABRIC}{'/' + bridge if bridge else ''}={remote}"))
            enforce = "fabric"
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not nodes:
        raise click.UsageError("no bridge to control: give --bridge NODE=OVSDB (repeatable) or --fabric OVSDB")
    sys.exit(run(Options(list(files), nodes, listen, control, poll, not no_configure, log_level, log_file,
                         enforce, settle=settle)))


# ---- status --------------------------------------------------------------------------------

@click.command("status")
@control_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status_cmd(control, output):
    """The running controller: per bridge, connection, generations, flows, last error. In a lab:
    every node's agent."""
    from sdn.cli_locate import Lab
    target = _where(control)
    if isinstance(target, Lab):
        agents = {name: _ask(sock, "status") for name, sock in target.controls.items()}
        if output == "json":
            click.echo(json.dumps({"lab": target.state_dir, "agents": agents}, indent=2))
            return
        c = _console()
        for name, st in agents.items():
            c.print(f"[bold]lab {escape(target.state_dir)}, agent {name}[/bold] ({escape(target.controls[name])})")
            _render_status(c, st)
        return
    st = _ask(target, "status")
    if output == "json":
        click.echo(json.dumps(st, indent=2))
        return
    _render_status(_console(), st)


def _render_status(c, st: dict) -> None:
    c.print(f"generation {st['generation']}, {'in sync' if st['in_sync'] else '[yellow]not in sync[/yellow]'}"
            f"; manifests {', '.join(st['manifests'])}")
    for key in ("manifest_error", "compile_error"):
        if st.get(key):
            c.print(f"[red]{key.replace('_', ' ')}:[/red] {escape(st[key])}")
    for p in st.get("problems", []):
        c.print(f"[yellow]problem:[/yellow] {escape(p)}")
    for b in st["bridges"]:
        conn = "[green]connected[/green]" if b["connected"] else "[red]not connected[/red]"
        db = "ovsdb ok" if b["ovsdb"]["connected"] else f"[red]ovsdb: {escape(b['ovsdb']['error'] or 'connecting')}[/red]"
        c.print(f"[bold]{b['node']}[/bold] bridge {b['bridge'] or '?'} dpid {b['dpid'] or '?'}: {conn}, {db}, "
                f"generation {b['realized_generation']}/{b['desired_generation']}, {b['desired_flows']} flows desired, "
                f"{b['installed_flows'] if b['installed_flows'] is not None else '?'} known installed")
        if b["last_bundle"]:
            lb = b["last_bundle"]
            c.print(f"  last bundle: +{lb['add']} ~{lb['modify']} -{lb['delete']} ({lb['messages']} messages, "
                    f"{lb['seconds']}s, {'committed' if lb['committed'] else 'NOT committed'})")
        if b.get("waiting"):
            c.print(f"  [yellow]{escape(b['waiting'])}[/yellow]")
        if b["last_error"]:
            c.print(f"  [red]last error:[/red] {escape(b['last_error'])}")


# ---- flows show / diff ---------------------------------------------------------------------

def _target(node: str | None, bridge: str | None) -> dict:
    if not node and not bridge:
        raise click.UsageError("give --node NODE or --bridge BRIDGE")
    return {"node": node} if node else {"bridge": bridge}


def flows_show_live(node, bridge, control, policy, table, output, pod=None) -> None:
    from flows import pipeline as P
    from sdn import show
    from sdn.layout import pod_mac
    from sdn.policy.model import Pod
    from sdn.switch.control import installed_from_json, program_from_json
    doc = _ask(control, "flows", **_target(node, bridge))
    if doc["program"] is None:
        raise CommandProblem(f"the controller has no program for {doc['node']} yet", EXIT_UNREACHABLE)
    program = program_from_json(doc["program"])
    flows, stats = [], {}
    for d in doc["flows"]:
        f, counters = installed_from_json(d)
        flows.append(f)
        stats[f.key] = counters
    if pod:
        ips = sorted(ip for ip, key in doc["names"].items() if key == pod)
        if not ips:
            raise click.UsageError(f"--pod: the controller knows no address of pod {pod}")
        ports = _ask(control, "program", node=doc["node"]).get("ports", {})
        ns, _, name = pod.partition("/")
        flows = show.pod_flows(flows, ips, ports.get(pod), pod_mac(Pod(ns, name, ips=tuple(ips))))
    if table is not None:
        try:
            P.table_named(table)
        except KeyError:
            raise click.UsageError(f"--table: unknown table {table!r}") from None
    grouped = show.group_flows(flows, program, doc["names"], policy, table)
    if output == "json":
        click.echo(json.dumps({"node": doc["node"], "bridge": doc["bridge"], "dpid": doc["dpid"], "live": True,
                               "tables": show.to_json(grouped, stats)}, indent=2))
        return
    c = _console()
    c.print(f"[bold]node {doc['node']}[/bold], bridge {doc['bridge']} (dpid {doc['dpid']}): {len(flows)} flows "
            f"installed, {len(program.flows)} desired")
    show.render(grouped, c, stats=stats, wide=output == "wide")


@click.command("diff")
@click.option("--node", help="The node whose bridge to compare.")
@click.option("--bridge", help="The bridge (name or datapath-id) to compare.")
@control_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def flows_diff_cmd(node, bridge, control, output):
    """Desired vs installed flows of a live bridge: the bundle that would make them equal.
    Says "in sync" (exit 0) when there is none; exit status 1 when they differ, 3 when the
    controller cannot be reached."""
    doc = _ask(control, "diff", **_target(node, bridge))
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    elif doc["in_sync"]:
        click.echo(f"# {doc['node']} ({doc['bridge']}): in sync, nothing to add, modify or delete")
    else:
        s = doc["summary"]
        click.echo(f"# {doc['node']} ({doc['bridge']}): {s['add']} to add, {s['modify']} to modify, "
                   f"{s['delete']} to delete")
        for line in doc["ops"]:
            sign = {"add": "+", "replace": "~", "modify": "~"}.get(line.split(" ", 1)[0], "-")
            click.echo(f"{sign} {line}")
    sys.exit(0 if doc["in_sync"] else EXIT_DIFFERS)


# ---- trace --live --------------------------------------------------------------------------

def _is_address(ref: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(ref)
        return True
    except ValueError:
        return False


def trace_live(src, dst, port, namespace, control, output) -> None:
    from sdn.cli_locate import Lab, lab_trace
    from sdn.switch.control import ControlError
    from sdn.switch.livetrace import LiveTraceError
    key = lambda ref: ref if "/" in ref or _is_address(ref) else f"{namespace}/{ref}"  # noqa: E731
    target = _where(control)
    if isinstance(target, Lab):
        try:
            doc = lab_trace(target, key(src), key(dst), port)
        except LiveTraceError as e:
            raise CommandProblem(str(e), EXIT_USAGE) from None
        except ControlError as e:
            raise CommandProblem(str(e), EXIT_UNREACHABLE) from None
    else:
        doc = _ask(target, "trace", **{"from": key(src), "to": key(dst), "port": port})
    if output == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        c = _console()
        colour = "green" if doc["verdict"] == "allowed" else "red"
        c.print(f"[bold]{doc['from']} -> {doc['to']} {doc['port']}/{doc['protocol']}: "
                f"[{colour}]{doc['verdict'].upper()}[/{colour}][/bold] (ofproto/trace on the live bridges)")
        for line in doc["decided_by"]:
            c.print(f"  {line}")
        agree = "agrees" if doc["agree"] else "[red]DISAGREES[/red]"
        c.print(f"  semantic evaluator: {doc['evaluator']} ({agree})")
        for line in doc.get("notes", []):
            c.print(f"  [yellow]note:[/yellow] {escape(line)}")
        for hop in doc["hops"]:
            c.print(f"[bold]{hop['node']}[/bold] bridge {hop['bridge']} -> outputs {hop['outputs'] or 'none (dropped)'}")
            current = hop["bridge"]
            for s in hop["steps"]:
                if s.get("bridge", current) != current:  # continued through a patch port
                    current = s["bridge"]
                    c.print(f"  [bold]-> {s.get('node', '')}[/bold] bridge {current}")
                note = ""
                if "rule" in s:
                    note = f"  [cyan]{escape(s['rule'])}[/cyan]"
                elif "default_deny" in s:
                    note = f"  [red]default deny of {escape(s['default_deny']['pod'])}[/red]"
                elif "role" in s:
                    note = f"  [magenta]{escape(s['role'])}[/magenta]"
                if s["miss"]:
                    c.print(f"  {s['table']:>3} {s['name']:<16} no match: drop")
                    continue
                actions = s["actions"] if output == "wide" or len(s["actions"]) <= 60 else s["actions"][:57] + "..."
                c.print(f"  {s['table']:>3} {s['name']:<16} {s['priority'] if s['priority'] is not None else '':>5} "
                        f"{escape(s['match'] or '*')} -> {escape(actions or 'drop')}{note}")
    if not doc["agree"]:
        sys.exit(EXIT_DIFFERS)


# ---- registration --------------------------------------------------------------------------

def _qualified(ref: str | None, kw: dict) -> str | None:
    """NS/NAME for a --policy or --pod given without a namespace (flows show's -n)."""
    return ref if not ref or "/" in ref else f"{kw['namespace']}/{ref}"


def _extend(command: click.Command, options: list[click.Option], live, is_live) -> None:
    """Add options to an existing command; when `is_live(kwargs)`, run `live(**mine, **shared)`."""
    original = command.callback
    if original is None:
        raise TypeError(f"{command.name}: a command without a callback cannot be extended")
    names = [o.name for o in options]
    command.params.extend(options)

    def callback(**kwargs):
        mine = {n: kwargs.pop(n) for n in names}
        if is_live(mine, kwargs):
            return live(mine, kwargs)
        return original(**kwargs)

    command.callback = callback


def register(main: click.Group) -> None:
    main.add_command(controller_cmd)
    main.add_command(status_cmd)
    flows = main.commands.get("flows")
    if isinstance(flows, click.Group):
        flows.add_command(flows_diff_cmd)
        show_cmd = flows.commands.get("show")
        if show_cmd is not None:
            _extend(show_cmd, [
                click.Option(["--bridge"], help="Live: the installed flows of this bridge (name or datapath-id), "
                                                "through the running controller."),
                click.Option(["--live"], is_flag=True, help="Live: with --node, read the installed flows."),
                click.Option(["--control"], envvar="SDN_CONTROL", metavar="SOCKET", help=CONTROL_HELP),
            ], lambda mine, kw: flows_show_live(kw["node"], mine["bridge"], mine["control"], _qualified(kw["policy"], kw),
                                                kw["table"], kw["output"], _qualified(kw["pod"], kw)),
                lambda mine, kw: bool(mine["bridge"] or mine["live"] or (kw.get("node") and not kw.get("files"))))
    trace = main.commands.get("trace")
    if trace is not None:
        _extend(trace, [
            click.Option(["--live"], is_flag=True, help="Ask OVS (ofproto/trace) on the real bridges, "
                                                        "through the running controller."),
            click.Option(["--control"], envvar="SDN_CONTROL", metavar="SOCKET", help=CONTROL_HELP),
        ], lambda mine, kw: trace_live(kw["src"], kw["dst"], kw["port"], kw["namespace"], mine["control"],
                                       kw["output"]),
            lambda mine, kw: bool(mine["live"]))
