"""Probe from inside a pod (run by `sdnvm matrix` with kubectl exec; the example pods mount it
from their ConfigMap next to sdn/lab/serve.py). Standard library only: any python3 image.

    python3 pod_probe.py --timeout 1 '[["10.244.1.12", 80, "TCP"], ["10.244.2.10", 81, "UDP"]]'

prints one JSON list with a state per target, in order:
  allowed  TCP connected / UDP answered (serve.py echoes)
  refused  TCP reset / ICMP port unreachable: the network let it through, nothing listens
  denied   no answer within the timeout
  error    anything else (the message goes to stderr)
All targets are probed at once: TCP connects in parallel, UDP datagrams re-sent every 50 ms
until the echo comes back.
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import sys
import time

RESEND = 0.05
PAYLOAD = b"sdn-lab probe\n"


def probe(targets: list[tuple[str, int, str]], timeout: float) -> list[str]:
    state = ["denied"] * len(targets)
    sel = selectors.DefaultSelector()
    udp: dict[int, socket.socket] = {}
    for i, (ip, port, proto) in enumerate(targets):
        proto = proto.upper()
        try:
            if proto == "TCP":
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((ip, int(port)))
                if err in (0, errno.EINPROGRESS):
                    sel.register(s, selectors.EVENT_WRITE, i)
                    continue
                s.close()
                state[i] = "refused" if err == errno.ECONNREFUSED else "error"
                if state[i] == "error":
                    print(f"target {i} {ip}:{port}/TCP: {errno.errorcode.get(err, err)}", file=sys.stderr)
            elif proto == "UDP":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                s.connect((ip, int(port)))
                s.send(PAYLOAD)
                sel.register(s, selectors.EVENT_READ, i)
                udp[i] = s
            else:
                state[i] = "error"
                print(f"target {i}: protocol {proto} cannot be probed (TCP and UDP only)", file=sys.stderr)
        except OSError as e:
            state[i] = "refused" if e.errno == errno.ECONNREFUSED else "error"
            if state[i] == "error":
                print(f"target {i} {ip}:{port}/{proto}: {e}", file=sys.stderr)

    def done(i: int, s: socket.socket, result: str) -> None:
        state[i] = result
        sel.unregister(s)
        udp.pop(i, None)
        s.close()

    start = time.monotonic()
    deadline = start + timeout
    resend = start + RESEND
    while sel.get_map():
        now = time.monotonic()
        if now >= deadline:
            break
        for key, _ in sel.select(max(0.0, min(deadline, resend) - now)):
            i, s = key.data, key.fileobj
            if targets[i][2].upper() == "TCP":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                done(i, s, "allowed" if err == 0 else "refused" if err == errno.ECONNREFUSED else "error")
                continue
            try:
                s.recv(65535)
                done(i, s, "allowed")
            except (BlockingIOError, InterruptedError):
                pass
            except ConnectionRefusedError:
                done(i, s, "refused")
            except OSError as e:
                print(f"target {i}: {e}", file=sys.stderr)
                done(i, s, "error")
        if time.monotonic() >= resend:
            for i, s in list(udp.items()):
                try:
                    s.send(PAYLOAD)
                except ConnectionRefusedError:
                    done(i, s, "refused")
                except OSError:
                    pass
            resend += RESEND
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pod_probe.py")
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("targets", help='JSON: [[ip, port, "TCP"|"UDP"], ...]')
    args = ap.parse_args(argv)
    targets = [(str(ip), int(port), str(proto)) for ip, port, proto in json.loads(args.targets)]
    print(json.dumps(probe(targets, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
