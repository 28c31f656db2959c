"""Informers over the official `kubernetes` client: list, then watch from the list's version.

One `Informer` per resource keeps a store of the objects it has seen, as the API sent them, and
turns every change into an `Event` carrying model objects (`sdn.policy.model`, through
`sdn.policy.manifests.parse_object`, so an object from the API passes the same validation as a
manifest file). All informers hand their events to one `Dispatcher`, which calls the consumer
in a single thread, in arrival order, a batch at a time.

The cycle, after client-go's reflector:
- list in pages (limit/continue), diff the result against the store and emit the difference
  as synthetic ADDED/MODIFIED/DELETED events, then SYNCED;
- watch from the list's resourceVersion with allowWatchBookmarks and a jittered
  timeoutSeconds; a BOOKMARK only advances the version; a clean end of the stream re-watches
  from the last version seen, without listing (an end long before the timeout with not one
  event counts as a failure, so a misbehaving server is not hammered);
- a 410 (ERROR event or HTTP status: the version left the server's history) re-lists and
  diffs, so deletions missed meanwhile are still reported;
- any other failure (refused connection, cut stream, 5xx) retries the watch from the last
  version after an exponential backoff with jitter, bounded by `Backoff.cap`. Nothing is
  emitted meanwhile: the consumer keeps its last state while the API server is away;
- every `relist_period` a re-list repairs drift (events the stream lost); the differences it
  finds are counted in `InformerStats.drift`.

Raw JSON is read with `_preload_content=False` instead of through `watch.Watch().stream`:
that keeps each object in its manifest shape, and the client's typed models reject objects
the API may legally serve (and its ERROR path breaks when deserialization is switched off).
An object that fails validation is logged with its name and counts as absent (what a freshly
started agent would see), never as a crash.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sdn.k8s.resources import NAMESPACES, NETWORK_POLICIES, NODES, PODS, WATCHED, Resource
from sdn.policy.manifests import ManifestError, parse_object
from sdn.policy.model import Namespace, Node, Pod, Policy

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"
SYNCED = "SYNCED"  # not an API event: a list of this resource was fully delivered

Model = Namespace | Pod | Node | Policy
Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class ObjectRef:
    """Which API object an event is about, with the version facts status reporting needs."""

    resource: Resource
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    generation: int | None = None

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.resource.kind} {where} ({self.resource.api_version})"


@dataclass(frozen=True)
class Event:
    """One change as the consumer sees it.

    `old` and `new` are model objects, None when absent or invalid (then `error` says why
    `new` is None although the object exists). `received` is the monotonic time the informer
    read the change, the start of realization latency. `synthetic`: found by a list's diff,
    not reported by a watch. For SYNCED, only `resource` and `ref.resource_version` mean
    anything."""

    resource: Resource
    type: str
    old: Model | None
    new: Model | None
    ref: ObjectRef
    received: float
    error: str | None = None
    synthetic: bool = False


@dataclass
class InformerStats:
    """Counters for metrics: what the informer did since it started."""

    lists: int = 0  # completed lists (initial, after 410, resync)
    list_pages: int = 0
    watches: int = 0  # watch requests opened
    events: int = 0  # ADDED/MODIFIED/DELETED read from watch streams
    bookmarks: int = 0
    expired: int = 0  # 410 Gone: re-list needed
    errors: int = 0  # failures retried with backoff
    drift: int = 0  # differences found by periodic re-lists
    invalid: int = 0  # objects currently ignored as invalid
    last_error: str = ""
    failing_since: float = 0.0  # wall-clock time the current run of failures began (0: none)
    relists: dict[str, int] = field(default_factory=dict)  # reason -> count


class Backoff:
    """Exponential backoff with jitter: the n-th delay is uniform in [d/2, d], d = min(cap,
    base * 2**n). Reset after a success."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self._rng = rng or random.Random()
        self._n = 0

    def next(self) -> float:
        d = min(self.cap, self.base * 2 ** min(self._n, 32))
        self._n += 1
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self._n = 0


class _Gone(Exception):
    """The resourceVersion left the server's history: list again."""


class _Stopped(Exception):
    pass


class WatchError(Exception):
    """An ERROR event other than 410, or a malformed stream."""


class Forbidden(Exception):
    """403: this identity may not list or watch the resource (its RBAC role lacks the verb)."""


def list_function(api_client: Any, resource: Resource) -> Callable[..., Any]:
    """The official client's list-or-watch call for `resource`, across all namespaces."""
    from kubernetes import client

    if resource == PODS:
        return client.CoreV1Api(api_client).list_pod_for_all_namespaces
    if resource == NAMESPACES:
        return client.CoreV1Api(api_client).list_namespace
    if resource == NODES:
        return client.CoreV1Api(api_client).list_node
    if resource == NETWORK_POLICIES:
        return client.NetworkingV1Api(api_client).list_network_policy_for_all_namespaces
    if resource.group:  # custom resources, and group versions the client no longer ships
        return functools.partial(client.CustomObjectsApi(api_client).list_cluster_custom_object,
                                 resource.group, resource.version, resource.plural)
    raise ValueError(f"no list call for {resource.name}")


def object_ref(resource: Resource, raw: dict) -> ObjectRef:
    found = raw.get("metadata")
    meta: dict = found if isinstance(found, dict) else {}
    generation = meta.get("generation")
    return ObjectRef(resource, (meta.get("namespace") or "") if resource.namespaced else "",
                     str(meta.get("name") or ""), str(meta.get("uid") or ""),
                     str(meta.get("resourceVersion") or ""),
                     generation if isinstance(generation, int) else None)


def to_model(resource: Resource, raw: dict) -> tuple[Model | None, str | None]:
    """An API object -> (model object, None) or (None, why it is invalid).

    Items of built-in lists come without kind and apiVersion; they are filled in from the
    resource, so parse_object sees the manifest shape. The origin named in messages (and
    kept in Policy.origin) is the object's API path."""
    doc = {"kind": resource.kind, "apiVersion": resource.api_version, **raw}
    ref = object_ref(resource, raw)
    try:
        obj = parse_object(doc, resource.object_path(ref.namespace, ref.name))
    except ManifestError as e:
        return None, str(e)
    if obj is None:
        return None, f"{ref}: kind {doc.get('kind')} is not modelled"
    return obj, None


@dataclass
class _Entry:
    raw: dict
    ref: ObjectRef
    model: Model | None
    error: str | None


class Informer:
    """List-then-watch of one resource in a background thread, feeding `sink`."""

    def __init__(self, api_client: Any, resource: Resource,
                 sink: Callable[[list[Event]], None], *, page_size: int = 500,
                 watch_timeout: float = 300.0, relist_period: float | None = 600.0,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, rng: random.Random | None = None,
                 list_fn: Callable[..., Any] | None = None):
        self.resource = resource
        self.stats = InformerStats()
        self.synced = threading.Event()  # set once the first list was delivered
        self.resource_version: str | None = None
        self._list_fn = list_fn or list_function(api_client, resource)
        self._sink = sink
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._relist_period = relist_period
        self._rng = rng or random.Random()
        self._backoff = Backoff(backoff_base, backoff_cap, self._rng)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._store: dict[Key, _Entry] = {}
        self._stopping = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"informer:{self.resource.name}")
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop and join; an open watch is cut so the thread notices at once."""
        self._stopping.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # urllib3 >= 2.3: unblocks a read in another thread
            except Exception:  # noqa: BLE001 - already closed: nothing left to unblock
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def objects(self) -> list[Model]:
        """The valid objects currently known (a copy; for inspection and tests)."""
        return [e.model for e in list(self._store.values()) if e.model is not None]

    # ------------------------------------------------------------------------ the loop

    def _run(self) -> None:
        # self.resource_version is the last version delivered (list, event or bookmark):
        # after a failure the watch resumes from there, not from where the failed one began.
        reason = "initial"
        next_relist = self._next_relist()
        while not self._stopping.is_set():
            try:
                if self.resource_version is None:
                    self._relist(reason)
                    next_relist = self._next_relist()
                timeout = self._rng.uniform(self._watch_timeout, 2 * self._watch_timeout)
                if next_relist is not None:
                    timeout = min(timeout, max(1.0, next_relist - time.monotonic()))
                timeout = max(1, round(timeout))
                began = time.monotonic()
                if not self._watch(self.resource_version, timeout) \
                        and time.monotonic() - began < timeout / 2:
                    raise WatchError("the watch ended early without a single event")
                if next_relist is not None and time.monotonic() >= next_relist:
                    self.resource_version, reason = None, "resync"
            except _Stopped:
                break
            except _Gone as e:
                listing = self.resource_version is None
                self.stats.expired += 1
                log.info("%s: %s; listing again", self.resource.name, e)
                self.resource_version, reason = None, "expired"
                if listing:  # the list itself expired: do not hammer the server
                    self._stopping.wait(self._backoff.next())
            except Exception as e:  # noqa: BLE001 - refused, cut, timed out, 5xx, garbage: retry later
                if self._stopping.is_set():
                    break
                self.stats.errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"
                self.stats.failing_since = self.stats.failing_since or time.time()
                delay = self._backoff.next()
                log.log(logging.ERROR if isinstance(e, Forbidden) else logging.WARNING,
                        "%s: %s; retrying in %.2fs (from resourceVersion %s)",
                        self.resource.name, self.stats.last_error, delay, self.resource_version)
                self._stopping.wait(delay)
        self._resp = None

    def _next_relist(self) -> float | None:
        if not self._relist_period:
            return None
        return time.monotonic() + self._rng.uniform(self._relist_period, 1.5 * self._relist_period)

    def _call(self, **kwargs) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._list_fn(_preload_content=False, **kwargs)
        except ApiException as e:
            if e.status == 410:
                raise _Gone(f"HTTP 410: {e.reason}") from None
            if e.status == 403:
                verb = "watch" if kwargs.get("watch") else "list"
                try:
                    said = json.loads(e.body or "{}").get("message") or e.reason
                except ValueError:
                    said = e.reason
                raise Forbidden(f"not allowed to {verb} {self.resource.name} (RBAC: the role needs verb "
                                f"{verb!r} on resource {self.resource.plural!r} of API group "
                                f"{self.resource.group or 'core'!r}); the API server says: {said}") from None
            raise

    def _relist(self, reason: str) -> None:
        """List every page, emit the difference to the store, then SYNCED."""
        items: dict[Key, dict] = {}
        token, rv = None, None
        while True:
            if self._stopping.is_set():
                raise _Stopped()
            resp = self._call(limit=self._page_size, _continue=token,
                              _request_timeout=(self._connect_timeout, self._read_timeout))
            try:
                doc = json.loads(resp.data)
            finally:
                resp.release_conn()
            if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                raise WatchError(f"a list of {self.resource.name} without items")
            self.stats.list_pages += 1
            meta = doc.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")
            for raw in doc["items"]:
                if isinstance(raw, dict):
                    ref = object_ref(self.resource, raw)
                    items[ref.key] = raw
            token = meta.get("continue")
            if not token:
                break
        if not rv:
            raise WatchError(f"a list of {self.resource.name} without a resourceVersion")
        now = time.monotonic()
        events = [self._delete(key, now, synthetic=True)
                  for key in sorted(self._store.keys() - items.keys())]
        for key in sorted(items):
            event = self._put(items[key], now, synthetic=True)
            if event is not None:
                events.append(event)
        if reason == "resync":
            self.stats.drift += len(events)
            if events:
                log.warning("%s: resync found %d objects out of date", self.resource.name,
                            len(events))
        self.stats.lists += 1
        self.stats.failing_since = 0.0
        self.stats.last_error = ""  # a list went through: what failed before is over
        self.stats.relists[reason] = self.stats.relists.get(reason, 0) + 1
        self.resource_version = rv
        events.append(Event(self.resource, SYNCED, None, None,
                            ObjectRef(self.resource, "", "", resource_version=rv), now))
        self._emit(events)
        self.synced.set()
        self._backoff.reset()

    def _watch(self, rv: str | None, timeout: int) -> int:
        """One watch request, until the stream ends; every line advances resource_version.
        Returns how many lines (events and bookmarks) it read."""
        resp = self._call(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                          timeout_seconds=timeout,
                          _request_timeout=(self._connect_timeout, timeout + self._read_timeout))
        self._resp = resp
        self.stats.watches += 1
        self.stats.failing_since = 0.0  # the server answered
        buffer, lines = bytearray(), 0
        try:
            if self._stopping.is_set():
                raise _Stopped()
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer.extend(chunk)
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[:end + 1]
                    if line.strip():
                        self._on_line(line)
                        lines += 1
                if self._stopping.is_set():
                    raise _Stopped()
            if self._stopping.is_set():
                raise _Stopped()
            if buffer.strip():
                self._on_line(bytes(buffer))
                lines += 1
            return lines
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()

    def _on_line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError):
            raise WatchError(f"malformed watch event {line[:200]!r}") from None
        if kind == ERROR:
            code = obj.get("code") if isinstance(obj, dict) else None
            message = f"{obj.get('reason')}: {obj.get('message')}" if isinstance(obj, dict) \
                else str(obj)
            if code == 410:
                raise _Gone(message)
            raise WatchError(f"watch error {code}: {message}")
        if not isinstance(obj, dict):
            raise WatchError(f"watch event {kind} without an object")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        self._backoff.reset()
        if kind == BOOKMARK:
            self.stats.bookmarks += 1
        elif kind in (ADDED, MODIFIED, DELETED):
            self.stats.events += 1
            now = time.monotonic()
            if kind == DELETED:
                ref = object_ref(self.resource, obj)
                event = self._delete(ref.key, now, ref=ref) if ref.key in self._store else None
            else:
                event = self._put(obj, now)
            if event is not None:
                self._emit([event])
        else:
            log.warning("%s: ignoring watch event of type %r", self.resource.name, kind)
        if version:
            self.resource_version = version

    # ------------------------------------------------------------------------ the store

    def _put(self, raw: dict, now: float, synthetic: bool = False) -> Event | None:
        ref = object_ref(self.resource, raw)
        old = self._store.get(ref.key)
        if old is not None and old.ref.resource_version == ref.resource_version:
            return None  # the same version again (a re-list of an unchanged object)
        model, error = to_model(self.resource, raw)
        if error:
            log.warning("ignoring invalid %s", error)
        self._store[ref.key] = _Entry(raw, ref, model, error)
        self._count_invalid(old, error)
        return Event(self.resource, MODIFIED if old else ADDED, old.model if old else None,
                     model, ref, now, error, synthetic)

    def _delete(self, key: Key, now: float, synthetic: bool = False,
                ref: ObjectRef | None = None) -> Event:
        old = self._store.pop(key)
        self._count_invalid(old, None)
        return Event(self.resource, DELETED, old.model, None, ref or old.ref, now, None,
                     synthetic)

    def _count_invalid(self, old: _Entry | None, error: str | None) -> None:
        self.stats.invalid += (error is not None) - (old is not None and old.error is not None)

    def _emit(self, events: list[Event]) -> None:
        if events and not self._stopping.is_set():
            self._sink(events)


class Dispatcher:
    """Calls `handler(events)` in one thread, in the order informers emitted them.

    Everything queued when the thread wakes goes into one batch (at least one emission, at
    most about `max_batch` events; an emission is never split), optionally waiting `linger`
    seconds for more, so a burst costs one recompute instead of many."""

    _STOP = object()

    def __init__(self, handler: Callable[[list[Event]], None], *, max_batch: int = 1000,
                 linger: float = 0.0):
        self._handler = handler
        self._max_batch = max_batch
        self._linger = linger
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0

    def put(self, events: list[Event]) -> None:
        self._queue.put(events)

    @property
    def alive(self) -> bool:
        """The dispatcher thread is running (health of the agent's event path)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._queue.put(self._STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is self._STOP:
                break
            batch = list(item)
            deadline = time.monotonic() + self._linger
            while len(batch) < self._max_batch:
                try:
                    wait = deadline - time.monotonic()
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stopping = True
                    break
                batch.extend(item)
            self.batches += 1
            try:
                self._handler(batch)
            except Exception:  # the consumer's bug must not stop the stream
                log.exception("event handler failed on a batch of %d events", len(batch))


class Informers:
    """The informers of `resources` sharing one dispatcher that feeds `handler`."""

    def __init__(self, api_client: Any, handler: Callable[[list[Event]], None],
                 resources: Iterable[Resource] = WATCHED, *, max_batch: int = 1000,
                 linger: float = 0.0, **informer_options):
        self.dispatcher = Dispatcher(handler, max_batch=max_batch, linger=linger)
        self.informers = {r: Informer(api_client, r, self.dispatcher.put, **informer_options)
                          for r in resources}

    def start(self) -> Informers:
        self.dispatcher.start()
        for informer in self.informers.values():
            informer.start()
        return self

    def stop(self) -> None:
        for informer in self.informers.values():
            informer._stopping.set()
        for informer in self.informers.values():
            informer.stop()
        self.dispatcher.stop()

    def __enter__(self) -> Informers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def synced(self) -> bool:
        """True once every informer has delivered its first list (to the queue)."""
        return all(i.synced.is_set() for i in self.informers.values())

    def wait_synced(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self.informers.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not informer.synced.wait(left):
                return False
        return True

    def stats(self) -> dict[str, InformerStats]:
        return {r.name: i.stats for r, i in self.informers.items()}
