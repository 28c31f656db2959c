"""The normalised cluster model: what every policy form (v1, the 2016 alpha and beta) becomes.

Values only (frozen dataclasses). Loading, validation and defaulting live in
`sdn.policy.manifests`; the semantics that read these values live in `sdn.policy.evaluate`
(the oracle) and `sdn.policy.rules` (the translation to the placement-free rule IR of `flows`).

Conventions, after ../shared/notes/networkpolicy.md:
- `PolicyRule.peers is None` means "all peers"; `()` means "no peer" (only the beta form can
  say that: an explicit empty list). The same for `ports`.
- Protocols are upper case: "TCP", "UDP", "SCTP".
- `Policy.policy_types` is already defaulted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from flows.match import hash_once
from sdn.policy.annotations import (
    ALPHA_ISOLATION_ANNOTATION,
    BETA_POLICY_ANNOTATION,
    alpha_isolation,
    beta_default_deny,
)

PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS = "Ingress"
EGRESS = "Egress"

# Where a policy came from. The key of a policy in the cluster is (form, namespace, name).
FORM_V1 = "v1"  # networking.k8s.io/v1 NetworkPolicy
FORM_ALPHA = "v1alpha1"  # net.alpha.kubernetes.io/v1alpha1 (the seed's ThirdPartyResource)
FORM_BETA = "v1beta1"  # extensions/v1beta1 NetworkPolicy
FORM_IMPLICIT = "isolation"  # synthesised from a namespace isolation annotation

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs


def freeze_labels(labels: Mapping[str, str] | None) -> Labels:
    """Labels as a sorted tuple, so models stay hashable and comparable."""
    return tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))


@hash_once
@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry. operator is In, NotIn, Exists or DoesNotExist."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        raise ValueError(f"unknown label selector operator {self.operator!r}")


@hash_once
@dataclass(frozen=True)
class LabelSelector:
    """matchLabels AND matchExpressions; the empty selector matches everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | Labels) -> bool:
        t = type(labels)
        if t is tuple or (t is not dict and not isinstance(labels, Mapping)):  # frozen labels; checked first: Mapping checks are slow
            labels = dict(labels)
        # plain loops: this runs for every (selector, pod) pair, generators cost twice as much
        get = labels.get  # type: ignore[union-attr]  # a tuple became a dict above
        for k, v in self.match_labels:
            if get(k) != v:
                return False
        return all(r.matches(labels) for r in self.match_expressions)  # type: ignore[arg-type]  # as above

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.match_expressions:
            if r.operator in ("In", "NotIn"):
                parts.append(f"{r.key} {r.operator.lower()} ({','.join(r.values)})")
            elif r.operator == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) if parts else "<all>"


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = ()
    annotations: Labels = ()

    @property
    def label_map(self) -> dict[str, str]:
        """Labels with the kubernetes.io/metadata.name label the API server always sets."""
        out = dict(self.labels)
        out[NAMESPACE_NAME_LABEL] = self.name
        return out


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = ()
    node: str | None = None
    ips: tuple[str, ...] = ()  # status.podIPs (status.podIP first); empty = no IP yet
    ports: tuple[ContainerPort, ...] = ()  # every containerPort of every container

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> dict[str, str]:
        """The labels as a dict, made once per pod (selectors read it for every policy);
        callers must not change it."""
        d = self.__dict__.get("_label_map")
        if d is None:
            d = dict(self.labels)
            object.__setattr__(self, "_label_map", d)
        return d

    @property
    def ip(self) -> str | None:
        return self.ips[0] if self.ips else None

    def resolve_port(self, name: str, protocol: str) -> int | None:
        """A named port resolved on this pod: name and protocol must both match."""
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


def parse_port(text: str, dst: Pod | None, icmp: bool = False) -> tuple[int, str]:
    """(port, protocol) for '8080/TCP', '8080' (TCP) or a named container port of the
    destination pod ('http', 'http/UDP'); with `icmp`, also 'icmp' (no port: (0, 'ICMP')).
    A ValueError says what is wrong (`sdnctl trace --port`, the controller's live trace)."""
    if icmp and str(text).strip().lower() in ("icmp", "0/icmp"):
        return 0, "ICMP"
    number, _, proto = str(text).partition("/")
    proto = (proto or "TCP").upper()
    if proto not in ("TCP", "UDP", "SCTP"):
        raise ValueError(f"unknown protocol {proto!r} "
                         + ("(TCP, UDP, SCTP, or 'icmp' alone)" if icmp else "(TCP, UDP or SCTP)"))
    if number.isdigit():
        port = int(number)
        if not 1 <= port <= 65535:
            raise ValueError("must be 1-65535")
        return port, proto
    if dst is None:
        raise ValueError(f"{number!r} is a named port, and the destination is an address, not a pod: "
                         "give a number")
    resolved = dst.resolve_port(number, proto)
    if resolved is None:
        raise ValueError(f"{dst.key} has no {proto} container port named {number!r}")
    return resolved, proto


@dataclass(frozen=True)
class Node:
    name: str
    labels: Labels = ()
    pod_cidrs: tuple[str, ...] = ()  # spec.podCIDRs (or spec.podCIDR)
    addresses: tuple[str, ...] = ()  # status.addresses InternalIP, in order


@hash_once
@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()


@hash_once
@dataclass(frozen=True)
class Peer:
    """Exactly one of: selectors (pod and/or namespace) or an ipBlock.

    pod_selector only: pods of the policy's namespace. namespace_selector only: all pods of the
    matching namespaces. Both: pods matching pod_selector in namespaces matching
    namespace_selector.
    """

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@hash_once
@dataclass(frozen=True)
class PolicyPort:
    """protocol defaulted; port is an int, a name (str) or None (all ports of the protocol)."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@hash_once
@dataclass(frozen=True)
class PolicyRule:
    peers: tuple[Peer, ...] | None = None  # None: all peers; (): none
    ports: tuple[PolicyPort, ...] | None = None  # None: all ports and protocols; (): none


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: LabelSelector = LabelSelector()
    ingress: tuple[PolicyRule, ...] = ()
    egress: tuple[PolicyRule, ...] = ()
    policy_types: frozenset[str] = frozenset({INGRESS})
    form: str = FORM_V1
    origin: str = ""  # file the object came from, for messages

    @cached_property
    def key(self) -> str:
        """Stable identity used in cookies, traces and `flows show`: ns/name, form-qualified
        (made once per policy: the rule set reads it for every policy an event touches)."""
        base = f"{self.namespace}/{self.name}"
        return base if self.form == FORM_V1 else f"{base}[{self.form}]"

    def rules(self, direction: str) -> tuple[PolicyRule, ...]:
        return self.ingress if direction == INGRESS else self.egress


@dataclass
class Cluster:
    """Everything known: namespaces, pods, nodes and policies of all forms, keyed by identity.

    Mutable container of immutable values, so a watch can replace one object at a time.
    """

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)  # "ns/name"
    nodes: dict[str, Node] = field(default_factory=dict)
    policies: dict[tuple[str, str, str], Policy] = field(default_factory=dict)  # (form, ns, name)

    def namespace(self, name: str) -> Namespace:
        """The namespace object, or an implicit one (labels: metadata.name only) if undeclared."""
        return self.namespaces.get(name) or Namespace(name)

    def namespace_names(self) -> list[str]:
        names = set(self.namespaces) | {p.namespace for p in self.pods.values()}
        names |= {p.namespace for p in self.policies.values()}
        return sorted(names)

    def effective_policies(self) -> list[Policy]:
        """The policies in force, all in v1 form, in a stable order.

        v1 policies always apply. Alpha policies apply only while their namespace has
        network-isolation on; beta policies only while it has the DefaultDeny annotation. An
        isolating annotation adds an implicit `podSelector: {}` Ingress policy with no rules.
        """
        out = []
        for (form, ns, _), pol in sorted(self.policies.items()):
            nsobj = self.namespace(ns)
            if form == FORM_ALPHA and not alpha_isolation(nsobj):
                continue
            if form == FORM_BETA and not beta_default_deny(nsobj):
                continue
            out.append(pol)
        for ns in self.namespace_names():
            nsobj = self.namespace(ns)
            if alpha_isolation(nsobj):
                out.append(Policy(ns, ALPHA_ISOLATION_ANNOTATION, form=FORM_IMPLICIT))
            if beta_default_deny(nsobj):
                out.append(Policy(ns, BETA_POLICY_ANNOTATION, form=FORM_IMPLICIT))
        return out
