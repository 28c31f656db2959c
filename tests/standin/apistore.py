"""The state behind the API stand-in: objects, one global resourceVersion, a change history.

Semantics follow the Kubernetes API server (api-concepts: "Efficient detection of changes",
"Resource versions", "Retrieving large results sets in chunks"):

- every write takes the next value of one cluster-wide counter, which becomes the object's
  metadata.resourceVersion and the version of its watch event;
- the history keeps the last `history_limit` changes (all resources together, as etcd keeps
  revisions); a watch or an exact/paginated list from a version older than the window fails
  with 410 Expired, as after an etcd compaction;
- a paginated list is a consistent snapshot: pages after the first are served at the first
  page's resourceVersion (rebuilt by rolling the history back), or 410 if that left the window;
- deleting a namespace marks it Terminating, deletes its contents, then the namespace;
  creating into a missing or terminating namespace fails as the NamespaceLifecycle admission
  plugin makes it fail.

Objects are JSON-shaped dicts. A stored dict is never mutated after it is stored: a write
stores a new one, so readers may hold references without copying.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sdn.k8s.resources import NAMESPACES, Resource
from tests.standin.jsonpatch import PatchError, apply_json_patch, merge_patch

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
FIRST_RESOURCE_VERSION = 1000  # etcd revisions are never 0, and "0" means "any" to clients

Key = tuple[str, str]  # (namespace or "", name)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# Strategic merge patch exists only for built-in types; custom resources answer 415.
BUILTIN_GROUPS = ("", "networking.k8s.io", "extensions")


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A metav1.Status failure, the body of every API error."""
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


class ApiError(Exception):
    """An API failure with its HTTP code and Status reason (NotFound, AlreadyExists, ...)."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def _not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource.name} "{name}" not found',
                    {"name": name, "group": resource.group, "kind": resource.plural})


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


@dataclass(frozen=True)
class Change:
    """One write, as a watch reports it: `obj` is what the event carries (for DELETED, the
    last state with the deletion's resourceVersion); `old` is the state before, for rollback."""

    rv: int
    resource: Resource
    key: Key
    type: str
    obj: dict
    old: dict | None


def json_patch(doc: dict, ops: Any) -> Any:
    try:
        return apply_json_patch(doc, ops)
    except PatchError as e:
        raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {e}") from None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _with_rv(obj: dict, rv: int) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


def _sort_key(key: Key) -> str:
    # etcd keys are /registry/<resource>/<namespace>/<name>: lists come in that order.
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


def _spec_part(resource: Resource, obj: dict) -> dict:
    """What metadata.generation counts: everything but metadata (and status, when status is
    a subresource)."""
    skip = {"metadata", "status"} if resource.status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def encode_continue(rv: int, start: str) -> str:
    """The API server's continue token: base64 of {"v": "meta.k8s.io/v1", "rv", "start"}."""
    doc = {"v": "meta.k8s.io/v1", "rv": rv, "start": start}
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        doc = json.loads(base64.b64decode(token, validate=True))
        if doc.get("v") != "meta.k8s.io/v1":
            raise ValueError(doc.get("v"))
        return int(doc["rv"]), str(doc["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "BadRequest", "continue key is not valid: incorrect encoded start "
                       "resourceVersion (version meta.k8s.io/v1)") from None


def parse_resource_version(value: str) -> int:
    try:
        rv = int(value)
        if rv < 0:
            raise ValueError(value)
        return rv
    except ValueError:
        raise ApiError(400, "BadRequest", f'invalid resource version "{value}"') from None


class ObjectStore:
    """All objects of the served resources; thread-safe; `cond` wakes watchers on writes."""

    def __init__(self, resources: tuple[Resource, ...], history_limit: int = 1000):
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.resources = resources
        self.history_limit = history_limit
        self.cond = threading.Condition()
        self._objects: dict[Resource, dict[Key, dict]] = {r: {} for r in resources}
        self._rv = FIRST_RESOURCE_VERSION
        self._history: list[Change] = []
        self._compacted = self._rv  # the history holds every change with rv > _compacted

    # ---------------------------------------------------------------------------- reads

    @property
    def resource_version(self) -> int:
        with self.cond:
            return self._rv

    @property
    def compacted(self) -> int:
        """The oldest resourceVersion a watch may still start from."""
        with self.cond:
            return self._compacted

    def get(self, resource: Resource, namespace: str, name: str) -> dict:
        with self.cond:
            obj = self._objects[resource].get(self._key(resource, namespace, name))
            if obj is None:
                raise _not_found(resource, name)
            return obj

    def objects(self, resource: Resource, namespace: str | None = None) -> list[dict]:
        """Current objects in key order (cluster-wide, or one namespace)."""
        with self.cond:
            return [o for k, o in sorted(self._objects[resource].items(),
                                         key=lambda kv: _sort_key(kv[0]))
                    if namespace is None or k[0] == namespace]

    def list(self, resource: Resource, namespace: str | None = None, *,
             resource_version: str | None = None, match: str | None = None,
             limit: int | None = None, continue_token: str | None = None
             ) -> tuple[list[dict], int, str | None, int | None]:
        """(items, list resourceVersion, continue token or None, remainingItemCount or None)."""
        with self.cond:
            if continue_token:
                if resource_version not in (None, "", "0"):
                    raise ApiError(400, "BadRequest", "specifying resource version is not "
                                   "allowed when using continue")
                rv, start = decode_continue(continue_token)
                if rv < self._compacted:
                    raise expired(
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.")
                objects = self._snapshot(resource, rv)
            elif match == "Exact":
                if resource_version in (None, "", "0"):
                    raise ApiError(400, "BadRequest",
                                   "resourceVersionMatch=Exact requires a resourceVersion")
                rv = parse_resource_version(resource_version)
                if rv < self._compacted:
                    raise expired(f"too old resource version: {rv} ({self._compacted})")
                objects, start = self._snapshot(resource, rv), ""
            else:
                if match not in (None, "", "NotOlderThan"):
                    raise ApiError(400, "BadRequest",
                                   f"unsupported resourceVersionMatch value {match!r}")
                if resource_version not in (None, "", "0"):
                    wanted = parse_resource_version(resource_version)
                    if wanted > self._rv:
                        raise ApiError(504, "Timeout",
                                       f"Too large resource version: {wanted}, current: {self._rv}")
                rv, start = self._rv, ""
                objects = self._objects[resource]
            keys = sorted((k for k in objects if namespace is None or k[0] == namespace),
                          key=_sort_key)
            keys = [k for k in keys if _sort_key(k) >= start]
            token = remaining = None
            if limit and len(keys) > limit:
                remaining = len(keys) - limit
                token = encode_continue(rv, _sort_key(keys[limit - 1]) + "\x00")
                keys = keys[:limit]
            return [objects[k] for k in keys], rv, token, remaining

    def snapshot(self, resource: Resource, namespace: str | None = None) -> tuple[list[dict], int]:
        """(current objects, current resourceVersion): what a watch from "" or "0" replays."""
        with self.cond:
            items = self.objects(resource, namespace)
            return items, self._rv

    def changes_since(self, resource: Resource, namespace: str | None, rv: int
                      ) -> tuple[list[Change], int]:
        """Changes of `resource` after `rv` and the version they reach; 410 if `rv` has left
        the history window."""
        with self.cond:
            if rv < self._compacted:
                raise expired(f"too old resource version: {rv} ({self._compacted})")
            i = bisect.bisect_right(self._history, rv, key=lambda c: c.rv)
            out = [c for c in self._history[i:] if c.resource == resource
                   and (namespace is None or c.key[0] == namespace)]
            return out, max(rv, self._rv)

    def _snapshot(self, resource: Resource, rv: int) -> dict[Key, dict]:
        """The objects of `resource` as they were at `rv` (caller checked the window)."""
        objects = dict(self._objects[resource])
        i = bisect.bisect_right(self._history, rv, key=lambda c: c.rv)
        for change in reversed(self._history[i:]):
            if change.resource != resource:
                continue
            if change.old is None:
                objects.pop(change.key, None)
            else:
                objects[change.key] = change.old
        return objects

    # ---------------------------------------------------------------------------- writes

    def create(self, resource: Resource, obj: dict, namespace: str | None = None, *,
               drop_status: bool = False, record: bool = True) -> dict:
        """Store a new object; 409 if it exists, 404/403 if its namespace is missing or going.

        `drop_status`: the API ignores status on create for resources with a status
        subresource (the HTTP path); the Python API keeps it (a test plays kubelet).
        `record=False` (all writes): the change takes a resourceVersion but no watch will
        ever report it, a lost event for tests of drift repair."""
        obj = self._checked_body(resource, obj, namespace)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{resource.kind} \"\" is invalid: metadata.name: "
                           "Required value: name or generateName is required")
        with self.cond:
            if resource.namespaced:
                self._check_namespace_open(meta["namespace"])
            key = self._key(resource, meta.get("namespace", ""), name)
            if key in self._objects[resource]:
                raise ApiError(409, "AlreadyExists", f'{resource.name} "{name}" already exists',
                               {"name": name, "group": resource.group, "kind": resource.plural})
            for field in ("resourceVersion", "deletionTimestamp", "uid"):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            if drop_status and resource.status_subresource:
                obj.pop("status", None)
            self._defaults(resource, obj)
            return self._commit(resource, key, ADDED, obj, record)

    def update(self, resource: Resource, obj: dict, namespace: str | None = None, *,
               part: str = "all", record: bool = True) -> dict:
        """Replace an object. part "all": everything (the Python API); "main": all but status
        (PUT on a resource with a status subresource); "status": only status (PUT .../status).
        A metadata.resourceVersion in the body is a precondition (409 Conflict if stale)."""
        obj = self._checked_body(resource, obj, namespace)
        meta = obj["metadata"]
        with self.cond:
            key = self._key(resource, meta.get("namespace", ""), meta.get("name") or "")
            current = self._objects[resource].get(key)
            if current is None:
                raise _not_found(resource, key[1])
            wanted = meta.get("resourceVersion")
            if wanted not in (None, "") and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                               f'{resource.name} "{key[1]}": the object has been modified; '
                               "please apply your changes to the latest version and try again",
                               {"name": key[1], "group": resource.group,
                                "kind": resource.plural})
            if part == "status":
                new = {**current, "status": obj.get("status")}
                if new["status"] is None:
                    del new["status"]
            else:
                new = obj
                if part == "main" and resource.status_subresource:
                    new.pop("status", None)
                    if "status" in current:
                        new["status"] = current["status"]
                keep = ("uid", "creationTimestamp", "generation", "deletionTimestamp")
                new["metadata"] = {**meta, **{k: current["metadata"][k] for k in keep
                                              if k in current["metadata"]}}
                if "deletionTimestamp" not in current["metadata"]:
                    new["metadata"].pop("deletionTimestamp", None)
                self._defaults(resource, new)
            if _with_rv(new, int(current["metadata"]["resourceVersion"])) == current:
                return current  # a no-op write does not change the resourceVersion
            if _spec_part(resource, new) != _spec_part(resource, current):
                new["metadata"] = {**new["metadata"],
                                   "generation": current["metadata"].get("generation", 1) + 1}
            return self._commit(resource, key, MODIFIED, new, record)

    def patch(self, resource: Resource, namespace: str, name: str, patch: Any,
              content_type: str, *, part: str = "all") -> dict:
        """Apply a JSON merge patch, a strategic merge patch (as a merge patch: lists are
        replaced, not merged by key) or a JSON patch, atomically; then as `update`."""
        with self.cond:
            current = self.get(resource, namespace, name)
            if content_type == JSON_PATCH:
                new = json_patch(current, patch)
            elif content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
                if content_type == STRATEGIC_MERGE_PATCH and resource.group not in BUILTIN_GROUPS:
                    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in "
                                   f"an unknown format - accepted media types include: "
                                   f"{JSON_PATCH}, {MERGE_PATCH}, application/apply-patch+yaml")
                if not isinstance(patch, dict):
                    raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
                new = merge_patch(current, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"unsupported patch type {content_type!r}")
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise ApiError(422, "Invalid", "the patched object has no metadata")
            for field in ("name", "namespace"):
                if new["metadata"].get(field) != current["metadata"].get(field):
                    raise ApiError(422, "Invalid", f"metadata.{field} may not be changed")
            return self.update(resource, new, namespace, part=part)

    def delete(self, resource: Resource, namespace: str, name: str, *,
               record: bool = True) -> dict:
        """Delete an object (a namespace: Terminating, then its contents, then itself)."""
        with self.cond:
            key = self._key(resource, namespace, name)
            current = self._objects[resource].get(key)
            if current is None:
                raise _not_found(resource, name)
            if resource == NAMESPACES:
                terminating = copy.deepcopy(current)
                terminating["metadata"]["deletionTimestamp"] = _now()
                terminating.setdefault("status", {})["phase"] = "Terminating"
                self._commit(resource, key, MODIFIED, terminating, record)
                for other in self.resources:
                    if other.namespaced:
                        for k in sorted(k for k in self._objects[other] if k[0] == name):
                            self._commit(other, k, DELETED, None, record)
            return self._commit(resource, key, DELETED, None, record)

    def compact(self, keep: int = 0) -> int:
        """Drop all but the last `keep` changes, as an etcd compaction does; returns the new
        oldest version a watch may start from."""
        with self.cond:
            drop = max(0, len(self._history) - keep)
            if drop:
                self._compacted = self._history[drop - 1].rv
                del self._history[:drop]
            if not self._history:
                self._compacted = self._rv
            self.cond.notify_all()
            return self._compacted

    # ---------------------------------------------------------------------------- helpers

    def _key(self, resource: Resource, namespace: str | None, name: str) -> Key:
        return ((namespace or "default") if resource.namespaced else "", name)

    def _checked_body(self, resource: Resource, obj: Any, namespace: str | None) -> dict:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        obj = copy.deepcopy(obj)
        for field, want in (("kind", resource.kind), ("apiVersion", resource.api_version)):
            if obj.get(field) not in (None, want):
                raise ApiError(400, "BadRequest",
                               f"the {field} of the object ({obj[field]}) does not match the "
                               f"resource ({resource.api_version} {resource.kind})")
        obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if resource.namespaced:
            if namespace and meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "BadRequest", "the namespace of the provided object does "
                               "not match the namespace sent on the request")
            meta["namespace"] = meta.get("namespace") or namespace or "default"
        else:
            meta.pop("namespace", None)
        return obj

    def _check_namespace_open(self, namespace: str) -> None:
        ns = self._objects.get(NAMESPACES, {}).get(("", namespace))
        if ns is None:
            raise _not_found(NAMESPACES, namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace "
                           f"{namespace} because it is being terminated")

    def _defaults(self, resource: Resource, obj: dict) -> None:
        if resource == NAMESPACES:
            # The API server labels every namespace with its name (Kubernetes >= 1.21).
            labels = obj["metadata"].get("labels") or {}
            obj["metadata"]["labels"] = {**labels, NAMESPACE_NAME_LABEL: obj["metadata"]["name"]}
            obj.setdefault("status", {"phase": "Active"})

    def _commit(self, resource: Resource, key: Key, type_: str, new: dict | None,
                record: bool = True) -> dict:
        """Take the next resourceVersion, store, record, wake the watchers (lock held)."""
        self._rv += 1
        old = self._objects[resource].get(key)
        if new is None:
            del self._objects[resource][key]
            event_obj = _with_rv(old, self._rv)
        else:
            new = _with_rv(new, self._rv)
            self._objects[resource][key] = new
            event_obj = new
        if record:
            self._history.append(Change(self._rv, resource, key, type_, event_obj, old))
        if len(self._history) > self.history_limit:
            drop = len(self._history) - self.history_limit
            self._compacted = self._history[drop - 1].rv
            del self._history[:drop]
        self.cond.notify_all()
        return event_obj
