"""Cases beyond the upstream suite, on the same model: the 2016 policy forms, and points of the
v1 spec that the upstream tests leave implicit (label operators on absent keys, named ports
resolving per destination, endPort, policyTypes defaulting, list absent vs empty).

Expectations are written by hand from ../shared/notes/networkpolicy.md, never computed.
"""

from __future__ import annotations

from tests.e2e_model import (
    E2ECase,
    alpha_netpol,
    beta_netpol,
    case,
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
    pods,
    port,
    reach,
    sctp,
    step,
    tcp,
    to,
    udp,
)

T, F = True, False
ALL = reach(T)

ALPHA_ISOLATION = "net.alpha.kubernetes.io/network-isolation"
BETA_POLICY = "net.beta.kubernetes.io/network-policy"
BETA_DEFAULT_DENY = '{"ingress": {"isolation": "DefaultDeny"}}'


def alpha_ns(name: str, value: str | None) -> dict:
    return namespace_doc(name, annotations={ALPHA_ISOLATION: value} if value else None)


def beta_ns(name: str, default_deny: bool) -> dict:
    annotations = {BETA_POLICY: BETA_DEFAULT_DENY} if default_deny else None
    return namespace_doc(name, annotations=annotations)


SPEC_CASES: list[E2ECase] = [
    case(
        "namespace-match-expressions-exists-notin-doesnotexist",
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "from-any-team", match(pod="a"),
                          ingress=[from_(namespaces(expr("team", "Exists")))])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("z/*", "x/a", T))),
            apply=[namespace_doc("z", labels={"ns": "z", "team": "blue"})],
        ),
        # NotIn matches namespaces that lack the key altogether (x and y here).
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("z/*", "x/a", T),
                          peer("z/*", "y/a", F))),
            apply=[netpol("y", "from-not-blue", match(pod="a"),
                          ingress=[from_(namespaces(expr("team", "NotIn", "blue")))])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("z/*", "x/a", T),
                          peer("z/*", "y/a", F), peer("z/*", "y/b", F))),
            apply=[netpol("y", "from-no-team", match(pod="b"),
                          ingress=[from_(namespaces(expr("team", "DoesNotExist")))])],
        ),
    ),
    case(
        "pod-match-expressions-notin-doesnotexist-exists",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/c", "x/a", T))),
            apply=[netpol("x", "to-a", match(pod="a"),
                          ingress=[from_(pods(expr("pod", "NotIn", "b")))])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/*", "x/a", T))),
            apply=[netpol("x", "to-a", match(pod="a"),
                          ingress=[from_(pods(expr("tier", "DoesNotExist")))])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/*", "x/a", T),
                          peer("x/c", "x/a", F))),
            apply=[pod_doc("x/c", labels={"pod": "c", "tier": "db"})],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/*", "x/a", T), peer("x/c", "x/a", F),
                          ingress_to("x/b", F), peer("x/c", "x/b", T))),
            apply=[netpol("x", "to-b", match(pod="b"),
                          ingress=[from_(pods(expr("tier", "Exists")))])],
        ),
    ),
    case(
        "rules-or-peers-and-ports",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/b", "x/a", T))),
            tcp(81, reach(T, ingress_to("x/a", F), peer("y/*", "x/a", T))),
            udp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "two-rules", match(pod="a"), ingress=[
                from_(pods(match(pod="b")), ports=[port(80)]),
                from_(namespaces(match(ns="y")), ports=[port(81)]),
            ])],
        ),
    ),
    # The same port name means 80 on y/a and 81 on y/b: resolved per destination pod, for
    # egress (per peer) as for ingress.
    case(
        "named-port-resolved-per-destination",
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "y/a", T))),
            tcp(81, reach(T, egress_from("x/a", F), peer("x/a", "y/b", T))),
            apply=[
                pod_doc("y/a", names={(80, "TCP"): "web"}),
                pod_doc("y/b", names={(81, "TCP"): "web"}),
                netpol("x", "egress-web", match(pod="a"), egress=[to(ports=[port("web")])],
                       types=["Egress"]),
            ],
        ),
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "y/a", T),
                          ingress_to("y/*", F), ingress_to("y/a", T))),
            tcp(81, reach(T, egress_from("x/a", F), ingress_to("y/*", F), ingress_to("y/b", T))),
            apply=[netpol("y", "ingress-web", match(),
                          ingress=[from_(namespaces(match()), ports=[port("web")])])],
        ),
    ),
    case(
        "named-port-protocol-must-match",
        step(
            tcp(81, reach(T, ingress_to("x/a", F))),
            udp(81, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "udp-name-as-tcp", match(pod="a"),
                          ingress=[from_(ports=[port("serve-81-udp")])])],
        ),
        step(
            tcp(81, reach(T, ingress_to("x/a", F))),
            udp(81, ALL),
            apply=[netpol("x", "udp-name-as-tcp", match(pod="a"),
                          ingress=[from_(ports=[port("serve-81-udp", "UDP")])])],
        ),
    ),
    case(
        "endport-ingress-range",
        step(
            tcp(80, ALL),
            tcp(81, ALL),
            udp(80, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "range", match(pod="a"),
                          ingress=[from_(ports=[port(80, "TCP", end=81)])])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            tcp(81, ALL),
            apply=[netpol("x", "range", match(pod="a"),
                          ingress=[from_(ports=[port(81, "TCP", end=90)])])],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            tcp(81, reach(T, ingress_to("x/a", F))),
            apply=[netpol("x", "range", match(pod="a"),
                          ingress=[from_(ports=[port(70, "TCP", end=79)])])],
        ),
    ),
    case(
        "endport-egress-range",
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "y/*", T))),
            tcp(81, reach(T, egress_from("x/a", F))),
            apply=[netpol("x", "range", match(pod="a"), types=["Egress"], egress=[
                to(namespaces(match(ns="y")), ports=[port(79, end=80)])])],
        ),
    ),
    case(
        "endport-sctp",
        step(
            sctp(81, ALL),
            tcp(81, reach(T, ingress_to("x/*", F))),
            apply=[netpol("x", "sctp-range", match(),
                          ingress=[from_(ports=[port(80, "SCTP", end=81)])])],
        ),
    ),
    # node-1's pod CIDR holds x/a, x/c, y/b, z/a and z/c; z/c is excepted.
    case(
        "ipblock-ingress-node-cidr-with-except",
        step(
            tcp(80, reach(T, ingress_to("x/a", F), peer("x/c", "x/a", T), peer("y/b", "x/a", T),
                          peer("z/a", "x/a", T))),
            apply=[netpol("x", "from-node-1", match(pod="a"),
                          ingress=[from_(ip_block("10.244.1.0/24", host("z/c")))])],
        ),
    ),
    # In v1 an empty from/ports list means "all", like an absent one; an empty rule list
    # means "none".
    case(
        "v1-empty-lists",
        step(
            tcp(80, reach(T, ingress_to("x/b", F))),
            udp(81, reach(T, ingress_to("x/b", F))),
            apply=[
                netpol("x", "empty-from-and-ports", match(pod="a"),
                       ingress=[{"from": [], "ports": []}]),
                netpol("x", "no-rules", match(pod="b"), ingress=[]),
            ],
        ),
    ),
    # policyTypes absent + egress rules => [Ingress, Egress]: ingress is isolated too.
    case(
        "policytypes-defaulted-with-egress-rules",
        step(
            tcp(80, reach(T, ingress_to("x/a", F))),
            tcp(81, reach(T, ingress_to("x/a", F), egress_from("x/a", F))),
            apply=[netpol("x", "egress-80", match(pod="a"), egress=[to(ports=[port(80)])])],
        ),
    ),
    # policyTypes absent + `egress: []` => [Ingress] only: egress is not isolated.
    case(
        "policytypes-defaulted-empty-egress",
        step(
            tcp(80, ALL),
            apply=[netpol("x", "allow-in-empty-out", match(pod="a"), ingress=[{}], egress=[])],
        ),
    ),
    # Rules of a direction not listed in policyTypes are ignored.
    case(
        "policytypes-unlisted-rules-ignored",
        step(
            tcp(80, reach(T, egress_from("x/a", F), peer("x/a", "y/*", T))),
            apply=[
                netpol("x", "egress-only", match(pod="a"), types=["Egress"], ingress=[],
                       egress=[to(namespaces(match(ns="y")))]),
                netpol("x", "ingress-only", match(pod="b"), types=["Ingress"], ingress=[{}],
                       egress=[to(ip_block("192.0.2.0/24"))]),
            ],
        ),
    ),
]


LEGACY_CASES: list[E2ECase] = [
    case(
        "alpha-policy-without-isolation-has-no-effect",
        step(
            tcp(80, ALL),
            tcp(81, ALL),
            apply=[alpha_netpol("x", "allow-b-to-a", {"pod": "a"}, sources=[{"pods": {"pod": "b"}}],
                                to_ports=[{"port": 80, "protocol": "TCP"}])],
        ),
        step(tcp(80, ALL), apply=[alpha_ns("x", "off")]),
        step(
            tcp(80, reach(T, ingress_to("x/*", F), peer("x/b", "x/a", T))),
            tcp(81, reach(T, ingress_to("x/*", F))),
            apply=[alpha_ns("x", "on")],
        ),
    ),
    case(
        "alpha-isolation",
        step(
            tcp(80, reach(T, ingress_to("x/*", F))),
            udp(80, reach(T, ingress_to("x/*", F))),
            apply=[alpha_ns("x", "on")],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/*", F), peer("x/b", "x/a", T))),
            tcp(81, reach(T, ingress_to("x/*", F))),
            apply=[alpha_netpol("x", "allow-b-to-a", {"pod": "a"}, sources=[{"pods": {"pod": "b"}}],
                                to_ports=[{"port": 80, "protocol": "TCP"}])],
        ),
        # No toPorts: every port. A namespaces source: every pod of the matching namespaces.
        step(
            tcp(80, reach(T, ingress_to("x/*", F), peer("y/*", "x/*", T), peer("x/b", "x/a", T))),
            tcp(81, reach(T, ingress_to("x/*", F), peer("y/*", "x/*", T))),
            udp(80, reach(T, ingress_to("x/*", F), peer("y/*", "x/*", T))),
            apply=[alpha_netpol("x", "allow-from-y", {}, sources=[{"namespaces": {"ns": "y"}}])],
        ),
        # "yes" was accepted for "on"; isolation of y does not touch y's egress (alpha never
        # restricted egress), only traffic into y.
        step(
            tcp(80, reach(T, ingress_to("x/*", F), peer("y/*", "x/*", T), peer("x/b", "x/a", T),
                          ingress_to("y/*", F))),
            apply=[alpha_ns("y", "yes")],
        ),
        step(tcp(80, ALL), tcp(81, ALL), apply=[alpha_ns("x", "off"), alpha_ns("y", None)]),
    ),
    case(
        "beta-policy-without-default-deny-has-no-effect",
        step(
            tcp(80, ALL),
            apply=[beta_netpol("x", "allow-b-to-a", match(pod="a"),
                               ingress=[from_(pods(match(pod="b")))])],
        ),
        step(tcp(80, reach(T, ingress_to("y/*", F))), apply=[beta_ns("y", True)]),
        step(
            tcp(80, reach(T, ingress_to("y/*", F), ingress_to("x/*", F), peer("x/b", "x/a", T))),
            apply=[beta_ns("x", True)],
        ),
        step(tcp(80, ALL), apply=[beta_ns("x", False), beta_ns("y", False)]),
    ),
    # The beta nuance: an absent from/ports means all, an empty list [] means nothing.
    case(
        "beta-absent-versus-empty-lists",
        step(
            tcp(80, reach(T, ingress_to("x/*", F), ingress_to("x/b", T), peer("y/*", "x/a", T))),
            udp(81, reach(T, ingress_to("x/*", F), ingress_to("x/b", T), peer("y/*", "x/a", T))),
            apply=[
                beta_ns("x", True),
                beta_netpol("x", "all-to-b", match(pod="b"), ingress=[{}]),
                beta_netpol("x", "empty-from-to-c", match(pod="c"), ingress=[{"from": []}]),
                beta_netpol("x", "empty-ports-to-c", match(pod="c"), ingress=[{"ports": []}]),
                beta_netpol("x", "y-to-a", match(pod="a"),
                            ingress=[from_(namespaces(match(ns="y")))]),
            ],
        ),
        step(
            tcp(80, reach(T, ingress_to("x/*", F), ingress_to("x/b", T), peer("y/*", "x/a", T))),
            tcp(81, reach(T, ingress_to("x/*", F), ingress_to("x/b", T), peer("y/*", "x/a", T),
                          ingress_to("x/c", T))),
            apply=[beta_netpol("x", "empty-from-to-c", match(pod="c"),
                               ingress=[{"ports": [{"port": 81}]}])],
        ),
    ),
    # A v1 policy adds to what the beta DefaultDeny isolation allows.
    case(
        "beta-default-deny-with-v1-policy",
        step(tcp(80, reach(T, ingress_to("x/*", F))), apply=[beta_ns("x", True)]),
        step(
            tcp(80, reach(T, ingress_to("x/*", F), peer("x/*", "x/*", T))),
            apply=[netpol("x", "v1-same-namespace", match(), ingress=[from_(pods(match()))])],
        ),
    ),
]
