"""The lab's pod server (sdn/lab/serve.py), run for real on loopback: HTTP clients get an HTTP
answer (so `curl http://POD_IP:80/` works in the lab), raw clients the pod's name, UDP an echo."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-m", "sdn.lab.serve", "--name", "x/a", "--tcp", str(tcp),
                             "--udp", str(udp)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("ready ")
    yield tcp, udp
    proc.terminate()
    proc.wait(timeout=5)


def test_http_clients_get_an_http_answer(server):
    tcp, _ = server
    with urllib.request.urlopen(f"http://127.0.0.1:{tcp}/", timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"x/a\n"
        assert resp.headers["Content-Type"] == "text/plain"
    req = urllib.request.Request(f"http://127.0.0.1:{tcp}/", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "4"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed here (urllib above is the HTTP client)")
def test_curl_works(server):
    out = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{server[0]}/"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout == "x/a\n", out.stderr


def test_raw_clients_get_the_name(server):
    tcp, udp = server
    with socket.create_connection(("127.0.0.1", tcp), timeout=5) as s:  # says nothing
        t0 = time.monotonic()
        assert s.recv(100) == b"x/a\n" and time.monotonic() - t0 < 2
    with socket.create_connection(("127.0.0.1", tcp), timeout=5) as s:  # a line that is not HTTP
        s.sendall(b"hello\n")
        assert s.recv(100) == b"x/a\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(b"ping", ("127.0.0.1", udp))
        assert u.recvfrom(100)[0] == b"ping"


def test_many_silent_clients_do_not_block_an_http_one(server):
    tcp, _ = server
    silent = [socket.create_connection(("127.0.0.1", tcp), timeout=5) for _ in range(20)]
    try:
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{tcp}/", timeout=5) as resp:
            assert resp.read() == b"x/a\n"
        assert time.monotonic() - t0 < 0.3  # answered before the silent ones' quiet period ends
    finally:
        for s in silent:
            s.close()
