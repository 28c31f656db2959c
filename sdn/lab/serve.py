"""A pod's server: one process serving every declared TCP and UDP containerPort of the pod.

    ip netns exec POD python -m sdn.lab.serve --name ns/pod --tcp 80,81 --udp 80,81

TCP: accepts each connection and answers with the pod's name: as an HTTP response when the
client sends an HTTP request (so `curl http://POD_IP:PORT/` works), else as "ns/pod\\n" once the
client has sent a line or been quiet for 0.3 s (probes that only connect, `nc`). UDP: echoes
each datagram to its sender. Prints "ready PID" on stdout once every socket is bound (the lab waits for it), then never
writes to stdout again; with --daemon the serving process is a forked child (PID), so the
lab's short-lived commands leave no zombie behind. Standard library only: it starts once per pod.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import socket
import sys
import time


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()] if text else []


QUIET = 0.3  # seconds a TCP client may stay silent before it gets the plain greeting
HTTP_REQUEST = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) \S+ HTTP/1\.[01]\r?\n")


def _answer(sel, waiting: dict, conn: socket.socket, greeting: bytes, got: bytes = b"") -> None:
    """Answer one TCP client and close: HTTP if it sent an HTTP request, else the greeting."""
    waiting.pop(conn, None)
    try:
        sel.unregister(conn)
    except (KeyError, ValueError):
        pass
    if HTTP_REQUEST.match(got):
        body = b"" if got.startswith(b"HEAD ") else greeting
        reply = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                 + str(len(greeting)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    else:
        reply = greeting
    try:
        conn.setblocking(True)
        conn.settimeout(1.0)
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdn.lab.serve")
    ap.add_argument("--name", default="pod")
    ap.add_argument("--tcp", default="", help="comma-separated TCP ports")
    ap.add_argument("--udp", default="", help="comma-separated UDP ports")
    ap.add_argument("--daemon", action="store_true",
                    help="fork once bound: the child serves (in a new session), the parent exits")
    args = ap.parse_args(argv)
    greeting = (args.name + "\n").encode()
    sel = selectors.DefaultSelector()
    for port in _ports(args.tcp):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(512)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "tcp")
    for port in _ports(args.udp):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, "udp")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.daemon:
        if os.fork():
            os._exit(0)
        os.setsid()
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    # the lab reads one line and goes: nothing more may be written to the pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    waiting: dict[socket.socket, tuple[float, bytes]] = {}  # accepted, not answered: deadline, bytes read
    while True:
        now = time.monotonic()
        for conn in [c for c, (deadline, _) in waiting.items() if deadline <= now]:
            _answer(sel, waiting, conn, greeting)
        timeout = min((d for d, _ in waiting.values()), default=now + 3600) - now
        for key, _ in sel.select(max(timeout, 0)):
            sock = key.fileobj
            if not isinstance(sock, socket.socket):  # (only sockets are registered)
                continue
            if key.data == "tcp":
                try:
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                except OSError:
                    continue
                waiting[conn] = (time.monotonic() + QUIET, b"")
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "conn":
                deadline, got = waiting.get(sock, (0.0, b""))
                try:
                    chunk = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                got += chunk
                if not chunk or b"\r\n\r\n" in got or len(got) > 16384 or (
                        b"\n" in got and not HTTP_REQUEST.match(got)):
                    _answer(sel, waiting, sock, greeting, got)
                else:
                    waiting[sock] = (deadline, got)
            else:
                for _ in range(64):
                    try:
                        data, peer = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    try:
                        sock.sendto(data, peer)
                    except OSError:
                        pass


if __name__ == "__main__":
    sys.exit(main())
