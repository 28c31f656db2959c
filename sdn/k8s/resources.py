"""The Kubernetes resources the agent watches (and the API stand-in serves), declared once.

A `Resource` names one API collection the way the API does: group, version, plural, kind and
whether it is namespaced. `tests.standin.apiserver` builds its routes and discovery documents from
these values; `sdn.k8s.informer` builds its list and watch calls from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdn.policy.model import FORM_ALPHA, FORM_BETA, FORM_V1


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    # Writes to the main resource leave status alone; status changes go through /status.
    status_subresource: bool = False
    # For the three NetworkPolicy resources: the model form they parse into.
    policy_form: str | None = None
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """The apiVersion field of this resource's objects: "v1", "networking.k8s.io/v1"."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def name(self) -> str:
        """The resource's full name, as in RBAC and `kubectl api-resources`: "pods",
        "networkpolicies.networking.k8s.io"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def prefix(self) -> str:
        """The URL path of the group version: "/api/v1", "/apis/networking.k8s.io/v1"."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        """The URL of the collection, cluster-wide or in one namespace."""
        if namespace and self.namespaced:
            return f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.prefix}/{self.plural}"

    def object_path(self, namespace: str, name: str) -> str:
        """The URL of one object (namespace ignored for cluster-scoped resources)."""
        return f"{self.collection_path(namespace if self.namespaced else None)}/{name}"


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False, True, short_names=("ns",))
PODS = Resource("", "v1", "pods", "Pod", True, True, short_names=("po",))
NODES = Resource("", "v1", "nodes", "Node", False, True, short_names=("no",))
EVENTS = Resource("", "v1", "events", "Event", True, short_names=("ev",))
NETWORK_POLICIES = Resource(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True,
    policy_form=FORM_V1, short_names=("netpol",),
)
# The seed's ThirdPartyResource `network-policy.net.alpha.kubernetes.io`, today served from the
# CustomResourceDefinition in deploy/crd-v1alpha1-networkpolicys.yaml (plural kept as it was).
ALPHA_NETWORK_POLICIES = Resource(
    "net.alpha.kubernetes.io", "v1alpha1", "networkpolicys", "NetworkPolicy", True,
    policy_form=FORM_ALPHA,
)
# extensions/v1beta1 NetworkPolicy: served by Kubernetes 1.3-1.15 only. The stand-in serves it
# so the beta form can travel through the API; the agent watches it only when asked to.
BETA_NETWORK_POLICIES = Resource(
    "extensions", "v1beta1", "networkpolicies", "NetworkPolicy", True,
    policy_form=FORM_BETA,
)

# What the stand-in serves, and what the agent watches by default.
SERVED = (NAMESPACES, PODS, NODES, EVENTS, NETWORK_POLICIES, ALPHA_NETWORK_POLICIES,
          BETA_NETWORK_POLICIES)
WATCHED = (NAMESPACES, PODS, NODES, NETWORK_POLICIES, ALPHA_NETWORK_POLICIES)


def resource_for(api_version: str, kind: str, resources=SERVED) -> Resource:
    """The resource whose objects have this apiVersion and kind; KeyError if none."""
    for r in resources:
        if r.api_version == api_version and r.kind == kind:
            return r
    raise KeyError(f"no resource serves {kind} in {api_version}")
