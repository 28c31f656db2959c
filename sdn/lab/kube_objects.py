"""Kubernetes mode of the lab, the objects' side: writes through the API server (server-side
apply, deletes, pods replaced when their spec changes) and the wait for what the cluster
reports (pods Running, every agent having seen and realized the API's current objects).
A mixin of sdn.lab.kube.KubeMode."""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdn import proc
from sdn.k8s.resources import (
    ALPHA_NETWORK_POLICIES,
    BETA_NETWORK_POLICIES,
    NAMESPACES,
    NETWORK_POLICIES,
    NODES,
    PODS,
    Resource,
)
from sdn.k8s.rest import ApiError, Rest
from sdn.lab import dns
from sdn.lab import topology as T

if TYPE_CHECKING:
    from sdn.lab.lab import Lab
    from sdn.lab.netns_thread import NetnsThread

WATCHED = (NAMESPACES, PODS, NODES, NETWORK_POLICIES, ALPHA_NETWORK_POLICIES)
KINDS = {(r.api_version, r.kind): r for r in WATCHED}


def lab_error(msg: str, code: int = 1):
    from sdn.lab.base import LabError
    return LabError(msg, code)


def check_docs(docs: list[dict]) -> None:
    """What a current API server cannot take, refused before anything is made."""
    for d in docs:
        if d.get("apiVersion") == BETA_NETWORK_POLICIES.api_version and d.get("kind") == "NetworkPolicy":
            meta = d.get("metadata") or {}
            raise lab_error(f"NetworkPolicy {meta.get('namespace', 'default')}/{meta.get('name')}: apiVersion "
                            f"extensions/v1beta1 is not served by Kubernetes 1.16 and later; in kubernetes mode use "
                            f"networking.k8s.io/v1 (the v1beta1 form stays supported from manifest files, in "
                            f"file mode); nothing was changed", 2)


def api_doc(doc: dict) -> dict:
    """A manifest as it is written to the API: no status, no server-set metadata; a Pod's
    status.podIP becomes a request to its kubelet (an annotation) instead."""
    out = copy.deepcopy(doc)
    status = out.pop("status", None) or {}
    meta = out.setdefault("metadata", {})
    if out.get("kind") == "Pod" and status.get("podIP"):
        from sdn.lab.kubelet import REQUESTED_IP
        meta.setdefault("annotations", {})[REQUESTED_IP] = status["podIP"]
    for k in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"):
        meta.pop(k, None)
    if out.get("kind") == "Pod":
        meta.setdefault("namespace", "default")
        for c in (out.get("spec") or {}).get("containers") or []:
            c.setdefault("image", "registry.k8s.io/e2e-test-images/agnhost:2.47")
    return out


def _rv(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0



def exists(rest: Rest, res: Resource, name: str, namespace: str = "") -> bool:
    try:
        rest.get(res, namespace, name)
        return True
    except ApiError as e:
        if e.status == 404:
            return False
        raise



def kubelet_record(ndir: Path) -> dict:
    try:
        return json.loads((ndir / "kubelet.json").read_text())
    except (OSError, ValueError):
        return {}


class ObjectsMixin:
    """Needs, from KubeMode: the lab, `api(fn, ...)` (a call inside the control plane's
    namespace) and `node_thread(node)` (calls inside a node's namespace)."""

    lab: Lab
    api: Callable[..., Any]
    node_thread: Callable[[str], NetnsThread]

    # ------------------------------------------------------------------ objects
    def write(self, apply: list[dict], delete: list[dict]) -> tuple[list[str], list[str]]:
        """Delete, then server-side apply, through the API: one report line per object, and
        the objects to delete that did not exist."""
        self.check_namespaces(apply, delete)
        report, missing = [], []
        for doc in delete:
            res = self._resource(doc)
            meta = doc.get("metadata") or {}
            ns = meta.get("namespace") or "default"
            what = T.describe_key(T.doc_key(doc))
            name = meta.get("name")
            try:
                self.api(lambda r, res=res, ns=ns, n=name: r.delete(res, ns, n))
                report.append(f"{what} deleted")
            except ApiError as e:
                if e.status != 404:
                    raise lab_error(f"{what}: {e.message}") from None
                missing.append(what)
        order = {"Namespace": 0, "Node": 1, "Pod": 2}
        ready: set[str] = set()
        for doc in sorted(apply, key=lambda d: order.get(d.get("kind") or "", 3)):
            res = self._resource(doc)
            ns = (doc.get("metadata") or {}).get("namespace") or "default"
            if res is PODS and ns not in ready:  # the API refuses pods before the account exists
                try:
                    self.api(lambda r, ns=ns: r.wait_default_service_account(ns))
                except ApiError:
                    pass  # the pod's own write says why (a missing namespace: NotFound)
                ready.add(ns)
            what = T.describe_key(T.doc_key(doc))
            body = api_doc(doc)
            if res is NODES:
                raise lab_error(f"{what}: nodes of a kubernetes-mode lab are made by `lab up`", 2)
            try:
                before = self._get(res, body)
                try:
                    after = self.api(lambda r, body=body: r.apply(body))
                except ApiError as e:
                    if not (res is PODS and e.status == 422 and "pod updates may not change" in e.message):
                        raise
                    # A pod's spec is immutable: replaced, as `kubectl replace --force` does
                    self._replace_pod(body)
                    after, before = self.api(lambda r, body=body: r.apply(body)), None
                    report.append(f"{what} replaced (its spec changed)")
                    continue
            except ApiError as e:
                raise lab_error(f"{what}: the API server refused it: {e.message}", 2 if e.status in (400, 404, 422) else 1) \
                    from None
            verb = "created" if before is None else (
                "unchanged" if before.get("metadata", {}).get("resourceVersion") ==
                after.get("metadata", {}).get("resourceVersion") else "configured")
            report.append(f"{what} {verb}")
        return report, missing

    def check_namespaces(self, apply: list[dict], delete: Sequence[dict] = ()) -> None:
        """Every namespaced object to apply lives in a namespace that exists (and is not deleted
        in the same change) or that the change creates; refused before anything is written
        (the API server would answer NotFound half-way)."""
        namespaced = [d for d in apply if self._resource(d).namespaced]
        if not namespaced:
            return
        created = {(d.get("metadata") or {}).get("name") for d in apply if d.get("kind") == "Namespace"}
        deleted = {(d.get("metadata") or {}).get("name") for d in delete if d.get("kind") == "Namespace"}
        have = {n["metadata"]["name"] for n in self.api(lambda r: r.list(NAMESPACES))["items"]}
        for d in namespaced:
            ns = (d.get("metadata") or {}).get("namespace") or "default"
            if ns in created or (ns in have and ns not in deleted):
                continue
            raise lab_error(f"{T.describe_key(T.doc_key(d))}: namespace {ns} does not exist"
                            f"{' (deleted in the same change)' if ns in deleted else ''}; apply a Namespace {ns} "
                            f"first or in the same file; nothing was changed", 2)

    def _replace_pod(self, doc: dict, timeout: float = 60.0) -> None:
        """Delete the pod and wait until its kubelet confirmed (the object is gone)."""
        meta = doc["metadata"]
        self.api(lambda r: r.delete(PODS, meta["namespace"], meta["name"]))
        self._wait(lambda: self._get(PODS, doc) is None, timeout,
                   f"pod {meta['namespace']}/{meta['name']} to be deleted by its kubelet")

    def _get(self, res: Resource, doc: dict) -> dict | None:
        meta = doc["metadata"]
        try:
            return self.api(lambda r: r.get(res, meta.get("namespace") or "default", meta["name"]))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    @staticmethod
    def _resource(doc: dict) -> Resource:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in KINDS:
            raise lab_error(f"{doc.get('kind')} {doc.get('apiVersion')}: not a kind the lab writes "
                         f"({', '.join(f'{k[1]} {k[0]}' for k in KINDS)})", 2)
        return KINDS[key]

    def objects(self) -> list[dict]:
        """Every watched object as the API holds it (manifest shape, kind and apiVersion set)."""
        out = []
        for res in WATCHED:
            for item in self.api(lambda r, res=res: r.list(res))["items"]:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                out.append(item)
        return out

    # ------------------------------------------------------------------ waiting for the cluster
    def settle(self, timeout: float) -> None:
        """Pods Running (or gone), then every agent has folded in the API's current version
        of every object and realized it on its bridge."""
        deadline = time.monotonic() + timeout

        waiting: list[str] = []

        def pods_settled() -> bool:
            items = self.api(lambda r: r.list(PODS))["items"]
            waiting[:] = [f"{p['metadata']['namespace']}/{p['metadata']['name']} "
                          f"({p.get('spec', {}).get('nodeName') or 'unscheduled'}, "
                          f"{'deleting' if p['metadata'].get('deletionTimestamp') else p.get('status', {}).get('phase')})"
                          for p in items
                          if not p.get("spec", {}).get("nodeName") or p["metadata"].get("deletionTimestamp")
                          or (p["spec"]["nodeName"] in self.lab.record["nodes"] and not p.get("status", {}).get("podIP"))]
            return not waiting

        def why() -> str:
            logs = self.lab.state.logs
            tails = "".join(f"\n--- last lines of {f}:\n{proc.tail(f, 8)}" for f in sorted(logs.glob("kubelet-*.log")))
            return f"waiting for {', '.join(waiting[:8])}{tails}"
        self._wait(pods_settled, max(1.0, deadline - time.monotonic()),
                   "every pod to be Running with an address (or gone), as its kubelet reports", why)
        def api_objects() -> dict[str, int]:
            """The API's objects now (a controller may still make or replace one: a Deployment's
            pod), by key, with their resource versions."""
            out: dict[str, int] = {}
            for res in WATCHED:
                for item in self.api(lambda r, res=res: r.list(res))["items"]:
                    m = item["metadata"]
                    out[f"{res.name}/{m.get('namespace', '') if res.namespaced else ''}/{m['name']}"] = \
                        _rv(m["resourceVersion"])
            return out
        self.refresh_pods()
        last: dict[str, str] = {}

        def agent_done(node: str) -> bool:
            try:
                st = self.agent_status(node, objects=True)
            except OSError as e:
                last[node] = f"no status: {e}"
                return False
            want = api_objects()  # after the agent's answer: what it must have seen by now
            have = {k: _rv(v) for k, v in st.get("objects", {}).items()}
            behind = [k for k, v in want.items() if have.get(k, -1) < v]
            extra = [k for k in have if k not in want]
            if behind or extra:
                last[node] = f"not seen yet: {behind[:3]}, still there: {extra[:3]}"
                return False
            if st.get("realized_generation") != st.get("state_generation") or not st.get("in_sync"):
                last[node] = (f"state generation {st.get('state_generation')} realized "
                              f"{st.get('realized_generation')}, in sync {st.get('in_sync')}")
                return False
            return True
        from sdn.lab.base import LabError, NotRealized
        done, failed = [], {}
        for node in sorted(self.lab.record["nodes"]):
            ctl = self.lab.record["controllers"][node]
            try:
                self._wait(lambda n=node: agent_done(n), max(1.0, deadline - time.monotonic()),
                           f"the agent of {node} to realize the change", lambda n=node: last.get(n, ""),
                           (node, ctl))
                done.append(node)
            except LabError as e:
                failed[node] = str(e)
        if failed:
            raise NotRealized(done, failed)

    def agent_status(self, node: str, objects: bool = False) -> dict:
        ctl = self.lab.record["controllers"][node]
        url = ctl["metrics"] + "/status" + ("?objects" if objects else "")

        def get() -> dict:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        return self.node_thread(node).run(get)

    def refresh_pods(self) -> None:
        """lab.record["pods"] from the API and the kubelets: node, address, namespace (the
        cluster DNS pods aside: the cluster's, not the lab's)."""
        items = self.api(lambda r: r.list(PODS))["items"]
        pods = {}
        for p in items:
            node = p.get("spec", {}).get("nodeName")
            if node not in self.lab.record["nodes"] or not p.get("status", {}).get("podIP") or dns.is_addon(p):
                continue
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            krec = kubelet_record(Path(self.lab.record["nodes"][node]["rundir"])).get(key, {})
            pods[key] = {"node": node, "netns": krec.get("netns"), "ip": p["status"]["podIP"],
                         "server_pid": krec.get("server_pid"), "container_id": krec.get("container_id")}
        self.lab.record["pods"] = pods
        self.lab.save()

    def _wait(self, ok, timeout: float, what: str, why=None, agent: tuple[str, dict] | None = None) -> None:
        """Until ok(); an agent that is not running fails at once, unless the lab's
        supervisor runs (it restarts the agent: keep waiting)."""
        from sdn.lab import supervise
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ok():
                    return
            except (ApiError, OSError) as e:
                if time.monotonic() > deadline:
                    raise lab_error(f"timed out after {timeout:.0f}s waiting for {what}: {e}") from None
            if agent is not None:
                name, ctl = agent
                pid = supervise.current_pid(self.lab.state, name, ctl)
                if not (pid and proc.alive(pid)) and (self.lab.record.get("phase") != "ready"
                                                      or supervise.supervisor_pid(self.lab.state) is None):
                    raise lab_error(f"agent (pid {pid}) is not running; last lines of {ctl['log']}:\n"
                                    f"{proc.tail(ctl['log'], 12)}")
            if time.monotonic() > deadline:
                detail = why() if why else ""
                raise lab_error(f"timed out after {timeout:.0f}s waiting for {what}{': ' + detail if detail else ''}")
            time.sleep(0.1)

