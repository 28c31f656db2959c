"""Informers over the official client, against the API stand-in: after any stream of creates,
label changes, deletes and policy updates, with cut streams, compactions (410) and the
server going away in between, the Cluster they feed equals the Cluster built from the
server's current objects; nothing is dropped while the server is away."""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

import pytest

from sdn.engine import Engine
from sdn.k8s.cluster_state import ClusterState, Delta
from sdn.k8s.connect import api_client
from sdn.k8s.informer import SYNCED, Backoff, Event, Informers
from sdn.k8s.resources import NODES, PODS
from sdn.policy.manifests import add_object, remove_object
from sdn.policy.model import FORM_ALPHA, FORM_V1, Cluster
from sdn.policy.rules import cluster_rules
from tests.k8s_support import (
    ALPHA_SPECS,
    ANNOTATIONS,
    POLICY_SPECS,
    alpha_policy,
    namespace,
    node,
    pod,
    policy,
    reference_cluster,
    wait_until,
)
from tests.standin.apiserver import ApiServer
from tests.standin.apistore import ApiError

FAST = {"watch_timeout": 1, "relist_period": None, "backoff_base": 0.02, "backoff_cap": 0.2,
            "page_size": 3, "read_timeout": 5}


@dataclass
class Recorder:
    """The consumer: a ClusterState, plus checks on what the dispatcher hands it."""

    state: ClusterState = field(default_factory=ClusterState)
    batches: list[list[Event]] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    mirror: Cluster = field(default_factory=Cluster)  # rebuilt from Delta.changes alone
    problems: list[str] = field(default_factory=list)

    def __call__(self, events: list[Event]) -> None:
        self.threads.add(threading.get_ident())
        self.batches.append(events)
        delta = self.state.apply(events)
        if delta is None:
            return
        self.deltas.append(delta)
        for change in delta.changes:
            if change.old is not None:
                remove_object(self.mirror, change.old)
            if change.new is not None:
                add_object(self.mirror, change.new)
        if self.mirror != delta.cluster:
            self.problems.append(f"generation {delta.generation}: changes != snapshot")

    def watched_events(self) -> list[Event]:
        return [e for b in self.batches for e in b if e.type != SYNCED]


@pytest.fixture
def server():
    with ApiServer(bookmark_interval=0.05, chunking="random", seed=11) as api:
        yield api


def start(server: ApiServer, recorder: Recorder, **options) -> Informers:
    informers = Informers(api_client(url=server.url), recorder, **{**FAST, **options})
    informers.start()
    assert informers.wait_synced(10)
    return informers


def converged(server: ApiServer, recorder: Recorder) -> bool:
    return recorder.state.ready and recorder.state.snapshot() == reference_cluster(server)


def seed_objects(server: ApiServer) -> None:
    server.create(node("node-1", "10.1.0.0/24", "192.168.0.1"))
    server.create(node("node-2", "10.2.0.0/24", "192.168.0.2"))
    for ns in "xy":
        server.create(namespace(ns))
        for i, n in enumerate("ab"):
            server.create(pod(ns, n, f"10.{i + 1}.0.{ord(ns)}", node=f"node-{i + 1}"))


# ------------------------------------------------------------------------------ basics


def test_lists_then_watches_every_resource(server):
    seed_objects(server)
    recorder = Recorder()
    with start(server, recorder) as informers:
        assert wait_until(lambda: converged(server, recorder))
        assert recorder.deltas[-1].became_ready or any(d.became_ready for d in recorder.deltas)
        server.create(policy("x", "deny", {"podSelector": {}}))
        server.patch(pod("x", "a", None), {"metadata": {"labels": {"role": "db"}}})
        server.delete(pod("y", "b", None))
        assert wait_until(lambda: converged(server, recorder))
        assert ("v1", "x", "deny") in recorder.state.snapshot().policies
        stats = informers.stats()
        assert stats["pods"].lists == 1 and stats["pods"].list_pages == 2  # 4 pods, pages of 3
        assert stats["pods"].events >= 2 and stats["pods"].expired == 0
    assert recorder.threads and len(recorder.threads) == 1
    assert not recorder.problems


def test_a_burst_is_handed_over_in_few_batches(server):
    server.create(namespace("x"))
    recorder = Recorder()
    with start(server, recorder, linger=0.2):
        before = len(recorder.batches)
        for i in range(30):
            server.create(pod("x", f"p{i}", f"10.1.0.{i + 1}"))
        assert wait_until(lambda: converged(server, recorder))
        assert len(recorder.batches) - before < 10


# ------------------------------------------------------------------------------ the stream


class RandomCluster:
    """Random writes through the stand-in's Python API (as other API clients would make)."""

    def __init__(self, server: ApiServer, rng: random.Random):
        self.server, self.rng = server, rng
        self.next_ip = 1

    def existing(self, kind: str, ns: str | None = None) -> list[dict]:
        return [o for o in self.server.objects() if o["kind"] == kind
                and o["apiVersion"] in ("v1", "networking.k8s.io/v1",
                                        "net.alpha.kubernetes.io/v1alpha1")
                and (ns is None or o["metadata"].get("namespace") == ns)]

    def step(self) -> str:
        rng, server = self.rng, self.server
        namespaces = [o["metadata"]["name"] for o in self.existing("Namespace")
                      if o["metadata"]["name"] in "xyz"]
        ns = rng.choice(namespaces) if namespaces else None
        op = rng.choice(["pod", "pod", "pod", "relabel", "relabel", "delete-pod", "move",
                         "policy", "policy", "delete-policy", "alpha", "namespace",
                         "node", "delete-namespace"])
        try:
            if op == "namespace" or ns is None:
                name = rng.choice("xyz")
                server.apply(namespace(name, {"ns": name, "tier": rng.choice("ab")},
                                       rng.choice(ANNOTATIONS)))
            elif op == "pod":
                i = rng.randrange(1, 3)
                self.next_ip += 1
                server.apply(pod(ns, rng.choice("abcd"), f"10.{i}.{self.next_ip // 250}."
                                 f"{self.next_ip % 250 + 1}", {"pod": rng.choice("abcd"),
                                 "role": rng.choice(["web", "db"])}, node=f"node-{i}"))
            elif op in ("relabel", "move", "delete-pod"):
                pods = self.existing("Pod")
                if pods:
                    target = rng.choice(pods)
                    if op == "delete-pod":
                        server.delete(target)
                    elif op == "relabel":
                        server.patch(target, {"metadata": {"labels": {
                            "role": rng.choice(["web", "db", None])}}})
                    else:
                        server.patch(target, {"status": {"podIP": None, "podIPs": None}}
                                     if rng.random() < 0.3 else
                                     {"spec": {"nodeName": rng.choice(["node-1", "node-2"])}})
            elif op == "policy":
                server.apply(policy(ns, rng.choice(["p1", "p2", "p3"]),
                                    rng.choice(POLICY_SPECS)))
            elif op == "delete-policy":
                policies = self.existing("NetworkPolicy")
                if policies:
                    server.delete(rng.choice(policies))
            elif op == "alpha":
                server.apply(alpha_policy(ns, rng.choice(["a1", "a2"]), rng.choice(ALPHA_SPECS)))
            elif op == "node":
                server.patch(node(rng.choice(["node-1", "node-2"]), "", ""),
                             {"metadata": {"labels": {"zone": rng.choice("abc")}}})
            elif op == "delete-namespace":
                server.delete(namespace(ns))
        except ApiError as e:  # e.g. a pod into a namespace being deleted: the API says no
            assert e.code in (403, 404, 409), e
        return op

    def disrupt(self) -> str:
        what = self.rng.choice(["cut", "compact", "compact-and-cut", "restart"])
        if what in ("compact", "compact-and-cut"):
            self.server.compact_history(keep=self.rng.choice([0, 2]))
        if what in ("cut", "compact-and-cut"):
            self.server.disconnect_all_watches()
        if what == "restart":
            self.server.stop()
            for _ in range(self.rng.randrange(1, 6)):
                self.step()  # writes the informers cannot see until the server is back
            self.server.start()
        return what


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_stream_with_disconnects_and_410s_converges(server, seed):
    rng = random.Random(seed)
    seed_objects(server)
    recorder = Recorder()
    world = RandomCluster(server, rng)
    with start(server, recorder) as informers:
        for _round in range(4):
            for _ in range(40):
                world.step()
                if rng.random() < 0.08:
                    world.disrupt()
                if rng.random() < 0.1:
                    threading.Event().wait(rng.uniform(0, 0.05))
            assert wait_until(lambda: converged(server, recorder), timeout=15), \
                _difference(recorder.state.snapshot(), reference_cluster(server))
        stats = informers.stats()
    assert not recorder.problems
    assert len(recorder.threads) == 1
    # The disruptions did hit: cut streams and refused connections, and 410s with re-lists.
    assert sum(s.errors for s in stats.values()) > 0
    assert sum(s.expired for s in stats.values()) > 0
    # Each resource's watch events arrive in resourceVersion order.
    last: dict[str, int] = {}
    for e in recorder.watched_events():
        if not e.synthetic:
            rv = int(e.ref.resource_version)
            assert rv > last.get(e.resource.name, 0), f"{e.resource.name}: {rv} out of order"
            last[e.resource.name] = rv
    # The deltas, fed to the incremental engine, give the rules of a fresh compile.
    engine = Engine(Cluster())
    for delta in recorder.deltas:
        engine.apply(delta.upserts, delta.deletes)
    fresh = reference_cluster(server)
    rules, isolation = cluster_rules(fresh)
    assert sorted(engine.ruleset.all_rules(), key=lambda r: r.id) == \
        sorted(rules, key=lambda r: r.id)
    assert engine.ruleset.all_isolation() == isolation


def _difference(got: Cluster, want: Cluster) -> str:
    lines = []
    for coll in ("namespaces", "pods", "nodes", "policies"):
        a, b = getattr(got, coll), getattr(want, coll)
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                lines.append(f"{coll} {key}: informer {a.get(key)} != server {b.get(key)}")
    return "\n".join(lines[:20]) or "equal"


# ------------------------------------------------------------------------------ failures


def test_nothing_is_dropped_while_the_api_server_is_away(server):
    seed_objects(server)
    server.create(policy("x", "deny", {"podSelector": {}}))
    recorder = Recorder()
    with start(server, recorder) as informers:
        assert wait_until(lambda: converged(server, recorder))
        before, batches = recorder.state.snapshot(), len(recorder.batches)
        errors = sum(s.errors for s in informers.stats().values())
        server.stop()
        threading.Event().wait(1.0)  # many backoff rounds (the cap is 0.2 s)
        assert sum(s.errors for s in informers.stats().values()) > errors + 5
        assert len(recorder.batches) == batches  # not one event: no flush, no empty list
        assert recorder.state.snapshot() == before
        # Changes made meanwhile, history compacted: the re-watch gets 410, re-lists, and
        # reports the deletion it never saw as a watch event.
        server.delete(pod("x", "a", None))
        server.create(pod("x", "c", "10.1.0.99"))
        server.compact_history()
        server.start()
        assert wait_until(lambda: converged(server, recorder))
        relisted = [e for e in recorder.watched_events()[-10:] if e.synthetic]
        assert ("DELETED", "x/a") in [(e.type, f"{e.ref.namespace}/{e.ref.name}")
                                      for e in relisted]
        assert informers.stats()["pods"].expired >= 1
        assert informers.stats()["pods"].relists.get("expired") >= 1


def test_bookmarks_keep_a_quiet_watch_resumable_after_compaction(server):
    server.create(node("node-1", "10.1.0.0/24", "192.168.0.1"))
    recorder = Recorder()
    with start(server, recorder) as informers:
        nodes = informers.informers[NODES]
        server.create(namespace("x"))  # moves the global version, not the nodes' stream
        current = str(server.resource_version)
        assert wait_until(lambda: nodes.resource_version == current)  # through a bookmark
        server.compact_history()
        server.disconnect_all_watches()
        threading.Event().wait(0.5)
        assert nodes.stats.expired == 0 and nodes.stats.relists == {"initial": 1}
        assert nodes.stats.bookmarks > 0


def test_periodic_relist_repairs_drift(server):
    seed_objects(server)
    recorder = Recorder()
    with start(server, recorder, relist_period=0.5) as informers:
        server.patch(pod("x", "a", None), {"metadata": {"labels": {"seen": "yes"}}})
        server.update({**server.get(pod("y", "a", None)), "metadata": {
            **server.get(pod("y", "a", None))["metadata"], "labels": {"lost": "event"}}},
            record=False)  # a change no watch reports
        assert wait_until(lambda: converged(server, recorder), timeout=10)
        assert informers.stats()["pods"].drift >= 1
        assert informers.stats()["pods"].relists.get("resync", 0) >= 1


def test_invalid_objects_are_logged_by_name_and_count_as_absent(server, caplog):
    server.create(namespace("x"))
    good = alpha_policy("x", "db", ALPHA_SPECS[0])
    bad = alpha_policy("x", "db", {"podSelector": {"role": "db"}, "allowIncomng": {}})
    recorder = Recorder()
    key = (FORM_ALPHA, "x", "db")
    with caplog.at_level(logging.WARNING, logger="sdn.k8s.informer"), start(server, recorder):
        server.create(bad)
        assert wait_until(lambda: recorder.state.invalid())
        assert "NetworkPolicy x/db" in caplog.text and "allowIncomng" in caplog.text
        assert key not in recorder.state.snapshot().policies
        server.update(good)
        assert wait_until(lambda: key in recorder.state.snapshot().policies)
        assert recorder.state.invalid() == {}
        server.update(bad)  # valid, then invalid again: absent, as after a restart
        assert wait_until(lambda: key not in recorder.state.snapshot().policies)
        assert converged(server, recorder)


def test_policy_status_follows_generations(server):
    server.create(namespace("x"))
    recorder = Recorder()
    key = (FORM_V1, "x", "p")
    with start(server, recorder):
        server.create(policy("x", "p", POLICY_SPECS[0]))
        assert wait_until(lambda: [s.observed_generation for s in recorder.state.policy_status()]
                          == [1])
        (st,) = recorder.state.policy_status()
        assert not st.realized and st.realized_generation is None
        newly = recorder.state.mark_realized(recorder.state.generation)
        assert [(s.ref.name, s.realized_generation) for s in newly] == [("p", 1)]
        generation = recorder.state.generation
        server.patch(policy("x", "p", {}), {"metadata": {"labels": {"only": "metadata"}}})
        server.patch(policy("x", "p", {}), {"spec": POLICY_SPECS[1]})
        assert wait_until(lambda: recorder.state.policy_status()[0].observed_generation == 2)
        (st,) = recorder.state.policy_status()
        assert (st.realized, st.realized_generation) == (False, 1)
        assert recorder.state.mark_realized(generation) == []  # an older state: not yet
        assert [s.realized_generation for s in
                recorder.state.mark_realized(recorder.state.generation)] == [2]
        assert key in recorder.state.snapshot().policies
        server.delete(policy("x", "p", {}))
        assert wait_until(lambda: recorder.state.policy_status() == [])


def test_backoff_grows_with_jitter_and_stays_bounded():
    backoff = Backoff(base=0.1, cap=1.0, rng=random.Random(0))
    delays = [backoff.next() for _ in range(12)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert delays[0] <= 0.1 and delays[-1] >= 0.5
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next() <= 0.1


def test_pods_resource_is_listed_in_pages(server):
    server.create(namespace("x"))
    for i in range(10):
        server.create(pod("x", f"p{i}", f"10.1.0.{i + 1}"))
    recorder = Recorder()
    with start(server, recorder) as informers:
        assert wait_until(lambda: converged(server, recorder))
        assert informers.stats()[PODS.name].list_pages == 4


def test_a_list_whose_continue_token_expires_starts_over(server):
    from sdn.k8s.informer import Informer, list_function

    server.create(namespace("x"))
    for i in range(7):
        server.create(pod("x", f"p{i}", f"10.1.0.{i + 1}"))
    real = list_function(api_client(url=server.url), PODS)
    compacted = []

    def list_fn(**kwargs):
        if kwargs.get("_continue") and not compacted:  # between the first and second page
            server.delete(pod("x", "p0", None))
            compacted.append(server.compact_history())
        return real(**kwargs)

    recorder = Recorder()
    informer = Informer(None, PODS, recorder, list_fn=list_fn, **FAST)
    informer.start()
    try:
        assert informer.synced.wait(10)
        assert compacted and informer.stats.expired == 1
        assert sorted(p.name for p in informer.objects()) == [f"p{i}" for i in range(1, 7)]
        assert informer.stats.lists == 1  # the interrupted list delivered nothing
    finally:
        informer.stop()
