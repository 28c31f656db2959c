"""The semantic evaluator: may pod A talk to pod B on port P, from the model objects alone.

This is the independent oracle the compiled flows are tested against, so it is written straight
from the NetworkPolicy wording (../shared/notes/networkpolicy.md, "An independent oracle") and
kept deliberately naive: no indexes, no caches, every question answered by a fresh scan.

- A pod is isolated in a direction iff an effective policy of its namespace selects it and lists
  that direction in its policy types. A non-isolated direction allows everything.
- An isolated direction allows what the union of the rules of those policies allows.
- A connection needs the source's egress AND the destination's ingress. A pod reaching itself
  is not judged.
- Named ports are resolved on the destination pod, for ingress and egress alike.
- Pods without an IP are left out of every peer set.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaddr import AddrFormatError, IPAddress, IPNetwork

from sdn.policy.model import (
    EGRESS,
    INGRESS,
    Cluster,
    Peer,
    Pod,
    Policy,
    PolicyPort,
    PolicyRule,
)

DIRECTIONS = (INGRESS, EGRESS)


@dataclass(frozen=True)
class RuleRef:
    """One rule of one policy: the policy key, the direction and the index in that list."""

    policy: str
    direction: str
    index: int


@dataclass(frozen=True)
class SideVerdict:
    """The judgement of one end of a connection.

    isolated: some policy isolates this pod in this direction (`isolating` names them all).
    allowed_by: every rule that allows the connection (empty when not isolated).
    """

    isolated: bool
    allowed: bool
    allowed_by: tuple[RuleRef, ...]
    isolating: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    egress: SideVerdict  # the source's side
    ingress: SideVerdict  # the destination's side


def selected_pods(cluster: Cluster, policy: Policy) -> list[Pod]:
    """Pods of the policy's namespace whose labels match its podSelector, sorted by key.

    Selection does not depend on having an IP: a pod without one is selected all the same
    (it just has no traffic yet).
    """
    return sorted(
        (
            pod
            for pod in cluster.pods.values()
            if pod.namespace == policy.namespace and policy.pod_selector.matches(pod.labels)
        ),
        key=lambda p: p.key,
    )


def _policies_isolating(cluster: Cluster, pod: Pod, direction: str) -> list[Policy]:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be {INGRESS!r} or {EGRESS!r}, not {direction!r}")
    return [
        pol
        for pol in cluster.effective_policies()
        if pol.namespace == pod.namespace
        and direction in pol.policy_types
        and pol.pod_selector.matches(pod.labels)
    ]


def isolation(cluster: Cluster, pod: Pod, direction: str) -> tuple[str, ...]:
    """Keys of the effective policies that isolate `pod` in `direction` (empty: not isolated)."""
    return tuple(pol.key for pol in _policies_isolating(cluster, pod, direction))


def _ip_in_block(ip: str, cidr: str, excepts: tuple[str, ...]) -> bool:
    try:
        addr = IPAddress(ip)
    except (AddrFormatError, ValueError):
        return False
    # A v4 address is never inside a v6 block and vice versa (netaddr agrees, but say it).
    net = IPNetwork(cidr)
    if addr.version != net.version or addr not in net:
        return False
    return not any(
        addr.version == IPNetwork(ex).version and addr in IPNetwork(ex) for ex in excepts
    )


def peer_matches(cluster: Cluster, policy: Policy, peer: Peer, pod: Pod) -> bool:
    """Whether `pod`, as the other end of a connection, is inside `peer` of `policy`.

    ipBlock: one of the pod's IPs is inside the cidr and inside none of the excepts.
    podSelector only: pods of the policy's namespace; namespaceSelector only: all pods of the
    matching namespaces; both: AND. A pod without an IP matches no peer at all.
    """
    if not pod.ips:
        return False
    if peer.ip_block is not None:
        if peer.pod_selector is not None or peer.namespace_selector is not None:
            raise ValueError(f"{policy.key}: a peer cannot combine ipBlock with selectors")
        return any(_ip_in_block(ip, peer.ip_block.cidr, peer.ip_block.excepts) for ip in pod.ips)
    if peer.pod_selector is None and peer.namespace_selector is None:
        raise ValueError(f"{policy.key}: empty peer (no selector, no ipBlock)")
    if peer.namespace_selector is None:
        ns_ok = pod.namespace == policy.namespace
    else:
        ns_ok = peer.namespace_selector.matches(cluster.namespace(pod.namespace).label_map)
    pod_ok = peer.pod_selector is None or peer.pod_selector.matches(pod.labels)
    return ns_ok and pod_ok


def port_matches(
    ports: tuple[PolicyPort, ...] | None, port: int, protocol: str, dst: Pod
) -> bool:
    """Whether (port, protocol) on the destination pod `dst` is inside a rule's port list.

    None: all ports and protocols; (): none. A named port is resolved on `dst` (name and
    protocol must both match its containerPort); unresolvable matches nothing.
    """
    if ports is None:
        return True
    protocol = protocol.upper()
    for pp in ports:
        if pp.protocol != protocol:
            continue
        if pp.port is None:
            return True
        if isinstance(pp.port, str):
            number = dst.resolve_port(pp.port, pp.protocol)
            if number is not None and number == port:
                return True
            continue
        end = pp.end_port if pp.end_port is not None else pp.port
        if pp.port <= port <= end:
            return True
    return False


def _rule_allows(
    cluster: Cluster, policy: Policy, rule: PolicyRule, peer: Pod, port: int, protocol: str,
    dst: Pod,
) -> bool:
    if rule.peers is not None and not any(
        peer_matches(cluster, policy, p, peer) for p in rule.peers
    ):
        return False
    return port_matches(rule.ports, port, protocol, dst)


def _side(
    cluster: Cluster, subject: Pod, direction: str, peer: Pod, port: int, protocol: str,
    dst: Pod,
) -> SideVerdict:
    """Judge one side: `subject` is the pod whose policies apply, `peer` the other end."""
    policies = _policies_isolating(cluster, subject, direction)
    if not policies:
        return SideVerdict(isolated=False, allowed=True, allowed_by=(), isolating=())
    allowed_by = tuple(
        RuleRef(pol.key, direction, i)
        for pol in policies
        for i, rule in enumerate(pol.rules(direction))
        if _rule_allows(cluster, pol, rule, peer, port, protocol, dst)
    )
    return SideVerdict(
        isolated=True,
        allowed=bool(allowed_by),
        allowed_by=allowed_by,
        isolating=tuple(pol.key for pol in policies),
    )


def evaluate(cluster: Cluster, src: Pod, dst: Pod, port: int, protocol: str) -> Verdict:
    """May `src` open a connection to `dst` on (port, protocol)? Egress of src AND ingress of dst.

    A pod reaching itself is always allowed (not judged); its sides still report isolation.
    Raises ValueError for a pod without an IP: it can neither send nor receive.
    """
    for pod in (src, dst):
        if not pod.ips:
            raise ValueError(f"pod {pod.key} has no IP")
    protocol = protocol.upper()
    egress = _side(cluster, src, EGRESS, dst, port, protocol, dst)
    ingress = _side(cluster, dst, INGRESS, src, port, protocol, dst)
    if src.key == dst.key:
        return Verdict(
            allowed=True,
            egress=SideVerdict(egress.isolated, True, (), egress.isolating),
            ingress=SideVerdict(ingress.isolated, True, (), ingress.isolating),
        )
    return Verdict(allowed=egress.allowed and ingress.allowed, egress=egress, ingress=ingress)


def evaluate_address(cluster: Cluster, pod: Pod, address: str, direction: str, port: int,
                     protocol: str) -> Verdict:
    """May `pod` reach `address` (direction EGRESS), or `address` reach `pod` (INGRESS), where
    the address is no pod's: a node, a host outside the cluster. Only the pod's side is judged;
    only ipBlock peers (and rules without peers) can match an address. The other side is
    reported not isolated: NetworkPolicy has nothing to say about it."""
    if not pod.ips:
        raise ValueError(f"pod {pod.key} has no IP")
    protocol = protocol.upper()
    dst = Pod(namespace="", name=address, ips=(address,)) if direction == EGRESS else pod

    def allows(rule: PolicyRule) -> bool:
        if rule.peers is not None and not any(
                p.ip_block is not None and _ip_in_block(address, p.ip_block.cidr, p.ip_block.excepts)
                for p in rule.peers):
            return False
        return port_matches(rule.ports, port, protocol, dst)

    policies = _policies_isolating(cluster, pod, direction)
    free = SideVerdict(isolated=False, allowed=True, allowed_by=(), isolating=())
    judged = free
    if policies:
        allowed_by = tuple(RuleRef(pol.key, direction, i) for pol in policies
                           for i, rule in enumerate(pol.rules(direction)) if allows(rule))
        judged = SideVerdict(isolated=True, allowed=bool(allowed_by), allowed_by=allowed_by,
                             isolating=tuple(pol.key for pol in policies))
    egress, ingress = (judged, free) if direction == EGRESS else (free, judged)
    return Verdict(allowed=judged.allowed, egress=egress, ingress=ingress)


def _describe_peer(cluster: Cluster, policy: Policy, peer: Peer) -> dict:
    out: dict = {}
    if peer.ip_block is not None:
        out["ipBlock"] = {"cidr": peer.ip_block.cidr, "except": list(peer.ip_block.excepts)}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = str(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = str(peer.pod_selector)
    if peer.ip_block is None and peer.namespace_selector is None:
        out["namespace"] = policy.namespace
    out["pods"] = sorted(
        pod.key for pod in cluster.pods.values() if peer_matches(cluster, policy, peer, pod)
    )
    return out


def _describe_port(pp: PolicyPort) -> dict:
    out: dict = {"protocol": pp.protocol}
    if pp.port is not None:
        out["port"] = pp.port
    if pp.end_port is not None:
        out["endPort"] = pp.end_port
    return out


def explain(cluster: Cluster, pod: Pod) -> dict:
    """Which policies select `pod`, per direction, with their rules (JSON-able).

    For each rule: its peers (with the pods each currently matches; "all" when the rule has no
    peer list) and its ports ("all" when it has no port list). Used by `sdnctl policy explain`.
    """
    out: dict = {
        "pod": pod.key,
        "ips": list(pod.ips),
        "node": pod.node,
        "labels": dict(pod.labels),
    }
    for direction in DIRECTIONS:
        policies = _policies_isolating(cluster, pod, direction)
        entries = []
        for pol in policies:
            rules = []
            for i, rule in enumerate(pol.rules(direction)):
                rules.append(
                    {
                        "index": i,
                        "peers": "all"
                        if rule.peers is None
                        else [_describe_peer(cluster, pol, p) for p in rule.peers],
                        "ports": "all"
                        if rule.ports is None
                        else [_describe_port(pp) for pp in rule.ports],
                    }
                )
            entries.append(
                {
                    "policy": pol.key,
                    "form": pol.form,
                    "origin": pol.origin,
                    "podSelector": str(pol.pod_selector),
                    "rules": rules,
                }
            )
        out[direction.lower()] = {"isolated": bool(policies), "policies": entries}
    return out
