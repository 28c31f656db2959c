"""A local stand-in for kube-apiserver, kept for the informers' fault-injection tests: list,
watch and write over HTTP.

The product and every other test run against the real kube-apiserver (`make k8s`); this serves
the resources of `sdn.k8s.resources` with the API's own wire behaviour, enough for the official
`kubernetes` client to run unchanged against it, plus faults a real server cannot be told to
make (see the test hooks below):

- discovery (/api, /apis, /api/v1, /apis/GROUP/VERSION, /version) and /healthz, /readyz;
- list with resourceVersion, resourceVersionMatch, limit and continue (consistent snapshots);
  built-in lists carry items without kind/apiVersion, as the real server sends them;
- watch (?watch=1): chunked JSON lines {"type", "object"}; from a resourceVersion, or from ""
  / "0" with the current objects replayed as ADDED; BOOKMARK events every `bookmark_interval`
  when allowWatchBookmarks=true; a version older than the history window gets HTTP 200 and an
  ERROR event carrying a 410 Expired Status, then the end of the stream (the watch cache's
  behaviour); timeoutSeconds ends the stream cleanly;
- create, replace, patch (merge, strategic-as-merge, JSON patch), delete; /status
  subresources for pods, nodes and namespaces; errors as metav1.Status with the real codes.

Test hooks on `ApiServer`: create/update/apply/patch/delete objects directly,
`compact_history()` (every older version now answers 410), `disconnect_all_watches()` (streams
cut without their final chunk), `stop()`/`start()` (unreachable, then back on the same port),
and `chunking` ("event", "split", "batch", "random") to vary how events are cut into chunks.

    python -m tests.standin.apiserver --port 8080 --load examples/ --write-kubeconfig kubeconfig
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sdn.k8s.resources import NAMESPACES, SERVED, Resource, resource_for
from tests.standin.apistore import (
    BUILTIN_GROUPS,
    MERGE_PATCH,
    ApiError,
    ObjectStore,
    parse_resource_version,
)

log = logging.getLogger(__name__)

CHUNKING = ("event", "split", "batch", "random")
_TRUE = ("1", "true", "True")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client (or a test) dropping a connection is normal here; anything else is not."""
        if not isinstance(sys.exc_info()[1], OSError):
            log.exception("request from %s failed", client_address)


class _Watch:
    """One open watch stream: its socket, so a test (or stop) can cut it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.dropped = False


class ApiServer:
    """The stand-in: an `ObjectStore` behind a ThreadingHTTPServer on an ephemeral port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 resources: tuple[Resource, ...] = SERVED, history_limit: int = 1000,
                 bookmark_interval: float = 1.0, chunking: str = "event",
                 namespaces: tuple[str, ...] = ("default", "kube-system"),
                 max_watch_seconds: float = 1800.0, seed: int | None = None):
        if chunking not in CHUNKING:
            raise ValueError(f"chunking must be one of {', '.join(CHUNKING)}")
        self.host = host
        self.port = port
        self.resources = resources
        self.store = ObjectStore(resources, history_limit)
        self.bookmark_interval = bookmark_interval
        self.chunking = chunking
        self.max_watch_seconds = max_watch_seconds
        self.rng = random.Random(seed)
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._watches: set[_Watch] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        for name in namespaces:
            self.store.create(NAMESPACES, {"metadata": {"name": name}})

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> ApiServer:
        """Listen (again: on the same port after a stop) and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.api = self  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"apiserver:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: the API is unreachable until start()."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self.disconnect_all_watches()
        with self._lock:
            conns = list(self._connections)
        for sock in conns:
            _shutdown(sock)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    # ------------------------------------------------------------------------ test hooks

    def _resource(self, obj: dict) -> Resource:
        try:
            return resource_for(obj.get("apiVersion"), obj.get("kind"), self.resources)
        except KeyError as e:
            raise ApiError(404, "NotFound", str(e.args[0])) from None

    @staticmethod
    def _name(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return meta.get("namespace") or "default", meta.get("name") or ""

    def create(self, obj: dict, *, record: bool = True) -> dict:
        """Create as a controller would (status kept): the stored object.

        `record=False` on any write: no watch will report it (a lost event)."""
        return self.store.create(self._resource(obj), obj, record=record)

    def update(self, obj: dict, *, record: bool = True) -> dict:
        """Replace the whole object, status included."""
        return self.store.update(self._resource(obj), obj, record=record)

    def apply(self, obj: dict, *, record: bool = True) -> dict:
        """Create, or replace if it exists (ignoring any resourceVersion in `obj`)."""
        resource = self._resource(obj)
        try:
            self.store.get(resource, *self._name(obj))
        except ApiError:
            return self.store.create(resource, obj, record=record)
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
        return self.store.update(resource, {**obj, "metadata": meta}, record=record)

    def patch(self, obj: dict, patch: Any, content_type: str = MERGE_PATCH) -> dict:
        """Patch the object named by `obj` (apiVersion, kind, metadata.name/namespace)."""
        return self.store.patch(self._resource(obj), *self._name(obj), patch, content_type)

    def delete(self, obj: dict, *, record: bool = True) -> dict:
        return self.store.delete(self._resource(obj), *self._name(obj), record=record)

    def get(self, obj: dict) -> dict:
        return self.store.get(self._resource(obj), *self._name(obj))

    def objects(self, resources: tuple[Resource, ...] | None = None) -> list[dict]:
        """Every current object of `resources` (default: all served), kind and apiVersion set."""
        return [o for r in (resources or self.resources) for o in self.store.objects(r)]

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def compact_history(self, keep: int = 0) -> int:
        """Forget all but the last `keep` changes: watches from older versions now get 410."""
        return self.store.compact(keep)

    def disconnect_all_watches(self) -> int:
        """Cut every open watch stream mid-stream (no final chunk); returns how many."""
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.dropped = True
            _shutdown(w.sock)
        with self.store.cond:
            self.store.cond.notify_all()
        return len(watches)

    @property
    def watch_count(self) -> int:
        with self._lock:
            return len(self._watches)

    # ------------------------------------------------------------------------ bookkeeping

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(sock)

    def _watching(self, watch: _Watch, add: bool) -> None:
        with self._lock:
            (self._watches.add if add else self._watches.discard)(watch)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# ---------------------------------------------------------------------------------- routing


class _Route:
    def __init__(self, resource: Resource, namespace: str | None, name: str | None,
                 subresource: str | None):
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.subresource = subresource


def route(path: str, resources: tuple[Resource, ...]) -> _Route | None:
    """A resource URL -> (resource, namespace, name, subresource); None if not one."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    served = {r.plural: r for r in resources if r.group == group and r.version == version}
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served \
            and served[rest[2]].namespaced:
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in served or len(rest) > 3:
        return None
    resource = served[rest[0]]
    if namespace is not None and not resource.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and not (sub == "status" and resource.status_subresource):
        return None
    if name is not None and resource.namespaced and namespace is None:
        return None  # a namespaced object needs its namespace in the URL
    return _Route(resource, namespace, name, sub)


def _discovery(path: str, resources: tuple[Resource, ...], address: str) -> Any:
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    groups: dict[str, list[str]] = {}
    for r in resources:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                "serverAddress": address}]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in sorted(groups.items())]}
    if path == "/version":
        return {"major": "1", "minor": "31", "gitVersion": "v1.31.0+sdn-standin",
                "gitCommit": "0" * 40, "gitTreeState": "clean",
                "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
                "compiler": "gc", "platform": "linux/amd64"}
    for r in resources:
        if path == r.prefix:
            listed = []
            for s in resources:
                if s.prefix != path:
                    continue
                listed.append({"name": s.plural, "singularName": s.singular,
                               "namespaced": s.namespaced, "kind": s.kind, "verbs": verbs,
                               "shortNames": list(s.short_names)})
                if s.status_subresource:
                    listed.append({"name": f"{s.plural}/status", "singularName": "",
                                   "namespaced": s.namespaced, "kind": s.kind,
                                   "verbs": ["get", "patch", "update"]})
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": r.api_version, "resources": listed}
    return None


# ---------------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer encoding
    server_version = "sdn-apiserver-standin"

    @property
    def api(self) -> ApiServer:
        return self.server.api  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.api._track(self.connection, True)

    def finish(self) -> None:
        self.api._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -------------------------------------------------------------------- responses

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc, separators=(",", ":")).encode())

    def _body(self) -> Any:
        if not self._raw:
            raise ApiError(400, "BadRequest", "the request needs a body")
        try:
            return json.loads(self._raw)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"the body is not valid JSON: {e}") from None

    # -------------------------------------------------------------------- dispatch

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        try:
            if method == "GET" and path in ("/healthz", "/livez", "/readyz"):
                self._send(200, b"ok", "text/plain; charset=utf-8")
                return
            r = route(path, self.api.resources)
            if r is None:
                doc = _discovery(path, self.api.resources, f"{self.api.host}:{self.api.port}") \
                    if method == "GET" else None
                if doc is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested "
                                   "resource")
                self._send_json(200, doc)
                return
            self._resource_request(method, r, query)
        except ApiError as e:
            self._send_json(e.code, e.status())
        except OSError:
            self.close_connection = True
        except Exception as e:  # a bug here must not look like a network failure
            log.exception("%s %s failed", method, self.path)
            self._send_json(500, ApiError(500, "InternalError", f"internal error: {e}").status())

    def _resource_request(self, method: str, r: _Route, query: dict[str, str]) -> None:
        store, res = self.api.store, r.resource
        for unsupported in ("labelSelector", "fieldSelector", "sendInitialEvents"):
            if query.get(unsupported):
                raise ApiError(400, "BadRequest", f"{unsupported} is not supported by the "
                               "sdn API stand-in")
        if r.name is None:
            if method == "GET":
                if query.get("watch") in _TRUE:
                    self.api.requests["watch", res.name] += 1
                    self._watch(r, query)
                else:
                    self.api.requests["list", res.name] += 1
                    self._list(r, query)
            elif method == "POST" and (r.namespace is not None or not res.namespaced):
                self.api.requests["create", res.name] += 1
                self._send_json(201, store.create(res, self._body(), r.namespace,
                                                  drop_status=True))
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
            return
        namespace = r.namespace or ""
        part = "status" if r.subresource == "status" else "main"
        if method == "GET":
            self.api.requests["get", res.name] += 1
            self._send_json(200, store.get(res, namespace, r.name))
        elif method == "PUT":
            self.api.requests["update", res.name] += 1
            body = self._body()
            name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
            if name != r.name:
                raise ApiError(400, "BadRequest", f"the name of the object ({name}) does not "
                               f"match the name on the URL ({r.name})")
            self._send_json(200, store.update(res, body, r.namespace, part=part))
        elif method == "PATCH":
            self.api.requests["patch", res.name] += 1
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            self._send_json(200, store.patch(res, namespace, r.name, self._body(), ctype,
                                             part=part))
        elif method == "DELETE" and r.subresource is None:
            self.api.requests["delete", res.name] += 1
            self._send_json(200, store.delete(res, namespace, r.name))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _list(self, r: _Route, query: dict[str, str]) -> None:
        limit = query.get("limit")
        try:
            limit_n = int(limit) if limit else None
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid limit {limit!r}") from None
        items, rv, token, remaining = self.api.store.list(
            r.resource, r.namespace, resource_version=query.get("resourceVersion"),
            match=query.get("resourceVersionMatch"), limit=limit_n,
            continue_token=query.get("continue"))
        if r.resource.group in BUILTIN_GROUPS:
            # The real server leaves kind and apiVersion off the items of built-in lists.
            items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                     for o in items]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
            meta["remainingItemCount"] = remaining
        self._send_json(200, {"kind": f"{r.resource.kind}List",
                              "apiVersion": r.resource.api_version,
                              "metadata": meta, "items": items})

    # -------------------------------------------------------------------- watch

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_events(self, events: list[dict]) -> None:
        if not events:
            return
        lines = [json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events]
        mode = self.api.chunking
        if mode == "random":
            mode = self.api.rng.choice(("event", "split", "batch"))
        if mode == "batch":
            self._chunk(b"".join(lines))
        elif mode == "split":
            for line in lines:  # every line cut in two or three chunks at random places
                cuts = sorted(self.api.rng.sample(range(1, len(line)), min(2, len(line) - 1)))
                for a, b in zip([0, *cuts], [*cuts, len(line)]):
                    self._chunk(line[a:b])
        else:
            for line in lines:
                self._chunk(line)

    def _watch(self, r: _Route, query: dict[str, str]) -> None:
        api, store, res = self.api, self.api.store, r.resource
        rv_param = query.get("resourceVersion")
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") \
                else api.max_watch_seconds
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid timeoutSeconds") from None
        if rv_param in (None, "", "0"):
            initial, pos = store.snapshot(res, r.namespace)  # "get state and start at most recent"
        else:
            initial, pos = [], parse_resource_version(rv_param)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        watch = _Watch(self.connection)
        api._watching(watch, True)
        now = time.monotonic()
        deadline, next_bookmark = now + timeout, now + api.bookmark_interval
        try:
            self._write_events([{"type": "ADDED", "object": o} for o in initial])
            while True:
                error = None
                with store.cond:
                    while not watch.dropped and store.resource_version <= pos:
                        wake = min(deadline, next_bookmark) if bookmarks else deadline
                        if wake <= time.monotonic():
                            break
                        store.cond.wait(wake - time.monotonic())
                    if watch.dropped:
                        self.close_connection = True
                        return  # cut: no final chunk
                    try:
                        changes, pos = store.changes_since(res, r.namespace, pos)
                    except ApiError as e:
                        changes, error = [], e
                if error is not None:
                    self._write_events([{"type": "ERROR", "object": error.status()}])
                    break
                self._write_events([{"type": c.type, "object": c.obj} for c in changes])
                now = time.monotonic()
                if bookmarks and now >= next_bookmark:
                    self._write_events([{"type": "BOOKMARK", "object": {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(pos)}}}])
                    next_bookmark = now + api.bookmark_interval
                if now >= deadline:
                    break
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client went away, or a test cut the stream
        finally:
            api._watching(watch, False)


# ---------------------------------------------------------------------------------- CLI


def _load(api: ApiServer, paths: list[str]) -> int:
    """Apply every object of the manifest files (namespaces first); returns how many."""
    import yaml

    from sdn.policy.manifests import MANIFEST_SUFFIXES

    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(root, f) for root, _, names in os.walk(path)
                            for f in names if f.endswith(MANIFEST_SUFFIXES))
        else:
            files.append(path)
    docs: list[dict] = []
    for file in files:
        with open(file, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"):
                    docs.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
                elif isinstance(doc, dict):
                    docs.append(doc)
    docs.sort(key=lambda d: d.get("kind") != "Namespace")
    for doc in docs:
        api.apply(doc)
    return len(docs)


def _kubeconfig(url: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: standin\n  cluster:\n    server: {url}\n"
        "users:\n- name: standin\n  user: {}\n"
        "contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n"
        "current-context: standin\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.standin.apiserver",
                                     description="A local Kubernetes API stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--load", nargs="*", default=[], metavar="FILE",
                        help="manifest files or directories to create at start")
    parser.add_argument("--history", type=int, default=1000,
                        help="changes kept for watches (older versions get 410)")
    parser.add_argument("--bookmark-interval", type=float, default=1.0)
    parser.add_argument("--write-kubeconfig", metavar="PATH",
                        help="write a kubeconfig pointing at this server")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    api = ApiServer(args.host, args.port, history_limit=args.history,
                    bookmark_interval=args.bookmark_interval)
    try:
        count = _load(api, args.load)
    except (ApiError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    api.start()
    if args.write_kubeconfig:
        with open(args.write_kubeconfig, "w", encoding="utf-8") as f:
            f.write(_kubeconfig(api.url))
    print(f"serving {api.url} ({count} objects loaded, resourceVersion "
          f"{api.resource_version}); Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
