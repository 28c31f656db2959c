"""Long-lived streams between lab pods (tests/ct_streams.py) and what they say about a change:
lines lost while a connection was allowed, and how long after a change that denies it the last
line came back (the cut latency)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.e2e_model import (
    NODES,
    from_,
    match,
    namespace_doc,
    netpol,
    node_doc,
    pod_doc,
    pods,
    port,
)

CLIENT, SERVER, OTHER = "x/a", "x/b", "x/c"  # x/a and x/c on node-1, x/b on node-2
STREAM_PORT = 7000


def cluster() -> list[dict]:
    """Two nodes, one namespace, three pods (the client and the server on different nodes)."""
    return [node_doc(n) for n in NODES] + [namespace_doc("x")] + [pod_doc(k) for k in (CLIENT, SERVER, OTHER)]


def allow(variant: int = 0) -> dict:
    """x/serve: the client may reach the server's stream port, TCP and UDP. Variants 0 and 1
    mean the same (written differently); variant 2 adds a rule."""
    ports = [port(STREAM_PORT), port(STREAM_PORT, "UDP")]
    rules = [from_(pods(match(pod="a")), ports=ports if variant != 1 else ports[::-1])]
    if variant == 2:
        rules.append(from_(pods(match(pod="c")), ports=[port(8080)]))
    return netpol("x", "serve", match(pod="b"), ingress=rules)


def deny() -> dict:
    """x/serve again, now isolating the server with no rule: nothing may reach it."""
    return netpol("x", "serve", match(pod="b"), ingress=[])


def isolate() -> dict:
    """x/isolate: the server ingress-isolated with no rule."""
    return netpol("x", "isolate", match(pod="b"), ingress=[])


def deny_egress() -> dict:
    """x/out: the client may send nowhere."""
    return netpol("x", "out", match(pod="a"), egress=[], types=["Egress"])


@dataclass
class Outcome:
    sent: dict[str, int]
    echoed: dict[str, list[tuple[int, float]]]
    error: str

    def lost_before(self, proto: str, t: float) -> list[int]:
        """Lines sent before time t (by the echo times of their neighbours) never echoed."""
        got = {n for n, _ in self.echoed[proto]}
        last = max((n for n, when in self.echoed[proto] if when < t), default=0)
        return [n for n in range(1, last + 1) if n not in got]

    def last_echo(self, proto: str) -> float:
        return max((when for _, when in self.echoed[proto]), default=0.0)

    def echoes_after(self, proto: str, t: float) -> int:
        return sum(1 for _, when in self.echoed[proto] if when > t)


class Streams:
    """The stream server in SERVER's namespace and the client in CLIENT's, for a with-block."""

    def __init__(self, lab, client: str = CLIENT, server: str = SERVER):
        pods_ = {f"{p['namespace']}/{p['name']}": p for p in lab.pods()}
        self.client_ns, self.server_ns = pods_[client]["netns"], pods_[server]["netns"]
        self.server_ip = pods_[server]["ip"]
        self.dir = Path(tempfile.mkdtemp(prefix="sdn-ct-"))
        self.procs: list[subprocess.Popen] = []

    def _start(self, netns: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "tests.ct_streams", *args],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        self.procs.append(p)
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"tests.ct_streams {args[0]} did not start in {netns}")
        return p

    def __enter__(self) -> Streams:
        return self

    def start_streams(self) -> None:
        self._start(self.server_ns, "server")
        self.client = self._start(self.client_ns, "client", self.server_ip, str(self.dir / "client.json"))

    def start_pulse(self) -> None:
        """A UDP sink on the server and datagrams to it from the client (tests.ct_streams)."""
        self.sink = self._start(self.server_ns, "sink", str(self.dir / "sink.json"))
        self._start(self.client_ns, "pulse", self.server_ip)

    def stop_pulse(self) -> list[tuple[str, float, float]]:
        """(kind, sent, received) of every datagram the sink got."""
        for p in self.procs[-1:] + [self.sink]:
            p.terminate()
            p.wait(timeout=15)
        return [tuple(x) for x in json.loads((self.dir / "sink.json").read_text())]

    def start_denied(self, prober: str, lab) -> None:
        """New connections from `prober` to the server's stream port, which policy denies."""
        netns = {f"{p['namespace']}/{p['name']}": p["netns"] for p in lab.pods()}[prober]
        self.prober = self._start(netns, "denied", self.server_ip, str(self.dir / "denied.json"))

    def stop_denied(self) -> dict:
        """{"tries": {proto: n}, "passed": [(proto, time), ...]}."""
        self.prober.terminate()
        self.prober.wait(timeout=15)
        return json.loads((self.dir / "denied.json").read_text())

    def stop(self) -> Outcome:
        self.client.terminate()
        self.client.wait(timeout=15)
        doc = json.loads((self.dir / "client.json").read_text())
        return Outcome({p: doc[p]["sent"] for p in ("tcp", "udp")},
                       {p: [tuple(x) for x in doc[p]["echoed"]] for p in ("tcp", "udp")}, doc["error"])

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        for f in self.dir.iterdir():
            f.unlink()
        self.dir.rmdir()
