"""The controller's local control API: a unix socket, one JSON request per connection, one
JSON reply. For `sdnctl` and for tools that must wait until every bridge has the flows of a
change (lab scripts: edit a manifest, `reload`, then `wait` for its generation).

Requests ({"cmd": ..., ...}):
  status                      per bridge: connected, desired/realized generation, flow counts,
                              last error, last bundle; the inputs' errors
  reload                      every source reads its input now (the manifests) -> {"generation": G}
  wait  [generation] [timeout]  until every bridge realized G (default: the current one)
  flows  node|bridge          the flows installed now, with counters, and the program's index
  diff   node|bridge          desired vs installed now: the bundle that would fix it (empty: in sync)
  resync node|bridge          read the switch again and repair drift
  program node|bridge         the desired program (flows and the rule index), port map
  trace  from to port         a new connection through the live bridges (ofproto/trace)
Errors come back as {"error": "..."}.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any

from flows.compiler import Program, RuleInfo
from flows.flow import Flow, parse_actions, parse_flow, parse_match, render_match
from flows.ir import Isolation, RuleId
from flows.wire import InstalledFlow, RawActions
from sdn.ovs.trace import TraceError
from sdn.proc import remove_stale_socket
from sdn.switch import reconcile
from sdn.switch.channel import ChannelClosed, SwitchTimeout
from sdn.switch.livetrace import LiveTraceError

log = logging.getLogger("sdn.switch.control")

DEFAULT_SOCKET = "/run/sdn/controller.sock"


def program_to_json(program: Program) -> dict:
    return {
        "bridge": program.bridge,
        "rules": [{"policy": r.id.policy, "direction": r.id.direction, "index": r.id.index, "part": r.id.part,
                   "conj_id": r.conj_id, "table": r.table, "priority": r.priority, "cookie": r.cookie,
                   "description": r.description, "active": r.active, "digest": r.digest,
                   "same_as": None if r.same_as is None else [r.same_as.policy, r.same_as.direction,
                                                               r.same_as.index, r.same_as.part]}
                  for r in program.rules],
        "defaults": [{"cookie": c, "direction": i.direction, "address": i.address, "policies": list(i.policies)}
                     for c, i in program.defaults],
        "flows": [f.render() for f in program.flows],
    }


def program_from_json(doc: dict) -> Program:
    rules = tuple(RuleInfo(RuleId(r["policy"], r["direction"], r["index"], r["part"]), r["conj_id"], r["table"],
                           r["priority"], r["cookie"], r["description"], r["active"], r.get("digest", ""),
                           RuleId(*r["same_as"]) if r.get("same_as") else None)
                  for r in doc["rules"])
    defaults = tuple((d["cookie"], Isolation(d["direction"], d["address"], tuple(d["policies"])))
                     for d in doc["defaults"])
    return Program(doc["bridge"], tuple(parse_flow(f) for f in doc["flows"]), rules, defaults)


def installed_to_json(i: InstalledFlow) -> dict:
    """An installed flow: match and actions as ovs-ofctl text (match None if undecoded)."""
    decoded = i.flow is not None and not any(isinstance(a, RawActions) for a in i.flow.actions)
    return {"table": i.table, "priority": i.priority, "cookie": i.cookie,
            "match": render_match(i.flow.match) if i.flow is not None else None,
            "actions": i.flow.actions_text if decoded and i.flow is not None else None, "decoded": decoded, "error": i.error,
            "packets": i.packets, "bytes": i.bytes, "duration": round(i.duration, 3)}


def installed_from_json(d: dict) -> tuple[Flow, tuple[int, int]]:
    """Back to a Flow (undecoded parts as RawActions) and its (packets, bytes)."""
    match = parse_match(d["match"]) if d["match"] else ()
    actions = parse_actions(d["actions"]) if d["decoded"] else (RawActions(b"", d["error"] or "undecoded"),)
    return Flow(d["table"], d["priority"], match, actions, d["cookie"]), (d["packets"], d["bytes"])


class ControlServer:
    """Serves the control API of a ControllerCore on a unix socket."""

    def __init__(self, core, path: str):
        self.core = core
        self.path = path
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> ControlServer:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o660)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _serve(self) -> None:
        sock = self._sock
        if sock is None:  # (start() sets it before the thread runs)
            return
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), name="control-req", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10.0)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.settimeout(None)
                request = json.loads(data or b"{}")
                reply = self.answer(request)
            except Exception as e:
                log.exception("control request failed")
                reply = {"error": f"internal error: {e!r}"}
            try:
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def answer(self, request: dict) -> dict:
        cmd = request.get("cmd")
        core = self.core
        try:
            if cmd == "status":
                return core.status()
            if cmd == "reload":
                return core.reload()
            if cmd == "wait":
                return core.wait(request.get("generation"), float(request.get("timeout", 60.0)))
            if cmd == "flows":
                agent, installed = core.installed(request.get("node"), request.get("bridge"))
                return {"node": agent.node, "bridge": agent.bridge,
                        "dpid": None if agent.dpid is None else f"{agent.dpid:016x}",
                        "flows": [installed_to_json(i) for i in installed],
                        "program": program_to_json(agent.program) if agent.program else None,
                        "names": self._names()}
            if cmd == "resync":
                agent = core.agent_for(request.get("node"), request.get("bridge"))
                agent.resync()
                return {"node": agent.node, "resync": True}
            if cmd == "trace":
                return core.trace(request["from"], request["to"], str(request["port"]))
            if cmd == "diff":
                agent, installed = core.installed(request.get("node"), request.get("bridge"))
                if agent.program is None:
                    return {"error": f"no program for {agent.node} yet"}
                plan = reconcile.plan(installed, agent.program.flows)
                return {"node": agent.node, "bridge": agent.bridge, "in_sync": plan.empty,
                        "summary": plan.summary(), "ops": [op.describe() for op in plan.ops()],
                        "deleted_cookies": [f"{c:#x}" for c in plan.delete_cookies]}
            if cmd == "program":
                agent = core.agent_for(request.get("node"), request.get("bridge"))
                if agent.program is None:
                    return {"error": f"no program for {agent.node} yet (is its OVSDB reachable?)"}
                spec = core.nodes[agent.node]
                place = core.place(agent.node)
                return {"node": agent.node, "bridge": agent.bridge,
                        "address": place.address if place else "",
                        "pod_ports": {k: list(v) for k, v in place.ports.items()} if place else {},
                        "dpid": None if agent.dpid is None else f"{agent.dpid:016x}",
                        "program": program_to_json(agent.program), "ports": core.port_maps.get(agent.node, {}),
                        "tunnel_ofport": (core.views.get(agent.node).tunnel_ofport
                                          if core.views.get(agent.node) else None),
                        "ovs_rundir": spec.ovs_rundir, "names": self._names(),
                        "nodes": {n: {"bridge": a.bridge, "ovs_rundir": core.nodes[n].ovs_rundir,
                                      "ports": core.port_maps.get(n, {})} for n, a in core.agents.items()}}
        except KeyError as e:
            return {"error": str(e.args[0]) if e.args else str(e), "bad_request": True}
        except (ChannelClosed, SwitchTimeout, LiveTraceError, TraceError) as e:
            return {"error": str(e)}
        return {"error": f"unknown command {cmd!r} (status, reload, wait, flows, diff, resync, program, trace)"}

    def _names(self) -> dict[str, str]:
        cluster = self.core.cluster
        if cluster is None:
            return {}
        return {ip: p.key for p in cluster.pods.values() for ip in p.ips}


class ControlError(RuntimeError):
    """A request that got no answer (`reached` False: no socket, refused, timeout) or an error
    answer (`bad_request` True when the request named something the controller does not know)."""

    def __init__(self, message: str, reached: bool = True, bad_request: bool = False):
        super().__init__(message)
        self.reached, self.bad_request = reached, bad_request


def request(path: str, cmd: str, timeout: float = 120.0, **args: Any) -> dict:
    """Send one request to a running controller and return its reply; raises ControlError
    with a clear message if none runs there or it answered an error."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except FileNotFoundError:
        raise ControlError(f"no controller control socket at {path} (is `sdnctl controller` running? "
                           f"give its socket with --control)", reached=False) from None
    except OSError as e:
        raise ControlError(f"cannot reach the controller at {path}: {e.strerror or e}", reached=False) from None
    try:
        sock.sendall(json.dumps(dict(args, cmd=cmd)).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"the controller at {path} did not answer {cmd!r} within {timeout:.0f}s",
                           reached=False) from None
    finally:
        sock.close()
    if not data:
        raise ControlError(f"the controller at {path} closed the connection without answering", reached=False)
    reply = json.loads(data)
    if isinstance(reply, dict) and reply.get("error") and cmd not in ("reload",):
        raise ControlError(reply["error"], bad_request=bool(reply.get("bad_request")))
    return reply
