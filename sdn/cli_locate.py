"""Which running controller a live `sdnctl` command asks, when no --control (or $SDN_CONTROL)
names one: the node agent's socket (/run/sdn/controller.sock) if it exists, else the lab that
is up on this machine ($SDN_LAB_DIR, default /run/sdn-lab), whose agents each control one
node: the command asks the agent of the node it names, or every agent in turn.

In a lab a live trace gathers every agent's bridge (program, ports, OVS run directory) and
follows the packet across the tunnel, or through the fabric switch, to the destination's
bridge; `policy status` is answered from the agents' realized generations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = "/run/sdn/controller.sock"  # sdn.switch.control.DEFAULT_SOCKET (test_cli_live checks)


class NotFound(RuntimeError):
    """No controller to ask: the message says where we looked."""


class UnknownNode(RuntimeError):
    """The lab has no agent for the node named."""


@dataclass
class Lab:
    state_dir: str
    controls: dict[str, str]  # agent name (a node, or "fabric") -> control socket
    manifests: str
    enforce: str


def lab_dir() -> str:
    from sdn.lab.state import DEFAULT_STATE_DIR, ENV_STATE_DIR
    return os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR


def running_lab() -> Lab | None:
    """The lab that is up (its record ready, its agents' sockets present), or None."""
    from sdn.lab.state import State
    state = State(lab_dir())
    record = state.load()
    if not record or record.get("corrupt") or record.get("phase") != "ready":
        return None
    controls = {name: c["control"] for name, c in sorted(record.get("controllers", {}).items())
                if c.get("control") and Path(c["control"]).exists()}
    if not controls:
        return None
    return Lab(str(state.dir), controls, str(state.manifests_path), record.get("enforce", "host"))


def where(control: str | None) -> str | Lab:
    """The socket to ask, or the lab whose agents to ask."""
    if control:
        return control
    if Path(DEFAULT_SOCKET).exists():
        return DEFAULT_SOCKET
    lab = running_lab()
    if lab is not None:
        return lab
    raise NotFound(f"no controller control socket at {DEFAULT_SOCKET} and no lab is up (state {lab_dir()}): "
                   f"start `sdnctl controller` (or a lab: `sdnctl lab up -f DIR`), or give --control SOCKET")


def node_socket(lab: Lab, node: str) -> str:
    if node not in lab.controls:
        raise UnknownNode(f"unknown node {node!r}: the lab at {lab.state_dir} has agents for "
                          f"{', '.join(lab.controls)}")
    return lab.controls[node]


def lab_cluster(lab: Lab):
    """The lab's objects: its manifests, or (kubernetes mode) what its API server holds."""
    from sdn.lab.lab import Lab as LiveLab
    from sdn.lab.state import State
    return LiveLab(State(lab.state_dir)).cluster()


def lab_trace(lab: Lab, src: str, dst: str, port: str) -> dict:
    """A live trace across the lab's bridges: every agent's place, then livetrace."""
    from sdn.switch.control import program_from_json, request
    from sdn.switch.livetrace import NodePlace, trace_connection
    places, names = {}, {}
    for name, sock in lab.controls.items():
        doc = request(sock, "program", node=name)
        names.update(doc.get("names", {}))
        if doc.get("ovs_rundir") and doc.get("pod_ports") is not None:
            places[name] = NodePlace(name, doc["bridge"], program_from_json(doc["program"]), doc["ovs_rundir"],
                                     doc.get("address", ""), {k: tuple(v) for k, v in doc["pod_ports"].items()},
                                     doc.get("tunnel_ofport"))
    return trace_connection(lab_cluster(lab), places, names, src, dst, port)


def lab_policy_status(lab: Lab, namespace: str | None) -> list[dict]:
    """Per agent, what `policy status` shows for a node agent: each policy of the lab's
    manifests, realized when the agent's bridge realized the manifests' current generation."""
    from sdn.switch.control import ControlError, request
    cluster = lab_cluster(lab)
    out: list[dict[str, Any]] = []
    for name, sock in lab.controls.items():
        try:
            st = request(sock, "status", timeout=10)
        except ControlError as e:
            out.append({"node": name, "error": str(e), "policies": []})
            continue
        bridge = next((b for b in st["bridges"] if b["node"] == name), None)
        realized = bridge["realized_generation"] if bridge else None
        error = st.get("manifest_error") or st.get("compile_error") or (bridge or {}).get("last_error") or ""
        policies = [{"namespace": p.namespace, "name": p.name, "form": p.form,
                     "observed_generation": st["generation"], "realized_generation": realized,
                     "realized": realized == st["generation"] and not error, "error": error}
                    for p in sorted(cluster.policies.values(), key=lambda p: (p.namespace, p.name, p.form))
                    if namespace is None or p.namespace == namespace]
        out.append({"node": name, "api_synced": not st.get("manifest_error"), "in_sync": st["in_sync"],
                    "source": f"lab {lab.state_dir}", "policies": policies})
    return out
