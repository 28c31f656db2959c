"""The semantic evaluator: against the e2e suite (hand-written tables), then point by point."""

from __future__ import annotations

import json

import pytest

from sdn.policy.evaluate import (
    RuleRef,
    evaluate,
    explain,
    isolation,
    peer_matches,
    port_matches,
    selected_pods,
)
from sdn.policy.manifests import load_documents
from sdn.policy.model import (
    EGRESS,
    INGRESS,
    Cluster,
    ContainerPort,
    IPBlock,
    LabelSelector,
    Namespace,
    Peer,
    Pod,
    Policy,
    PolicyPort,
    PolicyRule,
    Requirement,
    freeze_labels,
)
from tests.e2e_cases import ALL_CASES, expected_matrix, pod_keys, replay
from tests.e2e_model import base_cluster, match, netpol, pod_doc

# ---------------------------------------------------------------------------------------------
# The e2e suite: every case, step and probe, all 81 ordered pairs.


def _table(keys: list[str], cells: dict[tuple[str, str], bool]) -> str:
    """Upstream's truth-table layout: rows are sources, columns destinations."""
    lines = ["       " + " ".join(f"{k:>4}" for k in keys)]
    for src in keys:
        lines.append(f"{src:>6} " + " ".join(f"{'.' if cells[(src, d)] else 'X':>4}" for d in keys))
    return "\n".join(lines)


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
def test_e2e_case(case):
    keys = pod_keys()
    for index, step, docs in replay(case):
        cluster, _ = load_documents(docs, origin=f"{case.name} step {index}")
        assert sorted(cluster.pods) == sorted(keys)
        for probe in step.probes:
            want = expected_matrix(probe, keys)
            got = {
                (s, d): evaluate(cluster, cluster.pods[s], cluster.pods[d], probe.port,
                                 probe.protocol).allowed
                for s in keys
                for d in keys
            }
            wrong = sorted(pair for pair in want if want[pair] != got[pair])
            assert not wrong, (
                f"{case.name} step {index} {probe.protocol}/{probe.port}: "
                f"{len(wrong)} wrong cells {wrong}\nexpected:\n{_table(keys, want)}\n"
                f"evaluated:\n{_table(keys, got)}"
            )


def test_suite_covers_the_list():
    names = {c.name for c in ALL_CASES}
    assert len(ALL_CASES) >= 40
    for needed in (
        "default-deny-ingress-tcp", "default-deny-ingress-udp", "default-deny-ingress-sctp",
        "default-deny-all", "named-port-egress", "cidr-except-overlap", "endport-ingress-range",
        "alpha-isolation", "beta-absent-versus-empty-lists",
    ):
        assert needed in names
    for c in ALL_CASES:
        assert c.steps and all(s.probes for s in c.steps), c.name


def test_expected_matrix_last_exception_wins_and_self_allowed():
    from tests.e2e_model import Probe, egress_from, peer, reach

    probe = Probe(80, "TCP", reach(True, egress_from("x/a", False), peer("x/a", "y/*", True)))
    m = expected_matrix(probe, pod_keys())
    assert len(m) == 81
    assert m[("x/a", "x/b")] is False and m[("x/a", "y/c")] is True
    assert m[("x/a", "x/a")] is True and m[("x/b", "x/a")] is True


# ---------------------------------------------------------------------------------------------
# Focused unit tests on hand-built models.


def sel(**labels) -> LabelSelector:
    return LabelSelector(freeze_labels(labels))


def pod(ns, name, ip="10.0.0.1", ports=(), **labels) -> Pod:
    return Pod(ns, name, freeze_labels(labels or {"app": name}), "n1", (ip,) if ip else (),
               tuple(ports))


def cluster_of(*objs) -> Cluster:
    c = Cluster()
    for o in objs:
        if isinstance(o, Namespace):
            c.namespaces[o.name] = o
        elif isinstance(o, Pod):
            c.pods[o.key] = o
        else:
            c.policies[(o.form, o.namespace, o.name)] = o
    return c


def test_notin_matches_an_absent_key():
    req = LabelSelector(match_expressions=(Requirement("team", "NotIn", ("blue",)),))
    pol = Policy("x", "p", ingress=(PolicyRule(peers=(Peer(namespace_selector=req),)),))
    plain = pod("a", "p1", "10.0.0.1")
    blue = pod("b", "p2", "10.0.0.2")
    red = pod("c", "p3", "10.0.0.3")
    c = cluster_of(
        Namespace("a"),  # no team label at all
        Namespace("b", freeze_labels({"team": "blue"})),
        Namespace("c", freeze_labels({"team": "red"})),
        plain, blue, red, pol,
    )
    assert peer_matches(c, pol, pol.ingress[0].peers[0], plain)
    assert not peer_matches(c, pol, pol.ingress[0].peers[0], blue)
    assert peer_matches(c, pol, pol.ingress[0].peers[0], red)


def test_undeclared_namespace_has_its_name_label():
    nsel = LabelSelector(freeze_labels({"kubernetes.io/metadata.name": "ghost"}))
    pol = Policy("x", "p", ingress=(PolicyRule(peers=(Peer(namespace_selector=nsel),)),))
    p = pod("ghost", "a")
    assert peer_matches(cluster_of(p, pol), pol, pol.ingress[0].peers[0], p)


def test_pod_selector_alone_means_policy_namespace():
    pol = Policy("x", "p")
    same, other = pod("x", "a", app="web"), pod("y", "a", "10.0.0.2", app="web")
    c = cluster_of(same, other, pol)
    assert peer_matches(c, pol, Peer(pod_selector=sel(app="web")), same)
    assert not peer_matches(c, pol, Peer(pod_selector=sel(app="web")), other)
    both = Peer(pod_selector=sel(app="web"), namespace_selector=LabelSelector())
    assert peer_matches(c, pol, both, other)


def test_named_port_egress_resolved_on_each_destination():
    web80 = pod("y", "a", "10.0.1.1", ports=[ContainerPort(80, "TCP", "web")])
    web81 = pod("y", "b", "10.0.1.2", ports=[ContainerPort(81, "TCP", "web")])
    udp_only = pod("y", "c", "10.0.1.3", ports=[ContainerPort(80, "UDP", "web")])
    client = pod("x", "client", "10.0.0.1")
    pol = Policy("x", "egress-web", pod_selector=sel(app="client"),
                 egress=(PolicyRule(ports=(PolicyPort("TCP", "web"),)),),
                 policy_types=frozenset({EGRESS}))
    c = cluster_of(web80, web81, udp_only, client, pol)
    assert evaluate(c, client, web80, 80, "TCP").allowed
    assert not evaluate(c, client, web80, 81, "TCP").allowed
    assert evaluate(c, client, web81, 81, "TCP").allowed
    assert not evaluate(c, client, web81, 80, "TCP").allowed
    # name and protocol must both match: "web" is UDP on y/c, the rule says TCP
    assert not evaluate(c, client, udp_only, 80, "TCP").allowed
    assert not evaluate(c, client, udp_only, 80, "UDP").allowed
    # resolved on the destination, never on the source (the client has no "web" at all)
    assert port_matches((PolicyPort("TCP", "web"),), 80, "TCP", web80)
    assert not port_matches((PolicyPort("TCP", "web"),), 80, "TCP", client)


def test_port_lists():
    dst = pod("x", "a", ports=[ContainerPort(8080, "TCP", "http")])
    assert port_matches(None, 1, "SCTP", dst)
    assert not port_matches((), 80, "TCP", dst)
    assert port_matches((PolicyPort("UDP"),), 53, "UDP", dst)
    assert not port_matches((PolicyPort("UDP"),), 53, "TCP", dst)
    rng = (PolicyPort("TCP", 1000, 2000),)
    assert port_matches(rng, 1000, "TCP", dst) and port_matches(rng, 2000, "TCP", dst)
    assert not port_matches(rng, 999, "TCP", dst) and not port_matches(rng, 2001, "TCP", dst)
    assert port_matches((PolicyPort("TCP", "http"),), 8080, "tcp", dst)
    assert not port_matches((PolicyPort("TCP", "nope"),), 8080, "TCP", dst)


def test_ip_block_with_excepts_and_families():
    pol = Policy("x", "p")
    p = Pod("y", "dual", (), "n1", ("10.1.2.3", "fd00::3"))
    c = cluster_of(p, pol)
    assert peer_matches(c, pol, Peer(ip_block=IPBlock("10.0.0.0/8")), p)
    assert not peer_matches(c, pol, Peer(ip_block=IPBlock("10.0.0.0/8", ("10.1.0.0/16",))), p)
    # the v6 address of the same pod matches a v6 block
    assert peer_matches(c, pol, Peer(ip_block=IPBlock("fd00::/64")), p)
    assert not peer_matches(c, pol, Peer(ip_block=IPBlock("fd00::/64", ("fd00::/120",))), p)


def test_pod_without_ip_is_no_peer_but_is_selected():
    pol = Policy("x", "p", pod_selector=LabelSelector(),
                 ingress=(PolicyRule(peers=(Peer(pod_selector=LabelSelector()),)),))
    pending = pod("x", "pending", ip=None)
    running = pod("x", "running")
    c = cluster_of(pending, running, pol)
    assert not peer_matches(c, pol, pol.ingress[0].peers[0], pending)
    assert not peer_matches(c, pol, Peer(ip_block=IPBlock("0.0.0.0/0")), pending)
    assert peer_matches(c, pol, pol.ingress[0].peers[0], running)
    assert [p.key for p in selected_pods(c, pol)] == ["x/pending", "x/running"]
    with pytest.raises(ValueError):
        evaluate(c, pending, running, 80, "TCP")
    with pytest.raises(ValueError):
        evaluate(c, running, pending, 80, "TCP")


def test_beta_nuance_absent_is_all_empty_is_nothing():
    docs = base_cluster()
    docs[2]["metadata"]["annotations"] = {
        "net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "DefaultDeny"}}'
    }
    assert docs[2]["metadata"]["name"] == "x"
    docs += [
        netpol("x", "absent", match(pod="a"), ingress=[{}], api_version="extensions/v1beta1"),
        netpol("x", "empty", match(pod="b"), ingress=[{"from": [], "ports": []}],
               api_version="extensions/v1beta1"),
        # the same lists in v1 mean "all"
        netpol("x", "v1-empty", match(pod="c"), ingress=[{"from": [], "ports": []}]),
    ]
    c, _ = load_documents(docs)
    ya, xa, xb, xc = (c.pods[k] for k in ("y/a", "x/a", "x/b", "x/c"))
    assert evaluate(c, ya, xa, 80, "TCP").allowed
    v = evaluate(c, ya, xb, 80, "TCP")
    assert not v.allowed and v.ingress.isolated and v.ingress.allowed_by == ()
    assert "x/net.beta.kubernetes.io/network-policy[isolation]" in v.ingress.isolating
    assert evaluate(c, ya, xc, 81, "SCTP").allowed


def test_beta_and_alpha_without_annotation_have_no_effect():
    docs = base_cluster() + [
        netpol("x", "deny", match(), ingress=[], api_version="extensions/v1beta1"),
        {"apiVersion": "net.alpha.kubernetes.io/v1alpha1", "kind": "NetworkPolicy",
         "metadata": {"name": "a", "namespace": "x"},
         "spec": {"podSelector": {}, "allowIncoming": {"from": []}}},
    ]
    c, _ = load_documents(docs)
    assert isolation(c, c.pods["x/a"], INGRESS) == ()
    assert evaluate(c, c.pods["y/a"], c.pods["x/a"], 80, "TCP").allowed


def test_policy_types_decide_what_is_isolated():
    docs = base_cluster() + [
        # policyTypes absent, egress: [] -> [Ingress] only
        netpol("x", "in-only", match(pod="a"), ingress=[{}], egress=[]),
        # policyTypes absent, egress rules -> [Ingress, Egress]: ingress isolated with no rule
        netpol("x", "both", match(pod="b"), egress=[{}]),
        # policyTypes [Egress]: the ingress list (empty = deny) is ignored
        netpol("x", "out-only", match(pod="c"), ingress=[], egress=[{"ports": [{"port": 81}]}],
               types=["Egress"]),
    ]
    c, _ = load_documents(docs)
    xa, xb, xc, ya = (c.pods[k] for k in ("x/a", "x/b", "x/c", "y/a"))
    assert isolation(c, xa, EGRESS) == () and isolation(c, xa, INGRESS) == ("x/in-only",)
    assert evaluate(c, xa, ya, 80, "TCP").allowed
    assert isolation(c, xb, INGRESS) == ("x/both",) and isolation(c, xb, EGRESS) == ("x/both",)
    assert not evaluate(c, ya, xb, 80, "TCP").allowed
    assert evaluate(c, xb, ya, 80, "TCP").allowed
    assert isolation(c, xc, INGRESS) == ()
    assert evaluate(c, ya, xc, 80, "TCP").allowed
    v = evaluate(c, xc, ya, 80, "TCP")
    assert not v.allowed and v.egress.isolated and not v.ingress.isolated
    v = evaluate(c, xc, ya, 81, "TCP")
    assert v.allowed and v.egress.allowed_by == (RuleRef("x/out-only", EGRESS, 0),)


def test_verdict_names_every_allowing_rule_and_self_is_not_judged():
    docs = base_cluster() + [
        netpol("x", "p1", match(pod="a"), ingress=[{"ports": [{"port": 81}]}, {}]),
        netpol("x", "p2", match(), ingress=[{"from": [{"namespaceSelector": {}}]}]),
    ]
    c, _ = load_documents(docs)
    xa, ya = c.pods["x/a"], c.pods["y/a"]
    v = evaluate(c, ya, xa, 81, "TCP")
    assert v.allowed and not v.egress.isolated
    assert v.ingress.isolating == ("x/p1", "x/p2")
    assert v.ingress.allowed_by == (
        RuleRef("x/p1", INGRESS, 0), RuleRef("x/p1", INGRESS, 1), RuleRef("x/p2", INGRESS, 0)
    )
    deny = load_documents(base_cluster() + [netpol("x", "d", match(), ingress=[])])[0]
    assert evaluate(deny, deny.pods["x/a"], deny.pods["x/a"], 80, "TCP").allowed
    assert not evaluate(deny, deny.pods["x/b"], deny.pods["x/a"], 80, "TCP").allowed


def test_explain_is_json_and_names_policies_rules_and_peers():
    docs = base_cluster() + [
        netpol("x", "allow-b", match(pod="a"),
               ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                         "ports": [{"port": "serve-80-tcp"}]}]),
        netpol("x", "egress-y", match(), types=["Egress"],
               egress=[{"to": [{"ipBlock": {"cidr": "10.244.0.0/16",
                                            "except": ["10.244.2.0/24"]}}]}]),
    ]
    c, _ = load_documents(docs)
    out = explain(c, c.pods["x/a"])
    json.dumps(out)
    assert out["pod"] == "x/a" and out["ingress"]["isolated"] and out["egress"]["isolated"]
    (pol,) = out["ingress"]["policies"]
    assert pol["policy"] == "x/allow-b"
    rule = pol["rules"][0]
    assert rule["peers"][0]["pods"] == ["x/b"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "serve-80-tcp"}]
    (egress,) = out["egress"]["policies"]
    node1 = [k for k in pod_keys() if c.pods[k].ip.startswith("10.244.1.")]
    assert egress["rules"][0]["peers"][0]["pods"] == node1
    y = explain(c, c.pods["y/a"])
    assert not y["ingress"]["isolated"] and y["ingress"]["policies"] == []


def test_renamed_port_in_pod_doc_changes_resolution():
    docs = base_cluster()
    docs = [d for d in docs if not (d["kind"] == "Pod" and d["metadata"]["namespace"] == "y"
                                    and d["metadata"]["name"] == "a")]
    docs.append(pod_doc("y/a", names={(81, "TCP"): "serve-80-tcp", (80, "TCP"): "other"}))
    docs.append(netpol("y", "named", match(), ingress=[{"ports": [{"port": "serve-80-tcp"}]}]))
    c, _ = load_documents(docs)
    xa, ya, yb = c.pods["x/a"], c.pods["y/a"], c.pods["y/b"]
    assert evaluate(c, xa, ya, 81, "TCP").allowed and not evaluate(c, xa, ya, 80, "TCP").allowed
    assert evaluate(c, xa, yb, 80, "TCP").allowed and not evaluate(c, xa, yb, 81, "TCP").allowed
