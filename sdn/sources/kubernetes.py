"""The Kubernetes API as a source: the node agent's informers (sdn.agent.Agent) feed the
sink batch by batch, and its HTTP endpoint serves metrics, health and status.

The informers hand over nothing before every resource has been listed once, so the sink
never sees a partial view; while the API server is unreachable they hand over nothing at all,
and the bridge keeps its tables. A batch that does not compile is shown in /status
(`last_error`) and the bridge keeps its tables.
"""

from __future__ import annotations

import logging
from typing import Any

from sdn.k8s.settings import Settings
from sdn.sources.base import Sink

log = logging.getLogger("sdn.sources.kubernetes")


class KubernetesSource:
    """List + watch of the Kubernetes API for one node (the DaemonSet's input)."""

    name = "kubernetes"

    def __init__(self, settings: Settings, node: str, api_client: Any, http: tuple[str, int] | None,
                 informer_options: dict | None = None):
        self.settings, self.node, self.api_client, self.http = settings, node, api_client, http
        self.informer_options = informer_options
        self.agent: Any = None
        self._sink: Sink | None = None
        self._server: Any = None

    def start(self, sink: Sink) -> None:
        from sdn.agent import Agent, serve_http  # the agent room sits on top of this one
        self._sink = sink
        self.agent = Agent(self.settings, self.node, self.api_client, sink, self.informer_options).start()
        if self.http:
            self._server = serve_http(self.agent, *self.http)
            log.info("metrics, health and status on http://%s:%d/", *self._server.server_address[:2])

    def poll(self) -> None:
        pass  # events arrive on the informers' own thread

    def reload(self) -> dict:
        """Nothing to read again: the informers follow the API; the current generation."""
        return {"generation": self._sink.generation if self._sink is not None else 0, "error": ""}

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        if self._server is not None:
            self._server.shutdown()

    def status(self) -> dict:
        out: dict[str, Any] = {"kind": self.name, "node": self.node, "error": ""}
        if self.agent is not None:
            out["api_synced"] = self.agent.state.ready
            out["error"] = self.agent.api_error()
        return out
