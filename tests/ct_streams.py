"""Long-lived streams for the existing-connection tests, run inside pod network namespaces:

  python -m tests.ct_streams server                  TCP echo and UDP echo on :7000
  python -m tests.ct_streams client SERVER OUT.json  one TCP connection and one UDP flow (a fixed
                                                     source port: the same 5-tuple throughout),
                                                     a numbered line on each every 20 ms
  python -m tests.ct_streams sink OUT.json           UDP echo on :7001: what arrived, with send times
  python -m tests.ct_streams pulse SERVER            datagrams to :7001 every 5 ms, alternately from
                                                     a fixed source port and from a new one, each
                                                     stamped with its send time
  python -m tests.ct_streams denied SERVER OUT.json  new TCP connections and new UDP flows to :7000
                                                     every 20 ms, which policy denies: the times
                                                     any of them got through

The client runs until SIGTERM, then writes, per protocol, how many lines it sent, which came
back and when (CLOCK_MONOTONIC, the same clock in every network namespace), and the TCP error
if the connection failed."""

from __future__ import annotations

import json
import select
import signal
import socket
import sys
import threading
import time

PORT = 7000
UDP_SOURCE_PORT = 47000
INTERVAL = 0.02
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def server() -> None:
    def echo(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rf:
            try:
                for line in rf:
                    conn.sendall(line)
            except OSError:
                pass

    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", PORT))
    ls.listen(16)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind(("0.0.0.0", PORT))

    def udp_loop() -> None:
        while True:
            data, addr = us.recvfrom(64)
            us.sendto(data, addr)

    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    while not stop.is_set():
        conn, _ = ls.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def client(host: str, out: str) -> None:
    tcp = socket.create_connection((host, PORT), timeout=5)
    tcp.settimeout(None)  # the reader blocks; sends wait for room at most 0.5 s (send_line)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind(("0.0.0.0", UDP_SOURCE_PORT))
    udp.connect((host, PORT))
    udp.settimeout(0.2)
    got: dict[str, dict[int, float]] = {"tcp": {}, "udp": {}}
    sent = {"tcp": 0, "udp": 0}
    error = {"tcp": ""}

    def read_tcp() -> None:
        with tcp.makefile("rb") as rf:
            try:
                for line in rf:
                    got["tcp"][int(line)] = time.monotonic()
            except (OSError, ValueError) as e:
                error["tcp"] = f"{type(e).__name__}: {e}"

    def read_udp() -> None:
        while not stop.is_set():
            try:
                got["udp"][int(udp.recv(64))] = time.monotonic()
            except TimeoutError:
                continue
            except OSError:  # ICMP port unreachable while the server starts: try again
                time.sleep(INTERVAL)

    threading.Thread(target=read_tcp, daemon=True).start()
    threading.Thread(target=read_udp, daemon=True).start()
    def send_line(data: bytes) -> None:
        view = memoryview(data)
        while view:
            if not select.select([], [tcp], [], 0.5)[1]:
                raise TimeoutError("no room to send for 0.5 s")
            view = view[tcp.send(view):]

    print("ready", flush=True)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if not error["tcp"]:
                send_line(f"{n}\n".encode())
                sent["tcp"] = n
        except OSError as e:  # a full send buffer once the connection is cut
            error["tcp"] = error["tcp"] or f"{type(e).__name__}: {e}"
        try:
            udp.send(str(n).encode())
            sent["udp"] = n
        except OSError:
            pass
        time.sleep(INTERVAL)
    time.sleep(0.3)  # the last echoes
    with open(out, "w") as fh:
        json.dump({p: {"sent": sent[p], "echoed": sorted(got[p].items())} for p in got} | {"error": error["tcp"]},
                  fh)


SINK_PORT, PULSE_SOURCE_PORT = 7001, 47001


def sink(out: str) -> None:
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind(("0.0.0.0", SINK_PORT))
    us.settimeout(0.2)
    got: list[tuple[str, float, float]] = []
    print("ready", flush=True)
    while not stop.is_set():
        try:
            data, addr = us.recvfrom(64)
        except TimeoutError:
            continue
        us.sendto(data, addr)  # an answer makes the flow two-way: established in any conntrack
        kind, sent = data.decode().split()
        got.append((kind, float(sent), time.monotonic()))
    with open(out, "w") as fh:
        json.dump(got, fh)


def pulse(host: str) -> None:
    fixed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fixed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    fixed.bind(("0.0.0.0", PULSE_SOURCE_PORT))
    print("ready", flush=True)
    while not stop.is_set():
        fixed.sendto(f"fixed {time.monotonic()}".encode(), (host, SINK_PORT))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
            fresh.sendto(f"fresh {time.monotonic()}".encode(), (host, SINK_PORT))
        time.sleep(0.005)


def denied(host: str, out: str) -> None:
    passed: list[tuple[str, float]] = []
    tries = {"tcp": 0, "udp": 0}
    print("ready", flush=True)
    while not stop.is_set():
        t = time.monotonic()
        tries["tcp"] += 1
        try:
            socket.create_connection((host, PORT), timeout=0.1).close()
            passed.append(("tcp", t))
        except OSError:
            pass
        tries["udp"] += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as us:
            us.settimeout(0.05)
            try:
                us.sendto(b"0", (host, PORT))
                us.recv(64)
                passed.append(("udp", t))
            except OSError:
                pass
        time.sleep(INTERVAL)
    with open(out, "w") as fh:
        json.dump({"tries": tries, "passed": passed}, fh)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    elif sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "denied":
        denied(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "sink":
        sink(sys.argv[2])
    elif sys.argv[1] == "pulse":
        pulse(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
