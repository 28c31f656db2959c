"""`sdnctl policy`: questions about policies. `explain` (which policies select a pod, what
they allow), `matrix` (who may reach whom, predicted: sdn/cli_matrix.py) and `status` (has
each node realized each policy: the agent's /status, or the agents of the lab that is up)."""

from __future__ import annotations

import json

import click

from sdn.cli_matrix import matrix_cmd
from sdn.cli_output import EXIT_UNREACHABLE, CommandProblem, console_out, escape


@click.group("policy")
def policy_group() -> None:
    """Questions about policies."""


@policy_group.command("explain")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR",
              help="Manifests (YAML/JSON, List, directories; '-' for stdin). Repeatable.")
@click.argument("pod")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
def policy_explain(files, pod, namespace, output):
    """Which policies select POD, for which directions, and what they allow."""
    from sdn.cli import _fail, emit, load  # sdn.cli imports this module: not at the top
    from sdn.policy.evaluate import explain
    cluster = load(files)
    key = pod if "/" in pod else f"{namespace}/{pod}"
    if key not in cluster.pods:
        _fail(f"pod {key} not found in the manifests")
    doc = explain(cluster, cluster.pods[key])
    if output in ("json", "yaml"):
        emit(doc, output)
        return
    console = console_out()
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
@click.option("--agent", "agent_url", metavar="URL",
              help="The node agent's HTTP endpoint (its metricsPort). Default: the agents of the lab that is "
                   "up ($SDN_LAB_DIR), else http://127.0.0.1:9470.")
@click.option("-n", "--namespace", help="Only policies of this namespace.")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
def policy_status(agent_url, namespace, output):
    """For each NetworkPolicy: has this node (in a lab: each node) realized its current generation?"""
    import urllib.error
    import urllib.request

    from sdn.cli import emit
    from sdn.cli_locate import lab_policy_status, running_lab
    lab = running_lab() if agent_url is None else None
    if lab is not None:
        docs = lab_policy_status(lab, namespace)
        if output in ("json", "yaml"):
            emit({"lab": lab.state_dir, "nodes": docs}, output)
            return
        for doc in docs:
            _render_policy_status(doc)
        if any(d.get("error") for d in docs):
            raise CommandProblem("; ".join(f"{d['node']}: {d['error']}" for d in docs if d.get("error")),
                                 EXIT_UNREACHABLE)
        return
    agent_url = agent_url or "http://127.0.0.1:9470"
    try:
        with urllib.request.urlopen(agent_url.rstrip("/") + "/status", timeout=10) as resp:
            doc = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CommandProblem(f"cannot read the agent's status at {agent_url}: {getattr(e, 'reason', e)}"
                             + ("" if lab else " (and no lab is up)"), EXIT_UNREACHABLE) from None
    policies = [p for p in doc.get("policies", []) if namespace is None or p["namespace"] == namespace]
    if output in ("json", "yaml"):
        emit({"node": doc.get("node"), "policies": policies}, output)
        return
    _render_policy_status(dict(doc, policies=policies))


def _render_policy_status(doc: dict) -> None:
    from rich.table import Table as RichTable
    console = console_out()
    policies = doc["policies"]
    t = RichTable(box=None, header_style="bold", pad_edge=False)
    for col in ("NAMESPACE", "NAME", "FORM", "GENERATION", "REALIZED", "NOTE"):
        t.add_column(col)
    for p in policies:
        realized = "yes" if p["realized"] and p["realized_generation"] == p["observed_generation"] else (
            f"gen {p['realized_generation']}" if p["realized_generation"] is not None else "no")
        t.add_row(p["namespace"], p["name"], p["form"], str(p["observed_generation"] or "-"), realized,
                  escape(p["error"] or ""))
    sync = "in sync" if doc.get("in_sync") else "not in sync"
    source = f" ({escape(doc['source'])})" if doc.get("source") else ""
    inputs = ("manifests loaded" if doc.get("api_synced") else "manifests not loaded") if source else (
        f"API {'synced' if doc.get('api_synced') else 'not synced yet'}")
    console.print(f"node {doc.get('node')}{source}: {inputs}, "
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


policy_group.add_command(matrix_cmd)
