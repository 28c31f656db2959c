"""Traffic for the make-before-break test, run inside pod network namespaces:

  python -m tests.netpeer server OUT.json            TCP echo on :5000, UDP sink on :5001
  python -m tests.netpeer client SERVER OUT.json     one long-lived TCP connection sending numbered
                                                     lines (each echoed), plus numbered UDP datagrams,
                                                     each from a new source port (a new connection)
  python -m tests.netpeer denied SERVER OUT.json     UDP datagrams and TCP connection attempts that
                                                     policy denies

Each runs until SIGTERM, then writes what it saw to OUT.json."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time

TCP_PORT, UDP_PORT = 5000, 5001
INTERVAL = 0.002
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def server(out: str) -> None:
    tcp_peers: list[str] = []
    udp: dict[str, list[int]] = {}
    lines = {"n": 0}

    def echo(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rf:
            for line in rf:
                conn.sendall(line)
                lines["n"] += 1

    def accept_loop(ls: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, addr = ls.accept()
            except TimeoutError:
                continue
            tcp_peers.append(addr[0])
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", TCP_PORT))
    ls.listen(16)
    ls.settimeout(0.2)
    threading.Thread(target=accept_loop, args=(ls,), daemon=True).start()
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind(("0.0.0.0", UDP_PORT))
    us.settimeout(0.2)
    print("ready", flush=True)
    while not stop.is_set():
        try:
            data, addr = us.recvfrom(64)
        except TimeoutError:
            continue
        udp.setdefault(addr[0], []).append(int(data))
    summary = {"tcp_peers": tcp_peers, "echoed_lines": lines["n"],
               "udp": {ip: {"count": len(s), "max": max(s), "missing": sorted(set(range(1, max(s) + 1)) - set(s))[:50]}
                       for ip, s in udp.items()}}
    with open(out, "w") as fh:
        json.dump(summary, fh)


def client(host: str, out: str) -> None:
    sock = socket.create_connection((host, TCP_PORT), timeout=5)
    sock.settimeout(5)
    rf = sock.makefile("rb")
    n = errors = 0
    worst = 0.0
    last_ok = time.monotonic()
    longest_gap = 0.0
    error = ""
    print("ready", flush=True)
    while not stop.is_set():
        n += 1
        t0 = time.monotonic()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as us:  # a new source port: a new
                us.sendto(str(n).encode(), (host, UDP_PORT))  # connection, judged by the rules
            sock.sendall(f"{n}\n".encode())
            line = rf.readline()
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
            break
        now = time.monotonic()
        if line != f"{n}\n".encode():
            errors += 1
            error = f"expected {n}, got {line!r}"
            break
        worst = max(worst, now - t0)
        longest_gap = max(longest_gap, now - last_ok)
        last_ok = now
        time.sleep(INTERVAL)
    with open(out, "w") as fh:
        json.dump({"sent": n, "errors": errors, "error": error, "worst_rtt": worst, "longest_gap": longest_gap}, fh)


def denied(host: str, out: str) -> None:
    counts = {"udp_sent": 0, "tcp_attempts": 0, "tcp_connected": 0}

    def connect_loop() -> None:
        while not stop.is_set():
            counts["tcp_attempts"] += 1
            try:
                socket.create_connection((host, TCP_PORT), timeout=0.2).close()
                counts["tcp_connected"] += 1
            except OSError:
                pass
            time.sleep(0.02)

    threading.Thread(target=connect_loop, daemon=True).start()
    print("ready", flush=True)
    while not stop.is_set():
        counts["udp_sent"] += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as us:
            us.sendto(str(counts["udp_sent"]).encode(), (host, UDP_PORT))
        time.sleep(INTERVAL)
    with open(out, "w") as fh:
        json.dump(counts, fh)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        server(sys.argv[2])
    elif mode == "client":
        client(sys.argv[2], sys.argv[3])
    elif mode == "denied":
        denied(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {mode}")
