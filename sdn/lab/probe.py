"""Probe pods with real packets, all at once: TCP connects and UDP round trips.

One worker thread enters each source pod's network namespace in turn with setns(2) (network
namespaces are per thread on Linux, and a socket stays in the namespace it was made in),
makes that pod's sockets, and comes back; then one epoll loop drives every probe of the sweep
in parallel. So a whole 9x9 matrix on two ports and two protocols takes about one timeout.

- TCP: a non-blocking connect; allowed when it completes (a refusal -- RST -- proves the
  network let the connection through too: reported as "refused"). A second attempt from
  another source port starts at a third of the timeout, in case the first SYN was lost.
- UDP: a datagram to the port every 50 ms until the echo arrives or the timeout passes.

Source ports are chosen by the caller (a base per sweep, rotating): every probe is a new
5-tuple for the switches' connection tracking, so an old allowed connection never makes a
newly denied one pass as established. All sockets of a source pod share its source ports
(SO_REUSEADDR; the 5-tuples differ by destination).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from dataclasses import dataclass

from sdn.lab.netns_thread import join_netns, setns

ALLOWED, DENIED, REFUSED, ERROR = "allowed", "denied", "refused", "error"
TCP_PORTS_PER_SWEEP = 2  # first attempt, second attempt
PORTS_PER_SWEEP = 3  # + UDP

@dataclass(frozen=True)
class Target:
    """One probe: from the pod in `netns` to ip:port/protocol."""

    src: str  # pod key
    netns: str  # source pod's network namespace (name under /run/netns)
    dst: str  # pod key
    ip: str
    port: int
    protocol: str  # "TCP" or "UDP"


class _Probe:
    __slots__ = ("detail", "sent", "socks", "state", "target")

    def __init__(self, target: Target):
        self.target = target
        self.state: str | None = None
        self.socks: list[socket.socket] = []
        self.sent = 0.0
        self.detail = ""


def _tcp_socket(sport: int, ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setblocking(False)
    s.bind(("0.0.0.0", sport))
    rc = s.connect_ex((ip, port))
    if rc not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(rc, os.strerror(rc))
    return s


def probe(targets: list[Target], base_port: int, timeout: float = 0.5) -> dict[Target, str]:
    """Run every probe in parallel; returns target -> allowed|denied|refused|error.

    `base_port`: source ports base..base+2 (see State.next_probe_ports)."""
    result: dict[Target, str] = {}
    failure: list[BaseException] = []
    thread = threading.Thread(target=_run, args=(targets, base_port, timeout, result, failure),
                              name="sdn-lab-probe", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result


def _run(targets: list[Target], base: int, timeout: float, result: dict, failure: list) -> None:
    try:
        _sweep(targets, base, timeout, result)
    except BaseException as e:  # noqa: BLE001 - reported to the caller's thread
        failure.append(e)


def _sweep(targets: list[Target], base: int, timeout: float, result: dict) -> None:
    probes = [_Probe(t) for t in targets]
    by_ns: dict[str, list[_Probe]] = {}
    for p in probes:
        by_ns.setdefault(p.target.netns, []).append(p)
    ep = select.epoll()
    fdmap: dict[int, tuple[_Probe, socket.socket]] = {}
    udp_socks: dict[str, socket.socket] = {}  # netns -> the pod's one UDP socket
    udp_by_reply: dict[tuple[str, str, int], _Probe] = {}
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    tcp_second: list[tuple[_Probe, str]] = []
    try:
        for ns, group in by_ns.items():
            join_netns(ns)
            try:
                for p in group:
                    t = p.target
                    if t.protocol == "TCP":
                        try:
                            s = _tcp_socket(base, t.ip, t.port)
                        except OSError as e:
                            p.state, p.detail = ERROR, str(e)
                            continue
                        p.socks.append(s)
                        fdmap[s.fileno()] = (p, s)
                        ep.register(s.fileno(), select.EPOLLOUT)
                        tcp_second.append((p, ns))
                    elif t.protocol == "UDP":
                        u = udp_socks.get(ns)
                        if u is None:
                            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                            u.setblocking(False)
                            u.bind(("0.0.0.0", base + TCP_PORTS_PER_SWEEP))
                            udp_socks[ns] = u
                            ep.register(u.fileno(), select.EPOLLIN)
                        udp_by_reply[(ns, t.ip, t.port)] = p
                    else:
                        p.state, p.detail = ERROR, f"cannot probe {t.protocol}"
            finally:
                setns(own, "of this thread")
        start = time.monotonic()
        deadline = start + timeout
        second_at = start + timeout / 3
        second_done = False
        next_udp = start
        udp_ns = {id(u): ns for ns, u in udp_socks.items()}
        udp_fds = {u.fileno(): u for u in udp_socks.values()}
        pending = sum(1 for p in probes if p.state is None)
        while pending:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_udp:
                for (ns, ip, port), p in udp_by_reply.items():
                    if p.state is None:
                        try:
                            udp_socks[ns].sendto(b"sdn-lab-probe", (ip, port))
                        except OSError:
                            pass
                next_udp = now + 0.05
            if not second_done and now >= second_at:
                second_done = True
                for p, ns in tcp_second:
                    if p.state is not None:
                        continue
                    join_netns(ns)
                    try:
                        s = _tcp_socket(base + 1, p.target.ip, p.target.port)
                    except OSError:
                        continue
                    finally:
                        setns(own, "of this thread")
                    p.socks.append(s)
                    fdmap[s.fileno()] = (p, s)
                    ep.register(s.fileno(), select.EPOLLOUT)
            wait = min(deadline, next_udp, second_at if not second_done else deadline) - time.monotonic()
            for fd, _ev in ep.poll(max(wait, 0.001)):
                if fd in udp_fds:
                    u = udp_fds[fd]
                    ns = udp_ns[id(u)]
                    while True:
                        try:
                            _, (ip, port) = u.recvfrom(2048)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break  # ICMP errors surface here; the probe just waits
                        replied = udp_by_reply.get((ns, ip, port))
                        if replied is not None and replied.state is None:
                            replied.state = ALLOWED
                            pending -= 1
                    continue
                entry = fdmap.pop(fd, None)
                if entry is None:
                    continue
                p, s = entry
                ep.unregister(fd)
                if p.state is not None:
                    continue
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    p.state = ALLOWED
                    pending -= 1
                elif err == errno.ECONNREFUSED:
                    p.state = REFUSED
                    pending -= 1
                elif err in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    pass  # another attempt may still succeed; else: denied at the deadline
                else:
                    p.state, p.detail = ERROR, os.strerror(err)
                    pending -= 1
        for p in probes:
            result[p.target] = p.state or DENIED
    finally:
        os.close(own)
        ep.close()
        for p in probes:
            for s in p.socks:
                s.close()
        for u in udp_socks.values():
            u.close()
