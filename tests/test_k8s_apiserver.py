"""The API stand-in, seen through the official `kubernetes` client: list, watch and write
behave as kube-apiserver's do (resourceVersion order, watch from a version, 410 for a version
gone from the history, bookmarks, chunked streams, cut connections, errors as Status)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from sdn.k8s.connect import api_client
from tests.k8s_support import alpha_policy, namespace, pod, policy
from tests.standin.apiserver import ApiServer

ALPHA = ("net.alpha.kubernetes.io", "v1alpha1")


@pytest.fixture
def server():
    with ApiServer(bookmark_interval=0.05, seed=7) as api:
        yield api


@pytest.fixture
def core(server):
    c = api_client(url=server.url)
    yield client.CoreV1Api(c)
    c.close()


def _pods(server, ns, n):
    server.create(namespace(ns))
    for i in range(n):
        server.create(pod(ns, f"p{i}", f"10.1.0.{i + 1}"))


def _stream(func, **kwargs) -> list[dict]:
    """Every event until the server ends the stream."""
    return list(watch.Watch().stream(func, **kwargs))


def _take(func, n: int, w: watch.Watch | None = None, **kwargs) -> list[dict]:
    """The first `n` events (the server's timeout only as a safety net)."""
    w = w or watch.Watch()
    out = []
    for e in w.stream(func, timeout_seconds=5, **kwargs):
        out.append(e)
        if len(out) == n:
            w.stop()
    return out


# ------------------------------------------------------------------------------- discovery


def test_discovery_documents_are_what_the_client_expects(server):
    c = api_client(url=server.url)
    assert client.CoreApi(c).get_api_versions().versions == ["v1"]
    groups = {g.name: [v.version for v in g.versions]
              for g in client.ApisApi(c).get_api_versions().groups}
    assert groups == {"networking.k8s.io": ["v1"], "net.alpha.kubernetes.io": ["v1alpha1"],
                      "extensions": ["v1beta1"]}
    core = {r.name: r.namespaced for r in client.CoreV1Api(c).get_api_resources().resources}
    assert core["pods"] and core["pods/status"] and not core["nodes"]
    assert not core["namespaces"]
    net = client.NetworkingV1Api(c).get_api_resources()
    assert [(r.name, r.kind) for r in net.resources] == [("networkpolicies", "NetworkPolicy")]
    assert client.VersionApi(c).get_code().major == "1"


# ------------------------------------------------------------------------------- list


def test_list_has_the_api_shape(server, core):
    _pods(server, "x", 2)
    raw = json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)
    assert raw["kind"] == "PodList" and raw["apiVersion"] == "v1"
    assert raw["metadata"]["resourceVersion"] == str(server.resource_version)
    # Built-in lists leave kind/apiVersion off their items; custom resources keep them.
    assert [sorted(i) for i in raw["items"]] == [["metadata", "spec", "status"]] * 2
    server.create(alpha_policy("x", "a", {"podSelector": {"pod": "p0"}}))
    crs = client.CustomObjectsApi(core.api_client).list_cluster_custom_object(*ALPHA,
                                                                              "networkpolicys")
    assert crs["items"][0]["kind"] == "NetworkPolicy"
    assert crs["items"][0]["apiVersion"] == "net.alpha.kubernetes.io/v1alpha1"
    typed = core.list_namespaced_pod("x")
    assert [p.metadata.name for p in typed.items] == ["p0", "p1"]
    assert typed.items[0].status.pod_ip == "10.1.0.1"


def test_pages_are_one_consistent_snapshot(server, core):
    _pods(server, "x", 7)
    first = core.list_namespaced_pod("x", limit=3)
    assert first.metadata.remaining_item_count == 4
    rv = first.metadata.resource_version
    # Writes between pages do not show up in later pages.
    server.delete(pod("x", "p5", None))
    server.create(pod("x", "p9", "10.1.0.9"))
    server.patch(pod("x", "p4", None), {"metadata": {"labels": {"changed": "yes"}}})
    names, token = [p.metadata.name for p in first.items], first.metadata._continue
    while token:
        page = core.list_namespaced_pod("x", limit=3, _continue=token)
        assert page.metadata.resource_version == rv
        names += [p.metadata.name for p in page.items]
        for p in page.items:
            assert "changed" not in (p.metadata.labels or {})
        token = page.metadata._continue
    assert names == [f"p{i}" for i in range(7)]
    assert [p.metadata.name for p in core.list_namespaced_pod("x").items] == \
        ["p0", "p1", "p2", "p3", "p4", "p6", "p9"]


def test_a_continue_token_older_than_the_history_is_410(server, core):
    _pods(server, "x", 4)
    first = core.list_namespaced_pod("x", limit=2)
    server.create(pod("x", "late", "10.1.0.50"))
    server.compact_history()
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("x", limit=2, _continue=first.metadata._continue)
    assert e.value.status == 410
    assert json.loads(e.value.body)["reason"] == "Expired"


def test_exact_list_at_an_old_version(server, core):
    _pods(server, "x", 2)
    rv = core.list_namespaced_pod("x").metadata.resource_version
    server.delete(pod("x", "p0", None))
    old = core.list_namespaced_pod("x", resource_version=rv, resource_version_match="Exact")
    assert [p.metadata.name for p in old.items] == ["p0", "p1"]
    assert old.metadata.resource_version == rv


# ------------------------------------------------------------------------------- watch


def test_watch_from_a_version_sends_later_changes_in_order(server, core):
    _pods(server, "x", 1)
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    server.create(pod("x", "b", "10.1.0.2"))
    server.patch(pod("x", "p0", None), {"metadata": {"labels": {"role": "db"}}})
    server.create(namespace("y"))  # another resource: not in the pod stream
    server.delete(pod("x", "b", None))
    events = _take(core.list_pod_for_all_namespaces, 3, resource_version=rv)
    assert [(e["type"], e["object"].metadata.name) for e in events] == \
        [("ADDED", "b"), ("MODIFIED", "p0"), ("DELETED", "b")]
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and versions[0] > int(rv)
    assert events[1]["object"].metadata.labels == {"pod": "p0", "role": "db"}
    # DELETED carries the last state, at the version of the deletion.
    assert events[2]["raw_object"]["status"]["podIP"] == "10.1.0.2"
    assert versions[2] == server.resource_version


def test_watch_without_a_version_replays_the_current_objects(server, core):
    _pods(server, "x", 3)
    events = _take(core.list_namespaced_pod, 3, namespace="x")
    assert [(e["type"], e["object"].metadata.name) for e in events] == \
        [("ADDED", "p0"), ("ADDED", "p1"), ("ADDED", "p2")]


def test_watch_sees_writes_made_while_it_is_open(server, core):
    rv = core.list_namespace().metadata.resource_version

    def later():
        time.sleep(0.2)
        server.create(namespace("x"))
        server.delete(namespace("x"))

    threading.Thread(target=later).start()
    events = _take(core.list_namespace, 3, resource_version=rv)
    # A namespace deletion: Terminating first, then gone.
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"].status.phase == "Terminating"


def test_a_too_old_version_is_an_error_event_with_410(server, core):
    rv = core.list_namespace().metadata.resource_version
    server.create(namespace("x"))
    server.compact_history()
    # On the wire: HTTP 200, then one ERROR event with an Expired Status, then the end.
    resp = core.list_namespace(watch=True, resource_version=rv, timeout_seconds=1,
                               _preload_content=False)
    assert resp.status == 200
    lines = [json.loads(line) for line in resp.data.splitlines()]
    assert [e["type"] for e in lines] == ["ERROR"]
    status = lines[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    # The client turns it into ApiException(410): at once with timeout_seconds, and after
    # its one retry from the same version without.
    with pytest.raises(ApiException) as e:
        _stream(core.list_namespace, resource_version=rv, timeout_seconds=1)
    assert e.value.status == 410
    with pytest.raises(ApiException) as e:
        _stream(core.list_namespace, resource_version=rv)
    assert e.value.status == 410


def test_history_window_bounds_how_far_back_a_watch_may_start():
    with ApiServer(history_limit=3, namespaces=()) as server:
        core = client.CoreV1Api(api_client(url=server.url))
        start = server.resource_version
        for n in "abcde":
            server.create(namespace(n))
        assert server.store.compacted == start + 2
        with pytest.raises(ApiException) as e:
            _stream(core.list_namespace, resource_version=str(start + 1), timeout_seconds=1)
        assert e.value.status == 410
        events = _take(core.list_namespace, 3, resource_version=str(start + 2))
        assert [e["object"].metadata.name for e in events] == ["c", "d", "e"]


def test_bookmarks_arrive_only_when_asked_for(server, core):
    rv = core.list_namespace().metadata.resource_version
    w = watch.Watch()
    events = _take(core.list_namespace, 5, w, resource_version=rv, allow_watch_bookmarks=True)
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == rv
    server.create(namespace("x"))
    server.create(pod("x", "a", "10.0.0.1"))  # moves the version on, not in this stream
    later = _take(core.list_namespace, 2, w, resource_version=rv, allow_watch_bookmarks=True)
    assert [e["type"] for e in later] == ["ADDED", "BOOKMARK"]
    # A bookmark carries the newest version (past the pod's write): the client keeps it.
    assert w.resource_version == str(server.resource_version)
    plain = _stream(core.list_namespace, resource_version=rv, timeout_seconds=1)
    assert [e["type"] for e in plain] == ["ADDED"]


@pytest.mark.parametrize("chunking", ["event", "split", "batch", "random"])
def test_every_chunking_delivers_the_same_events(chunking):
    with ApiServer(chunking=chunking, seed=3) as server:
        core = client.CoreV1Api(api_client(url=server.url))
        rv = core.list_pod_for_all_namespaces().metadata.resource_version
        _pods(server, "x", 6)
        resp = core.list_pod_for_all_namespaces(watch=True, resource_version=rv,
                                                timeout_seconds=1, _preload_content=False)
        assert resp.headers["Transfer-Encoding"] == "chunked"
        resp.close()
        resp.release_conn()
        events = _take(core.list_pod_for_all_namespaces, 6, resource_version=rv)
        assert [e["object"].metadata.name for e in events] == [f"p{i}" for i in range(6)]


def test_a_cut_stream_is_an_error_not_a_clean_end(server, core):
    rv = core.list_namespace().metadata.resource_version
    got, failure = [], []

    def read():
        try:
            for e in watch.Watch().stream(core.list_namespace, resource_version=rv,
                                          timeout_seconds=30):
                got.append(e["object"].metadata.name)
        except Exception as exc:  # noqa: BLE001 - reported to the test's thread
            failure.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert _wait(lambda: server.watch_count == 1)
    server.create(namespace("x"))
    assert _wait(lambda: got == ["x"])
    assert server.disconnect_all_watches() == 1
    reader.join(5)
    assert not reader.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], urllib3.exceptions.ProtocolError)


def test_a_stopped_server_is_unreachable_then_back_on_the_same_port(server, core):
    server.create(namespace("x"))
    url = server.url
    server.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespace(_request_timeout=1)
    server.start()
    assert server.url == url
    assert "x" in [n.metadata.name for n in core.list_namespace().items]


# ------------------------------------------------------------------------------- writes


def test_write_errors_are_status_objects_with_the_real_codes(server, core):
    _pods(server, "x", 1)

    def code(call) -> tuple[int, str]:
        with pytest.raises(ApiException) as e:
            call()
        return e.value.status, json.loads(e.value.body)["reason"]

    assert code(lambda: core.read_namespaced_pod("nope", "x")) == (404, "NotFound")
    assert code(lambda: core.create_namespaced_pod("x", pod("x", "p0", None))) == \
        (409, "AlreadyExists")
    assert code(lambda: core.create_namespaced_pod("gone", pod("gone", "a", None))) == \
        (404, "NotFound")
    stale = core.read_namespaced_pod("p0", "x")
    core.patch_namespaced_pod("p0", "x", {"metadata": {"labels": {"v": "2"}}})
    stale.metadata.labels = {"v": "stale"}
    assert code(lambda: core.replace_namespaced_pod("p0", "x", stale)) == (409, "Conflict")
    net = client.NetworkingV1Api(core.api_client)
    assert code(lambda: net.create_namespaced_network_policy("x", policy("y", "p", {}))) == \
        (400, "BadRequest")
    custom = client.CustomObjectsApi(core.api_client)
    server.create(alpha_policy("x", "a", {"podSelector": {}}))
    assert code(lambda: custom.patch_namespaced_custom_object(
        *ALPHA, "x", "networkpolicys", "a", {"spec": {}},
        _content_type="application/strategic-merge-patch+json")) == (415, "UnsupportedMediaType")
    assert code(lambda: core.list_namespace(label_selector="a=b")) == (400, "BadRequest")


def test_generation_counts_spec_changes_only(server):
    server.create(namespace("x"))
    net = client.NetworkingV1Api(api_client(url=server.url))
    created = net.create_namespaced_network_policy("x", policy("x", "p", {"podSelector": {}}))
    assert created.metadata.generation == 1
    labelled = net.patch_namespaced_network_policy("p", "x", {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.generation == 1
    assert labelled.metadata.resource_version != created.metadata.resource_version
    changed = net.patch_namespaced_network_policy(
        "p", "x", [{"op": "add", "path": "/spec/policyTypes", "value": ["Ingress", "Egress"]}])
    assert changed.metadata.generation == 2 and changed.spec.policy_types == ["Ingress", "Egress"]
    same = net.replace_namespaced_network_policy("p", "x", changed)
    assert same.metadata.resource_version == changed.metadata.resource_version  # no-op write


def test_status_is_a_subresource_for_pods(server, core):
    server.create(namespace("x"))
    created = core.create_namespaced_pod("x", pod("x", "a", "10.9.0.1"))
    assert created.status is None or created.status.pod_ip is None  # create ignores status
    body = pod("x", "a", "10.9.0.1")
    core.replace_namespaced_pod_status("a", "x", body)
    assert core.read_namespaced_pod("a", "x").status.pod_ip == "10.9.0.1"
    body["metadata"]["labels"] = {"new": "label"}
    body["status"] = {"podIP": "10.9.9.9"}
    replaced = core.replace_namespaced_pod("a", "x", body)
    assert replaced.metadata.labels == {"new": "label"}
    assert replaced.status.pod_ip == "10.9.0.1"  # PUT on the pod leaves status alone


def test_namespaces_get_their_name_label_and_cascade_on_delete(server, core):
    _pods(server, "x", 2)
    server.create(policy("x", "deny", {"podSelector": {}}))
    assert core.read_namespace("x").metadata.labels == {"ns": "x",
                                                        "kubernetes.io/metadata.name": "x"}
    core.delete_namespace("x")
    assert core.list_namespaced_pod("x").items == []
    assert server.objects() and all(o["metadata"].get("namespace") != "x"
                                    for o in server.objects())


def test_cli_loads_manifests_and_writes_a_kubeconfig(tmp_path):
    (tmp_path / "objects.yaml").write_text(
        yaml.safe_dump_all([pod("x", "a", "10.0.0.1"), namespace("x")]))
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "tests.standin.apiserver", "--load", str(tmp_path),
                             "--write-kubeconfig", str(kubeconfig)],
                            stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert banner.startswith("serving http://127.0.0.1:") and "2 objects loaded" in banner
        c = api_client(kubeconfig=str(kubeconfig))
        assert [p.metadata.name for p in client.CoreV1Api(c).list_namespaced_pod("x").items] \
            == ["a"]
    finally:
        proc.terminate()
        proc.wait(10)


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
