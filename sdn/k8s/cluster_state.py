"""The cluster as the informers report it, one generation per batch of events.

`ClusterState.apply(events)` folds a batch (from `sdn.k8s.informer.Dispatcher`) into a
`Cluster` and returns a `Delta`: the new state generation, a snapshot of the Cluster to
compile (its values are frozen, so the snapshot shares them), the objects that changed (net
over the batch: an object added then deleted within one batch is no change), and when the
events were received (for realization latency). A batch that changes nothing returns None.

It also keeps the status a user reads for each NetworkPolicy (all three forms): the
metadata.generation this agent has seen, the state generation that first carried it, and
the generation this node has realized, which advances when the agent reports, through
`mark_realized(state_generation)`, that a bundle built from that state has committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from sdn.k8s.informer import DELETED, SYNCED, Event, Model, ObjectRef
from sdn.k8s.resources import WATCHED, Resource
from sdn.policy.manifests import add_object, object_key, remove_object
from sdn.policy.model import Cluster

PolicyKey = tuple[str, str, str]  # (form, namespace, name), as Cluster.policies


@dataclass(frozen=True)
class Change:
    """One object's net change over a batch; `collection`/`key` as in manifests.object_key."""

    collection: str
    key: Any
    old: Model | None
    new: Model | None


@dataclass(frozen=True)
class Delta:
    generation: int
    cluster: Cluster
    changes: tuple[Change, ...]
    received: tuple[float, ...]  # monotonic receive times of the batch's API events
    became_ready: bool = False  # the last initial list arrived with this batch

    @property
    def upserts(self) -> list[Model]:
        """Objects added or replaced: with `deletes`, the input of sdn.engine.Engine.apply."""
        return [c.new for c in self.changes if c.new is not None]

    @property
    def deletes(self) -> list[Model]:
        return [c.old for c in self.changes if c.new is None and c.old is not None]


@dataclass(frozen=True)
class PolicyStatus:
    """What this node knows about one policy object.

    observed_generation: metadata.generation of the newest version seen; batch: the state
    generation that carried it; realized_generation: the metadata.generation whose state
    this node has committed to its bridge (None: none yet); error: why the newest version is
    ignored (invalid), if it is."""

    ref: ObjectRef
    observed_generation: int | None
    batch: int
    realized_generation: int | None = None
    realized: bool = False
    error: str | None = None

    @property
    def form(self) -> str:
        return self.ref.resource.policy_form or ""


class ClusterState:
    """A Cluster fed by informer events; thread-safe (apply in the dispatcher thread, reads
    from anywhere)."""

    def __init__(self, resources: Iterable[Resource] = WATCHED):
        self._lock = threading.Lock()
        self._cluster = Cluster()
        self._expected = {r.name for r in resources}
        self._synced: set[str] = set()
        self._policies: dict[PolicyKey, PolicyStatus] = {}
        self._invalid: dict[tuple[str, str, str], str] = {}
        # (resource name, namespace, name) -> the resourceVersion folded in: what the lab (or
        # anyone) compares with the API's to know this node has seen a change
        self._versions: dict[tuple[str, str, str], str] = {}
        self.generation = 0
        self.realized_generation = 0

    @property
    def ready(self) -> bool:
        """Every watched resource has been listed once: the state is the cluster's, not a
        fragment of it (programming a bridge earlier would drop rules)."""
        with self._lock:
            return self._expected <= self._synced

    def snapshot(self) -> Cluster:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> Cluster:
        c = self._cluster
        return Cluster(namespaces=dict(c.namespaces), pods=dict(c.pods), nodes=dict(c.nodes),
                       policies=dict(c.policies))

    def invalid(self) -> dict[tuple[str, str, str], str]:
        """(resource name, namespace, name) -> why the object is ignored."""
        with self._lock:
            return dict(self._invalid)

    # ---------------------------------------------------------------------------- events

    def apply(self, events: list[Event]) -> Delta | None:
        """Fold a batch in; a Delta if the Cluster, a policy status or readiness changed."""
        with self._lock:
            was_ready = self._expected <= self._synced
            batch = self.generation + 1
            before: dict[tuple[str, Any], Model | None] = {}
            status_changed = False
            received = []
            for ev in events:
                if ev.type == SYNCED:
                    self._synced.add(ev.resource.name)
                    continue
                received.append(ev.received)
                for obj, put in ((ev.old, False), (ev.new, True)):
                    if obj is None:
                        continue
                    k = object_key(obj)
                    before.setdefault(k, self._current(k))
                    (add_object if put else remove_object)(self._cluster, obj)
                ikey = (ev.resource.name, ev.ref.namespace, ev.ref.name)
                if ev.type == DELETED:
                    self._versions.pop(ikey, None)
                else:
                    self._versions[ikey] = ev.ref.resource_version
                if ev.error and ev.type != DELETED:
                    self._invalid[ikey] = ev.error
                else:
                    self._invalid.pop(ikey, None)
                if ev.resource.policy_form:
                    status_changed |= self._observe_policy(ev, batch)
            changes = tuple(Change(k[0], k[1], old, self._current(k))
                            for k, old in before.items() if old != self._current(k))
            became_ready = not was_ready and self._expected <= self._synced
            if not (changes or status_changed or became_ready):
                return None
            self.generation = batch
            return Delta(batch, self._snapshot(), changes, tuple(received), became_ready)

    def _current(self, k: tuple[str, Any]) -> Model | None:
        return getattr(self._cluster, k[0]).get(k[1])

    def _observe_policy(self, ev: Event, batch: int) -> bool:
        key = (ev.resource.policy_form or "", ev.ref.namespace, ev.ref.name)  # (a policy: has a form)
        prev = self._policies.get(key)
        if ev.type == DELETED:
            return self._policies.pop(key, None) is not None
        same_object = prev is not None and prev.ref.uid == ev.ref.uid
        if prev is not None and same_object and prev.observed_generation == ev.ref.generation \
                and prev.error == ev.error:
            self._policies[key] = replace(prev, ref=ev.ref)  # metadata only: nothing to do
            return False
        self._policies[key] = PolicyStatus(
            ev.ref, ev.ref.generation, batch,
            realized_generation=prev.realized_generation if prev is not None and same_object else None,
            error=ev.error)
        return True

    # ---------------------------------------------------------------------------- status

    def mark_realized(self, generation: int) -> list[PolicyStatus]:
        """The bridge now runs the state of `generation`: every valid policy observed at or
        before it is realized. Returns the statuses that became realized (to report)."""
        with self._lock:
            self.realized_generation = max(self.realized_generation, generation)
            newly = []
            for key, st in self._policies.items():
                if st.error is None and not st.realized and st.batch <= generation:
                    st = replace(st, realized=True, realized_generation=st.observed_generation)
                    self._policies[key] = st
                    newly.append(st)
            return newly

    def versions(self) -> dict[tuple[str, str, str], str]:
        """(resource name, namespace, name) -> resourceVersion of every object folded in."""
        with self._lock:
            return dict(self._versions)

    def policy_status(self) -> list[PolicyStatus]:
        """Every policy object known, in (form, namespace, name) order."""
        with self._lock:
            return [self._policies[k] for k in sorted(self._policies)]
