"""`sdnctl trace`: follow a new connection through the compiled flows of every bridge on its
way (the flow simulator), name what decided it, and compare with the semantic evaluator.

Either end may be a pod (NS/POD, or its address) or an address that is no pod's: a node, a
host outside the cluster; then only the pod's side is judged, as NetworkPolicy says (ipBlock).
ICMP is not judged by NetworkPolicy at all; `--port icmp` shows what these flows do with it."""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from sdn.cli_output import EXIT_DIFFERS, console_out, escape

if TYPE_CHECKING:
    from sdn.compile import Compiled
    from sdn.policy.model import Cluster, Pod

ICMP_NOTE = ("ICMP is not judged by NetworkPolicy (its rules name TCP, UDP and SCTP ports); what happens "
             "to it is up to the implementation. These flows treat it as the evaluator's reading does: a "
             "rule without ports allows it, an isolated pod drops it otherwise.")


def parse_port(text: str, dst: Pod | None) -> tuple[int, str]:
    """--port: see sdn.policy.model.parse_port (here 'icmp' too)."""
    from sdn.cli import _fail
    from sdn.policy.model import parse_port as parse
    try:
        return parse(text, dst, icmp=True)
    except ValueError as e:
        _fail(f"--port: {e}")


def endpoint(cluster: Cluster, ref: str, namespace: str) -> tuple[Pod | None, str, str]:
    """(pod, address, description) for --from/--to: a pod by name or by one of its addresses;
    else an address that is no pod's (a node's, or outside the cluster's pods)."""
    from sdn.cli import _fail, _pod
    try:
        addr = ipaddress.ip_address(ref)
    except ValueError:
        pod = _pod(cluster, ref, namespace)
        return pod, pod.ips[0], pod.key
    for pod in cluster.pods.values():
        if any(ipaddress.ip_address(ip) == addr for ip in pod.ips):
            return pod, str(addr), pod.key
    for node in cluster.nodes.values():
        if any(ipaddress.ip_address(a) == addr for a in node.addresses):
            return None, str(addr), f"{addr} (node {node.name})"
    if addr.is_unspecified or addr.is_multicast:
        _fail(f"{ref}: not an address a connection can go to")
    return None, str(addr), f"{addr} (no pod's address)"


def _annotate(compiled: Compiled, path_hops) -> tuple[list[dict], list[str]]:
    """The hops of a simulated path as documents, each flow hit named by the rule or default
    deny it belongs to; and the lines that say what decided."""
    from flows import pipeline as P
    from flows.roles import role
    names = {ip: p.key for p in compiled.cluster.pods.values() for ip in p.ips}
    hops, decided_by = [], []
    for hop in path_hops:
        program = compiled.programs[hop.node]
        # the paths' roles where the bridges have their gateway ports (--gateway)
        bridge = (compiled.layout.bridge(hop.node, "host", compiled.gateways[hop.node])
                  if hop.node in compiled.gateways and compiled.enforce == "host" else None)
        by_conj, defaults = program.by_conj(), dict(program.defaults)
        steps = []
        for s in hop.result.steps:
            if s.flow is None:
                steps.append({"table": s.table, "name": P.BY_ID[s.table].name, "flow": None})
                continue
            match, _, actions = s.flow.render(cookie=False).partition(" actions=")
            entry = {"table": s.table, "name": P.BY_ID[s.table].name, "flow": s.flow.render(),
                     "priority": s.flow.priority, "match": match.split(",", 2)[2] if match.count(",") >= 2 else "",
                     "actions": actions}
            kind = P.cookie_kind(s.flow.cookie)
            what = role(s.flow, bridge) if bridge is not None and kind == P.KIND_PIPELINE else ""
            if what:
                entry["role"] = what
            cid = s.flow.get("conj_id")
            if cid is not None and cid.value in by_conj:
                info = by_conj[cid.value]
                entry["rule"] = str(info.id)
                entry["clauses"] = [c.render() for c in s.clauses]
                decided_by.append(f"allowed by {info.id} on {hop.node}")
            elif kind == P.KIND_RULE:
                by_cookie = program.by_cookie().get(s.flow.cookie)
                if by_cookie:
                    entry["rule"] = str(by_cookie.id)
                    decided_by.append(f"allowed by {by_cookie.id} on {hop.node}")
            elif kind == P.KIND_DEFAULT and s.flow.cookie in defaults:
                iso = defaults[s.flow.cookie]
                who = names.get(iso.address, iso.address)
                entry["default_deny"] = {"pod": who, "direction": iso.direction, "policies": list(iso.policies)}
                decided_by.append(f"dropped by the {iso.direction} default deny of {who} (isolated by "
                                  f"{', '.join(iso.policies)}) on {hop.node}")
            steps.append(entry)
        hops.append({"node": hop.node, "outputs": hop.result.outputs, "steps": steps})
    return hops, decided_by


def _sides(verdict) -> dict:
    return {side: {"isolated": v.isolated,
                   "allowed_by": [f"{r.policy} {r.direction.lower()}[{r.index}]" for r in v.allowed_by]}
            for side, v in (("egress", verdict.egress), ("ingress", verdict.ingress))}


def trace_doc(compiled: Compiled, src: Pod | None, src_addr: str, dst: Pod | None, dst_addr: str,
              port: int, proto: str, described: tuple[str, str]) -> dict:
    """Simulate, annotate and judge one new connection; either end may be an address."""
    from sdn.policy.evaluate import evaluate, evaluate_address
    from sdn.policy.model import EGRESS, INGRESS
    from sdn.verify import ClusterSimulator
    sim = ClusterSimulator(compiled)
    notes = [ICMP_NOTE] if proto == "ICMP" else []
    reply = None
    if src is not None and dst is not None:
        path = sim.connect(src, dst, port, proto.lower())
        verdict = evaluate(compiled.cluster, src, dst, port, proto)
        reply = None if path.reply_delivered is None else ("delivered" if path.reply_delivered else "dropped")
    elif src is not None:
        path = sim.to_address(src, dst_addr, port, proto.lower())
        verdict = evaluate_address(compiled.cluster, src, dst_addr, EGRESS, port, proto)
        gw = compiled.gateways.get(compiled.layout.node_of(src))
        service = gw is not None and any(ipaddress.ip_address(dst_addr) in ipaddress.ip_network(c)
                                         for c in gw.service_cidrs)
        if service:
            verdict = replace(verdict, allowed=True)
            notes.append(f"{dst_addr} is in the Service range: the packet goes to the node's kube-proxy unjudged; "
                         f"the translated connection is judged (trace --to the backend pod)")
        else:
            notes.append(f"{dst_addr} is no pod's address: only the egress of {src.key} is judged; the verdict is "
                         f"whether the rule tables let the connection out")
        if gw is not None and path.delivered and not service:
            notes.append(f"it leaves through {compiled.layout.node_of(src)}'s gateway port: the node, or outside the "
                         f"cluster masqueraded to the node's address")
        if path.delivered and not path.hops[-1].result.outputs:
            notes.append(f"after the rule tables, {path.hops[-1].node} has no route for {dst_addr}: these bridges "
                         f"forward between pods only (no gateway into the node's network)")
    elif dst is not None:
        path = sim.from_address(src_addr, dst, port, proto.lower())
        verdict = evaluate_address(compiled.cluster, dst, src_addr, INGRESS, port, proto)
        own = compiled.gateways.get(compiled.layout.node_of(dst))
        if own is not None and src_addr in own.addresses:
            verdict = replace(verdict, allowed=True)
            notes.append(f"{src_addr} is {dst.key}'s own node: always allowed (Kubernetes), whatever the policies")
        else:
            notes.append(f"{src_addr} is no pod's address: only the ingress of {dst.key} is judged; the connection "
                         f"enters the tables the way traffic from outside the node does"
                         + (" (through its node's gateway port)" if own is not None else ""))
    else:
        raise ValueError("a trace needs a pod at one end at least")
    hops, decided_by = _annotate(compiled, path.hops)
    return {"from": described[0], "to": described[1], "port": port, "protocol": proto,
            "verdict": "allowed" if path.delivered else "denied",
            "evaluator": "allowed" if verdict.allowed else "denied",
            "agree": path.delivered == verdict.allowed, "reply": reply, "decided_by": decided_by,
            **_sides(verdict), "notes": notes, "hops": hops}


@click.command("trace")
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR",
              help="Manifests (YAML/JSON, List, directories; '-' for stdin). Repeatable.")
@click.option("--from", "src", required=True, metavar="NS/POD|IP", help="A pod, or an address (a node, an outside host).")
@click.option("--to", "dst", required=True, metavar="NS/POD|IP", help="A pod, or an address (a node, an outside host).")
@click.option("--port", "port", required=True, metavar="PORT[/PROTO]|icmp",
              help="e.g. 8080/TCP, 53/UDP, a named port, or icmp.")
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of pods given without one.")
@click.option("--enforce", type=click.Choice(["host", "fabric"]), default="host", show_default=True,
              help="host: node bridges judge their pods; fabric: a fabric switch judges all.")
@click.option("-o", "--output", type=click.Choice(["text", "wide", "json", "yaml"]), default="text", show_default=True)
@click.option("--gateway", is_flag=True,
              help="Give each node bridge its gateway port into the node's stack, as `lab up` and the agent do.")
@click.option("--service-cidr", "service_cidrs", multiple=True, metavar="CIDR",
              help="The Services' range on the gateway port (implies --gateway). Repeatable.")
def trace_cmd(files, src, dst, port, namespace, enforce, output, gateway, service_cidrs):
    """Follow a new connection through the compiled flows: verdict, deciding rule, flows hit."""
    from sdn.cli import _compile, _fail, emit, load
    cluster = load(files)
    src_pod, src_addr, src_text = endpoint(cluster, src, namespace)
    dst_pod, dst_addr, dst_text = endpoint(cluster, dst, namespace)
    if src_pod is None and dst_pod is None:
        _fail("--from and --to are both addresses of no pod: NetworkPolicy judges only traffic of pods")
    if ipaddress.ip_address(src_addr).version != ipaddress.ip_address(dst_addr).version:
        _fail(f"--from {src_addr} and --to {dst_addr} are of different IP families")
    number, proto = parse_port(port, dst_pod)
    if gateway or service_cidrs:
        compiled = _compile_with_gateways(cluster, enforce, service_cidrs)
    else:
        compiled = _compile(cluster, None, None, enforce)
    doc = trace_doc(compiled, src_pod, src_addr, dst_pod, dst_addr, number, proto, (src_text, dst_text))
    if output in ("json", "yaml"):
        emit(doc, output)
    else:
        render(doc, console_out(), output == "wide")
    if not doc["agree"]:
        sys.exit(EXIT_DIFFERS)


def _compile_with_gateways(cluster: Cluster, enforce: str, service_cidrs: tuple[str, ...]) -> Compiled:
    """Every node bridge with its gateway port (host mode only)."""
    from flows.compiler import CompileError
    from sdn.cli import _fail
    from sdn.compile import compile_cluster
    from sdn.layout import build_layout
    if enforce != "host":
        _fail("--gateway: gateway ports are a host-mode node's (--enforce host)")
    for c in service_cidrs:
        try:
            ipaddress.ip_network(c)
        except ValueError:
            _fail(f"--service-cidr {c}: not a CIDR")
    try:
        return compile_cluster(cluster, enforce=enforce, gateways=build_layout(cluster).gateways(tuple(service_cidrs)))
    except CompileError as e:
        _fail(f"cannot compile: {e}")


def render(doc: dict, console, wide: bool) -> None:
    colour = "green" if doc["verdict"] == "allowed" else "red"
    what = "ICMP" if doc["protocol"] == "ICMP" else f"{doc['port']}/{doc['protocol']}"
    console.print(f"[bold]{escape(doc['from'])} -> {escape(doc['to'])} {what}: "
                  f"[{colour}]{doc['verdict'].upper()}[/{colour}][/bold]"
                  + (f" (reply {doc['reply']})" if doc["reply"] else ""))
    for line in doc["decided_by"]:
        console.print(f"  {line}")
    agree = "agrees" if doc["agree"] else "[red]DISAGREES[/red]"

    def side(name: str) -> str:
        s = doc[name]
        return (f"{name} {'isolated' if s['isolated'] else 'not isolated'}"
                + (f" allowed by {', '.join(s['allowed_by'])}" if s["allowed_by"] else ""))
    console.print(f"  semantic evaluator: {doc['evaluator']} ({agree}); {side('egress')}; {side('ingress')}")
    for note in doc["notes"]:
        console.print(f"  [yellow]note:[/yellow] {escape(note)}")
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
            if "role" in s and not note:
                note = f"  [magenta]{escape(s['role'])}[/magenta]"
            console.print(f"  {s['table']:>3} {s['name']:<16} {s['priority']:>5} {escape(s['match'] or '*')} "
                          f"-> {escape(actions)}{note}")
