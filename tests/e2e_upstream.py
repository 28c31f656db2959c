"""The upstream Kubernetes e2e NetworkPolicy tests (test/e2e/network/netpol), restated.

Each case restates one upstream test in our words (its title is kept in `upstream`): the
policies as manifest dicts applied to the model of `tests.e2e_model`, the expected connectivity
written by hand as a Reachability table, never computed. Upstream trims some tests to a subset
of the pods; here every case keeps all nine, so the tables also say what the others see, and
some cases probe more ports or protocols than upstream does.
"""

from __future__ import annotations

from netaddr import IPNetwork

from tests.e2e_model import (
    NS_METADATA,
    E2ECase,
    case,
    deny_ingress,
    egress_from,
    expr,
    from_,
    host,
    ingress_to,
    ip_block,
    match,
    namespace_doc,
    namespaces,
    netpol,
    peer,
    pod_doc,
    pod_ip,
    pods,
    pods_in,
    port,
    reach,
    sctp,
    step,
    tcp,
    to,
    udp,
)

T, F = True, False
ALL = reach(T)  # nothing restricted


def _protocol_cases(protocol: str) -> list[E2ECase]:
    """The cases upstream repeats per protocol (default deny, ports, pod AND namespace)."""
    lower = protocol.lower()
    probe = {"TCP": tcp, "UDP": udp, "SCTP": sctp}[protocol]
    return [
        case(
            f"default-deny-ingress-{lower}",
            step(probe(80, reach(T, ingress_to("x/*", F))), apply=[deny_ingress("x")]),
            upstream="should support a 'default-deny-ingress' policy",
        ),
        case(
            f"ports-{lower}",
            step(
                probe(81, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
                probe(80, reach(T, ingress_to("x/a", F))),
                apply=[netpol("x", "allow-y-on-81", match(pod="a"), ingress=[
                    from_(namespaces(match(ns="y")), ports=[port(81, protocol)])])],
            ),
            upstream="should enforce policy based on Ports",
        ),
        case(
            f"pod-and-namespace-from-other-namespace-{lower}",
            step(
                probe(80, reach(T, ingress_to("x/a", F), peer("y/a", "x/a", T))),
                apply=[netpol("x", "allow-y-a", match(pod="a"), ingress=[
                    from_(pods_in(match(ns="y"), match(pod="a")))])],
            ),
            upstream="should enforce policy to allow traffic only from a pod in a different "
            "namespace based on PodSelector and NamespaceSelector",
        ),
    ]


UPSTREAM_CASES: list[E2ECase] = [
    *_protocol_cases("TCP"),
    *_protocol_cases("UDP"),
    *_protocol_cases("SCTP"),
    case(
        "default-deny-all",
        step(
            tcp(80, reach(T, ingress_to("x/*", F), egress_from("x/*", F))),
            udp(81, reach(T, ingress_to("x/*", F), egress_from("x/*", F))),
            apply=[netpol("x", "deny-all", match(), ingress=[], egress=[],
                          types=["Ingress", "Egress"])],
        ),
        upstream="should support a 'default-deny-all' policy",
    ),
    case(
        "pod-selector-own-namespace",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/b", "x/a", T))),
            apply=[netpol("x", "x-a-allows-x-b", match(pod="a"),
                          ingress=[from_(pods(match(pod="b")))])],
        ),
        upstream="should enforce policy to allow traffic from pods within server namespace "
        "based on PodSelector",
    ),
    case(
        "deny-all-plus-allow-to-target",
        step(
            tcp(80, reach(T, ingress_to("x/*", F), ingress_to("x/a", T))),
            apply=[
                deny_ingress("x", "deny-all"),
                netpol("x", "allow-all-to-a", match(pod="a"),
                       ingress=[from_(pods_in(match(), match()))]),
            ],
        ),
        upstream="should enforce policy to allow ingress traffic for a target",
    ),
    case(
        "namespace-selector-empty",
        step(
            tcp(80, ALL),
            tcp(81, ALL),
            apply=[netpol("x", "allow-from-another-ns", match(pod="a"),
                          ingress=[from_(namespaces(match()))])],
        ),
        upstream="should enforce policy to allow ingress traffic from pods in all namespaces",
    ),
    case(
        "namespace-selector-by-label",
        step(
            tcp(80, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            apply=[netpol("x", "allow-client-a-via-ns-selector", match(pod="a"),
                          ingress=[from_(namespaces(match(ns="y")))])],
        ),
        upstream="should enforce policy to allow traffic only from a different namespace, "
        "based on NamespaceSelector",
    ),
    case(
        "pod-match-expressions-in",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/b", "x/a", T))),
            apply=[netpol("x", "x-a-allows-x-b", match(pod="a"),
                          ingress=[from_(pods(expr("pod", "In", "b")))])],
        ),
        upstream="should enforce policy based on PodSelector with MatchExpressions",
    ),
    case(
        "namespace-match-expressions-in",
        step(
            tcp(80, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            apply=[netpol("x", "allow-ns-y-match-selector", match(pod="a"),
                          ingress=[from_(namespaces(expr("ns", "In", "y")))])],
        ),
        upstream="should enforce policy based on NamespaceSelector with MatchExpressions",
    ),
    case(
        "pod-or-namespace",
        step(
            tcp(80, reach(T, peer("x/c", "x/a", F))),
            apply=[netpol("x", "allow-ns-not-x-or-pod-b", match(pod="a"), ingress=[
                from_(namespaces(expr(NS_METADATA, "NotIn", "x")), pods(match(pod="b")))])],
        ),
        upstream="should enforce policy based on PodSelector or NamespaceSelector",
    ),
    case(
        "pod-and-namespace",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("y/b", "x/a", T),
                          peer("z/b", "x/a", T))),
            apply=[netpol("x", "allow-ns-not-x-and-pod-b", match(pod="a"), ingress=[
                from_(pods_in(expr(NS_METADATA, "NotIn", "x"), match(pod="b")))])],
        ),
        upstream="should enforce policy based on PodSelector and NamespaceSelector",
    ),
    case(
        "multiple-pod-and-namespace-selectors",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("y/b", "x/a", T), peer("y/c", "x/a", T),
                          peer("z/b", "x/a", T), peer("z/c", "x/a", T))),
            apply=[netpol("x", "allow-ns-y-z-pod-b-c", match(pod="a"), ingress=[
                from_(pods_in(expr(NS_METADATA, "NotIn", "x"), expr("pod", "In", "b", "c")))])],
        ),
        upstream="should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
    ),
    case(
        "any-pod-selectors",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/b", "x/a", T),
                          peer("x/c", "x/a", T))),
            apply=[netpol("x", "allow-ns-x-pod-b-c", match(pod="a"),
                          ingress=[from_(pods(match(pod="b")), pods(match(pod="c")))])],
        ),
        upstream="should enforce policy based on any PodSelectors",
    ),
    case(
        "stacked-policies",
        step(
            tcp(81, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "allow-y-on-81", match(pod="a"), ingress=[
                from_(namespaces(match(ns="y")), ports=[port(81, "TCP")])])],
        ),
        step(
            tcp(81, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            tcp(80, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            udp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "allow-y-on-80", match(pod="a"), ingress=[
                from_(namespaces(match(ns="y")), ports=[port(80, "TCP")])])],
        ),
        upstream="should enforce multiple, stacked policies with overlapping podSelectors",
    ),
    case(
        "allow-all",
        step(
            tcp(80, ALL),
            tcp(81, ALL),
            sctp(80, ALL),
            apply=[netpol("x", "allow-all", match(), ingress=[{}])],
        ),
        upstream="should support allow-all policy",
    ),
    case(
        "named-port-ingress",
        step(
            tcp(81, ALL),
            tcp(80, reach(T, ingress_to("x/*", F))),
            udp(81, reach(T, ingress_to("x/*", F))),
            apply=[netpol("x", "allow-serve-81-tcp", match(),
                          ingress=[from_(ports=[port("serve-81-tcp")])])],
        ),
        upstream="should allow ingress access on one named port",
    ),
    case(
        "named-port-from-namespace",
        step(
            tcp(80, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            tcp(81, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "allow-client-a-via-ns-selector-80", match(pod="a"), ingress=[
                from_(namespaces(match(ns="y")), ports=[port("serve-80-tcp", "TCP")])])],
        ),
        upstream="should allow ingress access from namespace on one named port",
    ),
    case(
        "named-port-egress",
        step(
            tcp(80, ALL),
            tcp(81, reach(T, egress_from("x/*", F))),
            apply=[netpol("x", "allow-egress", match(),
                          egress=[to(ports=[port("serve-80-tcp")])], types=["Egress"])],
        ),
        upstream="should allow egress access on one named port",
    ),
    case(
        "policy-update",
        step(tcp(81, ALL),
             apply=[netpol("x", "allow-all-mutate-to-deny-all", match(), ingress=[{}])]),
        step(tcp(81, reach(T, ingress_to("x/*", F))),
             apply=[netpol("x", "allow-all-mutate-to-deny-all", match(), ingress=[])]),
        upstream="should enforce updated policy",
    ),
    case(
        "namespace-label-change",
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "allow-client-a-via-ns-selector", match(pod="a"),
                          ingress=[from_(namespaces(match(ns2="updated")))])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("y/*", "x/a", T))),
            apply=[namespace_doc("y", labels={"ns": "y", "ns2": "updated"})],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[namespace_doc("y")],
        ),
        upstream="should allow ingress access from updated namespace",
    ),
    case(
        "pod-label-change",
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "allow-client-a-via-pod-selector", match(pod="a"),
                          ingress=[from_(pods(match(pod="b", pod2="updated")))])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/b", "x/a", T))),
            apply=[pod_doc("x/b", labels={"pod": "b", "pod2": "updated"})],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[pod_doc("x/b")],
        ),
        upstream="should allow ingress access from updated pod",
    ),
    case(
        "deny-from-other-namespaces",
        step(
            tcp(80, reach(T, peer("y/*", "x/*", F), peer("z/*", "x/*", F))),
            apply=[netpol("x", "deny-empty-policy", match(),
                          ingress=[from_(pods(match()))])],
        ),
        upstream="should deny ingress from pods on other namespaces",
    ),
    case(
        "isolate-by-label-change",
        step(
            tcp(80, ALL),
            apply=[netpol("x", "deny-ingress-via-label-selector", match(target="isolated"),
                          ingress=[])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[pod_doc("x/a", labels={"pod": "a", "target": "isolated"})],
        ),
        upstream="should deny ingress access to updated pod",
    ),
    case(
        "egress-deny-one-pod",
        step(
            tcp(80, reach(T, egress_from("x/a", F))),
            apply=[netpol("x", "deny-egress-pod-a", match(pod="a"), egress=[],
                          types=["Egress"])],
        ),
        upstream="should deny egress from pods based on PodSelector",
    ),
    case(
        "egress-deny-namespace",
        step(
            tcp(80, reach(T, egress_from("x/*", F))),
            apply=[netpol("x", "deny-egress-ns-x", match(), egress=[], types=["Egress"])],
        ),
        upstream="should deny egress from all pods in a namespace",
    ),
    case(
        "ingress-and-egress-together",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/b", "x/a", T))),
            tcp(81, reach(T, ingress_to("x/a", F), egress_from("x/a", F),
                          peer("x/b", "x/a", T))),
            apply=[netpol("x", "allow-client-a-via-pod-selector", match(pod="a"),
                          ingress=[from_(pods(match(pod="b")))],
                          egress=[to(ports=[port(80)])],
                          types=["Egress", "Ingress"])],
        ),
        upstream="should work with Ingress, Egress specified together",
    ),
    case(
        "client-egress-wins-over-server-ingress",
        step(
            tcp(80, reach(T, egress_from("x/a", F), ingress_to("y/a", F),
                          peer("x/a", "y/a", T), ingress_to("y/b", F))),
            apply=[
                netpol("x", "allow-to-ns-y-pod-a", match(pod="a"),
                       egress=[to(pods_in(match(ns="y"), match(pod="a")))], types=["Egress"]),
                netpol("y", "allow-from-xa-on-ya-match-selector", match(pod="a"),
                       ingress=[from_(pods_in(match(ns="x"), match(pod="a")))]),
                netpol("y", "allow-from-xa-on-yb-match-selector", match(pod="b"),
                       ingress=[from_(pods_in(match(ns="x"), match(pod="a")))]),
            ],
        ),
        upstream="should support denying of egress traffic on the client side (even if the "
        "server explicitly allows this traffic)",
    ),
    case(
        "egress-to-namespace-and-pod",
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "y/a", T))),
            apply=[netpol("x", "allow-to-ns-y-pod-a", match(pod="a"),
                          egress=[to(pods_in(match(ns="y"), match(pod="a")))],
                          types=["Egress"])],
        ),
        upstream="should enforce egress policy allowing traffic to a server in a different "
        "namespace based on PodSelector and NamespaceSelector",
    ),
    case(
        "protocol-only-port",
        step(
            tcp(80, ALL),
            tcp(81, ALL),
            udp(80, reach(T, ingress_to("x/a", F))),
            sctp(81, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "allow-ingress-by-proto", match(pod="a"),
                          ingress=[from_(ports=[port(protocol="TCP")])])],
        ),
        upstream="should enforce ingress policy allowing any port traffic to a server on a "
        "specific protocol",
    ),
    case(
        "allow-all-precedence-ingress",
        step(
            tcp(81, reach(T, ingress_to("x/*", F))),
            tcp(80, ALL),
            apply=[netpol("x", "allow-ingress-port-80", match(),
                          ingress=[from_(ports=[port(80)])])],
        ),
        step(
            tcp(81, ALL),
            apply=[netpol("x", "allow-ingress", match(), ingress=[{}])],
        ),
        upstream="should enforce multiple ingress policies with ingress allow-all policy "
        "taking precedence",
    ),
    case(
        "allow-all-precedence-egress",
        step(
            tcp(81, reach(T, egress_from("x/*", F))),
            tcp(80, ALL),
            apply=[netpol("x", "allow-egress-port-80", match(),
                          egress=[to(ports=[port(80)])], types=["Egress"])],
        ),
        step(
            tcp(81, ALL),
            apply=[netpol("x", "allow-egress", match(), egress=[{}], types=["Egress"])],
        ),
        upstream="should enforce multiple egress policies with egress allow-all policy "
        "taking precedence",
    ),
    case(
        "policy-deletion",
        step(
            tcp(80, reach(T, egress_from("x/*", F), ingress_to("x/*", F))),
            apply=[netpol("x", "deny-all", match(), ingress=[], egress=[],
                          types=["Ingress", "Egress"])],
        ),
        step(tcp(80, ALL), delete=[("NetworkPolicy", "x", "deny-all")]),
        upstream="should stop enforcing policies after they are deleted",
    ),
    case(
        "ipblock-egress",
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "y/b", T))),
            apply=[netpol("x", "allow-client-a-via-cidr-egress-rule", match(pod="a"),
                          egress=[to(ip_block(host("y/b")))], types=["Egress"])],
        ),
        upstream="should allow egress access to server in CIDR block",
    ),
    case(
        "ipblock-except",
        step(
            tcp(80, reach(T, peer("x/a", "x/b", F))),
            apply=[netpol("x", "allow-client-a-via-cidr-egress-rule", match(pod="a"), egress=[
                to(ip_block(str(IPNetwork(f"{pod_ip('x/b')}/4").cidr), host("x/b")))],
                types=["Egress"])],
        ),
        upstream="should enforce except clause while egress access to server in CIDR block",
    ),
    case(
        "cidr-except-overlap",
        step(
            tcp(80, reach(T, peer("x/a", "x/b", F))),
            apply=[netpol("x", "allow-client-a-via-cidr-egress-rule", match(pod="a"), egress=[
                to(ip_block(str(IPNetwork(f"{pod_ip('x/b')}/4").cidr), host("x/b")))],
                types=["Egress"])],
        ),
        # A second policy allowing exactly x/b: rules add up, so the except of the first no
        # longer denies anything.
        step(
            tcp(80, ALL),
            apply=[netpol("x", "allow-client-a-to-b-via-cidr", match(pod="a"),
                          egress=[to(ip_block(host("x/b")))], types=["Egress"])],
        ),
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "x/b", T))),
            delete=[("NetworkPolicy", "x", "allow-client-a-via-cidr-egress-rule")],
        ),
        upstream="should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is "
        "allowed",
    ),
    case(
        "ingress-and-egress-independent",
        step(
            tcp(80, ALL),
            apply=[netpol("x", "allow-egress-for-target", match(pod="a"), egress=[{}],
                          types=["Egress"])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "deny-ingress-via-label-selector", match(pod="a"),
                          ingress=[])],
        ),
        upstream="should enforce policies to check ingress and egress policies can be "
        "controlled independently based on PodSelector",
    ),
    case(
        "sctp-rule-is-not-tcp",
        step(
            tcp(81, reach(T, ingress_to("x/*", F))),
            sctp(81, reach(T, ingress_to("x/*", F), ingress_to("x/a", T))),
            apply=[
                deny_ingress("x"),
                netpol("x", "allow-only-sctp-ingress-on-port-81", match(pod="a"),
                       ingress=[from_(ports=[port(81, "SCTP")])]),
            ],
        ),
        upstream="should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the "
        "plugin doesn't support SCTP",
    ),
    case(
        "sctp-only-policy-isolates",
        step(
            tcp(81, reach(T, ingress_to("x/a", F))),
            tcp(80, reach(T, ingress_to("x/a", F))),
            sctp(80, ALL),
            apply=[netpol("x", "allow-only-sctp-ingress-on-port-80", match(pod="a"),
                          ingress=[from_(ports=[port(80, "SCTP")])])],
        ),
        upstream="should properly isolate pods that are selected by a policy allowing SCTP, "
        "even if the plugin doesn't support SCTP",
    ),
    case(
        "udp-only-rule-blocks-tcp",
        step(
            tcp(81, reach(T, ingress_to("x/a", F))),
            udp(81, ALL),
            apply=[netpol("x", "allow-only-udp-ingress-on-port-81", match(pod="a"),
                          ingress=[from_(ports=[port(81, "UDP")])])],
        ),
        upstream="should not allow access by TCP when a policy specifies only UDP",
    ),
    case(
        "metadata-name-match-labels",
        step(
            tcp(80, reach(T, peer("x/*", "x/a", F), peer("z/*", "x/a", F))),
            apply=[netpol("x", "allow-client-a-via-ns-selector-for-immutable-ns-label",
                          match(pod="a"),
                          ingress=[from_(namespaces({"matchLabels": {NS_METADATA: "y"}}))])],
        ),
        upstream="should enforce policy to allow traffic based on NamespaceSelector with "
        "MatchLabels using default ns label",
    ),
    case(
        "metadata-name-match-expressions-egress",
        step(
            tcp(80, reach(T, peer("x/a", "y/*", F))),
            apply=[netpol("x", "allow-ns-y-match-selector-for-immutable-ns-label",
                          match(pod="a"),
                          egress=[to(namespaces(expr(NS_METADATA, "NotIn", "y")))],
                          types=["Egress"])],
        ),
        upstream="should enforce policy based on NamespaceSelector with MatchExpressions "
        "using default ns label",
    ),
]
