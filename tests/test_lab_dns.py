"""Cluster DNS in the kubernetes lab: CoreDNS (built from the Go module proxy) behind the kube-dns
Service answers Service names; pods resolve them with their own resolv.conf (the one
`ip netns exec` mounts); DNS traffic is judged like any other (after kube-proxy's translation,
against the DNS pods), so a pod allowed only DNS and one Service reaches that Service by name
and nothing else. Real DNS queries, real TCP through kube-proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdn.lab import dns
from tests.e2e_cases import base_cluster
from tests.e2e_model import match, namespaces, netpol, pods_in, port, to
from tests.lab_harness import make_lab

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("lab-dns")]

CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close()\n"
           "except OSError as e:\n"
           "    print(e); sys.exit(1)\n")


@pytest.fixture(scope="module")
def lab():
    yield from make_lab("d", "host", kubernetes=True)


def sdnctl(lab, *args: str) -> subprocess.CompletedProcess:
    # a query the policy drops: one try of one second (glibc's RES_OPTIONS), not 5 s x 2 per name
    env = dict(os.environ, RES_OPTIONS="timeout:1 attempts:1")
    return subprocess.run([sys.executable, "-m", "sdn.cli", "lab", "--state-dir", str(lab.lab.state.dir), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def resolve(lab, pod: str, name: str) -> str | None:
    """The address `getent hosts NAME` gives inside the pod (its resolv.conf), or None."""
    out = sdnctl(lab, "exec", pod, "--", "getent", "hosts", name)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else None


def connect(lab, pod: str, host: str, port_: int) -> bool:
    """A TCP connection from inside the pod to HOST (a name resolved there, or an address)."""
    return sdnctl(lab, "exec", pod, "--", sys.executable, "-c", CONNECT, host, str(port_)).returncode == 0


def service(tmp_path: Path, lab, ns: str, name: str, selector: dict) -> Path:
    f = tmp_path / f"{ns}-{name}.json"
    f.write_text(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                             "spec": {"selector": selector,
                                      "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}}))
    assert sdnctl(lab, "kubectl", "apply", "-f", str(f)).returncode == 0
    return f


def test_the_cluster_dns_service_and_a_pods_resolv_conf(lab):
    cip = sdnctl(lab, "kubectl", "get", "svc", "-n", "kube-system", "kube-dns", "-o",
                 "jsonpath={.spec.clusterIP}").stdout.strip()
    assert cip == dns.cluster_dns_ip("10.96.0.0/16") == "10.96.0.10"
    conf = sdnctl(lab, "exec", "x/a", "--", "cat", "/etc/resolv.conf")
    assert conf.stdout.splitlines() == ["search x.svc.cluster.local svc.cluster.local cluster.local",
                                        "nameserver 10.96.0.10", "options ndots:5"], conf.stdout + conf.stderr
    # the DNS pods are the cluster's: real pods, but no row of the lab's matrix
    assert not [p for p in lab.lab.pods() if p["namespace"] == "kube-system"]
    # a pod that goes takes its resolv.conf along
    base = base_cluster()
    netns = next(p["netns"] for p in lab.lab.pods() if p["namespace"] == "z" and p["name"] == "c")
    assert (dns.NETNS_ETC / netns / "resolv.conf").exists()
    lab.goto([d for d in base if not (d["kind"] == "Pod" and d["metadata"] == {**d["metadata"], "namespace": "z",
                                                                                   "name": "c"})])
    try:
        assert not (dns.NETNS_ETC / netns).exists()
    finally:
        lab.goto(base)


def test_a_service_name_resolves_from_a_pod(lab, tmp_path):
    lab.goto(base_cluster())
    f = service(tmp_path, lab, "z", "web", {"pod": "a"})
    try:
        cip = sdnctl(lab, "kubectl", "get", "svc", "-n", "z", "web", "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
        deadline = time.monotonic() + 30  # CoreDNS learns the Service by watching
        while resolve(lab, "x/b", "web.z.svc.cluster.local") != cip:
            assert time.monotonic() < deadline, "web.z.svc.cluster.local never resolved"
            time.sleep(0.5)
        assert resolve(lab, "x/b", "web.z") == cip  # through the search list
        assert resolve(lab, "z/b", "web") == cip  # a pod of the Service's own namespace
        assert resolve(lab, "x/b", "nope.z.svc.cluster.local") is None
    finally:
        sdnctl(lab, "kubectl", "delete", "-f", str(f))


def test_dns_only_egress_plus_one_service_reaches_that_service_by_name_and_nothing_else(lab, tmp_path):
    base = base_cluster()
    lab.goto(base)
    web = service(tmp_path, lab, "z", "web", {"pod": "a"})
    other = service(tmp_path, lab, "y", "other", {"pod": "a"})
    try:
        deadline = time.monotonic() + 60  # names in CoreDNS, endpoints in every kube-proxy
        while not (connect(lab, "x/b", "web.z", 8080) and connect(lab, "x/b", "other.y", 8080)):
            assert time.monotonic() < deadline, "the Services never answered by name"
            time.sleep(0.5)
        dns_pods = pods_in(match(**{"kubernetes.io/metadata.name": "kube-system"}), match(**dns.APP_LABEL))
        only_dns = to(dns_pods, ports=[port(53, "UDP"), port(53, "TCP")])
        web_only = to(pods_in(match(ns="z"), match(pod="a")), ports=[port(80)])
        lab.goto(base + [netpol("x", "dns-and-web", match(pod="b"), egress=[only_dns, web_only], types=["Egress"])])
        assert connect(lab, "x/b", "web.z", 8080)  # by name: DNS allowed, the Service's backend allowed
        assert resolve(lab, "x/b", "other.y") is not None  # the other name resolves ...
        assert not connect(lab, "x/b", "other.y", 8080)  # ... but its backend y/a is not allowed
        y_a = next(p["ip"] for p in lab.lab.pods() if p["namespace"] == "y" and p["name"] == "a")
        assert not connect(lab, "x/b", y_a, 80)
        ext = lab.lab.status()["external"]
        assert not connect(lab, "x/b", ext["address"], ext["tcp_port"])
        assert connect(lab, "x/a", "other.y", 8080)  # the policy selects x/b only
        # without the DNS rule the name no longer resolves: DNS is judged like any traffic
        lab.goto(base + [netpol("x", "dns-and-web", match(pod="b"), egress=[web_only], types=["Egress"])])
        assert resolve(lab, "x/b", "web.z") is None
        assert not connect(lab, "x/b", "web.z", 8080)
        # and DNS allowed to other pods than the DNS pods does not help either
        elsewhere = to(namespaces(match(ns="y")), ports=[port(53, "UDP"), port(53, "TCP")])
        lab.goto(base + [netpol("x", "dns-and-web", match(pod="b"), egress=[elsewhere, web_only],
                                types=["Egress"])])
        assert resolve(lab, "x/b", "web.z") is None
    finally:
        sdnctl(lab, "kubectl", "delete", "-f", str(web), "-f", str(other))
        lab.goto(base)


def test_the_matrix_probes_a_service_and_the_external_host(lab, tmp_path):
    """`lab matrix --to-service NS/NAME --external`: every pod to the Service's ClusterIP and to
    the external host, measured with real packets and compared with the prediction (the
    translated connection for the Service, the egress rules on the real address outside)."""
    base = base_cluster()
    lab.goto(base)
    web = service(tmp_path, lab, "z", "web", {"pod": "a"})
    try:
        deadline = time.monotonic() + 60
        while not connect(lab, "x/a", "web.z", 8080):
            assert time.monotonic() < deadline, "the Service never answered"
            time.sleep(0.5)
        ext = lab.lab.status()["external"]
        lab.goto(base + [netpol("x", "dns-only", match(pod="a"), types=["Egress"], egress=[
            to(pods_in(match(**{"kubernetes.io/metadata.name": "kube-system"}), match(**dns.APP_LABEL)),
               ports=[port(53, "UDP"), port(53, "TCP")])])])
        out = sdnctl(lab, "matrix", "--check", "--to-service", "z/web", "--external", "--port", "80",
                     "--port", str(ext["udp_port"]), "--protocol", "TCP", "--protocol", "UDP", "-o", "json")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        doc = json.loads(out.stdout)
        assert [c["name"] for c in doc["columns"]] == ["svc:z/web", "external"]
        assert doc["columns"][1]["address"] == ext["address"]
        tcp80 = next(m for m in doc["matrices"] if (m["port"], m["protocol"]) == (80, "TCP"))
        cols = tcp80["columns"]
        assert cols["ports"] == {"svc:z/web": 8080, "external": ext["tcp_port"]}
        assert cols["measured"]["x/a"] == {"svc:z/web": "denied", "external": "denied"}
        assert cols["measured"]["x/b"] == {"svc:z/web": "allowed", "external": "allowed"}
        assert cols["predicted"]["x/a"] == {"svc:z/web": False, "external": False} and not cols["differences"]
        udp = next(m for m in doc["matrices"] if (m["port"], m["protocol"]) == (ext["udp_port"], "UDP"))
        assert udp["columns"]["measured"]["x/b"] == {"svc:z/web": "-", "external": "allowed"}
        text = sdnctl(lab, "matrix", "--check", "--to-service", "z/web", "--external")
        assert text.returncode == 0 and "to other destinations (svc:z/web port 8080, external port 80)" in text.stdout
        missing = sdnctl(lab, "matrix", "--to-service", "z/nope")
        assert missing.returncode == 2 and "no Service nope in namespace z" in missing.stderr
    finally:
        sdnctl(lab, "kubectl", "delete", "-f", str(web))
        lab.goto(base)


def test_the_agents_set_up_their_nodes_and_find_nothing_to_change(lab):
    """The agents run deploy/'s settings (setupNode: true): at start each set up its node
    (sdn/node_setup.py) and found the bridge, tunnel and gateway port the lab made with the
    same code already right: no change, no controller reconnection."""
    for node, ctl in lab.lab.state.load()["controllers"].items():
        text = Path(ctl["log"]).read_text()
        assert f"node {node} set up: nothing to change" in text, text[-2000:]


def test_live_trace_takes_node_and_outside_addresses(lab):
    """`sdnctl trace --live` on the real bridges with a node's or an outside host's address:
    the pod's own node enters by the gateway port and is always allowed, another node's address
    by the tunnel and is judged; a pod's connection outside leaves by the gateway; each flow hit
    on the way named by its role."""
    lab.goto(base_cluster())
    record = lab.lab.state.load()
    env = dict(os.environ, SDN_LAB_DIR=str(lab.lab.state.dir))
    pods = {f"{p['namespace']}/{p['name']}": p for p in lab.lab.pods()}
    node = record["nodes"][pods["x/a"]["node"]]["address"]
    other = next(i["address"] for n, i in record["nodes"].items() if n != pods["x/a"]["node"])
    ext = record["external"]["address"]

    def trace(src: str, dst: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "sdn.cli", "trace", "--live", "--from", src, "--to", dst,
                              "--port", "80", "-o", "json"], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    def roles(doc: dict) -> list[str]:
        return [s["role"] for h in doc["hops"] for s in h["steps"] if s.get("role")]
    lab.goto(base_cluster() + [netpol("x", "deny", match())])
    try:
        own = trace(node, "x/a")
        assert (own["verdict"], own["agree"]) == ("allowed", True)
        assert "gateway: from the node itself (always allowed)" in roles(own)
        judged = trace(other, "x/a")
        assert (judged["verdict"], judged["agree"]) == ("denied", True)
        out = trace("x/a", ext)
        assert (out["verdict"], out["agree"]) == ("allowed", True)
        assert roles(out)[-1] == "to the gateway: the node, or outside the cluster (masqueraded by the node)"
    finally:
        lab.goto(base_cluster())
