"""The upstream e2e NetworkPolicy suite through a real Kubernetes control plane
(`sdnctl lab up --kubernetes`): every object is written to kube-apiserver, pods are placed by
kube-scheduler where they name no node and started by each node's kubelet stand-in through the
installed CNI plugin, and each node's agent (deploy/'s DaemonSet command, its ServiceAccount)
learns everything by watching. Real TCP and UDP between the nodes; SCTP through ofproto/trace.
extensions/v1beta1 cases stay in file mode: no current API server serves that version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e_cases import ALL_CASES, base_cluster, replay
from tests.lab_harness import (
    check_external,
    check_new_pods,
    check_node_traffic,
    make_lab,
    replay_case,
)

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("lab-k8s")]


def _uses_beta(case) -> bool:
    return any(d.get("apiVersion") == "extensions/v1beta1" for _, _, docs in replay(case) for d in docs)


K8S_CASES = [c for c in ALL_CASES if not _uses_beta(c)]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def lab():
    yield from make_lab("k", "host", kubernetes=True)


def test_the_beta_cases_are_the_only_ones_left_out():
    left = [c.name for c in ALL_CASES if c not in K8S_CASES]
    assert left and all("beta" in n.lower() or "1.3" in n or "legacy" in n.lower() for n in left), left


@pytest.mark.parametrize("case", K8S_CASES, ids=lambda c: c.name)
def test_e2e_case(lab, case):
    replay_case(lab, case)


def test_new_pods_labels_and_deletes(lab):
    check_new_pods(lab)


def sdnctl(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdn.cli", "lab", "--state-dir", str(lab.lab.state.dir), *args],
                          capture_output=True, text=True, timeout=120)


def test_status_shows_the_control_plane_nodes_and_agents(lab):
    out = sdnctl(lab, "status", "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    st = json.loads(out.stdout)
    cp = st["kubernetes"]["control_plane"]
    assert cp["version"] == "v1.36.3"
    assert all(c["running"] and c["healthy"] for c in cp["components"].values()), cp
    assert set(cp["components"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    for node in ("node-1", "node-2"):
        assert st["kubernetes"]["nodes"][node] == {"kubelet": st["kubernetes"]["nodes"][node]["kubelet"],
                                                   "kube_proxy": st["kubernetes"]["nodes"][node]["kube_proxy"]}
        assert all(d["running"] for d in st["kubernetes"]["nodes"][node].values())
    assert {n["name"] for n in st["nodes"]} == {"node-1", "node-2"}
    assert all(n["agent"]["running"] and n["agent"]["in_sync"] for n in st["nodes"])
    text = sdnctl(lab, "status").stdout
    assert "control plane v1.36.3" in text and "kube-scheduler healthy" in text and "kube-proxy running" in text


def test_agents_run_as_the_daemonset_with_its_service_account(lab):
    record = lab.lab.state.load()
    kubeconfig = lab.lab.state.dir / "controlplane" / "sdn-agent.kubeconfig"
    cfg = yaml.safe_load(kubeconfig.read_text())
    assert cfg["users"][0]["name"] == "system:serviceaccount:kube-system:sdn-agent"
    assert set(cfg["users"][0]["user"]) == {"token"}  # never an admin certificate
    for node in ("node-1", "node-2"):
        argv = record["controllers"][node]["argv"]
        assert argv[argv.index("agent"):argv.index("agent") + 5] == ["agent", "--node", node, "--config",
                                                                       str(lab.lab.state.dir / "nodes" / node / "etc/sdn/sdn.yaml")]
        assert f"NODE_NAME={node}" in argv and str(kubeconfig) in argv
        settings = yaml.safe_load((lab.lab.state.dir / "nodes" / node / "etc/sdn/sdn.yaml").read_text())
        assert settings["bridge"] == "br-sdn" and settings["podCIDR"] == "node"  # deploy/configmap.yaml's
    who = sdnctl(lab, "kubectl", "auth", "can-i", "list", "networkpolicies",
                 "--as=system:serviceaccount:kube-system:sdn-agent", "-A")
    assert who.returncode == 0 and who.stdout.strip() == "yes"
    cannot = sdnctl(lab, "kubectl", "auth", "can-i", "delete", "pods",
                    "--as=system:serviceaccount:kube-system:sdn-agent", "-A")
    assert cannot.returncode == 1 and cannot.stdout.strip() == "no"  # exit status passed through


def test_changes_made_with_kubectl_are_realized(lab, tmp_path):
    lab.goto(base_cluster())
    deny = tmp_path / "deny.json"  # JSON: kubectl's YAML reads an unquoted y as true
    deny.write_text(json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                    "metadata": {"name": "deny-all", "namespace": "y"},
                                    "spec": {"podSelector": {}}}))
    out = sdnctl(lab, "kubectl", "apply", "-f", str(deny))
    assert out.returncode == 0 and "created" in out.stdout, out.stderr
    try:
        kube = lab.lab.kube()
        kube.settle(60)  # the agents' own status: every object seen and realized
        doc = lab.lab.matrix([(80, "TCP")])
        m = doc["matrices"][0]
        assert m["agree"], m["differences"]
        assert not any(v == "allowed" for s, row in m["measured"].items() for d, v in row.items()
                       if d.startswith("y/") and s != d)
        assert sdnctl(lab, "kubectl", "label", "pod", "-n", "x", "a", "extra=yes").returncode == 0
        kube.settle(60)
        assert lab.lab.matrix([(80, "TCP")])["matrices"][0]["agree"]
    finally:
        sdnctl(lab, "kubectl", "delete", "-f", str(deny))
        sdnctl(lab, "kubectl", "label", "pod", "-n", "x", "a", "extra-")
        lab.lab.kube().settle(60)


def test_beta_policies_are_refused_and_change_nothing(lab, tmp_path):
    lab.goto(base_cluster())
    f = tmp_path / "mixed.yaml"
    f.write_text(yaml.safe_dump_all([
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "v1", "namespace": "x"},
         "spec": {"podSelector": {}}},
        {"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy", "metadata": {"name": "old", "namespace": "x"},
         "spec": {"podSelector": {}}}]))
    out = sdnctl(lab, "apply", "-f", str(f))
    assert out.returncode == 2
    assert "extensions/v1beta1" in out.stderr and "NetworkPolicy x/old" in out.stderr and "nothing was changed" in out.stderr
    assert "NotFound" in sdnctl(lab, "kubectl", "get", "networkpolicy", "-n", "x", "v1").stderr


def test_a_component_that_does_not_start_fails_up_and_leaves_nothing(tmp_path, monkeypatch):
    """A broken kube-scheduler build (it exits at once): `lab up --kubernetes` says so with the
    scheduler's last log lines, exit 1, and removes everything it made."""
    from sdn.k8s.binaries import bin_dir
    from sdn.ovs.instance import netns_list
    broken = tmp_path / "bin"
    broken.mkdir()
    for f in bin_dir().iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "kube-scheduler").unlink()
    (broken / "kube-scheduler").write_text("#!/bin/sh\necho 'kube-scheduler: this build is broken' >&2\nexit 3\n")
    (broken / "kube-scheduler").chmod(0o755)
    state = f"/run/sdnlab-t{os.getpid()}b"
    env = dict(os.environ, SDN_K8S_BIN=str(broken))
    out = subprocess.run([sys.executable, "-m", "sdn.cli", "lab", "--state-dir", state, "up", "--kubernetes",
                          "-f", "examples/"], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert out.returncode == 1
    assert "kube-scheduler exited while starting" in out.stderr and "this build is broken" in out.stderr, out.stderr
    from sdn.lab.state import prefix_for
    prefix = prefix_for(state)
    assert not [n for n in netns_list() if n.startswith(prefix)]
    assert not os.path.exists(state)
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and state.encode() in _cmdline(p)]


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


def test_the_examples_are_valid_for_kubectl(lab):
    """kubectl reads examples/ (its YAML 1.1 would take an unquoted namespace y for true)."""
    out = sdnctl(lab, "kubectl", "create", "--dry-run=client", "-o", "name", "-f", str(REPO / "examples"))
    assert out.returncode == 0, out.stderr
    assert "networkpolicy.networking.k8s.io/allow-web" in out.stdout


def test_exec_runs_a_command_in_a_pod(lab):
    pods = {f"{p['namespace']}/{p['name']}": p for p in lab.lab.pods()}
    out = sdnctl(lab, "exec", "x/a", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert out.returncode == 0 and pods["x/a"]["ip"] in out.stdout, out.stderr
    assert sdnctl(lab, "exec", "x/a", "--", "sh", "-c", "exit 7").returncode == 7
    missing = sdnctl(lab, "exec", "x/nope", "--", "true")
    assert missing.returncode == 2 and "no pod x/nope" in missing.stderr


def test_up_refuses_beta_policies_before_making_anything(tmp_path):
    f = tmp_path / "beta.yaml"
    f.write_text((REPO / "examples" / "cluster.yaml").read_text() + "\n---\n" + yaml.safe_dump(
        {"apiVersion": "extensions/v1beta1", "kind": "NetworkPolicy", "metadata": {"name": "old", "namespace": "x"},
         "spec": {"podSelector": {}}}))
    state = f"/run/sdnlab-t{os.getpid()}c"
    out = subprocess.run([sys.executable, "-m", "sdn.cli", "lab", "--state-dir", state, "up", "--kubernetes", "-f", str(f)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2 and "extensions/v1beta1" in out.stderr and "NetworkPolicy x/old" in out.stderr
    assert not os.path.exists(state)


def test_nodes_reach_their_own_pods_and_are_judged_elsewhere(lab):
    check_node_traffic(lab)


def test_a_service_is_reached_through_kube_proxy_and_judged_after_translation(lab, tmp_path):
    """A ClusterIP Service (kube-proxy in each node's namespace translates it): a pod's
    connection to the ClusterIP is judged as the translated connection: the backend's ingress
    rules see the client pod's address, the client's egress rules are judged against the
    backend pod, not the ClusterIP; across nodes and on one node."""
    from tests.e2e_model import from_, match, namespaces, netpol, port, to
    from tests.lab_harness import _connect
    base = base_cluster()
    lab.goto(base)
    svc = tmp_path / "svc.json"
    svc.write_text(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "z"},
                               "spec": {"selector": {"pod": "a"},
                                        "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}}))
    assert sdnctl(lab, "kubectl", "apply", "-f", str(svc)).returncode == 0
    try:
        cip = sdnctl(lab, "kubectl", "get", "svc", "-n", "z", "web", "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
        assert cip.startswith("10.96."), cip
        pods = {f"{p['namespace']}/{p['name']}": p for p in lab.lab.pods()}
        clients = ["x/b", "y/a", "y/b"]  # both nodes: z/a's own and the other

        def reach(key: str) -> bool:
            return _connect(pods[key]["netns"], cip, 8080)
        deadline = time.monotonic() + 60  # the EndpointSlice, then every kube-proxy's rules
        while not all(reach(k) for k in clients):
            assert time.monotonic() < deadline, "the Service never became reachable"
        deny = netpol("z", "deny", match())
        from_y = netpol("z", "from-y", match(pod="a"), ingress=[from_(namespaces(match(ns="y")), ports=[port(80)])])
        lab.goto(base + [deny, from_y])
        assert {k: reach(k) for k in clients} == {"x/b": False, "y/a": True, "y/b": True}
        # egress: x/b may only reach namespace y: the ClusterIP's backend is in z, so no
        only_y = netpol("x", "only-y", match(pod="b"), egress=[to(namespaces(match(ns="y")))], types=["Egress"])
        lab.goto(base + [only_y])
        assert not reach("x/b") and reach("y/a")
        to_z = netpol("x", "only-z", match(pod="b"), egress=[to(namespaces(match(ns="z")), ports=[port(80)])],
                      types=["Egress"])
        lab.goto(base + [to_z])
        assert reach("x/b")  # judged against the backend z/a on port 80, not the ClusterIP's 8080
    finally:
        sdnctl(lab, "kubectl", "delete", "-f", str(svc))
        lab.goto(base)


def test_the_external_host_in_and_out(lab):
    check_external(lab)


def test_a_nodeport_from_the_external_host_is_judged_on_its_address(lab, tmp_path):
    """A NodePort Service with externalTrafficPolicy Local (the client's address kept): the
    external host reaches the backend through its node's port, and the backend's ingress
    ipBlock rules judge the external host's real address."""
    from tests.e2e_model import from_, ip_block, match, netpol
    from tests.lab_harness import _connect
    base = base_cluster()
    lab.goto(base)
    svc = tmp_path / "np.json"
    svc.write_text(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np", "namespace": "z"},
                               "spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                                        "selector": {"pod": "a"},
                                        "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}}))
    assert sdnctl(lab, "kubectl", "apply", "-f", str(svc)).returncode == 0
    try:
        node_port = int(sdnctl(lab, "kubectl", "get", "svc", "-n", "z", "np", "-o",
                               "jsonpath={.spec.ports[0].nodePort}").stdout)
        ext = lab.lab.status()["external"]
        pods = {f"{p['namespace']}/{p['name']}": p for p in lab.lab.pods()}
        node = lab.lab.state.load()["nodes"][pods["z/a"]["node"]]["address"]

        def reach() -> bool:
            return _connect(ext["netns"], node, node_port)
        deadline = time.monotonic() + 60  # the EndpointSlice, then kube-proxy's rules
        while not reach():
            assert time.monotonic() < deadline, f"NodePort {node}:{node_port} never answered"
        admit = netpol("z", "ext", match(pod="a"), ingress=[from_(ip_block(f"{ext['address']}/32"))])
        lab.goto(base + [netpol("z", "deny", match()), admit])
        assert reach()
        other = netpol("z", "ext", match(pod="a"), ingress=[from_(ip_block("203.0.113.0/24"))])
        lab.goto(base + [netpol("z", "deny", match()), other])
        assert not reach()
    finally:
        sdnctl(lab, "kubectl", "delete", "-f", str(svc))
        lab.goto(base)


def test_a_policy_in_a_missing_namespace_is_refused_and_changes_nothing(lab, tmp_path):
    lab.goto(base_cluster())
    f = tmp_path / "missing-ns.yaml"
    f.write_text(yaml.safe_dump_all([
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "first", "namespace": "x"},
         "spec": {"podSelector": {}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "deny", "namespace": "nowhere"}, "spec": {"podSelector": {}}}]))
    out = sdnctl(lab, "apply", "-f", str(f))
    assert out.returncode == 2, out.stdout + out.stderr
    # nothing else changed: the policy before it in the file was not written either
    assert "NotFound" in sdnctl(lab, "kubectl", "get", "networkpolicy", "-n", "x", "first").stderr
    err = " ".join(out.stderr.split())
    assert "NetworkPolicy nowhere/deny" in err and "namespace nowhere does not exist" in err, err
    assert "nothing was changed" in err and "created" not in out.stdout and "Traceback" not in out.stderr


def test_a_killed_agent_is_restarted_and_counted(lab, tmp_path):
    """The DaemonSet's restart policy, played by the lab's supervisor: the agent of node-1
    dies (SIGKILL), is started again, and realizes a change made meanwhile."""
    import signal

    from sdn.lab import supervise
    lab.goto(base_cluster())
    before = {n["name"]: n["restarts"] for n in json.loads(sdnctl(lab, "status", "-o", "json").stdout)["nodes"]}
    record = lab.lab.state.load()
    pid = supervise.current_pid(lab.lab.state, "node-1", record["controllers"]["node-1"])
    os.kill(pid, signal.SIGKILL)
    deny = tmp_path / "deny.json"
    deny.write_text(json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                "metadata": {"name": "deny-all", "namespace": "x"}, "spec": {"podSelector": {}}}))
    t0 = time.monotonic()
    out = sdnctl(lab, "apply", "-f", str(deny))
    print(f"kubernetes mode: SIGKILL -> change realized by the restarted agent in {time.monotonic() - t0:.2f}s")
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        st = json.loads(sdnctl(lab, "status", "-o", "json").stdout)
        nodes = {n["name"]: n for n in st["nodes"]}
        assert nodes["node-1"]["restarts"] == before["node-1"] + 1, nodes["node-1"]
        assert nodes["node-1"]["agent"]["running"] and nodes["node-1"]["agent"]["pid"] != pid
        m = lab.lab.matrix([(80, "TCP")])["matrices"][0]
        assert m["agree"], m["differences"]
    finally:
        sdnctl(lab, "delete", "-f", str(deny))
