"""deploy/ and the agent's informers against a real kube-apiserver (`make k8s`): every object
of deploy/ is accepted, the CRD's schema refuses malformed v1alpha1 policies, the API server
itself refuses invalid NetworkPolicies, the CNI install reads the pod CIDR from the Node, and
the informers list, then watch from the list's resourceVersion with bookmarks."""

from __future__ import annotations

import json
import threading

import pytest
import yaml

from sdn.k8s.connect import api_client
from sdn.k8s.informer import SYNCED, Informers
from sdn.k8s.install_cni import node_pod_cidrs
from sdn.k8s.rest import ApiError
from tests.e2e_cases import ALL_CASES, replay
from tests.k8s_support import ALPHA_SPECS, alpha_policy, namespace, node, policy, wait_until
from tests.kube_support import DEPLOY, Kube, apply_deploy, control_plane, load

pytestmark = pytest.mark.xdist_group("k8s-real")  # one control plane for the module


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    with control_plane(tmp_path_factory.mktemp("cp")) as k:
        apply_deploy(k)
        load(k, [namespace("x")])
        yield k


def test_every_object_of_deploy_is_accepted(kube: Kube):
    docs = [d for f in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                                         "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    for doc in docs:
        got = kube.rest.apply_manifest(doc)
        assert got["metadata"]["name"] == doc["metadata"]["name"]
    ds = kube.rest.call("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/sdn-agent")
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "sdn-agent"


def test_the_crd_admits_every_alpha_policy_of_the_suite_and_refuses_malformed_ones(kube: Kube):
    specs = {json.dumps(d["spec"], sort_keys=True) for case in ALL_CASES for _, _, docs in replay(case)
             for d in docs if d.get("apiVersion") == "net.alpha.kubernetes.io/v1alpha1"}
    assert specs
    for i, spec in enumerate([*ALPHA_SPECS[:2], *map(json.loads, sorted(specs))]):
        kube.apply(alpha_policy("x", f"alpha-{i}", spec))
    strict = {"fieldValidation": "Strict"}
    path = "/apis/net.alpha.kubernetes.io/v1alpha1/namespaces/x/networkpolicys"
    bad = [(ALPHA_SPECS[2], 'unknown field "spec.podSelector.matchLabels.a"'),  # the alpha selector is a plain map
           ({"podSelector": {}, "allowIncomng": {}}, 'unknown field "spec.allowIncomng"'),
           ({"podSelector": {}, "allowIncoming": {"from": [{"pods": {}, "namespaces": {}}]}},
            "spec.allowIncoming.from[0]: Too many")]
    for spec, said in bad:
        with pytest.raises(ApiError) as e:
            kube.rest.call("POST", path, alpha_policy("x", "bad", spec), strict)
        assert e.value.status in (400, 422) and said in e.value.message, e.value.message


@pytest.mark.parametrize("spec,field", [
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
     "spec.ingress[0].ports[0].protocol"),
    ({"podSelector": {}, "policyTypes": ["Sideways"]}, "spec.policyTypes[0]"),
])
def test_the_api_server_refuses_invalid_network_policies(kube: Kube, spec, field):
    with pytest.raises(ApiError) as e:
        kube.apply(policy("x", "invalid", spec))
    assert e.value.status == 422 and field in e.value.message, e.value.message


def test_the_cni_install_reads_the_pod_cidr_from_the_node(kube: Kube, tmp_path):
    load(kube, [node("n1", "10.244.5.0/24", "192.168.1.5"),
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "dual"},
                 "spec": {"podCIDR": "10.244.6.0/24", "podCIDRs": ["10.244.6.0/24", "fd00:10:244:6::/64"]}},
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}}])
    agent = api_client(str(kube.service_account_kubeconfig("kube-system", "sdn-agent", tmp_path / "k")))
    assert node_pod_cidrs(agent, "n1") == ("10.244.5.0/24", None)
    assert node_pod_cidrs(agent, "dual") == ("10.244.6.0/24", "fd00:10:244:6::/64")
    with pytest.raises(TimeoutError, match=r"no IPv4 spec\.podCIDR"):
        node_pod_cidrs(agent, "bare", timeout=0.2, interval=0.05)


def test_informers_list_then_watch_from_the_lists_version_with_bookmarks(kube: Kube):
    events = []
    lock = threading.Lock()

    def sink(batch):
        with lock:
            events.extend(batch)
    informers = Informers(kube.client, sink, watch_timeout=4, relist_period=None, backoff_base=0.05,
                          backoff_cap=0.5)
    with informers:
        assert informers.wait_synced(20)
        listed_rv = {r.name: i.resource_version for r, i in informers.informers.items()}
        kube.apply(policy("x", "later", {"podSelector": {}}))
        assert wait_until(lambda: any(e.type == "ADDED" and e.ref.name == "later" for e in events), 10)
        # the watch began at the list's version: nothing listed came again as a watch event
        with lock:
            synced = [e for e in events if e.type == SYNCED]
            added = [e for e in events if e.type == "ADDED" and not e.synthetic]
        assert len(synced) == len(informers.informers)
        assert [e.ref.name for e in added] == ["later"]
        pol = next(i for r, i in informers.informers.items() if r.name == "networkpolicies.networking.k8s.io")
        assert int(pol.resource_version) > int(listed_rv[pol.resource.name])
        # the server sends a bookmark before each 4-8 s watch ends; the informer resumes from it
        assert wait_until(lambda: sum(s.bookmarks for s in informers.stats().values()) > 0, 30), \
            informers.stats()
        assert all(s.expired == 0 and s.lists == 1 for s in informers.stats().values())
