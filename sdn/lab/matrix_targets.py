"""Columns of `sdnctl lab matrix` beyond the pods: a Service (`--to-service NS/NAME`, its
ClusterIP, kubernetes mode) and the external host (`--external`).

Each is probed from every pod with real packets, in one sweep, on the matrix's (port, protocol)
pairs, where the port is the destination pod's, as in the pod columns:
- a Service is probed at ClusterIP:SERVICE_PORT for the Service port whose endpoints' port is
  P/PROTOCOL (kube-proxy translates it to a backend); predicted allowed when every backend pod
  is allowed (the policy judges the translated connection), denied when none is or there is
  no backend, and not predicted ("~") when backends differ: kube-proxy picks one at random;
- the external host is probed on the port and protocol it serves (TCP tcp_port, UDP udp_port);
  predicted by the pod's egress rules on its real address (ipBlock), as the bridge judges it
  before the node masquerades.
A (port, protocol) a column has no answer for is not probed ("-").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sdn.cli_output import escape
from sdn.lab import probe as PR

if TYPE_CHECKING:
    from rich.console import Console

    from sdn.lab.lab import Lab

NOT_PROBED = "-"


@dataclass(frozen=True)
class Column:
    """One extra destination: its name, its address, the port it is probed on for each
    (pod port, protocol) (None: not probed) and the prediction for a source pod."""

    name: str
    ip: str
    ports: dict[tuple[int, str], int] = field(hash=False)
    predict: Callable[[object, str, int, str], bool | None] = field(hash=False, compare=False)


def external_column(record: dict) -> Column:
    """The lab's external host (host mode)."""
    from sdn.lab.lab import LabError
    from sdn.policy.evaluate import evaluate_address
    from sdn.policy.model import EGRESS
    ext = record.get("external")
    if not ext:
        raise LabError("--external: this lab has no external host (it is made in host mode)", 2)
    addr = ext["address"]

    def predict(cluster, src: str, port: int, proto: str) -> bool:
        return evaluate_address(cluster, cluster.pods[src], addr, EGRESS, port, proto).allowed
    return Column("external", addr, {(ext["tcp_port"], "TCP"): ext["tcp_port"], (ext["udp_port"], "UDP"): ext["udp_port"]},
                  predict)


def service_column(lab: Lab, ref: str) -> Column:
    """Service NS/NAME as the API holds it: its ClusterIP, its ports and its EndpointSlices'
    backend pods."""
    from sdn.k8s.rest import ApiError
    from sdn.lab.lab import LabError
    from sdn.policy.evaluate import evaluate
    ns, _, name = ref.partition("/")
    if not ns or not name:
        raise LabError(f"--to-service {ref!r}: expected NAMESPACE/NAME", 2)
    kube = lab.kube()
    try:
        try:
            svc = kube.api(lambda r: r.call("GET", f"/api/v1/namespaces/{ns}/services/{name}"))
        except ApiError as e:
            if e.status == 404:
                raise LabError(f"--to-service {ref}: no Service {name} in namespace {ns}", 2) from None
            raise
        slices = kube.api(lambda r: r.call("GET", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                                           query={"labelSelector": f"kubernetes.io/service-name={name}"}))
    finally:
        kube.close()
    ip = (svc.get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise LabError(f"--to-service {ref}: a headless Service has no ClusterIP to probe", 2)
    backends: set[str] = set()
    by_name: dict[str, set[tuple[int, str]]] = {}
    for sl in slices.get("items", []):
        for ep in sl.get("endpoints") or []:
            ref_ = ep.get("targetRef") or {}
            if ref_.get("kind") == "Pod" and (ep.get("conditions") or {}).get("ready", True):
                backends.add(f"{ref_.get('namespace', ns)}/{ref_['name']}")
        for p in sl.get("ports") or []:
            by_name.setdefault(p.get("name") or "", set()).add((p["port"], p.get("protocol", "TCP")))
    ports = {}
    for sp in svc["spec"].get("ports") or []:
        for target in by_name.get(sp.get("name") or "", set()):
            ports[target] = sp["port"]

    def predict(cluster, src: str, port: int, proto: str) -> bool | None:
        verdicts = {evaluate(cluster, cluster.pods[src], cluster.pods[b], port, proto).allowed
                    for b in sorted(backends) if b in cluster.pods}
        return None if len(verdicts) > 1 else (verdicts.pop() if verdicts else False)
    return Column(f"svc:{ns}/{name}", ip, ports, predict)


def add_columns(lab: Lab, doc: dict, columns: list[Column], timeout: float) -> dict:
    """Probe every column from every pod of `doc` (lab.matrix's result) on its (port, protocol)
    pairs; each matrix gets "columns": {"names", "measured", "predicted", "differences"} and
    its "agree" covers them."""
    record = lab.state.load()
    if record is None:
        raise RuntimeError("no lab is up")
    pods = record["pods"]
    cluster = lab.cluster()
    targets = [PR.Target(s, pods[s]["netns"], c.name, c.ip, c.ports[(m["port"], m["protocol"])], m["protocol"])
               for m in doc["matrices"] for c in columns if (m["port"], m["protocol"]) in c.ports
               for s in doc["pods"]]
    t0 = time.monotonic()
    got = PR.probe(targets, lab.state.next_probe_ports(PR.PORTS_PER_SWEEP), timeout) if targets else {}
    doc["seconds"] = round(doc["seconds"] + time.monotonic() - t0, 3)
    doc["columns"] = [{"name": c.name, "address": c.ip} for c in columns]
    for m in doc["matrices"]:
        key = (m["port"], m["protocol"])
        measured: dict[str, dict[str, str]] = {}
        predicted: dict[str, dict[str, bool | None]] = {}
        diffs = []
        for s in doc["pods"]:
            measured[s], predicted[s] = {}, {}
            for c in columns:
                if key not in c.ports:
                    measured[s][c.name], predicted[s][c.name] = NOT_PROBED, None
                    continue
                state = got[PR.Target(s, pods[s]["netns"], c.name, c.ip, c.ports[key], m["protocol"])]
                want = c.predict(cluster, s, *key)
                measured[s][c.name], predicted[s][c.name] = state, want
                if want is not None and (state in (PR.ALLOWED, PR.REFUSED)) != want:
                    diffs.append({"from": s, "to": c.name, "measured": state,
                                  "predicted": "allowed" if want else "denied"})
        m["columns"] = {"names": [c.name for c in columns], "ports": {c.name: c.ports.get(key) for c in columns},
                        "measured": measured, "predicted": predicted, "differences": diffs}
        m["agree"] = m["agree"] and not diffs
    return doc


def print_differences(console: Console, differences: list[dict], of: str) -> None:
    """The cells of a matrix that differ from the prediction, one line each."""
    console.print(f"[red]{len(differences)} {of} differ from the prediction:[/red]")
    for d in differences:
        console.print(f"  {escape(d['from'])} -> {escape(d['to'])}: measured {d['measured']}, "
                      f"predicted {d['predicted']}")


def render_columns(m: dict, console: Console, check: bool, symbols: dict[str, tuple[str, str]]) -> None:
    """The extra columns of one matrix: rows the source pods, then (with --check) the prediction."""
    cols = m.get("columns")
    if not cols or not cols["names"]:
        return
    names = cols["names"]
    rows = list(cols["measured"])
    width = max([len(k) for k in rows] + [4])
    cell = [max(len(n), 3) for n in names]
    diffs = {(d["from"], d["to"]) for d in cols["differences"]}
    head = " " * width + " " + " ".join(n.center(w) for n, w in zip(names, cell))
    where = ", ".join(f"{n} port {p}" if p else f"{n} not probed" for n, p in cols["ports"].items())
    console.print(f"[bold]{m['protocol']}/{m['port']}[/bold] to other destinations ({escape(where)})"
                  + ("  |  [bold]predicted[/bold]" if check else ""))
    console.print(escape(head + ("   " + " ".join(n.center(w) for n, w in zip(names, cell)) if check else "")))

    def show(text: str, colour: str, bad: bool) -> str:
        return f"[bold white on red]{text}[/bold white on red]" if bad else f"[{colour}]{text}[/{colour}]"
    for s in rows:
        parts = []
        for n, w in zip(names, cell):
            state = cols["measured"][s][n]
            sym, colour = (NOT_PROBED, "dim") if state == NOT_PROBED else symbols[state]
            parts.append(show(sym.center(w), colour, (s, n) in diffs))
        line = escape(s.ljust(width)) + " " + " ".join(parts)
        if check:
            pred = []
            for n, w in zip(names, cell):
                ok = cols["predicted"][s][n]
                sym, colour = ((NOT_PROBED, "dim") if cols["measured"][s][n] == NOT_PROBED else
                               ("~", "yellow") if ok is None else ("✓", "green") if ok else ("✗", "red"))
                pred.append(show(sym.center(w), colour, (s, n) in diffs))
            line += "   " + " ".join(pred)
        console.print(line)
    if check:
        if cols["differences"]:
            print_differences(console, cols["differences"], "cells")
        else:
            console.print("all probed cells agree with the semantic evaluator"
                          + (" (~: backends differ, not predicted)" if any(
                              v is None and cols["measured"][s][n] != NOT_PROBED
                              for s, row in cols["predicted"].items() for n, v in row.items()) else ""))
