"""vagrant/: the multi-node lab on VMs, checked without a VM (none can run where the tests run).

- `vagrant validate` of the Vagrantfile with each provider it configures (libvirt from
  Debian's vagrant-libvirt; VirtualBox through a stub VBoxManage that only answers
  --version), offline: no network namespace access at all when run as root, no checkpoint,
  no box lookups; a deliberate mistake in either provider block is caught, so the providers'
  blocks really are validated;
- `ruby -c` of the Ruby, `shellcheck` of every shell script (vagrant/ and sdn/scripts/);
- the machines and their plan for SDN_WORKERS = 0, 1, 2 (default), 3 (`vagrant status
  --machine-readable` and vagrant/lab.rb);
- every manifest the lab applies: deploy/'s CRD, RBAC and ConfigMap by path (no copies under
  vagrant/), the examples as rendered for the cluster, vagrant/manifests/: they parse with
  our loader and name only supported kinds;
- vagrant/tools: `sdnvm state` against the API stand-in, the examples' rendering, the CNI
  directories of k3s's containerd, the in-pod prober against the netns lab's server; the
  agent's unit runs the DaemonSet's command;
- sdn/scripts/ovs-node-bridge.sh, shared with the netns lab, on a private Open vSwitch.

The tools are installed by `make test` (system-deps); a missing one fails these tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sdn.k8s.settings import parse_settings
from sdn.lab import nodes as N
from sdn.policy.manifests import load_paths
from tests.test_deploy import KINDS as DEPLOY_KINDS

REPO = Path(__file__).resolve().parent.parent
VAGRANT = REPO / "vagrant"
VAGRANTFILE = VAGRANT / "Vagrantfile"
BRIDGE_SCRIPT = REPO / "sdn" / "scripts" / "ovs-node-bridge.sh"
# What the loader models, plus the ConfigMap the example pods mount their server from.
LAB_KINDS = {"Namespace", "Pod", "NetworkPolicy", "ConfigMap"}
STUB_VBOXMANAGE = """#!/bin/sh
# Enough of VirtualBox for Vagrant to load its provider and validate its configuration.
case "$1" in
  --version) echo 7.0.14r161095 ;;
  *) echo "stub VBoxManage: $*" >&2; exit 1 ;;
esac
"""


def need(prog: str) -> str:
    path = shutil.which(prog)
    if path is None:
        pytest.fail(f"{prog} is not installed: `make test` installs it (apt: vagrant, vagrant-libvirt, "
                    f"ruby, shellcheck)", pytrace=False)
    return path


def sdnvm():
    spec = importlib.util.spec_from_file_location("sdnvm", VAGRANT / "tools" / "sdnvm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


# ----------------------------------------------------------------------------- vagrant

@pytest.fixture(scope="module")
def vagrant_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vagrant-home")


@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stub-bin")
    (d / "VBoxManage").write_text(STUB_VBOXMANAGE)
    (d / "VBoxManage").chmod(0o755)
    return d


def vagrant(args: list[str], *, home: Path, dotfile: Path, provider: str = "libvirt",
            cwd: Path = VAGRANT, stub_bin: Path | None = None, **settings: str) -> subprocess.CompletedProcess:
    """`vagrant ARGS` offline: checkpoint and box-update checks off, state in temporary
    directories, and (as root) in a network namespace with no network at all."""
    need("vagrant")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "SDN_"))}
    env.update(VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_BOX_UPDATE_CHECK_DISABLE="1",
               VAGRANT_HOME=str(home), VAGRANT_DOTFILE_PATH=str(dotfile), VAGRANT_CWD=str(cwd),
               VAGRANT_DEFAULT_PROVIDER=provider, **settings)
    if stub_bin is not None:
        env["PATH"] = f"{stub_bin}:{env.get('PATH', '/usr/bin:/bin')}"
    prefix = ["unshare", "--net"] if os.geteuid() == 0 else []
    return run(prefix + ["vagrant", *args], env=env, timeout=180)


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
@pytest.mark.parametrize("workers", [None, "0", "3"])
def test_vagrant_validate_offline(provider, workers, vagrant_home, stub_bin, tmp_path):
    settings = {} if workers is None else {"SDN_WORKERS": workers}
    done = vagrant(["validate"], home=vagrant_home, dotfile=tmp_path / "dot", provider=provider,
                   stub_bin=stub_bin, **settings)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout
    # the lab's secrets are made on the host, in Vagrant's state directory, private
    secrets = tmp_path / "dot" / "sdn-lab-secrets.json"
    assert secrets.stat().st_mode & 0o077 == 0
    assert set(json.loads(secrets.read_text())) == {"k3s_token", "agent_token"}


@pytest.mark.parametrize("provider, mistake", [("libvirt", "lv.bogus_setting = 1"),
                                               ("virtualbox", "vb.bogus_setting = 1")])
def test_vagrant_validate_checks_each_providers_block(provider, mistake, vagrant_home, stub_bin, tmp_path):
    """A copy of vagrant/ with a wrong setting in one provider block fails validation: the
    provider's configuration really is loaded and checked."""
    copy = tmp_path / "repo"
    shutil.copytree(VAGRANT, copy / "vagrant", ignore=shutil.ignore_patterns(".vagrant"))
    (copy / "deploy").symlink_to(REPO / "deploy")
    vf = copy / "vagrant" / "Vagrantfile"
    block = "lv.cpus = CPUS" if provider == "libvirt" else "vb.cpus = CPUS"
    text = vf.read_text()
    assert block in text
    vf.write_text(text.replace(block, f"{block}\n    {mistake}"))
    done = vagrant(["validate"], home=vagrant_home, dotfile=tmp_path / "dot", provider=provider,
                   cwd=copy / "vagrant", stub_bin=stub_bin)
    assert done.returncode != 0
    assert "bogus_setting" in done.stdout + done.stderr


def machines(vagrant_home, tmp_path, **settings) -> list[str]:
    done = vagrant(["status", "--machine-readable"], home=vagrant_home, dotfile=tmp_path / "dot", **settings)
    assert done.returncode == 0, done.stdout + done.stderr
    names = []
    for line in done.stdout.splitlines():
        fields = line.split(",")
        if len(fields) >= 4 and fields[2] == "state" and fields[1] not in names:
            names.append(fields[1])
    return names


@pytest.mark.parametrize("workers, expected", [
    (None, ["cp", "worker-1", "worker-2"]),
    ("0", ["cp"]),
    ("1", ["cp", "worker-1"]),
    ("3", ["cp", "worker-1", "worker-2", "worker-3"]),
])
def test_sdn_workers_sets_the_machines(workers, expected, vagrant_home, tmp_path):
    settings = {} if workers is None else {"SDN_WORKERS": workers}
    assert machines(vagrant_home, tmp_path, **settings) == expected


@pytest.mark.parametrize("setting, value, message", [
    ("SDN_WORKERS", "two", "expected a whole number"),
    ("SDN_WORKERS", "99", "expected 0 to 20"),
    ("SDN_NETWORK", "10.0", "expected three octets"),
    ("SDN_MEMORY", "256", "expected 1024 to 65536"),
])
def test_a_bad_setting_stops_vagrant_with_a_message(setting, value, message, vagrant_home, tmp_path):
    done = vagrant(["status"], home=vagrant_home, dotfile=tmp_path / "dot", **{setting: value})
    assert done.returncode != 0
    assert f"{setting}={value}: {message}" in done.stdout + done.stderr


def test_ruby_syntax():
    need("ruby")
    for path in (VAGRANTFILE, VAGRANT / "lab.rb"):
        done = run(["ruby", "-c", path])
        assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr


def plan(**settings) -> list[dict]:
    need("ruby")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDN_")}
    done = run(["ruby", VAGRANT / "lab.rb"], env={**env, **settings})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ruby_value(expr: str):
    need("ruby")
    done = run(["ruby", "-rjson", "-e", f'require "{VAGRANT / "lab.rb"}"; puts JSON.generate({expr})'])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_plan_names_addresses_and_steps():
    p = plan(SDN_WORKERS="3", SDN_NETWORK="10.20.30")
    assert [(n["name"], n["role"], n["ip"]) for n in p] == [
        ("cp", "server", "10.20.30.10"), ("worker-1", "agent", "10.20.30.11"),
        ("worker-2", "agent", "10.20.30.12"), ("worker-3", "agent", "10.20.30.13")]
    assert p[0]["steps"] == ["base", "sdn", "bridge", "k3s", "deploy", "cni", "agent", "examples"]
    assert all(n["steps"] == ["base", "sdn", "bridge", "k3s", "cni", "agent"] for n in p[1:])
    assert [n["name"] for n in plan()] == ["cp", "worker-1", "worker-2"]
    bad = run(["ruby", VAGRANT / "lab.rb"], env={**os.environ, "SDN_WORKERS": "-1"})
    assert bad.returncode == 2 and "SDN_WORKERS=-1" in bad.stderr


def test_every_step_has_its_script_and_every_script_is_a_step():
    steps = ruby_value("SdnLab::STEPS")
    scripts = {s for _, s, _ in steps}
    on_disk = {p.name for p in (VAGRANT / "provision").glob("*.sh")} - {"lib.sh"}
    assert scripts == on_disk
    env = ruby_value('SdnLab.provision_env({"SDN_WORKERS" => "2"}, SdnLab.nodes({"SDN_WORKERS" => "2"})[1], '
                     '{"k3s_token" => "a" * 32, "agent_token" => "b" * 32})')
    assert env["SDN_NODE"] == "worker-1" and env["SDN_CP_IP"] == "192.168.56.10"
    assert env["SDN_POD_NODES"] == "worker-1,worker-2"
    # every SDN_* a script reads is one the Vagrantfile passes (or one lib.sh defines)
    defined = set(env) | {"SDN_HOME", "SDN_VENV", "SDN_ETC", "SDNVM", "K3S_STATE"}
    for script in (VAGRANT / "provision").glob("*.sh"):
        used = set(re.findall(r"\$\{?(SDN_[A-Z0-9_]+|K3S_[A-Z0-9_]+)", script.read_text()))
        assert used <= defined, (script.name, used - defined)


def test_shellcheck_every_script():
    need("shellcheck")
    scripts = sorted(VAGRANT.rglob("*.sh")) + sorted((REPO / "sdn" / "scripts").glob("*.sh"))
    if (REPO / "scripts").is_dir():
        scripts += sorted((REPO / "scripts").rglob("*.sh"))
    assert len(scripts) >= 10
    # --external-sources: the provisioning scripts source lib.sh from the synced folder, and
    # their directive points shellcheck at the file beside them (SC1091 if it could not follow)
    done = run(["shellcheck", "--external-sources", "--severity=style", *scripts])
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- manifests

def test_the_lab_applies_deploy_as_it_is():
    manifests = ruby_value("SdnLab::DEPLOY_MANIFESTS")
    assert manifests == ["deploy/crd-v1alpha1-networkpolicys.yaml", "deploy/rbac.yaml", "deploy/configmap.yaml"]
    kinds = set()
    for rel in manifests:
        for doc in yaml.safe_load_all((REPO / rel).read_text()):
            assert doc["kind"] in DEPLOY_KINDS
            kinds.add(doc["kind"])
    assert kinds == DEPLOY_KINDS - {"DaemonSet"}
    # applied from the synced folder, not from a copy: no deploy kind lives under vagrant/
    deploy_kinds = DEPLOY_KINDS - {"ConfigMap"}
    for path in VAGRANT.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json"):
            for doc in yaml.safe_load_all(path.read_text()):
                if not isinstance(doc, dict):
                    continue
                assert doc.get("kind") not in deploy_kinds, path
                assert (doc.get("metadata") or {}).get("name") != "sdn-agent-config", path
    assert '"$SDN_SRC/$manifest"' in (VAGRANT / "provision" / "deploy.sh").read_text()
    # the agent's settings are deploy/configmap.yaml's, read on each VM
    assert '"$SDN_SRC/deploy/configmap.yaml"' in (VAGRANT / "provision" / "sdn.sh").read_text()


def test_the_settings_come_from_the_configmap():
    text = sdnvm().configmap_settings(str(REPO / "deploy" / "configmap.yaml"))
    want = yaml.safe_load(yaml.safe_load((REPO / "deploy" / "configmap.yaml").read_text())["data"]["sdn.yaml"])
    assert parse_settings(yaml.safe_load(text)) == parse_settings(want)
    # the agent sets its node up (the gateway port for the pod CIDR k3s assigns) with the
    # Services' range k3s is given (vagrant/provision/k3s.sh)
    assert parse_settings(want).setup_node and parse_settings(want).service_cidr == "10.96.0.0/12"
    assert "SERVICE_CIDR=10.96.0.0/12" in (VAGRANT / "provision" / "k3s.sh").read_text()


def loaded_kinds(path: Path) -> tuple[set[str], object]:
    kinds = {d["kind"] for d in yaml.safe_load_all(path.read_text()) if d}
    cluster, warnings = load_paths([str(path)])
    assert all("ConfigMap" in w for w in warnings), warnings
    return kinds, cluster


@pytest.mark.parametrize("nodes", [["cp"], ["worker-1"], ["worker-1", "worker-2"],
                                   ["worker-1", "worker-2", "worker-3"]])
def test_rendered_examples_parse_and_name_only_supported_kinds(nodes, tmp_path):
    vm = sdnvm()
    docs = vm.render_examples([str(REPO / "examples")], nodes, "python:3.12-alpine")
    out = tmp_path / "examples.yaml"
    out.write_text(vm.dump_yaml(docs))
    kinds, cluster = loaded_kinds(out)
    assert kinds <= LAB_KINDS
    original, _ = load_paths([str(REPO / "examples")])
    assert set(cluster.pods) == set(original.pods)
    assert set(cluster.namespaces) == set(original.namespaces)
    assert set(cluster.policies) == set(original.policies)
    assert not cluster.nodes  # the cluster has its own
    by_key = {f"{d['metadata']['namespace']}/{d['metadata']['name']}": d for d in docs if d["kind"] == "Pod"}
    for key, pod in cluster.pods.items():
        orig = original.pods[key]
        assert (pod.labels, pod.ports, pod.ips) == (orig.labels, orig.ports, ())
        spec = by_key[key]["spec"]
        placed = spec["nodeSelector"]["kubernetes.io/hostname"]
        assert placed in nodes
        # the examples' node-1, node-2 map to the first nodes in turn
        want = nodes[(int(orig.node.split("-")[1]) - 1) % len(nodes)]
        assert placed == want, key
        container = spec["containers"][0]
        assert container["command"][:2] == ["python3", "/opt/sdn-lab/serve.py"]
        assert by_key[key]["metadata"]["annotations"]["sdn-lab/probe"] == "true"
    # the ConfigMap carries the netns lab's server and the prober, byte for byte
    cms = [d for d in docs if d["kind"] == "ConfigMap"]
    assert {d["metadata"]["namespace"] for d in cms} == {k.split("/")[0] for k in cluster.pods}
    assert cms[0]["data"]["serve.py"] == (REPO / "sdn" / "lab" / "serve.py").read_text()
    assert cms[0]["data"]["pod_probe.py"] == (VAGRANT / "tools" / "pod_probe.py").read_text()


def test_vagrant_manifests_parse_and_name_only_supported_kinds():
    files = sorted((VAGRANT / "manifests").glob("*.yaml"))
    assert files
    for path in files:
        kinds, cluster = loaded_kinds(path)
        assert kinds <= LAB_KINDS - {"ConfigMap"}, path
        assert cluster.policies, path


def test_the_walkthrough_change_opens_tcp_81_from_y():
    from sdn.policy.evaluate import evaluate
    before, _ = load_paths([str(REPO / "examples")])
    after, _ = load_paths([str(REPO / "examples"), str(VAGRANT / "manifests" / "allow-tcp-81-from-y.yaml")])
    for c, want in ((before, False), (after, True)):
        assert evaluate(c, c.pods["y/a"], c.pods["x/b"], 81, "TCP").allowed is want
    assert not evaluate(after, after.pods["z/a"], after.pods["x/b"], 81, "TCP").allowed


# ------------------------------------------------------------------------------ tools

def test_cni_dirs_from_k3s_containerd_config(tmp_path):
    vm = sdnvm()
    none = tmp_path / "none.toml"
    none.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
                    '  runtime_type = "io.containerd.runc.v2"\n')
    assert vm.cni_dirs(str(none)) == ("/opt/cni/bin", "/etc/cni/net.d")
    assert vm.cni_dirs(str(tmp_path / "missing.toml")) == ("/opt/cni/bin", "/etc/cni/net.d")
    v2 = tmp_path / "v2.toml"
    v2.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n'
                  '  bin_dir = "/var/lib/rancher/k3s/data/cni"\n'
                  '  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"\n')
    assert vm.cni_dirs(str(v2)) == ("/var/lib/rancher/k3s/data/cni", "/var/lib/rancher/k3s/agent/etc/cni/net.d")
    v3 = tmp_path / "v3.toml"
    v3.write_text('version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\n'
                  '  bin_dirs = ["/var/lib/rancher/k3s/data/cni"]\n  conf_dir = "/etc/cni/net.d"\n')
    assert vm.cni_dirs(str(v3)) == ("/var/lib/rancher/k3s/data/cni", "/etc/cni/net.d")


def test_kubeconfig_for_the_agent_identity(tmp_path):
    from kubernetes import client, config
    vm = sdnvm()
    ca = tmp_path / "ca.crt"
    ca.write_text("not read until a connection is made\n")
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(vm.kubeconfig("https://192.168.56.10:6443", str(ca), "t0ken")))
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == "https://192.168.56.10:6443"
    assert "Bearer t0ken" in cfg.api_key.values()  # the key's name varies with the client's version
    assert cfg.ssl_ca_cert == str(ca)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """A real kube-apiserver (tests/kube_support.py) holding examples/; yields its kubeconfig."""
    from tests.kube_support import control_plane, load
    docs = [d for f in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    with control_plane(tmp_path_factory.mktemp("cp")) as kube:
        load(kube, docs)
        yield kube.cp.admin_kubeconfig


def test_state_is_what_the_agents_see(api_server, tmp_path):
    """`sdnvm state` lists what the agent watches and keeps what its informers accept: the
    examples served by a real API server come back as the same pods, policies and nodes, and
    compile to the same tables."""
    done = run([sys.executable, VAGRANT / "tools" / "sdnvm.py", "state", "--kubeconfig", api_server],
               cwd=REPO)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "state.yaml"
    out.write_text(done.stdout)
    assert yaml.safe_load(done.stdout)["kind"] == "List"
    live, _ = load_paths([str(out)])
    original, _ = load_paths([str(REPO / "examples")])
    assert live.pods == original.pods
    assert set(live.policies) == set(original.policies)
    assert set(live.nodes) == set(original.nodes)
    flows = [run([sys.executable, "-m", "sdn.cli", "compile", "-f", src, "--node", "node-1"], cwd=REPO)
             for src in (out, REPO / "examples")]
    assert flows[0].returncode == 0 and flows[0].stdout == flows[1].stdout


def test_can_read_waits_for_the_node(api_server):
    tool = [sys.executable, VAGRANT / "tools" / "sdnvm.py", "can-read", "--kubeconfig", api_server]
    assert run(tool + ["--node", "node-1"], cwd=REPO).returncode == 0
    missing = run(tool + ["--node", "node-9"], cwd=REPO)
    assert missing.returncode == 1 and "cannot read node node-9" in missing.stderr


def test_matrix_compares_probes_with_the_evaluator(monkeypatch):
    """`sdnvm matrix` with the probes answered as the evaluator predicts, but for one cell:
    that cell is the one difference, and the lab's renderer draws the result."""
    from rich.console import Console

    from sdn.lab.cli import render_matrix
    from sdn.policy.evaluate import evaluate
    vm = sdnvm()
    docs = []
    for d in yaml.safe_load_all((REPO / "examples" / "cluster.yaml").read_text()):
        if d["kind"] == "Pod":
            d = {**d, "metadata": {**d["metadata"], "annotations": {"sdn-lab/probe": "true"}},
                 "status": {**d["status"], "phase": "Running"}}
        docs.append(d)
    docs += list(yaml.safe_load_all((REPO / "examples" / "policies.yaml").read_text()))
    cluster, _ = load_paths([str(REPO / "examples")])
    ip_to_key = {p.ips[0]: k for k, p in cluster.pods.items()}

    def fake_probes(kubectl, src, container, targets, timeout):
        out = []
        for ip, port, proto in targets:
            dst = ip_to_key[ip]
            ok = evaluate(cluster, cluster.pods[src], cluster.pods[dst], port, proto).allowed
            if (src, dst) == ("x/a", "y/b"):
                ok = not ok
            out.append("allowed" if ok else "denied")
        return out

    monkeypatch.setattr(vm, "cluster_documents", lambda api, settings=None: (docs, []))
    monkeypatch.setattr(vm, "api", lambda path: None)
    monkeypatch.setattr(vm, "run_probes", fake_probes)
    doc = vm.matrix("kubeconfig", [(80, "TCP"), (81, "UDP")], 0.5)
    assert doc["pods"] == sorted(cluster.pods, key=lambda k: tuple(k.split("/")))
    for m in doc["matrices"]:
        assert [(d["from"], d["to"]) for d in m["differences"]] == [("x/a", "y/b")]
    console = Console(record=True, width=200)
    render_matrix(doc, console, True)
    assert "1 of 81 cells differ" in console.export_text()


def test_pod_prober_against_the_lab_server():
    """pod_probe.py (run inside the VMs' pods) against sdn/lab/serve.py on this machine:
    TCP and UDP answered, a closed port refused."""
    def free_port(kind):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    tcp, udp, closed = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    server = subprocess.Popen([sys.executable, "-m", "sdn.lab.serve", "--name", "x/a", "--tcp", str(tcp),
                               "--udp", str(udp)], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert server.stdout.readline().startswith(b"ready")
        targets = [["127.0.0.1", tcp, "TCP"], ["127.0.0.1", udp, "UDP"], ["127.0.0.1", closed, "TCP"],
                   ["127.0.0.1", closed, "UDP"], ["127.0.0.1", tcp, "SCTP"]]
        done = run([sys.executable, VAGRANT / "tools" / "pod_probe.py", "--timeout", "1", json.dumps(targets)])
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == ["allowed", "allowed", "refused", "refused", "error"]
    finally:
        server.terminate()
        server.wait(10)


def test_pod_prober_times_out_where_nothing_answers():
    if os.geteuid() != 0:
        pytest.fail("this test needs root (a network namespace); run it with `make test`", pytrace=False)
    script = ("ip link set lo up && ip link add v0 type veth peer name v1 && "
              "ip addr add 10.9.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up && "
              f"exec {sys.executable} {VAGRANT / 'tools' / 'pod_probe.py'} --timeout 0.3 "
              "'[[\"10.9.0.2\", 80, \"TCP\"], [\"10.9.0.2\", 80, \"UDP\"]]'")
    done = run(["unshare", "--net", "sh", "-c", script])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["denied", "denied"]


def test_the_unit_runs_the_daemonsets_commands():
    """The VMs run the DaemonSet's two commands from the venv: the init container's CNI
    install (provision/cni.sh) and the agent (units/sdn-agent.service), with a kubeconfig
    instead of the in-cluster service account."""
    ds = yaml.safe_load((REPO / "deploy" / "daemonset.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "agent")["command"]
    unit = (VAGRANT / "units" / "sdn-agent.service").read_text()
    exec_start = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1
    argv = exec_start[0].split()
    assert argv[0] == "/opt/sdn/venv/bin/sdnctl"
    assert ["sdnctl", *argv[1:]] == [a.replace("$(NODE_NAME)", "${NODE_NAME}") for a in agent] + \
        ["--kubeconfig", "/etc/sdn/kubeconfig"]
    assert "EnvironmentFile=/etc/sdn/agent.env" in unit
    sdn_sh = (VAGRANT / "provision" / "sdn.sh").read_text()
    assert "NODE_NAME=" in sdn_sh and '"$SDN_SRC/vagrant/units/sdn-agent.service"' in sdn_sh
    init = pod["initContainers"][0]["command"]
    assert init[:3] == ["python", "-m", "sdn.k8s.install_cni"]
    assert '"$SDN_VENV/bin/python" -m sdn.k8s.install_cni' in (VAGRANT / "provision" / "cni.sh").read_text()
    # the agent's options exist (the unit would crash-loop otherwise)
    help_text = run([sys.executable, "-m", "sdn.cli", "agent", "--help"], cwd=REPO).stdout
    for option in ("--node", "--config", "--kubeconfig"):
        assert option in help_text


# ------------------------------------------------------------------ the shared bridge script

def test_the_netns_lab_the_agent_and_the_vms_share_the_node_setup():
    """One implementation (sdn/node_setup.py): the VMs' provisioning runs it, the lab's nodes
    and the agent call it, the shell script only wraps it."""
    import inspect

    from sdn import agent_setup, node_setup
    assert "-m sdn.node_setup" in (VAGRANT / "provision" / "bridge.sh").read_text()
    assert "-m sdn.node_setup" in BRIDGE_SCRIPT.read_text()
    assert N.setup is node_setup.setup and agent_setup.setup is node_setup.setup
    assert "setup(NodeBridge(" in inspect.getsource(N.node_bridge)


@pytest.mark.parametrize("args, message", [
    (["--dpid", "12"], "--dpid must be 16 hex digits"),
    (["--dpid", "0000000000000001", "--datapath-type", "dpdk"], "--datapath-type must be system or netdev"),
    (["--dpid", "0000000000000001", "--tunnel", "gre", "--local-ip", "10.0.0.1"], "--tunnel must be vxlan or geneve"),
    (["--dpid", "0000000000000001", "--tunnel", "vxlan"], "--tunnel needs --local-ip"),
    (["--dpid", "0000000000000001", "--bridge", "a-very-long-bridge-name"], "not a valid interface name"),
    (["--dpid", "0000000000000001", "--frobnicate", "x"], "unknown option --frobnicate"),
    (["--dpid"], "--dpid: missing value"),
])
def test_the_bridge_script_refuses_bad_arguments(args, message):
    done = run(["bash", BRIDGE_SCRIPT, *args])
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.ovs
def test_the_bridge_script_on_a_private_ovs(ovs_factory):
    """What the VMs get (here with the netdev datapath of a private OVS): the bridge in one
    transaction, the tunnel port at ofport 1; a second run (re-provisioning) changes nothing
    and keeps the flows; a taken ofport 1 is an error."""
    ovs = ovs_factory()
    argv = ["bash", BRIDGE_SCRIPT, "--db", ovs.db_remote, "--datapath-type", "netdev",
            "--dpid", "00000000000000a1", "--controller", "tcp:127.0.0.1:6653",
            "--tunnel", "geneve", "--local-ip", "192.168.56.11", "--timeout", "30"]
    ovs.run(*argv)
    get = lambda *a: ovs.vsctl("get", *a).strip().strip('"')  # noqa: E731
    assert get("bridge", "br-sdn", "fail_mode") == "secure"
    assert get("bridge", "br-sdn", "datapath_type") == "netdev"
    assert get("bridge", "br-sdn", "other-config:datapath-id") == "00000000000000a1"
    assert get("bridge", "br-sdn", "other-config:disable-in-band") == "true"
    assert ovs.vsctl("get-controller", "br-sdn").split() == ["tcp:127.0.0.1:6653"]
    assert ovs.ofport("tun0") == 1
    assert get("interface", "tun0", "type") == "geneve"
    assert get("interface", "tun0", "options:remote_ip") == "flow"
    assert get("interface", "tun0", "options:local_ip") == "192.168.56.11"
    assert get("interface", "tun0", "external_ids:sdn-role") == "tunnel"
    ovs.ofctl("add-flow", "br-sdn", "table=0,priority=7,actions=drop")
    ovs.run(*argv)  # again: nothing changes, the flow stays
    assert "priority=7" in ovs.dump_flows("br-sdn")
    assert ovs.ofport("tun0") == 1
    # ofport 1 already taken by another port on a second bridge: the tunnel cannot get it
    ovs.vsctl("add-br", "br-x", "--", "set", "bridge", "br-x", "datapath_type=netdev",
              "--", "add-port", "br-x", "p1", "--", "set", "interface", "p1", "type=internal",
              "ofport_request=1")
    bad = run(["bash", BRIDGE_SCRIPT, "--db", ovs.db_remote, "--bridge", "br-x", "--datapath-type", "netdev",
               "--dpid", "00000000000000a2", "--tunnel", "vxlan", "--local-ip", "192.168.56.12",
               "--tunnel-port", "tun1", "--timeout", "10"], env=ovs.env)
    assert bad.returncode == 1 and "tunnel port tun1 got ofport" in bad.stderr, bad.stderr
