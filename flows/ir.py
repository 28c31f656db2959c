"""The compiler's input: rules in a placement-free form, and the bridge they are compiled for.

Rules know addresses, never ofports: sdn/ turns Kubernetes objects into these values (selectors
resolved to pod IPs, ipBlocks minus their excepts, named ports resolved to numbers), and the
compiler turns them into flows. A bridge description says which pods are plugged in where.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from flows.addrset import AddressSet, Intervals, merge_intervals

INGRESS = "ingress"
EGRESS = "egress"
PROTOCOLS = ("tcp", "udp", "sctp")


@functools.total_ordering
@dataclass(frozen=True)
class PortRange:
    """A protocol with an inclusive port range; start None means every port of the protocol.
    Ordered by protocol, then bounds ("all ports" is 0-65535)."""

    protocol: str  # tcp | udp | sctp
    start: int | None = None
    end: int | None = None

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        if self.start is not None and self.end is None:
            object.__setattr__(self, "end", self.start)

    @property
    def bounds(self) -> tuple[int, int]:
        return (0, 65535) if self.start is None else (self.start, self.start if self.end is None else self.end)

    def __lt__(self, other: PortRange) -> bool:
        return (self.protocol, self.bounds, self.start is not None) < (
            other.protocol, other.bounds, other.start is not None)

    def __str__(self) -> str:
        if self.start is None:
            return self.protocol.upper()
        if self.start == self.end:
            return f"{self.start}/{self.protocol.upper()}"
        return f"{self.start}-{self.end}/{self.protocol.upper()}"


class RuleId(NamedTuple):
    """Which policy rule a compiled rule comes from. part > 0 when named ports resolving to
    different numbers on different pods split one Kubernetes rule into several. A named tuple:
    rule ids key every index of the compiler and the rule set, hashed in C."""

    policy: str  # e.g. "x/allow-from-y" (see sdn.policy.model.Policy.key)
    direction: str  # ingress | egress
    index: int  # type: ignore[assignment]  # shadows tuple.index; position in the policy's ingress or egress list
    part: int = 0

    def __str__(self) -> str:
        s = f"{self.policy} {self.direction}[{self.index}]"
        return s + (f".{self.part}" if self.part else "")


@dataclass(frozen=True)
class Rule:
    """One allow rule: packets from/to `peers` on `ports`, for the pods at `targets`.

    targets: addresses of the applied-to pods (the destination for ingress, the source for
    egress). peers: disjoint CIDRs, or None for any address. ports: None for any protocol
    and port.
    """

    id: RuleId
    targets: frozenset[str]
    peers: tuple[str, ...] | None = None
    ports: tuple[PortRange, ...] | None = None

    @classmethod
    def of_sets(cls, id: RuleId, targets: frozenset[str], peers: AddressSet | None,
                ports: tuple[PortRange, ...] | None = None) -> Rule:
        """A rule with its peers given as an address set: `peers` holds the set's CIDRs, and
        the set itself is kept as `peer_set` (the compiler's disjointness checks need its
        intervals, which would otherwise be parsed back from the text)."""
        rule = cls(id, targets, None if peers is None else peers.cidrs(), ports)
        if peers is not None:
            rule.__dict__["peer_set"] = peers
        return rule

    def narrowed(self, targets: frozenset[str], peers: tuple[str, ...] | None) -> Rule:
        """The same rule on `targets` and `peers` (a bridge's share of it): the peer set
        already made is kept when the peers are the same."""
        rule = Rule(self.id, targets, peers, self.ports)
        if peers is self.peers and "peer_set" in self.__dict__:
            rule.__dict__["peer_set"] = self.__dict__["peer_set"]
        return rule

    @property
    def direction(self) -> str:
        return self.id.direction

    def made_peer_set(self) -> AddressSet | None:
        """The peers as an address set if one is at hand (given to `of_sets`), without
        parsing the peers' text to make one."""
        return self.__dict__.get("peer_set")

    @cached_property
    def peer_set(self) -> AddressSet | None:
        return None if self.peers is None else AddressSet.of(self.peers)

    @cached_property
    def port_set(self) -> Intervals | None:
        """The ports as one set of intervals, each protocol in a 16-bit band of its own (for
        disjointness checks); None for any protocol and port."""
        if self.ports is None:
            return None
        return merge_intervals(((PROTOCOLS.index(p.protocol) << 16) + p.bounds[0],
                                (PROTOCOLS.index(p.protocol) << 16) + p.bounds[1]) for p in self.ports)

    @property
    def matches_nothing(self) -> bool:
        return not self.targets or self.peers == () or self.ports == ()


class Isolation(NamedTuple):
    """A pod address isolated in one direction, and the policies that isolate it (a named
    tuple: a cluster has one per pod address and direction, S1 200k of them; addresses isolated
    by the same policies share one `policies` tuple)."""

    direction: str
    address: str
    policies: tuple[str, ...]


@dataclass(frozen=True, order=True)
class PodPort:
    """A pod plugged into the bridge."""

    pod: str  # ns/name
    ofport: int
    mac: str
    ips: tuple[str, ...]


@dataclass(frozen=True, order=True)
class Route:
    """Where addresses that are not local pods go: out of `ofport`, through a tunnel to
    `tunnel_dst` when set."""

    cidr: str
    ofport: int
    tunnel_dst: str | None = None
    via: str = ""  # name of the node or uplink, for display


@dataclass(frozen=True, order=True)
class Gateway:
    """A node bridge's port into the node's own network stack: the node reaches its pods
    through it (kubelet probes, hostNetwork pods) and pods reach the node and what lies
    beyond it. `addresses`: the node's own (the port's address, its InternalIP): traffic from
    them is the node's and always allowed (Kubernetes: "traffic to and from the node where a
    Pod is running is always allowed"); anything else entering here is judged like any peer."""

    ofport: int
    mac: str  # the port's MAC (the node side): what packets towards the node are sent to
    addresses: tuple[str, ...]
    # Service ClusterIPs, translated by the node's service proxy (kube-proxy): a pod's packet
    # to one is not judged here but sent to the node, and judged when it comes back translated
    service_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class NodeGateway:
    """Fabric mode: a node behind one of the fabric switch's links has a gateway port (its
    fabric-node bridge sends what the port gives it up that link, marked). `addresses`: the
    node's own; `pod_cidrs`: where its pods are (the node reaching them is always allowed)."""

    link: int  # the fabric switch's ofport towards the node
    node: str
    addresses: tuple[str, ...]
    pod_cidrs: tuple[str, ...]
    service_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bridge:
    """The switch the tables are compiled for.

    mode "host": a node bridge that judges egress of its own pods and ingress to them.
    mode "fabric": a switch every pod packet passes through; it judges every rule.
    mode "fabric-node": a node bridge in fabric mode: spoof guard and forwarding only, every
    pod packet goes to the uplink (the first route's port).
    """

    name: str
    pods: tuple[PodPort, ...] = ()
    routes: tuple[Route, ...] = ()
    uplinks: tuple[int, ...] = ()  # ofports of tunnels / fabric links
    gateway_mac: str = "0a:58:0a:f4:00:01"
    mode: str = "host"
    gateway: Gateway | None = None  # host and fabric-node mode
    node_gateways: tuple[NodeGateway, ...] = ()  # fabric mode
    # "enforce": established connections are judged again when the rule tables change
    # (flows/recheck.py); "keep": they skip the rule tables for good.
    existing_connections: str = "enforce"

    @property
    def local_addresses(self) -> frozenset[str]:
        return frozenset(ip for p in self.pods for ip in p.ips)
