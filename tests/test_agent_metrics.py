"""The agent's Prometheus metrics say what they count: `sdn_flows` the flows installed on the
bridge per table, `sdn_desired_flows` the program's, `sdn_switch_connected` and
`sdn_ovsdb_connected` the connections per bridge, `sdn_watch_restarts_total` only watches
opened again (not the first), `sdn_watch_requests_total` all of them. A real `sdnctl agent`
against a real kube-apiserver (as deploy/'s ServiceAccount) and a private ovs-vswitchd."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.flow import parse_flows
from tests.conftest import OvsFactory
from tests.e2e_model import base_cluster, node_of, pod_ip, pod_keys
from tests.k8s_support import wait_until
from tests.kube_support import apply_deploy, control_plane, load
from tests.switch_support import node_bridge

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("agent-metrics")]

NODE, BRIDGE = "node-1", "br-sdn"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}  # not serving yet
    out = {}
    for m in re.finditer(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", text, re.M):
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(ms: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in ms.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    factory = OvsFactory(tmp_path_factory)
    work = tmp_path_factory.mktemp("agent")
    proc = None
    with control_plane(tmp_path_factory.mktemp("cp")) as server:
        try:
            apply_deploy(server)
            ovs = node_bridge(factory, BRIDGE, 0x5D0102, {k: pod_ip(k) for k in pod_keys() if node_of(k) == NODE})
            deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "deny", "namespace": "x"}, "spec": {"podSelector": {}}}
            load(server, base_cluster() + [deny])
            kubeconfig = server.service_account_kubeconfig("kube-system", "sdn-agent", work / "kubeconfig")
            port = free_port()
            (work / "sdn.yaml").write_text(yaml.safe_dump({
                "bridge": BRIDGE, "ovsdb": ovs.db_remote, "openflow": f"unix:{work}/of.sock",
                "metricsAddress": "127.0.0.1", "metricsPort": port, "watchTimeoutSeconds": 30, "resyncSeconds": 600}))
            with open(work / "agent.log", "w") as log:
                proc = subprocess.Popen([sys.executable, "-m", "sdn.cli", "agent", "--node", NODE,
                                         "--kubeconfig", str(kubeconfig), "--config", str(work / "sdn.yaml"),
                                         "--control", str(work / "ctl.sock")],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            assert wait_until(lambda: total(metrics(port), "sdn_ready") == 1.0, 90, 0.2), \
                (work / "agent.log").read_text()[-2000:]
            yield ovs, server, port
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
            factory.close()


def test_flow_gauges_count_installed_and_desired_flows(agent):
    ovs, _, port = agent
    installed = parse_flows(ovs.dump_flows(BRIDGE))
    assert wait_until(lambda: total(metrics(port), "sdn_flows", bridge=BRIDGE) == len(installed), 20, 0.2)
    ms = metrics(port)
    per_table = {dict(ls)["table"]: v for (n, ls), v in ms.items() if n == "sdn_flows"}
    from flows import pipeline as P
    want = {}
    for f in installed:
        want[P.BY_ID[f.table].name] = want.get(P.BY_ID[f.table].name, 0) + 1
    assert per_table == want
    assert total(ms, "sdn_desired_flows", bridge=BRIDGE) == len(installed)  # in sync
    assert total(ms, "sdn_switch_connected", bridge=BRIDGE) == 1.0
    assert total(ms, "sdn_ovsdb_connected", bridge=BRIDGE) == 1.0


def test_watch_restarts_count_only_restarts(agent):
    _, server, port = agent
    ms = metrics(port)
    resources = {dict(ls)["resource"] for (n, ls), v in ms.items() if n == "sdn_watch_requests_total"}
    assert {"pods", "namespaces", "nodes", "networkpolicies.networking.k8s.io"} <= resources
    for res in resources:
        assert total(ms, "sdn_watch_restarts_total", resource=res) == total(ms, "sdn_watch_requests_total",
                                                                          resource=res) - 1
    before = {res: total(ms, "sdn_watch_restarts_total", resource=res) for res in resources}
    with server.outage():  # kube-apiserver restarted: every watch is cut and opened again
        pass
    assert wait_until(lambda: all(total(metrics(port), "sdn_watch_restarts_total", resource=r) > before[r]
                                  for r in resources), 30, 0.2)
