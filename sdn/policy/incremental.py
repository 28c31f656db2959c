"""The rule IR of a cluster, kept up to date object by object.

An event recomputes only the policies it can affect, found through indexes rather than by
evaluating every policy:
- a Pod: the policies of its namespace (it may be a target or a same-namespace peer), the
  policies whose namespaceSelector peers match its namespace (found by the namespace's
  label pairs), and the policies whose egress rules use a named port the pod declares;
- a Namespace: the policies of that namespace (its annotations switch alpha/beta policies on
  and off) and the policies whose namespaceSelector matched its old or new labels;
- a policy: itself.
`RuleSet.apply` returns the rule-level difference, which `flows.compiler.BridgeCompiler`
turns into a flow difference per bridge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from flows.ir import Isolation, Rule, RuleId
from sdn.policy.model import (
    EGRESS,
    FORM_ALPHA,
    FORM_BETA,
    FORM_IMPLICIT,
    INGRESS,
    Cluster,
    LabelSelector,
    Namespace,
    Node,
    Pod,
    Policy,
)
from sdn.policy.rules import ClusterIndex, Translation, isolating_directions, translate_policy

Obj = Namespace | Pod | Node | Policy


@dataclass
class RuleDelta:
    """What changed in the cluster's rules and isolations."""

    upsert: list[Rule] = field(default_factory=list)
    delete: list[RuleId] = field(default_factory=list)
    isolate: list[Isolation] = field(default_factory=list)
    unisolate: list[tuple[str, str]] = field(default_factory=list)
    policies: set[str] = field(default_factory=set)  # keys of the policies recomputed

    @property
    def empty(self) -> bool:
        return not (self.upsert or self.delete or self.isolate or self.unisolate)


def _selector_buckets(sel: LabelSelector) -> list[tuple[str, str] | None]:
    """Index keys of a selector: its first matchLabels pair, or None (scan) when it has none."""
    return [sel.match_labels[0]] if sel.match_labels else [None]


class RuleSet:
    """Rules and isolations of every policy in force, with the indexes to update them."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.index = ClusterIndex(cluster)
        self.rules: dict[str, dict[RuleId, Rule]] = {}  # policy key -> its rules
        self.translations: dict[str, Translation] = {}  # policy key -> what its rules came from
        # Isolation by target group: a direction and the pods one selector picks in one
        # namespace. Policies join the groups they isolate; an address is isolated by the
        # members of the groups holding it (S2: 10k policies on the same pods are one group of
        # 10k names and 10k addresses, not 100M (address, policy) pairs).
        self.groups: dict[tuple, _Group] = {}  # (direction, namespace, selector) -> group
        self.isolating: dict[str, tuple[tuple, ...]] = {}  # policy key -> its groups
        self.owners: dict[tuple[str, str], set[tuple]] = defaultdict(set)  # (direction, ip) -> groups
        self.policies: dict[str, Policy] = {}  # effective policies by key
        self._iso_cache: dict[tuple[str, str], Isolation] = {}
        self._names: dict[frozenset, tuple[str, ...]] = {}  # groups -> their policies, sorted
        self._by_ns: dict[str, set[str]] = defaultdict(set)
        self._ns_peers: dict[tuple[str, str] | None, set[str]] = defaultdict(set)
        self._named_egress: dict[str, set[str]] = defaultdict(set)  # port name -> policies
        self._renamed_groups: set[tuple] = set()  # groups whose members changed (see _finish)
        delta, touched = RuleDelta(), set[tuple]()
        for pol in cluster.effective_policies():
            self._recompute_policy(pol, delta, touched)
        self._flush_renamed(touched)

    # ---- reading -------------------------------------------------------------------------

    def all_rules(self) -> list[Rule]:
        return [r for rules in self.rules.values() for r in rules.values()]

    def all_isolation(self) -> list[Isolation]:
        return [self._isolation(k) for k in sorted(self.owners)]

    def _isolation(self, key: tuple[str, str]) -> Isolation:
        iso = self._iso_cache.get(key)
        if iso is None:
            groups = frozenset(self.owners[key])
            names = self._names.get(groups)
            if names is None:
                names = self._names[groups] = tuple(sorted({p for g in groups for p in self.groups[g].members}))
            iso = self._iso_cache[key] = Isolation(key[0], key[1], names)
        return iso

    # ---- indexes -------------------------------------------------------------------------

    def _buckets(self, pol: Policy) -> Iterator[set]:
        """The index entries that hold the policy's key: its namespace, the buckets of its
        namespace selectors, its named egress ports."""
        yield self._by_ns[pol.namespace]
        for direction in (INGRESS, EGRESS):
            for rule in pol.rules(direction):
                for peer in rule.peers or ():
                    if peer.namespace_selector is not None:
                        for b in _selector_buckets(peer.namespace_selector):
                            yield self._ns_peers[b]
                if direction == EGRESS:
                    for port in rule.ports or ():
                        if isinstance(port.port, str):
                            yield self._named_egress[port.port]

    def _index(self, pol: Policy) -> None:
        for bucket in self._buckets(pol):
            bucket.add(pol.key)

    def _unindex(self, pol: Policy) -> None:
        """Undo `_index(pol)`: the same buckets, found from the policy again."""
        for bucket in self._buckets(pol):
            bucket.discard(pol.key)

    def _ns_selector_policies(self, labels: dict[str, str]) -> set[str]:
        """Policies with a namespaceSelector peer that may match a namespace with `labels`."""
        out = set(self._ns_peers.get(None, ()))
        for pair in labels.items():
            out |= self._ns_peers.get(pair, set())
        return out

    def _affected_by_pod(self, pod: Pod | None) -> set[str]:
        """Policies that may read this pod: candidates from the indexes, then kept only if
        the pod is one of their targets or peers (by its labels and its namespace's)."""
        if pod is None:
            return set()
        ns_labels = self.cluster.namespace(pod.namespace).label_map
        labels = pod.label_map
        candidates = set(self._by_ns.get(pod.namespace, ())) | self._ns_selector_policies(ns_labels)
        out = {key for key in candidates
               if self._reads_pod(self.policies.get(key), pod.namespace, labels, ns_labels)}
        for p in pod.ports:
            if p.name:
                out |= self._named_egress.get(p.name, set())
        return out

    @staticmethod
    def _reads_pod(pol: Policy | None, ns: str, labels: dict, ns_labels: dict) -> bool:
        """Whether a pod with `labels` in namespace `ns` is a target or a peer of `pol`."""
        if pol is None:
            return True  # not in force: recomputing tells whether it should be
        if pol.namespace == ns and pol.pod_selector.matches(labels):
            return True
        for direction in (INGRESS, EGRESS):
            for rule in pol.rules(direction):
                for peer in rule.peers or ():
                    if peer.ip_block is not None:
                        continue
                    if peer.namespace_selector is None:
                        if pol.namespace != ns:
                            continue
                    elif not peer.namespace_selector.matches(ns_labels):
                        continue
                    if peer.pod_selector is None or peer.pod_selector.matches(labels):
                        return True
        return False

    # ---- changing ------------------------------------------------------------------------

    def apply(self, upserts: Iterable[Obj] = (), deletes: Iterable[Obj] = ()) -> RuleDelta:
        """Put objects into the cluster (or take them out) and recompute what they affect."""
        delta = RuleDelta()
        touched: set = set()
        affected: set[str] = set()
        namespaces: set[str] = set()
        for obj, present in [(o, True) for o in upserts] + [(o, False) for o in deletes]:
            if isinstance(obj, Pod):
                old = self.cluster.pods.get(obj.key)
                affected |= self._affected_by_pod(old)
                if present:
                    self.cluster.pods[obj.key] = obj
                else:
                    self.cluster.pods.pop(obj.key, None)
                self.index.put_pod(old, obj if present else None)
                affected |= self._affected_by_pod(obj if present else None)
            elif isinstance(obj, Namespace):
                old_labels = self.cluster.namespace(obj.name).label_map
                affected |= self._ns_selector_policies(old_labels)
                if present:
                    self.cluster.namespaces[obj.name] = obj
                else:
                    self.cluster.namespaces.pop(obj.name, None)
                self.index.put_namespace(obj.name, self.cluster.namespace(obj.name).label_map)
                affected |= self._ns_selector_policies(self.cluster.namespace(obj.name).label_map)
                namespaces.add(obj.name)
            elif isinstance(obj, Policy):
                cluster_key = (obj.form, obj.namespace, obj.name)
                if present:
                    self.cluster.policies[cluster_key] = obj
                else:
                    self.cluster.policies.pop(cluster_key, None)
                namespaces.add(obj.namespace)
                affected.add(obj.key)
            elif isinstance(obj, Node):
                if present:
                    self.cluster.nodes[obj.name] = obj
                else:
                    self.cluster.nodes.pop(obj.name, None)
        effective = {p.key: p for p in self._effective(namespaces)}
        for ns in namespaces:  # policies of these namespaces may have come or gone
            affected |= self._by_ns.get(ns, set()) | {k for k, p in effective.items() if p.namespace == ns}
        for key in sorted(affected):
            known = self.policies.get(key)
            if key in effective or (known is not None and known.namespace in namespaces):
                pol = effective.get(key)  # in a changed namespace: in force only if effective now
            else:
                pol = self._current_effective(key)
            if pol is None:
                self._drop_policy(key, delta, touched)
            else:
                self._recompute_policy(pol, delta, touched)
        return self._finish(delta, touched)

    def _effective(self, namespaces: set[str]) -> list[Policy]:
        if not namespaces:
            return []
        return [p for p in self.cluster.effective_policies() if p.namespace in namespaces]

    def _current_effective(self, key: str) -> Policy | None:
        """The effective policy with this key now (for policies outside the changed namespaces,
        whose effectiveness did not change)."""
        pol = self.policies.get(key)
        if pol is None:
            return None
        if pol.form == FORM_IMPLICIT:
            return pol
        return self.cluster.policies.get((pol.form, pol.namespace, pol.name))

    def _drop_policy(self, key: str, delta: RuleDelta, touched: set) -> None:
        pol = self.policies.pop(key, None)
        if pol is not None:
            self._unindex(pol)
        for rid in self.rules.pop(key, {}):
            delta.delete.append(rid)
        self.translations.pop(key, None)
        self._set_isolation(key, None, touched)
        delta.policies.add(key)

    def _recompute_policy(self, pol: Policy, delta: RuleDelta, touched: set) -> None:
        old_pol = self.policies.get(pol.key)
        if old_pol is not pol:  # the indexes depend on the policy alone
            if old_pol is not None:
                self._unindex(old_pol)
            self.policies[pol.key] = pol
            self._index(pol)
        previous = self.translations.get(pol.key)
        translation = self.translations[pol.key] = translate_policy(self.index, pol, previous)
        if translation is not previous:  # else its rules are the ones it has
            new = {r.id: r for r in translation.rules}
            old = self.rules.get(pol.key, {})
            for rid, r in new.items():
                was = old.get(rid)
                if was is not r and was != r:
                    delta.upsert.append(r)
            for rid in old:
                if rid not in new:
                    delta.delete.append(rid)
            self.rules[pol.key] = new
        self._set_isolation(pol.key, pol, touched)
        delta.policies.add(pol.key)

    def _set_isolation(self, key: str, pol: Policy | None, touched: set) -> None:
        """Put policy `key` into the target groups `pol` isolates (none: out of every group),
        and bring each group's addresses up to date with its selector's pods now."""
        old = self.isolating.get(key, ())
        new: tuple[tuple, ...] = ()
        if pol is not None:
            ips = self.index.selected_ips(pol)
            new = tuple((d, pol.namespace, pol.pod_selector) for d in isolating_directions(pol))
            for gk in new:
                self._group_addresses(gk, ips, touched)
        if old == new:
            return
        self.isolating[key] = new
        if not new:
            del self.isolating[key]
        for gk in set(old) - set(new):
            group = self.groups[gk]
            group.members.discard(key)
            if not group.members:
                self._group_addresses(gk, frozenset(), touched)
                del self.groups[gk]
            else:
                self._renamed(gk, touched)
        for gk in set(new) - set(old):
            self.groups[gk].members.add(key)
            self._renamed(gk, touched)

    def _group_addresses(self, gk: tuple, ips: frozenset[str], touched: set) -> None:
        """The addresses of group `gk` are now `ips` (the group is made if new)."""
        group = self.groups.get(gk)
        if group is None:
            group = self.groups[gk] = _Group(set(), frozenset())
        if group.ips is ips or group.ips == ips:
            group.ips = ips
            return
        direction = gk[0]
        for ip in group.ips - ips:
            k = (direction, ip)
            self.owners[k].discard(gk)
            if not self.owners[k]:
                del self.owners[k]
            self._iso_cache.pop(k, None)
            touched.add(k)
        for ip in ips - group.ips:
            k = (direction, ip)
            self.owners[k].add(gk)
            self._iso_cache.pop(k, None)
            touched.add(k)
        group.ips = ips

    def _renamed(self, gk: tuple, touched: set) -> None:
        """The members of group `gk` changed: its addresses' isolations name other policies
        (marked once per batch, see `_flush_renamed`: 10k policies joining one group are not
        10k walks over its addresses)."""
        self._renamed_groups.add(gk)

    def _flush_renamed(self, touched: set) -> None:
        if not self._renamed_groups:
            return
        self._names.clear()
        for gk in self._renamed_groups:
            group = self.groups.get(gk)
            for ip in group.ips if group is not None else ():
                k = (gk[0], ip)
                self._iso_cache.pop(k, None)
                touched.add(k)
        self._renamed_groups.clear()

    def _finish(self, delta: RuleDelta, touched: set) -> RuleDelta:
        """Isolation changes as final states (several policies may touch one pod in a batch)."""
        self._flush_renamed(touched)
        for k in sorted(touched):
            if k in self.owners:
                delta.isolate.append(self._isolation(k))
            else:
                delta.unisolate.append(k)
        return delta


@dataclass
class _Group:
    """A target group: the policies isolating these addresses in one direction."""

    members: set[str]
    ips: frozenset[str]


__all__ = ["FORM_ALPHA", "FORM_BETA", "RuleDelta", "RuleSet"]
