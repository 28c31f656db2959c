"""The controller's status as JSON (`sdnctl status`, the control API's `status`, the agent's
/status): generations, the inputs and their errors, and per bridge its worker, its OVSDB
connection and, when it does not connect, what it waits for."""

from __future__ import annotations

import time
from typing import Any


def render(core: Any) -> dict:
    """The status of a sdn.switch.core.ControllerCore."""
    with core.lock:
        inputs = [s.status() for s in core.sources]
        out: dict[str, Any] = {
            "generation": core.generation,
            "manifests": [p for i in inputs for p in i.get("paths", ())],
            "inputs": inputs,
            "enforce": core.enforce,
            # the key keeps its first name: any source's refusal shows here
            "manifest_error": core.input_error,
            "compile_error": core.compile_error,
            "problems": list(core.problems),
            "handler_errors": core.handler_errors,
            "unmapped_datapaths": [f"{d:016x}" for d in core.datapaths.pending],
        }
    bridges = []
    for node, agent in sorted(core.agents.items()):
        st = agent.status().to_json()
        mon = core.monitors[node]
        spec = core.nodes[node]
        st["ovsdb"] = {"remote": spec.ovsdb, "connected": mon.status.connected, "error": mon.status.last_error}
        st["ovs_rundir"] = spec.ovs_rundir
        view = core.views.get(node)
        if view is not None and not st["connected"]:
            since = core.datapaths.absent_since(node)
            st["waiting"] = (f"bridge {view.name} has not connected"
                             + (f" for {time.monotonic() - since:.0f}s" if since else "")
                             + f" (its controller: {', '.join(view.controllers) or 'none'})")
        bridges.append(st)
    out["bridges"] = bridges
    # Bridges without a program yet (OVSDB not reached) are reported, not waited for.
    programmed = [b for b in bridges if b["desired_generation"] > 0]
    out["in_sync"] = bool(programmed) and all(b["in_sync"] for b in programmed)
    out["all_bridges_programmed"] = len(programmed) == len(bridges)
    return out
