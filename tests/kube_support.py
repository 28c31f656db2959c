"""A real control plane for the tests: etcd and kube-apiserver (and, where a test needs it,
kube-controller-manager) built by `make k8s`, on loopback with free ports, under the test's
temporary directory; the official client as the admin and as a service account.

Faults are the real ones: `outage()` stops kube-apiserver (every watch is cut, connections
are refused) and starts it again; `compact()` compacts etcd, so lists and watches from an
older resourceVersion get 410 Gone."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdn.k8s.binaries import BinariesMissing, binary
from sdn.k8s.connect import api_client
from sdn.k8s.resources import WATCHED, resource_for
from sdn.k8s.rest import ApiError, Rest
from sdn.lab import pki
from sdn.lab.controlplane import COMPONENTS, ControlPlane

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def require_binaries() -> None:
    try:
        binary("kube-apiserver")
    except BinariesMissing as e:
        pytest.fail(f"{e} (`make test` builds them first)", pytrace=False)


class Kube:
    """The admin's view of one running control plane."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.client = api_client(str(cp.admin_kubeconfig))
        self.rest = Rest(self.client)

    # ------------------------------------------------------------ objects
    def apply(self, doc: dict) -> dict:
        return self.rest.apply(_clean(doc))

    def create(self, doc: dict) -> dict:
        return self.rest.create(_clean(doc))

    def delete(self, doc: dict, grace: int | None = 0) -> dict:
        res = resource_for(doc["apiVersion"], doc["kind"])
        meta = doc["metadata"]
        return self.rest.delete(res, meta.get("namespace") or "default", meta["name"], grace)

    def get(self, doc: dict) -> dict:
        res = resource_for(doc["apiVersion"], doc["kind"])
        meta = doc["metadata"]
        return self.rest.get(res, meta.get("namespace") or "default", meta["name"])

    def patch_status(self, doc: dict, status: dict) -> dict:
        res = resource_for(doc["apiVersion"], doc["kind"])
        meta = doc["metadata"]
        return self.rest.patch_status(res, meta.get("namespace") or "default", meta["name"], {"status": status})

    def run_pod(self, doc: dict) -> dict:
        """A Pod as a kubelet would leave it: created, then its status (podIP, Running)
        written through pods/status."""
        status = doc.get("status") or {}
        self.apply(doc)
        return self.patch_status(doc, status) if status else self.get(doc)

    def objects(self, resources=WATCHED) -> list[dict]:
        out = []
        for res in resources:
            for item in self.rest.list(res)["items"]:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                out.append(item)
        return out

    def wait_namespace_gone(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.rest.call("GET", f"/api/v1/namespaces/{name}")
            except ApiError as e:
                if e.status == 404:
                    return
            time.sleep(0.2)
        raise AssertionError(f"namespace {name} still there after {timeout}s")

    # ------------------------------------------------------------ identities
    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        token = self.rest.service_account_token(namespace, name, 3600)
        return pki.kubeconfig(path, server=self.cp.url, ca=self.cp.ca,
                              user=f"system:serviceaccount:{namespace}:{name}", token=token)

    # ------------------------------------------------------------ faults
    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """kube-apiserver killed inside the block, started again after it (same port)."""
        self.cp.stop_component("kube-apiserver", grace=0)
        try:
            yield
        finally:
            self.cp.start_component("kube-apiserver")

    def compact(self) -> int:
        return self.cp.compact()


def _clean(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k != "status"}
    if out.get("kind") == "Pod":
        for c in out.get("spec", {}).get("containers", []):
            c.setdefault("image", "registry.k8s.io/e2e-test-images/agnhost:2.47")
    return out


# What tests without kubelets need of kube-controller-manager: service accounts and their
# tokens (pods are refused without their namespace's `default` account), namespace deletion,
# garbage collection; not the node lifecycle controller (it would evict kubelet-less pods).
TEST_CONTROLLERS = ("serviceaccount-controller,serviceaccount-token-controller,namespace-controller,"
                    "garbage-collector-controller,root-ca-certificate-publisher-controller")


@contextlib.contextmanager
def control_plane(dir: Path, components=COMPONENTS[:3], controllers: str = TEST_CONTROLLERS) -> Iterator[Kube]:
    """etcd, kube-apiserver and kube-controller-manager on loopback; stopped afterwards."""
    require_binaries()
    cp = ControlPlane(dir, controllers=controllers)
    try:
        cp.start(components)
        yield Kube(cp)
    finally:
        cp.stop()


def load(kube: Kube, docs: list[dict]) -> None:
    """Objects into the API as a cluster would have them: namespaces first; nodes with their
    status (addresses); pods with the status their kubelet would write (podIP, Running)."""
    order = {"Namespace": 0, "Node": 1, "Pod": 2}
    ready: set[str] = set()
    for doc in sorted(docs, key=lambda d: order.get(d["kind"], 3)):
        ns = doc["metadata"].get("namespace") or "default"
        if doc["kind"] == "Pod" and ns not in ready:
            kube.rest.wait_default_service_account(ns)
            ready.add(ns)
        if doc["kind"] in ("Node", "Pod") and doc.get("status"):
            kube.apply(doc)
            kube.patch_status(doc, doc["status"])
        else:
            kube.apply(doc)


def apply_deploy(kube: Kube, files=("crd-v1alpha1-networkpolicys.yaml", "rbac.yaml", "configmap.yaml")) -> None:
    """deploy/'s objects through server-side apply, as `kubectl apply --server-side -f` would."""
    import yaml

    for f in files:
        for doc in yaml.safe_load_all((DEPLOY / f).read_text()):
            if doc:
                kube.rest.apply_manifest(doc)
    deadline = time.monotonic() + 30
    while not kube.rest.crd_established("networkpolicys.net.alpha.kubernetes.io"):
        assert time.monotonic() < deadline, "the CRD was not established"
        time.sleep(0.1)
