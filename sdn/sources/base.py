"""The protocol between an input and the controller core.

A `Source` turns some input into whole `Cluster` values and hands them to a `Sink` (the
controller core, sdn.switch.core.ControllerCore). A source never hands over a cluster it
cannot vouch for: a file still being written, a file that does not parse, or an input that
suddenly lost every policy or every pod is reported with `Sink.input_failed` instead, and the
sink keeps what it has installed (never fail open).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sdn.policy.model import Cluster


class Sink(Protocol):
    """What a source feeds: the controller core."""

    generation: int  # of the last compile handed to the bridges
    compile_error: str  # why the last cluster handed over did not compile ("" when it did)

    def set_cluster(self, cluster: Cluster, upserts: Iterable[object] = (), deletes: Iterable[object] = (),
                    full: bool = False) -> int:
        """Compile `cluster` (incrementally from `upserts`/`deletes` unless `full`); returns
        the generation to wait for."""
        ...

    def input_failed(self, source: str, error: str) -> int:
        """The input named `source` could not be used: keep the installed tables, show
        `error` (log, status); returns the current generation."""
        ...


class Source(Protocol):
    """An input of the controller. `start` is called once with the sink, from the main
    thread; `poll` on every turn of the controller's main loop (a push source does nothing
    there); `reload` when asked through the control API; `stop` at shutdown."""

    name: str

    def start(self, sink: Sink) -> None: ...

    def poll(self) -> None: ...

    def reload(self) -> dict:
        """Read the input again now -> {"generation": G, "error": "..."}."""
        ...

    def stop(self) -> None: ...

    def status(self) -> dict:
        """What `sdnctl status` shows of this input (kind, paths, last error, refusals)."""
        ...
