"""The node agent: the Kubernetes API in, this node's bridge programmed, status out.

Informers (sdn.k8s.informer) feed a ClusterState; once every resource has been listed, each
batch of changes goes to the controller core, which turns it into the node's tables
incrementally and reconciles the bridge in one bundle. A realizer thread waits for each
generation to be committed on the bridge, measures realization latency (API event seen ->
bundle committed), marks the policies realized and reports them as Kubernetes Events
(reason PolicyRealized / PolicyInvalid; see docs/architecture.md for why Events and not
annotations). Metrics, health, readiness and status are served over HTTP.

While the API server is unreachable the informers emit nothing, so the bridge keeps its last
tables; nothing is ever flushed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from flows import pipeline as P
from sdn.k8s.cluster_state import ClusterState, PolicyStatus
from sdn.k8s.informer import Event, Informers
from sdn.k8s.settings import Settings

log = logging.getLogger("sdn.agent")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class _Pending:
    controller_generation: int
    state_generation: int
    received: tuple[float, ...]


class _Collector:
    """Metrics read at scrape time from the controller core and the informers."""

    def __init__(self, agent: Agent):
        self.agent = agent

    def collect(self):
        a = self.agent
        st = a.core.status()
        flows = GaugeMetricFamily("sdn_flows", "Flows installed on the bridge per table (read back from the switch "
                                  "or confirmed by a committed bundle)", labels=["bridge", "table"])
        desired = GaugeMetricFamily("sdn_desired_flows", "Flows of the compiled program per table (what the "
                                    "bridge should hold)", labels=["bridge", "table"])
        rules = GaugeMetricFamily("sdn_rules", "Compiled policy rules on the bridge", labels=["bridge"])
        bundles = CounterMetricFamily("sdn_bundles", "Bundles committed", labels=["bridge"])
        failed = CounterMetricFamily("sdn_bundle_errors", "Bundles the switch rejected", labels=["bridge"])
        connected = GaugeMetricFamily("sdn_switch_connected", "1 while the bridge's OpenFlow connection to this "
                                      "agent is up", labels=["bridge"])
        ovsdb = GaugeMetricFamily("sdn_ovsdb_connected", "1 while the agent's OVSDB connection for the bridge "
                                  "is up", labels=["bridge"])
        table_name = lambda t: P.BY_ID[t].name if t in P.BY_ID else str(t)  # noqa: E731
        for b in st.get("bridges", []):
            name = b.get("bridge") or b.get("node", "")
            worker = a.core.agents.get(b.get("node"))
            program = worker.program if worker is not None else None
            if program is not None:
                by_table: dict[str, int] = {}
                for f in program.flows:
                    by_table[table_name(f.table)] = by_table.get(table_name(f.table), 0) + 1
                for table, n in sorted(by_table.items()):
                    desired.add_metric([name, table], n)
                rules.add_metric([name], sum(1 for r in program.rules if r.active))
            installed = worker.installed_per_table() if worker is not None else None
            for t, n in sorted((installed or {}).items()):
                flows.add_metric([name, table_name(t)], n)
            connected.add_metric([name], 1 if b.get("connected") else 0)
            ovsdb.add_metric([name], 1 if (b.get("ovsdb") or {}).get("connected") else 0)
            counters = b.get("counters", {})
            bundles.add_metric([name], counters.get("bundles", 0))
            failed.add_metric([name], counters.get("failed_bundles", 0))
        yield from (flows, desired, rules, bundles, failed, connected, ovsdb)
        watches = CounterMetricFamily("sdn_watch_requests", "Watch requests opened (the first included)",
                                      labels=["resource"])
        watch = CounterMetricFamily("sdn_watch_restarts", "Watches opened again after the first (a cut stream, "
                                    "a 410 re-list, a periodic re-list)", labels=["resource"])
        expired = CounterMetricFamily("sdn_watch_expired", "410 Gone: re-lists", labels=["resource"])
        errors = CounterMetricFamily("sdn_watch_errors", "API failures retried", labels=["resource"])
        events = CounterMetricFamily("sdn_watch_events", "Watch events received", labels=["resource"])
        for res, stats in a.informer_stats().items():
            watches.add_metric([res], stats.watches)
            watch.add_metric([res], max(stats.watches - 1, 0))
            expired.add_metric([res], stats.expired)
            errors.add_metric([res], stats.errors)
            events.add_metric([res], stats.events)
        since = a.unreachable_since()
        reach = GaugeMetricFamily("sdn_api_reachable", "1 while the API server answers, 0 during an outage")
        reach.add_metric([], 0 if since else 1)
        yield reach
        outage = GaugeMetricFamily("sdn_api_unreachable_since_timestamp_seconds",
                                   "When the current API outage began (Unix time; 0: no outage)")
        outage.add_metric([], since)
        yield outage
        yield watches
        yield watch
        yield expired
        yield errors
        yield events


class Agent:
    """Kubernetes source + controller core for one node."""

    def __init__(self, settings: Settings, node: str, api_client: Any, core: Any,
                 informer_options: dict | None = None):
        self.settings, self.node, self.api, self.core = settings, node, api_client, core
        self.state = ClusterState(settings.resources())
        opts: dict[str, Any] = {"watch_timeout": settings.watch_timeout_seconds, "relist_period": settings.resync_seconds,
                    "backoff_base": min(0.25, settings.api_retry_max_seconds), "backoff_cap": settings.api_retry_max_seconds}
        opts.update(informer_options or {})
        self.informers = Informers(api_client, self._on_events, settings.resources(), **opts)
        self.registry = CollectorRegistry()
        self.latency = Histogram("sdn_realization_seconds", "API event seen -> bundle committed",
                                 registry=self.registry, buckets=LATENCY_BUCKETS)
        self.batches = Counter("sdn_batches", "Batches of API changes handed to the compiler",
                               registry=self.registry)
        self.ready_gauge = Gauge("sdn_ready", "1 once the first full list is programmed",
                                 registry=self.registry)
        self.registry.register(_Collector(self))
        self._pending: queue.Queue[_Pending | None] = queue.Queue()
        self._realizer = threading.Thread(target=self._realize_loop, name="realizer", daemon=True)
        self.programmed = threading.Event()  # the first full state reached the bridge
        self._stop = threading.Event()
        self.last_error = ""

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Agent:
        self._realizer.start()
        self.informers.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.informers.stop()
        self._pending.put(None)
        self._realizer.join(5)

    def informer_stats(self) -> dict:
        return {r.name: inf.stats for r, inf in self.informers.informers.items()}

    # ---- events -> bridge (dispatcher thread) ----------------------------------------------------

    def _on_events(self, events: list[Event]) -> None:
        delta = self.state.apply(events)
        if delta is None or not self.state.ready:
            # Nothing to program before every resource has been listed once: a partial view
            # (pods before policies) would open traffic that policies close.
            return
        self.batches.inc()
        gen = self.core.set_cluster(delta.cluster, upserts=delta.upserts, deletes=delta.deletes,
                                    full=delta.became_ready)
        self._pending.put(_Pending(gen, delta.generation, delta.received))

    # ---- realization (realizer thread) ---------------------------------------------------------

    def _realize_loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            while not self.core.wait(item.controller_generation, 5.0).get("realized"):
                if self._stop.is_set():
                    return
            now = time.monotonic()
            for t in item.received:
                self.latency.observe(max(0.0, now - t))
            self.programmed.set()
            self.ready_gauge.set(1)
            for st in self.state.mark_realized(item.state_generation):
                self._report(st)

    def _report(self, st: PolicyStatus) -> None:
        """A Kubernetes Event on the policy: realized on this node (or invalid)."""
        ref = st.ref
        if st.error:
            reason, kind, msg = "PolicyInvalid", "Warning", f"ignored by {self.node}: {st.error}"
        else:
            reason, kind = "PolicyRealized", "Normal"
            msg = f"generation {st.realized_generation} realized on node {self.node}"
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {"apiVersion": ref.resource.api_version, "kind": ref.resource.kind,
                               "namespace": ref.namespace, "name": ref.name, "uid": ref.uid,
                               "resourceVersion": ref.resource_version},
            "reason": reason, "message": msg, "type": kind,
            "source": {"component": "sdn-agent", "host": self.node},
            "reportingComponent": "sdn-agent", "reportingInstance": self.node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            from kubernetes import client
            client.CoreV1Api(self.api).create_namespaced_event(
                ref.namespace, body, _preload_content=False)  # type: ignore[arg-type]  # a dict body is sent as is
        except Exception as e:  # noqa: BLE001 - status reporting must never stop the agent
            self.last_error = f"cannot report {reason} for {ref.namespace}/{ref.name}: {e}"
            log.warning("%s", self.last_error)

    # ---- status ----------------------------------------------------------------------------------

    def unreachable_since(self) -> float:
        """When the API server became unreachable (wall clock), or 0 while it answers."""
        times = [st.failing_since for st in self.informer_stats().values() if st.failing_since]
        return min(times) if times else 0.0

    def api_error(self) -> str:
        """Why a resource cannot be listed or watched, when that is a lasting problem (RBAC)."""
        for name, st in sorted(self.informer_stats().items()):
            if st.last_error.startswith("Forbidden"):
                return f"{name}: {st.last_error}"
        return ""

    def healthy(self) -> bool:
        """Alive: the event path runs (an unreachable API server is not unhealthy: the
        bridge keeps its tables and the informers keep retrying)."""
        return self.informers.dispatcher.alive

    def ready(self) -> bool:
        """Every resource listed, the bridge programmed, and the API server answering: while
        it is away the tables are kept but may be stale (changes are not seen)."""
        return self.state.ready and self.programmed.is_set() and not self.unreachable_since()

    def status(self, objects: bool = False) -> dict:
        """What /status serves; with `objects`, also the resourceVersion of every object
        this node has folded in ("RESOURCE/NAMESPACE/NAME" -> version), which `sdnctl lab`
        compares with the API server's to know a change has reached this node."""
        core = self.core.status()
        out = {
            "node": self.node,
            "api_synced": self.state.ready,
            "api": _api_status(self.unreachable_since()),
            "programmed": self.programmed.is_set(),
            "state_generation": self.state.generation,
            "realized_generation": self.state.realized_generation,
            "bridges": core.get("bridges", []),
            "in_sync": core.get("in_sync"),
            "last_error": self.last_error or core.get("compile_error", "") or self.api_error(),
            "policies": [policy_json(p) for p in self.state.policy_status()],
            "watch": {name: vars(s) for name, s in self.informer_stats().items()},
        }
        if objects:
            out["objects"] = {f"{r}/{ns}/{n}": v for (r, ns, n), v in sorted(self.state.versions().items())}
        return out


def _api_status(since: float) -> dict:
    if not since:
        return {"reachable": True, "unreachable_since": None, "unreachable_seconds": 0.0}
    return {"reachable": False,
            "unreachable_since": datetime.fromtimestamp(since, timezone.utc).isoformat(timespec="seconds"),
            "unreachable_seconds": round(max(0.0, time.time() - since), 1)}


def policy_json(st: PolicyStatus) -> dict:
    return {"namespace": st.ref.namespace, "name": st.ref.name, "form": st.form,
            "observed_generation": st.observed_generation, "realized": st.realized,
            "realized_generation": st.realized_generation, "error": st.error}


class _Handler(BaseHTTPRequestHandler):
    agent: Agent

    def log_message(self, fmt, *args):  # quiet: probes hit these every few seconds
        log.debug(fmt, *args)

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        a = self.agent
        path, _, query = self.path.partition("?")
        if path == "/metrics":
            self._send(200, generate_latest(a.registry), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            ok = a.healthy()
            self._send(200 if ok else 500, b"ok\n" if ok else b"dispatcher stopped\n")
        elif path == "/readyz":
            ok = a.ready()
            since = a.unreachable_since()
            why = (f"the API server is unreachable since {_api_status(since)['unreachable_since']}; the bridge "
                   f"keeps its last tables\n" if since else "not yet synced and programmed\n")
            self._send(200 if ok else 503, b"ok\n" if ok else why.encode())
        elif path == "/status":
            body = a.status(objects="objects" in query.split("&"))
            self._send(200, json.dumps(body, indent=2, default=str).encode(), "application/json")
        else:
            self._send(404, b"not found: /metrics /healthz /readyz /status\n")


def serve_http(agent: Agent, address: str, port: int) -> ThreadingHTTPServer:
    """Metrics, health, readiness and status on address:port (port 0: any free port)."""
    handler = type("Handler", (_Handler,), {"agent": agent})
    server = ThreadingHTTPServer((address, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


# ---- sdnctl agent ------------------------------------------------------------------------------

def agent_command():
    import os
    import sys

    import click

    from sdn.switch.control import DEFAULT_SOCKET

    @click.command("agent")
    @click.option("--node", envvar="NODE_NAME", required=True, help="This node's name (env NODE_NAME).")
    @click.option("--config", "config", metavar="FILE", help="Settings file (deploy/configmap.yaml); default: built-in defaults.")
    @click.option("--kubeconfig", metavar="FILE", help="Kubeconfig; default: in-cluster, then ~/.kube/config.")
    @click.option("--listen", metavar="TARGET", help="Where the bridge connects (default: the settings' openflow).")
    @click.option("--control", default=DEFAULT_SOCKET, show_default=True, metavar="PATH",
                  help="Control socket for sdnctl status / flows show --node.")
    @click.option("--metrics-port", type=int, help="Override the settings' metricsPort (0: any free port).")
    @click.option("--log-level", default="INFO", show_default=True)
    @click.option("--log-file", metavar="FILE")
    def agent(node, config, kubeconfig, listen, control, metrics_port, log_level, log_file):
        """Watch the Kubernetes API and program this node's bridge (the DaemonSet's command)."""
        from sdn.k8s.connect import api_client
        from sdn.k8s.settings import SettingsError, load_settings
        from sdn.sources.kubernetes import KubernetesSource
        from sdn.switch.controller import Options, run
        from sdn.switch.core import NodeSpec
        try:
            settings = load_settings(config)
        except SettingsError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        try:
            client = api_client(kubeconfig)
        except Exception as e:  # noqa: BLE001 - kubeconfig problems of every kind
            click.echo(f"error: cannot configure the Kubernetes client: {e}", err=True)
            sys.exit(2)
        if settings.setup_node:
            from sdn.agent_setup import setup_node
            from sdn.node_setup import SetupError
            try:
                changes = setup_node(settings, client, node, listen or settings.openflow)
            except SetupError as e:
                click.echo(f"error: setting up node {node}: {e}", err=True)
                sys.exit(e.code)
            click.echo(f"node {node} set up: {'; '.join(changes) if changes else 'nothing to change'}", err=True)
        port = settings.metrics_port if metrics_port is None else metrics_port
        os.makedirs(os.path.dirname(control) or ".", exist_ok=True)
        opts = Options([], [NodeSpec(node, settings.ovsdb, settings.bridge)],
                       listen or settings.openflow, control, log_level=log_level, log_file=log_file,
                       enforce=settings.enforce,
                       source=KubernetesSource(settings, node, client, (settings.metrics_address, port)))
        sys.exit(run(opts))
    return agent
