"""Plain REST calls through the official client for any resource of sdn.k8s.resources: get,
list, server-side apply, create, delete, status patches. Objects stay raw JSON (manifest
shape). Failures are ApiError with the HTTP status and the API server's own message."""

from __future__ import annotations

import json
from typing import Any

from sdn.k8s.resources import SERVED, Resource, resource_for

FIELD_MANAGER = "sdnctl"
# Kinds of deploy/ besides the watched resources: kind -> plural (the path of a manifest).
PLURALS = {"CustomResourceDefinition": "customresourcedefinitions", "ServiceAccount": "serviceaccounts",
           "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Role": "roles",
           "RoleBinding": "rolebindings", "ConfigMap": "configmaps", "DaemonSet": "daemonsets",
           "Namespace": "namespaces", "Service": "services", "Deployment": "deployments"}


class ApiError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def resource_of(doc: dict, resources=SERVED) -> Resource:
    return resource_for(str(doc.get("apiVersion", "")), str(doc.get("kind", "")), resources)


class Rest:
    def __init__(self, api_client: Any):
        self.api = api_client

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None,
             content_type: str = "application/json", timeout: float = 30.0) -> dict:
        from kubernetes.client.exceptions import ApiException
        method_, url, headers, body_, post = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(method_, url, headers, body_, post, _request_timeout=timeout)
            resp.read()
        except ApiException as e:
            raise ApiError(e.status or 0, str(e.reason or ""), str(e.body or e)) from None
        data = resp.data
        if not 200 <= resp.status < 300:
            try:
                status = json.loads(data or b"{}")
            except ValueError:
                status = {}
            raise ApiError(resp.status, status.get("reason") or str(resp.reason or ""),
                           status.get("message") or (data or b"").decode(errors="replace"))
        return json.loads(data) if data else {}

    # ---------------------------------------------------------------- objects
    def get(self, res: Resource, namespace: str, name: str) -> dict:
        return self.call("GET", res.object_path(namespace, name))

    def list(self, res: Resource, namespace: str | None = None, **query) -> dict:
        return self.call("GET", res.collection_path(namespace), query=query or None)

    def apply(self, doc: dict, resources=SERVED, field_manager: str = FIELD_MANAGER) -> dict:
        """Server-side apply (as `kubectl apply --server-side --force-conflicts`)."""
        res = resource_of(doc, resources)
        meta = doc.get("metadata") or {}
        path = res.object_path(meta.get("namespace") or "default", meta["name"])
        return self.call("PATCH", path, doc, {"fieldManager": field_manager, "force": "true"},
                         "application/apply-patch+yaml")

    def apply_manifest(self, doc: dict, field_manager: str = FIELD_MANAGER) -> dict:
        """Server-side apply of a manifest of any kind in PLURALS (deploy/'s objects)."""
        group, _, version = str(doc["apiVersion"]).rpartition("/")
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        ns = (doc.get("metadata") or {}).get("namespace")
        path = f"{base}{'/namespaces/' + ns if ns else ''}/{PLURALS[doc['kind']]}/{doc['metadata']['name']}"
        return self.call("PATCH", path, doc, {"fieldManager": field_manager, "force": "true"},
                         "application/apply-patch+yaml")

    def crd_established(self, name: str) -> bool:
        crd = self.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in crd.get("status", {}).get("conditions", []))

    def service_account_token(self, namespace: str, name: str, seconds: int = 7 * 24 * 3600) -> str:
        """A token for the service account (TokenRequest, as the kubelet mounts one in a pod)."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        return self.call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)["status"]["token"]

    def wait_default_service_account(self, namespace: str, timeout: float = 30.0) -> None:
        """A new namespace's `default` ServiceAccount (made by kube-controller-manager) exists:
        before it does, the API server refuses the namespace's pods."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
                return
            except ApiError as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def create(self, doc: dict, resources=SERVED) -> dict:
        res = resource_of(doc, resources)
        ns = (doc.get("metadata") or {}).get("namespace") or "default"
        return self.call("POST", res.collection_path(ns if res.namespaced else None), doc)

    def delete(self, res: Resource, namespace: str, name: str, grace: int | None = None) -> dict:
        query = {"gracePeriodSeconds": str(grace)} if grace is not None else None
        return self.call("DELETE", res.object_path(namespace, name), query=query)

    def patch_status(self, res: Resource, namespace: str, name: str, patch: dict) -> dict:
        return self.call("PATCH", res.object_path(namespace, name) + "/status", patch,
                         content_type="application/merge-patch+json")
