"""Property tests: on generated clusters, the compiled flows behave exactly like the semantics.

Clusters are generated as Kubernetes manifest dicts (tests/strategies.py) and loaded with
`load_documents`, so the loader, the rule translation, the compiler and the simulator are
tested together:

0. the semantic evaluator agrees with a naive reading of the manifest dicts (so a loader
   mistake cannot hide behind properties 1-4, which all start from the loader's model);
1. every new connection between two pods with an IP is delivered through the compiled bridges
   exactly when the evaluator allows it, and its reply is delivered too (host and fabric
   mode); the simulator's `Ambiguous` (two conjunctions or flows of one priority matching one
   packet) propagates as a failure;
2. compiling is deterministic: the same objects, documents and fields in another order, render
   the same tables;
3. change then revert: after a change (a policy replaced, added or removed, the ports or peers
   of one rule changed, a pod or namespace relabelled) compiled with the previous tables as
   hints, and after reverting it the same way, the tables still behave like the evaluator,
   and rules the change did not touch keep their priority and conj id;
4. flow count: a conjunctive rule costs exactly |peers| + |targets| + |port matches| + 1 flows
   (less than its cross product once each dimension has two), and a node's rule tables stay
   within the sum of that over its rules. (Across a whole node "fewer than the cross
   product" is not a theorem: a rule with 2 targets and 1 port costs 4 flows, its product 2.)
Plus: the loader rejects single-fault invalid variants of generated clusters, and the
regressions the properties found, as minimal manifests, at the end.

Every falsifying example is reported as YAML manifests (hypothesis `note`). PROPERTY_SCALE=N
multiplies the number of examples for a deeper search."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import random
from collections import Counter

import yaml
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from flows import pipeline as P
from flows.compiler import cross_product_count, port_matches, scope_rules
from flows.ir import Rule
from flows.matches import families
from sdn.compile import Compiled, compile_cluster
from sdn.layout import FABRIC
from sdn.policy.evaluate import evaluate
from sdn.policy.manifests import ManifestError, load_documents
from sdn.policy.model import Cluster, Pod
from sdn.verify import ClusterSimulator
from tests import e2e_model as m
from tests.strategies import Generated, changed, clusters, invalid_variants, probe_pool
from tests.switch_support import apply_flow_diff

SCALE = max(1, int(os.environ.get("PROPERTY_SCALE", "1")))


def examples(n: int) -> int:
    return n * SCALE


COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}


# ---------------------------------------------------------------------------------------------
# Helpers


def show(docs: list[dict], title: str = "manifests") -> None:
    """Put the documents of the example into hypothesis' report, as YAML."""
    note(f"--- {title} ---\n" + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=None))


def load(docs: list[dict]) -> Cluster:
    cluster, _ = load_documents(docs)
    return cluster


def compile_ok(cluster: Cluster, **kwargs) -> Compiled:
    """compile_cluster, with a crash on a valid cluster reported as a failed assertion."""
    try:
        return compile_cluster(cluster, **kwargs)
    except Exception as e:
        raise AssertionError(
            f"compile_cluster raised {type(e).__name__} on a valid cluster: {e}") from e


def pods_with_ip(cluster: Cluster) -> list[Pod]:
    return [p for p in sorted(cluster.pods.values(), key=lambda p: p.key) if p.ips]


def _decided_by(path_hops) -> str:
    """The rule-table flows a simulated packet hit, per bridge, for failure messages."""
    out = []
    for hop in path_hops:
        hit = [f"t{s.table}:{s.flow.render(cookie=False) if s.flow else 'miss'}"
               for s in hop.result.steps if s.table in P.RULE_TABLES
               or s.table in (P.EGRESS_DEFAULT, P.INGRESS_DEFAULT)]
        out.append(f"{hop.node}[{'; '.join(hit)}] -> {hop.result.outputs}")
    return " | ".join(out)


def behaviour_problems(cluster: Cluster, compiled: Compiled, probes, pairs=None) -> list[str]:
    """Every (probe, ordered pair) where the flows and the evaluator disagree, or an allowed
    connection's reply is dropped. Ambiguous from the simulator propagates."""
    sim = ClusterSimulator(compiled)
    pods = pods_with_ip(cluster)
    if pairs is None:
        pairs = [(s, d) for s in pods for d in pods if s is not d]
    problems = []
    for port, proto in probes:
        for src, dst in pairs:
            verdict = evaluate(cluster, src, dst, port, proto)
            path = sim.connect(src, dst, port, proto)
            if path.delivered != verdict.allowed:
                problems.append(
                    f"{src.key} ({src.ip}) -> {dst.key} ({dst.ip}) {port}/{proto}: "
                    f"flows {'deliver' if path.delivered else 'drop'}, evaluator "
                    f"{'allows' if verdict.allowed else 'denies'} (egress allowed by "
                    f"{[str(r) for r in verdict.egress.allowed_by] or verdict.egress.allowed}, "
                    f"ingress allowed by "
                    f"{[str(r) for r in verdict.ingress.allowed_by] or verdict.ingress.allowed}); "
                    f"flows: {_decided_by(path.hops)}")
            elif path.delivered and not path.reply_delivered:
                problems.append(f"{src.key} -> {dst.key} {port}/{proto}: allowed, but the reply "
                                f"is dropped: {_decided_by(path.reply_hops)}")
    return problems


def probes_for(data, docs: list[dict], min_size: int = 3, max_size: int = 6):
    return data.draw(st.lists(st.sampled_from(probe_pool(docs)), min_size=min_size,
                              max_size=max_size, unique=True), label="probes")


# ---------------------------------------------------------------------------------------------
# 0. The evaluator agrees with the manifests read naively
#
# Properties 1-4 compare the flows with the evaluator, and both read the loader's model: a
# loader mistake (defaulting, the beta/alpha absent-vs-empty nuance) would be invisible to
# them. This oracle reads the raw manifest dicts instead, straight from
# ../shared/notes/networkpolicy.md, sharing no code with sdn.policy.


def _selects(selector: dict | None, labels: dict) -> bool:
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or ():
        key, op, values = req["key"], req["operator"], req.get("values") or []
        present = key in labels
        ok = {"In": present and labels.get(key) in values,
              "NotIn": not present or labels[key] not in values,
              "Exists": present, "DoesNotExist": not present}[op]
        if not ok:
            return False
    return True


class ManifestOracle:
    """Who may talk to whom, from the manifest dicts alone."""

    def __init__(self, docs: list[dict]):
        self.ns_labels: dict[str, dict] = {}
        self.ns_annotations: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.policies: list[dict] = []
        for d in docs:
            meta = d["metadata"]
            if d["kind"] == "Namespace":
                self.ns_labels[meta["name"]] = {**meta.get("labels", {}),
                                                "kubernetes.io/metadata.name": meta["name"]}
                self.ns_annotations[meta["name"]] = meta.get("annotations", {})
            elif d["kind"] == "Pod":
                self.pods[f"{meta['namespace']}/{meta['name']}"] = d
            elif d["kind"] == "NetworkPolicy":
                self.policies.append(d)

    def _alpha_on(self, ns: str) -> bool:
        value = self.ns_annotations.get(ns, {}).get("net.alpha.kubernetes.io/network-isolation")
        return (value or "off").strip().lower() in ("on", "yes", "true")

    def _beta_on(self, ns: str) -> bool:
        raw = self.ns_annotations.get(ns, {}).get("net.beta.kubernetes.io/network-policy")
        return bool(raw) and (json.loads(raw).get("ingress") or {}).get("isolation") == "DefaultDeny"

    def _normalised(self) -> list[tuple[str, dict, list, list]]:
        """(namespace, podSelector, ingress rules, egress rules) of every policy in force;
        a rule is (peers or None for all, ports or None for all); a rule list of None means
        that direction is not isolated by the policy."""
        out = []
        for d in self.policies:
            ns, spec, api = d["metadata"]["namespace"], d["spec"], d["apiVersion"]
            if api == "networking.k8s.io/v1":
                types = spec.get("policyTypes") or (
                    ["Ingress"] + (["Egress"] if spec.get("egress") else []))
                rules = {}
                for key, peers_key in (("ingress", "from"), ("egress", "to")):
                    rules[key] = [((r.get(peers_key) or None), (r.get("ports") or None))
                                  for r in spec.get(key) or ()]
                out.append((ns, spec.get("podSelector"),
                            rules["ingress"] if "Ingress" in types else None,
                            rules["egress"] if "Egress" in types else None))
            elif api == "extensions/v1beta1" and self._beta_on(ns):
                out.append((ns, spec.get("podSelector"),
                            [(r.get("from"), r.get("ports")) for r in spec.get("ingress") or ()],
                            None))
            elif api == "net.alpha.kubernetes.io/v1alpha1" and self._alpha_on(ns):
                allow = spec.get("allowIncoming")
                rules = [] if allow is None else [(
                    None if allow.get("from") is None else [
                        {"podSelector": {"matchLabels": p["pods"]}} if "pods" in p
                        else {"namespaceSelector": {"matchLabels": p["namespaces"]}}
                        for p in allow["from"]],
                    allow.get("toPorts"))]
                out.append((ns, {"matchLabels": spec.get("podSelector") or {}}, rules, None))
        for ns in self.ns_labels:
            if self._alpha_on(ns) or self._beta_on(ns):
                out.append((ns, {}, [], None))
        return out

    def _peer_has(self, ns: str, peer: dict, pod: dict) -> bool:
        ip = pod["status"].get("podIP")
        if not ip:
            return False
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            addr = ipaddress.ip_address(ip)

            def inside(cidr: str) -> bool:
                net = ipaddress.ip_network(cidr, strict=False)
                return net.version == addr.version and addr in net

            return inside(block["cidr"]) and not any(inside(e) for e in block.get("except", ()))
        pod_ns = pod["metadata"]["namespace"]
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], self.ns_labels[pod_ns]):
                return False
        elif pod_ns != ns:
            return False
        return "podSelector" not in peer or _selects(peer["podSelector"],
                                                      pod["metadata"]["labels"])

    @staticmethod
    def _port_has(ports: list | None, port: int, proto: str, dst: dict) -> bool:
        if ports is None:
            return True
        for p in ports:
            if p.get("protocol", "TCP") != proto:
                continue
            if "port" not in p:
                return True
            if isinstance(p["port"], str):
                if any(c.get("name") == p["port"] and c.get("protocol", "TCP") == proto
                       and c["containerPort"] == port
                       for k in dst["spec"]["containers"] for c in k.get("ports", ())):
                    return True
            elif p["port"] <= port <= p.get("endPort", p["port"]):
                return True
        return False

    def allowed(self, src_key: str, dst_key: str, port: int, proto: str) -> bool:
        src, dst = self.pods[src_key], self.pods[dst_key]
        policies = self._normalised()

        def side(subject: dict, other: dict, index: int) -> bool:
            ns = subject["metadata"]["namespace"]
            isolating = [pol for pol in policies if pol[0] == ns and pol[index] is not None
                         and _selects(pol[1], subject["metadata"]["labels"])]
            if not isolating:
                return True
            return any((peers is None or any(self._peer_has(pol[0], p, other) for p in peers))
                       and self._port_has(ports, port, proto, dst)
                       for pol in isolating for peers, ports in pol[index])

        return side(src, dst, 3) and side(dst, src, 2)


@settings(max_examples=examples(60), **COMMON)
@given(g=clusters(), data=st.data())
def test_evaluator_agrees_with_the_manifests(g: Generated, data):
    docs = g.documents()
    show(docs)
    cluster = load(docs)
    oracle = ManifestOracle(g.documents())
    pods = pods_with_ip(cluster)
    problems = []
    for port, proto in probes_for(data, docs, 4, 8):
        for src in pods:
            for dst in pods:
                if src is dst:
                    continue
                judged = evaluate(cluster, src, dst, port, proto).allowed
                naive = oracle.allowed(src.key, dst.key, port, proto)
                if judged != naive:
                    problems.append(f"{src.key} -> {dst.key} {port}/{proto}: evaluator "
                                    f"{judged}, manifests read naively {naive}")
    assert not problems, "\n".join(problems[:15])


# ---------------------------------------------------------------------------------------------
# 1. The flows behave like the evaluator


@settings(max_examples=examples(80), **COMMON)
@given(g=clusters(), data=st.data())
def test_flows_behave_like_the_evaluator(g: Generated, data):
    docs = g.documents()
    show(docs)
    cluster = load(docs)
    enforce = data.draw(st.sampled_from(("host", "fabric")), label="enforce")
    compiled = compile_ok(cluster, enforce=enforce)
    probes = probes_for(data, docs)
    problems = behaviour_problems(cluster, compiled, probes)
    assert not problems, (f"{len(problems)} connection(s) where the {enforce}-mode flows and "
                          "the evaluator disagree:\n" + "\n".join(problems[:15]))


# ---------------------------------------------------------------------------------------------
# 2. Determinism


def _shuffled_keys(value, rnd: random.Random):
    """The same document with every mapping's keys in another order (lists keep theirs: the
    position of a rule is part of its identity)."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled_keys(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled_keys(v, rnd) for v in value]
    return value


@settings(max_examples=examples(40), **COMMON)
@given(g=clusters(), rnd=st.randoms(use_true_random=False))
def test_compiling_is_deterministic(g: Generated, rnd: random.Random):
    docs = g.documents()
    show(docs)
    again = [_shuffled_keys(d, rnd) for d in g.documents()]
    rnd.shuffle(again)
    first, second = compile_ok(load(docs)), compile_ok(load(again))
    assert sorted(first.programs) == sorted(second.programs)
    for node in first.programs:
        assert first.programs[node].render() == second.programs[node].render(), (
            f"{node}: the same cluster, documents in another order, compiles differently")
        assert first.programs[node].rules == second.programs[node].rules
    fab1 = compile_ok(load(docs), enforce="fabric").programs[FABRIC].render()
    fab2 = compile_ok(load(again), enforce="fabric").programs[FABRIC].render()
    assert fab1 == fab2, "the fabric switch's tables depend on document order"


# ---------------------------------------------------------------------------------------------
# 3. Change, then revert


def _scoped(compiled: Compiled, node: str) -> dict:
    """The rules the bridge of `node` enforces, by id, as scoped to it."""
    bridge = compiled.layout.bridge(node)
    return {r.id: r for r in scope_rules(bridge, compiled.rules, compiled.isolation)[0]}


def _moved_unchanged_rules(before: Compiled, after: Compiled) -> list[str]:
    """Rules equal (as scoped to a node) before and after that changed priority or conj id
    when `after` was compiled with `before`'s programs as hints."""
    out = []
    for node in sorted(set(before.programs) & set(after.programs)):
        old_rules, new_rules = _scoped(before, node), _scoped(after, node)
        old_info = {i.id: i for i in before.programs[node].rules}
        new_info = {i.id: i for i in after.programs[node].rules}
        for rid, rule in sorted(old_rules.items()):
            if new_rules.get(rid) != rule:
                continue
            a, b = old_info[rid], new_info[rid]
            if a.same_as is not None or b.same_as is not None:
                continue  # enforced by an identical rule's flows: its placement is that rule's
            if (a.priority, a.conj_id) != (b.priority, b.conj_id):
                out.append(f"{node}: unchanged rule {rid} moved from priority {a.priority} "
                           f"conj {a.conj_id} to priority {b.priority} conj {b.conj_id}")
    return out


@settings(max_examples=examples(40), **COMMON)
@given(g=clusters(), data=st.data())
def test_change_then_revert(g: Generated, data):
    what, g2 = data.draw(changed(g), label="change")
    docs_a, docs_b = g.documents(), g2.documents()
    show(docs_a, "A")
    show(docs_b, f"B ({what})")
    a, b = load(docs_a), load(docs_b)
    first = compile_ok(a)
    middle = compile_ok(b, previous=first.programs)
    last = compile_ok(a, previous=middle.programs)
    probes = probes_for(data, docs_a + docs_b, 2, 4)

    problems = [f"B: {p}" for p in behaviour_problems(b, middle, probes)]
    problems += [f"A after B: {p}" for p in behaviour_problems(a, last, probes)]
    assert not problems, (f"after '{what}', the flows compiled with hints disagree with the "
                          "evaluator:\n" + "\n".join(problems[:15]))

    moved = [f"A -> B: {p}" for p in _moved_unchanged_rules(first, middle)]
    moved += [f"B -> A: {p}" for p in _moved_unchanged_rules(middle, last)]
    assert not moved, f"after '{what}':\n" + "\n".join(moved[:15])


# ---------------------------------------------------------------------------------------------
# 4. Flow count: the conjunctive encoding, not the cross product


def _dims(rule: Rule) -> tuple[int, int, int]:
    """(peer CIDRs, targets, port matches); 0 for a dimension the rule does not have."""
    peers = 0 if rule.peers is None else len(rule.peers)
    ports = 0 if rule.ports is None else len(port_matches(rule.ports, families(rule.targets)))
    return peers, len(rule.targets), ports


def _cost(rule: Rule) -> int:
    """Flows a rule may own: one per target for a single dimension; otherwise the cheaper of
    the conjunction (one flow per peer, target and port match, and the conj_id flow) and the
    plain cross product."""
    p, t, n = _dims(rule)
    if p == n == 0:
        return t
    return min(p + t + n + 1, max(p, 1) * t * max(n, 1))


@settings(max_examples=examples(60), **COMMON)
@given(g=st.one_of(clusters(), clusters(wide=True)))
def test_flow_count_is_a_sum_not_a_product(g: Generated):
    docs = g.documents()
    show(docs)
    compiled = compile_ok(load(docs))
    for node, program in compiled.programs.items():
        rules = [r for r in _scoped(compiled, node).values() if not r.matches_nothing]
        rule_flows = [f for f in program.flows if f.table in P.RULE_TABLES
                      and P.cookie_kind(f.cookie) in (P.KIND_RULE, P.KIND_CLAUSE)]
        bound = sum(map(_cost, rules))
        assert len(rule_flows) <= bound <= sum(p + t + n + 1 for p, t, n in map(_dims, rules)), (
            f"{node}: {len(rule_flows)} flows in the rule tables, more than the conjunctive "
            f"bound {bound}")
        # A rule with two or more peers, targets and port matches is a conjunction: one clause
        # flow per peer, target and port match (shared with other rules or not) and its
        # conj_id flow, fewer than its cross product.
        info = {i.id: i for i in program.rules}
        per_conj = Counter(c.id for f in rule_flows for c in f.conjunctions)
        conj_flows = Counter(f.get("conj_id").value for f in rule_flows if f.get("conj_id"))
        wide = [r for r in rules if min(_dims(r)) >= 2]
        for rule in wide:
            p, t, n = _dims(rule)
            cid = info[rule.id].conj_id
            own = per_conj[cid] + conj_flows[cid]
            assert own == p + t + n + 1 < cross_product_count([rule]), (
                f"{node}: rule {rule.id} ({p} peers, {t} targets, {n} port matches) has {own} "
                f"flows, not {p + t + n + 1}; its cross product is {cross_product_count([rule])}")
        event(f"a rule with 2+ peers, targets and port matches: {bool(wide)}")


# ---------------------------------------------------------------------------------------------
# The loader rejects what the API server would


@settings(max_examples=examples(15), **COMMON)
@given(g=clusters())
def test_invalid_variants_are_rejected(g: Generated):
    for fault, docs in invalid_variants(g):
        try:
            load_documents(docs)
        except ManifestError:
            continue
        raise AssertionError(f"the loader accepted a manifest with a fault: {fault}")


# ---------------------------------------------------------------------------------------------
# Regressions found by the properties below (minimal manifests; see the module docstring of
# tests/strategies.py for the generator).


def test_protocol_only_port_next_to_a_numeric_port_compiles():
    """A rule whose ports list both "all TCP" and a TCP number (valid, and common: see the
    upstream "protocol-only port" case) must compile and behave like the evaluator.

    Found by test_flows_behave_like_the_evaluator: sdn/policy/rules.py sorts the rule's
    PortRanges, and flows.ir.PortRange orders by (protocol, start, end) with start None for
    "every port", so sorting PortRange('tcp') against PortRange('tcp', 53) raises TypeError."""
    docs = m.base_cluster() + [
        m.netpol("x", "np", m.match(), egress=[{"ports": [{"protocol": "TCP"}, {"port": 53}]}]),
    ]
    cluster = load(docs)
    compiled = compile_ok(cluster)
    x_a, y_b = cluster.pods["x/a"], cluster.pods["y/b"]
    assert not behaviour_problems(cluster, compiled, [(80, "TCP"), (53, "UDP")], [(x_a, y_b)])


def test_dual_stack_internet_egress_compiles():
    """The dual-stack idiom "egress to the IPv4 internet; egress to the IPv6 internet except
    ULA", for every pod of a namespace with two pods on one node, must compile and behave.

    Found by test_flows_behave_like_the_evaluator: the two rules are provably disjoint (IPv4
    vs IPv6 peers) so they share a priority level. egress[0] (peer 0.0.0.0/0, i.e. just `ip`,
    two targets) is small, so it is emitted as its plain cross product `ip,nw_src=<pod>`;
    egress[1] (8 IPv6 CIDRs x 2 targets) is a conjunction whose applied-to clause flow is
    also `ip,nw_src=<pod>` at that priority: the compiler raises CompileError ("clause flow
    ... collides with a rule flow")."""
    docs = m.base_cluster() + [m.netpol("x", "internet", m.match(), egress=[
        m.to(m.ip_block("0.0.0.0/0")), m.to(m.ip_block("::/0", "fd00::/8"))])]
    cluster = load(docs)
    compiled = compile_ok(cluster)
    x_a, x_c, y_b = cluster.pods["x/a"], cluster.pods["x/c"], cluster.pods["y/b"]
    assert not behaviour_problems(cluster, compiled, [(80, "TCP"), (53, "UDP")],
                                  [(x_a, y_b), (x_c, y_b), (y_b, x_a)])


def test_unchanged_sibling_rule_keeps_its_priority():
    """Two egress rules of one policy (same pods, disjoint ports) share a priority level; the
    first one changes to "all ports", the second does not. Recompiled with the previous
    tables as hints, the unchanged rule must keep its priority (ARCHITECTURE: "Stable conj
    ids and priorities for unchanged rules"; compile_bridge's docstring says the same).

    Found by test_change_then_revert: BridgeCompiler._replace honours hints in rule-id order,
    so the changed egress[0] claims the shared level first and the unchanged egress[1], which
    now overlaps it, is pushed to a fresh level (60000 -> 59999): all its flows are rewritten.
    A Program's RuleInfo does not say what a rule was, so compile_bridge cannot tell the
    unchanged rule from the changed one."""
    def docs(first_rule: dict) -> list[dict]:
        return m.base_cluster() + [m.netpol("x", "np", m.match(), egress=[
            first_rule, m.to(ports=[m.port(80)])])]

    before = compile_ok(load(docs(m.to(ports=[m.port(53)]))))
    after = compile_ok(load(docs(m.to())), previous=before.programs)
    moved = _moved_unchanged_rules(before, after)
    assert not moved, "\n".join(moved)


# ---------------------------------------------------------------------------------------------
# 6. The incremental engine: a stream of changes gives what a fresh compile gives
#
# sdn.engine.Engine recomputes only the policies an event can affect and keeps selector
# results across events, dropping only those the event can change. After each step of a
# random stream (policy, rule, pod and namespace changes, pods deleted and re-added), its rules
# and isolations must equal `cluster_rules` of the same cluster, the flow differences it
# returned must turn the tables it had into the tables it has, and those tables must behave
# like the evaluator.


def _objects(docs: list[dict]) -> dict:
    from sdn.policy.manifests import object_key, parse_object
    out = {}
    for d in docs:
        obj = parse_object(d, "<hypothesis>")
        if obj is not None:
            out[object_key(obj)] = obj
    return out


@st.composite
def change_stream(draw, g: Generated):
    """2-4 successive states after g: each one change of `changed`, or a pod deleted, or a
    deleted pod back."""
    states, gone = [], []
    cur = g
    for _ in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from(["change", "change", "delete-pod", "restore-pod"]))
        if kind == "delete-pod" and cur.world.pod_docs:
            w = copy.deepcopy(cur.world)
            doc = w.pod_docs.pop(draw(st.integers(0, len(w.pod_docs) - 1)))
            gone.append(doc)
            cur = Generated(w, cur.policies, cur.legacy)
            what = f"deleted pod {doc['metadata']['namespace']}/{doc['metadata']['name']}"
        elif kind == "restore-pod" and gone:
            w = copy.deepcopy(cur.world)
            doc = gone.pop()
            w.pod_docs.append(doc)
            cur = Generated(w, cur.policies, cur.legacy)
            what = f"pod {doc['metadata']['namespace']}/{doc['metadata']['name']} back"
        else:
            what, cur = draw(changed(cur))
        states.append((what, cur))
    return states


@settings(max_examples=examples(40), **COMMON)
@given(g=clusters(), data=st.data())
def test_engine_follows_a_stream_of_changes(g: Generated, data):
    from sdn.engine import Engine
    from sdn.policy.rules import cluster_rules

    steps = data.draw(change_stream(g), label="changes")
    docs = g.documents()
    show(docs, "start")
    engine = Engine(load(docs))
    tables = {n: {f.key: f for f in p.flows} for n, p in engine.programs().items()}
    before = _objects(docs)
    for i, (what, state) in enumerate(steps):
        docs = state.documents()
        note(f"step {i}: {what}")
        now = _objects(docs)
        upserts = [o for k, o in now.items() if before.get(k) != o]
        deletes = [o for k, o in before.items() if k not in now]
        before = now
        for node, d in engine.apply(upserts, deletes).items():
            apply_flow_diff(tables.setdefault(node, {}), d, f"step {i}: {node}")
        programs = engine.programs()
        assert tables == {n: {f.key: f for f in p.flows} for n, p in programs.items()}, (
            f"step {i} ({what}): the returned differences do not give the engine's tables")
        cluster = load(docs)
        rules, isolation = cluster_rules(cluster)
        assert sorted(engine.ruleset.all_rules(), key=lambda r: r.id) == sorted(rules, key=lambda r: r.id), (
            f"step {i} ({what}): incremental rules differ from a fresh cluster_rules")
        assert engine.ruleset.all_isolation() == isolation, f"step {i} ({what}): isolation differs"
    probes = probes_for(data, docs, 2, 4)
    compiled = Compiled(engine.cluster, engine.layout, rules, isolation, engine.programs(), "host")
    problems = behaviour_problems(cluster, compiled, probes)
    assert not problems, "after the stream, the engine's flows disagree with the evaluator:\n" + "\n".join(problems[:15])
