"""deploy/: every manifest parses, uses only the expected kinds, and agrees with the code it
deploys (resources watched, settings, CNI configuration). No cluster needed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from sdn.cni.config import parse_config
from sdn.k8s.install_cni import CONFLIST, PLUGIN, install, main, render_conflist
from sdn.k8s.resources import ALPHA_NETWORK_POLICIES
from sdn.k8s.settings import Settings, SettingsError, load_settings, parse_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KINDS = {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
         "ConfigMap", "DaemonSet"}


def documents() -> dict[str, dict]:
    out = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            out[doc["kind"]] = doc
    return out


def test_every_manifest_parses_and_uses_only_the_expected_kinds():
    kinds = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] in KINDS, f"{path.name}: unexpected kind {doc['kind']}"
            assert doc["apiVersion"] and doc["metadata"]["name"]
            kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(KINDS)


def test_the_crd_serves_the_alpha_resource_the_informer_watches():
    crd = documents()["CustomResourceDefinition"]
    r = ALPHA_NETWORK_POLICIES
    spec = crd["spec"]
    assert crd["metadata"]["name"] == r.name
    assert (spec["group"], spec["names"]["plural"], spec["names"]["kind"], spec["scope"]) == \
        (r.group, r.plural, r.kind, "Namespaced")
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == \
        [(r.version, True, True)]
    # A group under kubernetes.io needs this annotation, or the API server refuses the CRD.
    assert crd["metadata"]["annotations"]["api-approved.kubernetes.io"].startswith("unapproved")
    schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(schema["properties"]["spec"]["properties"]) == {"podSelector", "allowIncoming"}


def test_rbac_is_read_only_on_what_is_watched_and_writes_only_events():
    docs = documents()
    role, binding, account = docs["ClusterRole"], docs["ClusterRoleBinding"], \
        docs["ServiceAccount"]
    grants = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
              for group in rule["apiGroups"] for resource in rule["resources"]}
    watched = {(r.group, r.plural) for r in Settings().resources()}
    for key in watched:
        assert grants.pop(key) == {"get", "list", "watch"}, key
    assert grants == {("", "events"): {"create", "patch"},
                      ("events.k8s.io", "events"): {"create", "patch"}}
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sdn-agent",
                                    "namespace": "kube-system"}]
    assert account["metadata"] == {**account["metadata"], "name": "sdn-agent",
                                   "namespace": "kube-system"}


def test_the_configmap_holds_valid_settings():
    settings = parse_settings(yaml.safe_load(documents()["ConfigMap"]["data"]["sdn.yaml"]),
                              "deploy/configmap.yaml")
    # the shipped file spells out the defaults, and on a real cluster the agent sets its node up
    assert settings == replace(Settings(), setup_node=True, cluster_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12")


def test_the_daemonset_runs_everywhere_on_the_host_network():
    docs = documents()
    ds = docs["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["namespace"] == "kube-system"
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    (agent,) = pod["containers"]
    (init,) = pod["initContainers"]
    for c in (agent, init):
        assert {"name": "NODE_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]
        assert not c["securityContext"].get("privileged")
    assert agent["command"][:4] == ["sdnctl", "agent", "--node", "$(NODE_NAME)"]
    assert init["command"][:3] == ["python", "-m", "sdn.k8s.install_cni"]
    port = {p["name"]: p["containerPort"] for p in agent["ports"]}["metrics"]
    assert port == Settings().metrics_port
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host.values()) == {"/run/openvswitch", "/var/run/netns", "/opt/cni/bin",
                                  "/etc/cni/net.d", "/var/lib/cni"}
    config = next(v for v in pod["volumes"] if "configMap" in v)
    assert config["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    mounted = {m["name"] for c in (agent, init) for m in c["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}


def test_the_dockerfile_builds_on_python_slim_with_the_ovs_tools():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    for package in ("openvswitch-common", "iproute2", "ethtool"):
        assert package in text
    assert "/opt/sdn/bin/sdn-cni" in text  # what the init container copies


def test_the_conflist_is_what_the_plugin_accepts(tmp_path):
    conflist = render_conflist(Settings(), "10.244.3.0/24")
    (entry,) = conflist["plugins"]
    conf = parse_config(json.dumps({**entry, "cniVersion": conflist["cniVersion"],
                                    "name": conflist["name"]}).encode())
    assert (conf.bridge, conf.mtu, str(conf.ipam.subnet), str(conf.ipam.gateway)) == \
        ("br-sdn", 1450, "10.244.3.0/24", "10.244.3.1")
    assert str(conf.ipam.range_start) == "10.244.3.2"


def test_install_writes_the_plugin_and_the_conflist(tmp_path):
    binary = tmp_path / "sdn-cni-build"
    binary.write_bytes(b"#!/bin/sh\n")
    settings_file = tmp_path / "sdn.yaml"
    settings_file.write_text("podCIDR: 10.244.7.0/24\nbridge: br0\n")
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    assert main(["--node", "n1", "--config", str(settings_file), "--binary", str(binary),
                 "--cni-bin-dir", str(bin_dir), "--cni-conf-dir", str(conf_dir)]) == 0
    assert (bin_dir / PLUGIN).read_bytes() == b"#!/bin/sh\n"
    assert (bin_dir / PLUGIN).stat().st_mode & 0o777 == 0o755
    written = json.loads((conf_dir / CONFLIST).read_text())
    assert written["plugins"][0]["bridge"] == "br0"
    assert written["plugins"][0]["ipam"]["subnet"] == "10.244.7.0/24"
    assert sorted(p.name for p in conf_dir.iterdir()) == [CONFLIST]  # no temporary left
    # Again (a restarted init container): replaced in place.
    install(load_settings(str(settings_file)), "10.244.8.0/24", str(binary), str(bin_dir),
            str(conf_dir))
    assert "10.244.8.0/24" in (conf_dir / CONFLIST).read_text()


def test_a_dual_stack_node_gets_an_ipv6_range_the_plugin_accepts():
    conflist = render_conflist(Settings(), "10.244.3.0/24", "fd00:10:244:3::/64")
    (entry,) = conflist["plugins"]
    assert conflist["cniVersions"] == ["1.0.0", "1.1.0"]
    for version in conflist["cniVersions"]:
        conf = parse_config(json.dumps({**entry, "cniVersion": version, "name": conflist["name"]}).encode())
        assert (str(conf.ipam.subnet), str(conf.ipam.range_start)) == ("10.244.3.0/24", "10.244.3.2")
        assert (str(conf.ipam.ipv6.subnet), str(conf.ipam.ipv6.gateway)) == ("fd00:10:244:3::/64", "fd00:10:244:3::1")
        assert [str(r.dst) for r in conf.ipam.ipv6.routes] == ["::/0"]


@pytest.mark.parametrize("text,problem", [
    ("tunnnel: vxlan\n", "tunnnel: unknown setting"),
    ("mtu: '1400'\n", "mtu: must be int"),
    ("enforce: everywhere\n", "enforce: must be one of host, fabric"),
    ("podCIDR: 10.0.0.0/33\n", "podCIDR: must be"),
    ("alphaPolicies: 1\n", "alphaPolicies: must be bool"),
    ("- a\n", "must be a mapping"),
])
def test_bad_settings_name_the_file_and_the_key(tmp_path, text, problem):
    path = tmp_path / "sdn.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=problem) as e:
        load_settings(str(path))
    assert str(path) in str(e.value)


def _mib(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_the_agents_memory_is_sized_from_the_measured_rss():
    """The limit is above every peak RSS of the full-scale benchmarks (a process that compiled
    every node's tables: an upper bound for one agent), and deploy/README.md's table of peaks
    per cluster shape is the results'."""
    (agent,) = documents()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    res = agent["resources"]
    full = json.loads((DEPLOY.parent / "benchmarks/results/full/results.json").read_text())["results"]
    peaks = {name: r["rss_peak_mb"] * 1e6 / 2**20 for name, r in full.items()}  # MB -> MiB
    assert _mib(res["limits"]["memory"]) >= 1.2 * max(peaks.values())
    assert _mib(res["requests"]["memory"]) <= _mib(res["limits"]["memory"])
    readme = (DEPLOY / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].split()[0] in full:
            rows[cells[0].split()[0]] = cells
    assert set(rows) == set(full)
    for name, cells in rows.items():
        r = full[name]
        gen = r["stages"]["generate"]
        assert cells[1:4] == [f"{gen['pods']:,}", f"{gen['policies']:,}", f"{r['rss_peak_mb']:,.0f} MB"], cells
        assert _mib(cells[5]) >= 1.2 * peaks[name] and _mib(cells[4]) <= _mib(cells[5]), cells
