"""Kubernetes policies -> the placement-free rule IR of `flows`.

Selectors become pod addresses, ipBlocks become CIDRs minus their excepts, named ports become
numbers. A named port resolves on the destination pod: for ingress that is the applied-to pod,
for egress the peer pod, so a rule with named ports splits into parts: part 0 carries the
numeric ports for every target and peer, and one part per distinct resolution carries the
resolved numbers for the pods that resolve that way. Parts may overlap (they only allow), and
the compiler gives overlapping parts different priorities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from functools import lru_cache
from typing import NamedTuple

from flows.addrset import AddressSet
from flows.bulk import gc_paused
from flows.ir import EGRESS as IR_EGRESS
from flows.ir import INGRESS as IR_INGRESS
from flows.ir import Isolation, PortRange, Rule, RuleId
from sdn.policy.model import EGRESS, INGRESS, Cluster, Peer, Pod, Policy, PolicyRule

_MISSING = object()


class ClusterIndex:
    """Pods with an IP, by namespace (in name order), and namespace labels, so selectors are
    evaluated per namespace; updated in place as pods and namespaces change."""

    def __init__(self, cluster: Cluster, track: bool = True):
        """track=False: a one-shot index (cluster_rules) that never sees a change, so its
        results need not record what they read."""
        self.cluster = cluster
        self.track = track
        self.by_ns: dict[str, dict[str, Pod]] = defaultdict(dict)
        for pod in sorted(cluster.pods.values(), key=lambda p: p.key):
            if pod.ips:
                self.by_ns[pod.namespace][pod.key] = pod
        self.namespaces = {ns: cluster.namespace(ns).label_map for ns in cluster.namespace_names()}
        self._sorted: dict[str, list[Pod]] = {}
        # Selector results, shared by every policy using the same selector (many policies
        # select the same pods: one evaluation each). Each result records what it read: pairs
        # (namespace, pod selector or None for every pod). A pod change drops only the results
        # that read its namespace with a selector matching the pod's old or new labels; a
        # namespace change (or a new namespace) drops everything.
        #
        # Two kinds of results are not dropped but kept up to date: a peer's address set
        # ("addr") is edited by the addresses of the pod that joined or left it (a pod flipping
        # a label read by a selector spanning every namespace is one address out of thousands,
        # not a new set), and a result computed again that equals the one it replaces keeps
        # the old object, so whoever compares results by identity (RuleSet's translations)
        # sees it unchanged.
        self._ids: dict[tuple, int] = {}  # memo key -> a small number (keys are big to hash)
        self._keys: list[tuple] = []  # key id -> memo key
        self._memo: dict[Hashable, object] = {}  # by key; by the key's id while tracking
        self._reads: dict[int, frozenset] = {}  # memo key id -> its (namespace, selector) pairs
        self._readers: dict[str, set[tuple]] = defaultdict(set)  # namespace -> {(key id, selector)}
        self._frames: list[set] = []  # what the results being computed have read so far
        self._was: dict[int, object] = {}  # key id -> its result before a change dropped it
        self._holders: dict[str, list[str]] = defaultdict(list)  # address -> keys of pods with it
        if track:
            for pods in self.by_ns.values():
                for pod in pods.values():
                    for ip in pod.ips:
                        self._holders[ip].append(pod.key)

    @property
    def all_pods(self) -> list[Pod]:
        return [p for ns in sorted(self.by_ns) for p in self.pods_in(ns)]

    def pods_in(self, ns: str) -> list[Pod]:
        """Pods of a namespace with an IP, in name order (cached until the namespace changes)."""
        cached = self._sorted.get(ns)
        if cached is None:
            pods = self.by_ns.get(ns)
            cached = self._sorted[ns] = [pods[k] for k in sorted(pods)] if pods else []
        return cached

    def put_pod(self, old: Pod | None, new: Pod | None) -> None:
        pod = new if new is not None else old
        if pod is None:
            return
        if not self.track:
            self._memo.clear()
        if pod.namespace not in self.namespaces or len(self._ids) > 8 * (len(self._memo) + 1000):
            # A namespace seen for the first time (selectors may match it), or many keys no
            # longer in use (policies replaced): start afresh.
            self._forget_all()
        else:
            self._forget_readers(pod.namespace, old, new)
        if old is not None:
            if self.track and old.key in self.by_ns.get(old.namespace, {}):
                for ip in old.ips:
                    self._holders[ip].remove(old.key)
                    if not self._holders[ip]:
                        del self._holders[ip]
            self.by_ns.get(old.namespace, {}).pop(old.key, None)
            self._sorted.pop(old.namespace, None)
        if new is not None:
            self._sorted.pop(new.namespace, None)
            if new.ips:
                self.by_ns[new.namespace][new.key] = new
                if self.track:
                    for ip in new.ips:
                        self._holders[ip].append(new.key)
            self.namespaces.setdefault(new.namespace, self.cluster.namespace(new.namespace).label_map)

    def put_namespace(self, name: str, labels: dict[str, str]) -> None:
        self._forget_all()
        self.namespaces[name] = labels

    def _forget_all(self) -> None:
        self._ids.clear()
        self._keys.clear()
        self._memo.clear()
        self._reads.clear()
        self._readers.clear()
        self._was.clear()

    def _forget_readers(self, ns: str, old: Pod | None, new: Pod | None) -> None:
        """Bring up to date the results a pod change in `ns` can alter, those that read `ns`
        with a selector matching the pod before or after: peer address sets are edited, the
        others dropped (computed again when asked for)."""
        readers = self._readers.get(ns)
        if not readers:
            return
        labels = [p.label_map for p in (old, new) if p is not None]
        stale: dict[int, object] = {}  # key id -> selector of one stale read
        for kid, sel in readers:
            if sel is None or any(sel.matches(lab) for lab in labels):
                stale[kid] = sel
        for kid, sel in stale.items():
            if self._keys[kid][0] == "addr" and kid in self._memo:
                self._memo[kid] = self._edited(kid, sel, old, new)
                continue
            value = self._memo.pop(kid, _MISSING)
            if value is not _MISSING:
                self._was[kid] = value
            for read in self._reads.pop(kid, ()):
                self._readers[read[0]].discard((kid, read[1]))

    def _edited(self, kid: int, sel, old: Pod | None, new: Pod | None) -> AddressSet:
        """The address set of a peer ("addr" result `kid`, pods matching `sel` in the
        namespaces it read) after `old` became `new` (called before the index changes)."""
        value = self._memo[kid]
        assert isinstance(value, AddressSet)
        left = set(old.ips) if old is not None and (sel is None or sel.matches(old.label_map)) else set()
        joined = set(new.ips) if new is not None and (sel is None or sel.matches(new.label_map)) else set()
        reads = self._reads[kid]
        gone = []
        old_key = None if old is None else old.key
        for ip in left - joined:
            others = (self.by_ns.get(k.partition("/")[0], {}).get(k) for k in self._holders.get(ip, ())
                      if k != old_key)
            if not any(p is not None and (p.namespace, sel) in reads and (sel is None or sel.matches(p.label_map))
                       for p in others):  # no other pod of the set holds it (addresses reused)
                gone.append(ip)
        return value.changed(add=joined - left, remove=gone) if gone or joined - left else value

    def _read(self, ns: str, selector) -> None:
        """The result being computed depends on the pods of `ns` matching `selector`."""
        if self.track and self._frames:
            self._frames[-1].add((ns, selector))

    def memo(self, key: tuple, compute):
        """compute(), remembered under key until a change it read (see `_forget_readers`).
        compute() reports what it reads with `_read` (or through nested memo calls)."""
        if not self.track:
            value = self._memo.get(key, _MISSING)
            if value is _MISSING:
                value = self._memo[key] = compute()
            return value
        kid = self._ids.get(key)
        if kid is None:
            kid = self._ids[key] = len(self._ids)
            self._keys.append(key)
        try:
            value = self._memo[kid]
            reads = self._reads[kid]
        except KeyError:
            self._frames.append(set())
            try:
                value = compute()
            finally:
                reads = frozenset(self._frames.pop())
            was = self._was.pop(kid, _MISSING)
            if was is not _MISSING and was == value:
                value = was
            self._memo[kid] = value
            self._reads[kid] = reads
            for ns, sel in reads:
                self._readers[ns].add((kid, sel))
        if self._frames:
            self._frames[-1] |= reads
        return value

    def selected(self, policy: Policy) -> list[Pod]:
        ns, sel = policy.namespace, policy.pod_selector
        def compute():
            self._read(ns, sel)
            return [p for p in self.pods_in(ns) if sel.matches(p.label_map)]
        return self.memo(("sel", ns, sel), compute)

    def selected_ips(self, policy: Policy) -> frozenset[str]:
        """The addresses of the pods a policy selects: one frozenset shared by every policy
        with the same selector (S2: 10k policies on the same 10k pods hold one set, not 10k)."""
        return self.memo(("ips", policy.namespace, policy.pod_selector),
                         lambda: frozenset(_addresses(self.selected(policy))))

    def peer_pods(self, policy: Policy, peer: Peer) -> list[Pod]:
        if peer.ip_block is not None:
            return []
        ns = policy.namespace if peer.namespace_selector is None else None
        return self.memo(("peer", ns, peer), lambda: self._peer_pods(policy, peer))

    def _peer_pods(self, policy: Policy, peer: Peer) -> list[Pod]:
        if peer.namespace_selector is None:
            namespaces = [policy.namespace]
        else:
            namespaces = [ns for ns, labels in sorted(self.namespaces.items())
                          if peer.namespace_selector.matches(labels)]
        sel = peer.pod_selector
        for ns in namespaces:
            self._read(ns, sel)
        return [p for ns in namespaces for p in self.pods_in(ns)
                if sel is None or sel.matches(p.label_map)]


def ipblock_set(peer: Peer) -> AddressSet:
    block = peer.ip_block
    if block is None:
        raise ValueError(f"{peer}: not an ipBlock peer")
    return AddressSet.of([block.cidr]) - AddressSet.of(block.excepts)


def _addresses(pods: Iterable[Pod]) -> set[str]:
    return {ip for p in pods for ip in p.ips}


def _port_range(protocol: str, port: int | None, end: int | None) -> PortRange:
    return PortRange(protocol.lower(), port, end)


@lru_cache(maxsize=1 << 16)
def _ports(rule: PolicyRule) -> tuple[tuple[PortRange, ...], tuple[tuple[str, str], ...]]:
    """A rule's numeric ports as IR port ranges, and its named ones as (name, protocol)
    (remembered: the same rules are translated again at every event that touches them)."""
    ports = rule.ports or ()
    numeric = tuple(sorted({_port_range(p.protocol, p.port, p.end_port)
                            for p in ports if not isinstance(p.port, str)}))
    return numeric, tuple((p.port, p.protocol) for p in ports if isinstance(p.port, str))


def _peer_set(index: ClusterIndex, policy: Policy, rule: PolicyRule) -> AddressSet | None:
    peers = rule.peers
    if peers is None:
        return None
    local = any(p.namespace_selector is None and p.ip_block is None for p in peers)
    key = ("peers", policy.namespace if local else None, peers)
    return index.memo(key, lambda: _compute_peer_set(index, policy, peers))


def _compute_peer_set(index: ClusterIndex, policy: Policy, peers: tuple[Peer, ...]) -> AddressSet:
    parts = []
    for peer in peers:
        if peer.ip_block is not None:
            parts.append(index.memo(("block", peer.ip_block), lambda peer=peer: ipblock_set(peer)))
        else:
            ns = policy.namespace if peer.namespace_selector is None else None
            parts.append(index.memo(("addr", ns, peer),
                                    lambda peer=peer: AddressSet.of(_addresses(index.peer_pods(policy, peer)))))
    return parts[0] if len(parts) == 1 else AddressSet.union(parts)


def translate_rule(index: ClusterIndex, policy: Policy, direction: str, number: int, rule: PolicyRule,
                   targets: list[Pod], target_ips: frozenset[str], peers: AddressSet | None) -> list[Rule]:
    """The IR rules (parts) for one Kubernetes rule, given its targets and its peer set."""
    ir_dir = IR_INGRESS if direction == INGRESS else IR_EGRESS

    def rid(part: int) -> RuleId:
        return RuleId(policy.key, ir_dir, number, part)

    if rule.ports is None:
        return [Rule.of_sets(rid(0), target_ips, peers, None)]
    numeric, named = _ports(rule)
    # Part 0 carries the numeric ports; with only named ports it would match nothing.
    out = [Rule.of_sets(rid(0), target_ips, peers, numeric)] if numeric or not named else []
    if not named:
        return out

    def resolved(pod: Pod) -> tuple[PortRange, ...]:
        got = {_port_range(proto, pod.resolve_port(name, proto), None)
               for name, proto in named if pod.resolve_port(name, proto) is not None}
        return tuple(sorted(got))

    groups: dict[tuple[PortRange, ...], set[str]] = defaultdict(set)
    if direction == INGRESS:
        for pod in targets:
            r = resolved(pod)
            if r:
                groups[r] |= set(pod.ips)
        for part, (ports, ips) in enumerate(sorted(groups.items()), 1):
            out.append(Rule.of_sets(rid(part), frozenset(ips), peers, ports))
    else:
        for pod in index.all_pods:
            own = [ip for ip in pod.ips if peers is None or ip in peers]
            r = resolved(pod) if own else ()
            if r:
                groups[r] |= set(own)
        for part, (ports, ips) in enumerate(sorted(groups.items()), 1):
            out.append(Rule.of_sets(rid(part), target_ips, AddressSet.of(ips), ports))
    return out


def isolating_directions(policy: Policy) -> list[str]:
    """The IR directions a policy isolates its pods in."""
    return [IR_INGRESS if d == INGRESS else IR_EGRESS for d in (INGRESS, EGRESS) if d in policy.policy_types]


def _reads_every_pod(direction: str, rule: PolicyRule) -> bool:
    """An egress rule with named ports resolves them on every peer pod (see translate_rule)."""
    return direction == EGRESS and any(isinstance(p.port, str) for p in rule.ports or ())


class Translation(NamedTuple):
    """One policy's IR rules, and what each of its Kubernetes rules' were made from.

    The index hands out the same objects (target list, address sets) until their contents
    change, so a Kubernetes rule whose targets and peer set are the objects of last time keeps
    its IR rules as they were: a label flip read by 101 policies makes again only the rules
    whose peer set changed."""

    policy: Policy
    targets: list[Pod]
    target_ips: frozenset[str]
    parts: tuple[tuple[AddressSet | None, tuple[Rule, ...]], ...]  # per Kubernetes rule in force

    @property
    def rules(self) -> list[Rule]:
        return [r for _, rules in self.parts for r in rules]


def translate_policy(index: ClusterIndex, policy: Policy, previous: Translation | None = None) -> Translation:
    """The IR rules of one policy in force; `previous` (its last translation) is returned
    itself when nothing it was made from changed, and lends the rules that did not."""
    targets = index.selected(policy)
    target_ips = index.selected_ips(policy)
    kept = previous.parts if previous is not None and previous.policy is policy \
        and previous.targets is targets and previous.target_ips is target_ips else None
    parts: list[tuple[AddressSet | None, tuple[Rule, ...]]] = []
    unchanged = kept is not None
    for direction in (INGRESS, EGRESS):
        if direction not in policy.policy_types or not targets:
            continue
        for number, rule in enumerate(policy.rules(direction)):
            peers = _peer_set(index, policy, rule)
            n = len(parts)
            if kept is not None and kept[n][0] is peers and not _reads_every_pod(direction, rule):
                parts.append(kept[n])
            else:
                made = tuple(translate_rule(index, policy, direction, number, rule, targets, target_ips, peers))
                unchanged = unchanged and kept is not None and kept[n][1] == made
                parts.append((peers, made))
    if unchanged and previous is not None and len(parts) == len(previous.parts):
        return previous
    return Translation(policy, targets, target_ips, tuple(parts))


@gc_paused()
def cluster_rules(cluster: Cluster) -> tuple[list[Rule], list[Isolation]]:
    """Every rule of every policy in force, and every isolated pod address, for the cluster.

    Isolation is gathered per target group (a direction and the pods one selector picks, the
    same list object for every policy using that selector), not per address and policy: S2's
    10k policies selecting the same 10k pods are one group of 10k names, not 100M entries.
    Addresses isolated by the same groups share one tuple of policy names."""
    index = ClusterIndex(cluster, track=False)
    rules: list[Rule] = []
    groups: dict[tuple[str, int], tuple[str, list[Pod], list[str]]] = {}
    for policy in cluster.effective_policies():
        translation = translate_policy(index, policy)
        rules.extend(translation.rules)
        targets = translation.targets
        for ir_dir in isolating_directions(policy):
            group = groups.get((ir_dir, id(targets)))
            if group is None:
                group = groups[(ir_dir, id(targets))] = (ir_dir, targets, [])
            group[2].append(policy.key)
    member_of: dict[tuple[str, str], list[int]] = defaultdict(list)
    glist = list(groups.values())
    for n, (ir_dir, targets, _) in enumerate(glist):
        for ip in {ip for p in targets for ip in p.ips}:
            member_of[(ir_dir, ip)].append(n)
    owners: dict[tuple[int, ...], tuple[str, ...]] = {}
    isolation = []
    for key in sorted(member_of):
        combo = tuple(member_of[key])
        pols = owners.get(combo)
        if pols is None:
            pols = owners[combo] = tuple(sorted({p for n in combo for p in glist[n][2]}))
        isolation.append(Isolation(key[0], key[1], pols))
    return rules, isolation
