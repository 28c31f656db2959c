"""A pod's server: one process serving every declared TCP and UDP containerPort of the pod.

    ip netns exec POD python -m sdn.lab.serve --name ns/pod --tcp 80,81 --udp 80,81

TCP: accepts each connection, writes "ns/pod\\n" and closes. UDP: echoes each datagram to
its sender. Prints "ready PID" on stdout once every socket is bound (the lab waits for it), then never
writes to stdout again; with --daemon the serving process is a forked child (PID), so the
lab's short-lived commands leave no zombie behind. Standard library only: it starts once per pod.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()] if text else []


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
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if key.data == "tcp":
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                try:
                    conn.setblocking(False)
                    conn.send(greeting)
                except OSError:
                    pass
                finally:
                    conn.close()
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
