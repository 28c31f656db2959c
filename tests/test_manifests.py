"""sdn.policy.manifests: reading manifests into the model, read like the specification.

Semantics after ../shared/notes/networkpolicy.md; every validation error the API server would
report must name the file, the object and the field.
"""

from __future__ import annotations

import io
import json
import pickle

import pytest
import yaml

from sdn.policy.manifests import (
    API_ALPHA,
    API_BETA,
    API_V1,
    ManifestError,
    add_object,
    describe,
    load_documents,
    load_paths,
    load_text,
    object_key,
    parse_object,
    remove_object,
)
from sdn.policy.model import (
    EGRESS,
    FORM_ALPHA,
    FORM_BETA,
    FORM_V1,
    INGRESS,
    Cluster,
    ContainerPort,
    IPBlock,
    LabelSelector,
    Namespace,
    Node,
    Peer,
    Pod,
    Policy,
    PolicyPort,
    PolicyRule,
    Requirement,
)

ALL = LabelSelector()


def netpol(spec=None, *, api=API_V1, name="allow-a", ns="x", **top):
    doc = {"apiVersion": api, "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}}
    if spec is not None:
        doc["spec"] = spec
    doc.update(top)
    return doc


def one_policy(spec=None, **kw) -> Policy:
    pol = parse_object(netpol(spec, **kw), "mem.yaml")
    assert isinstance(pol, Policy)
    return pol


def write(tmp_path, name, docs) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(docs, str):
        path.write_text(docs)
    elif name.endswith(".json"):
        path.write_text(json.dumps(docs))
    else:
        path.write_text(yaml.safe_dump_all(docs if isinstance(docs, list) else [docs]))
    return str(path)


def load_error(tmp_path, doc, name="bad.yaml") -> ManifestError:
    path = write(tmp_path, name, doc)
    with pytest.raises(ManifestError) as info:
        load_paths([path])
    err = info.value
    assert err.file == path
    assert str(err).startswith(f"{path}: ")
    return err


# ------------------------------------------------------------------------------------------
# ManifestError


def test_error_message_reads_file_object_field_message():
    err = ManifestError(
        "examples/bad.yaml", "NetworkPolicy x/allow-a", "spec.ingress[0].ports[0].endPort",
        "must be >= port (80)",
    )
    assert str(err) == (
        "examples/bad.yaml: NetworkPolicy x/allow-a: spec.ingress[0].ports[0].endPort: "
        "must be >= port (80)"
    )
    assert (err.file, err.obj, err.field, err.message) == (
        "examples/bad.yaml", "NetworkPolicy x/allow-a", "spec.ingress[0].ports[0].endPort",
        "must be >= port (80)",
    )


def test_error_without_object_or_field_leaves_them_out():
    assert str(ManifestError("a.yaml", "", "", "invalid YAML")) == "a.yaml: invalid YAML"


def test_error_survives_pickling():
    err = pickle.loads(pickle.dumps(ManifestError("f", "o", "x.y", "m")))
    assert (err.file, err.obj, err.field, err.message) == ("f", "o", "x.y", "m")


def test_endport_below_port_reads_like_the_example(tmp_path):
    doc = netpol({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]})
    err = load_error(tmp_path, doc)
    assert err.obj == "NetworkPolicy x/allow-a"
    assert err.field == "spec.ingress[0].ports[0].endPort"
    assert str(err).endswith("NetworkPolicy x/allow-a: spec.ingress[0].ports[0].endPort: must be >= port (80)")


# ------------------------------------------------------------------------------------------
# Validation errors of networking.k8s.io/v1: each names file, object and field


def _ingress_peer(peer):
    return {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}, peer]}]}


def _ingress_port(port):
    return {"podSelector": {}, "ingress": [{"ports": [port]}]}


V1_ERRORS = {
    "bad cidr": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.300/8"}}),
        "spec.ingress[0].from[1].ipBlock.cidr", "not a valid CIDR",
    ),
    "cidr without prefix length": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.1"}}),
        "spec.ingress[0].from[1].ipBlock.cidr", "not a valid CIDR",
    ),
    "prefix length too long": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        "spec.ingress[0].from[1].ipBlock.cidr", "prefix length",
    ),
    "bad ipv6 cidr": (
        _ingress_peer({"ipBlock": {"cidr": "fd00::g/64"}}),
        "spec.ingress[0].from[1].ipBlock.cidr", "not a valid CIDR",
    ),
    "ipBlock without cidr": (
        _ingress_peer({"ipBlock": {"except": ["10.0.0.0/24"]}}),
        "spec.ingress[0].from[1].ipBlock.cidr", "is required",
    ),
    "bad except cidr": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "bogus"]}}),
        "spec.ingress[0].from[1].ipBlock.except[1]", "not a valid CIDR",
    ),
    "except not inside cidr": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        "spec.ingress[0].from[1].ipBlock.except[0]", "strict subset",
    ),
    "except larger than cidr": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[1].ipBlock.except[0]", "strict subset",
    ),
    "except equal to cidr": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}),
        "spec.ingress[0].from[1].ipBlock.except[0]", "strict subset",
    ),
    "except of another address family": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}),
        "spec.ingress[0].from[1].ipBlock.except[0]", "address family",
    ),
    "endPort below port": (
        _ingress_port({"port": 80, "endPort": 79}),
        "spec.ingress[0].ports[0].endPort", "must be >= port (80)",
    ),
    "endPort with a named port": (
        _ingress_port({"port": "http", "endPort": 90}),
        "spec.ingress[0].ports[0].endPort", "named port",
    ),
    "endPort without port": (
        _ingress_port({"endPort": 90}),
        "spec.ingress[0].ports[0].endPort", "port is not specified",
    ),
    "endPort out of range": (
        _ingress_port({"port": 80, "endPort": 65536}),
        "spec.ingress[0].ports[0].endPort", "between 1 and 65535",
    ),
    "port zero": (
        _ingress_port({"port": 0}),
        "spec.ingress[0].ports[0].port", "between 1 and 65535",
    ),
    "port too large": (
        _ingress_port({"port": 70000}),
        "spec.ingress[0].ports[0].port", "between 1 and 65535",
    ),
    "port number as a string": (
        _ingress_port({"port": "80"}),
        "spec.ingress[0].ports[0].port", "at least one letter",
    ),
    "named port too long": (
        _ingress_port({"port": "a-very-long-port-name"}),
        "spec.ingress[0].ports[0].port", "15 characters",
    ),
    "named port upper case": (
        _ingress_port({"port": "HTTP"}),
        "spec.ingress[0].ports[0].port", "lower case",
    ),
    "named port with double hyphen": (
        _ingress_port({"port": "serve--80"}),
        "spec.ingress[0].ports[0].port", "consecutive hyphens",
    ),
    "port as a boolean": (
        _ingress_port({"port": True}),
        "spec.ingress[0].ports[0].port", "port number or name",
    ),
    "bad protocol": (
        _ingress_port({"protocol": "ICMP", "port": 80}),
        "spec.ingress[0].ports[0].protocol", "unsupported protocol 'ICMP'",
    ),
    "lower-case protocol": (
        _ingress_port({"protocol": "tcp"}),
        "spec.ingress[0].ports[0].protocol", "unsupported protocol",
    ),
    "ipBlock mixed with podSelector": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        "spec.ingress[0].from[1]", "ipBlock cannot be combined",
    ),
    "ipBlock mixed with namespaceSelector": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}),
        "spec.ingress[0].from[1]", "ipBlock cannot be combined",
    ),
    "empty peer": (
        _ingress_peer({}),
        "spec.ingress[0].from[1]", "empty peer",
    ),
    "bad operator": (
        {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Equals", "values": ["a"]}]}},
        "spec.podSelector.matchExpressions[0].operator", "unknown operator 'Equals'",
    ),
    "values with Exists": (
        _ingress_peer({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists", "values": ["a"]}]}}),
        "spec.ingress[0].from[1].podSelector.matchExpressions[0].values", "must be empty",
    ),
    "values with DoesNotExist": (
        _ingress_peer({"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "DoesNotExist", "values": ["x"]}]}}),
        "spec.ingress[0].from[1].namespaceSelector.matchExpressions[0].values", "must be empty",
    ),
    "In without values": (
        {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In"}]}},
        "spec.podSelector.matchExpressions[0].values", "non-empty",
    ),
    "NotIn with empty values": (
        {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": []}]}},
        "spec.podSelector.matchExpressions[0].values", "non-empty",
    ),
    "expression without key": (
        {"podSelector": {"matchExpressions": [{"operator": "Exists"}]}},
        "spec.podSelector.matchExpressions[0].key", "is required",
    ),
    "matchLabels value not a string": (
        {"podSelector": {"matchLabels": {"enabled": True}}},
        "spec.podSelector.matchLabels.enabled", "must be a string",
    ),
    "matchLabels bad key": (
        {"podSelector": {"matchLabels": {"bad key": "a"}}},
        "spec.podSelector.matchLabels[bad key]", "invalid label key",
    ),
    "unknown field in spec": (
        {"podSelector": {}, "ingres": [{}]},
        "spec.ingres", "unknown field",
    ),
    "unknown field in a peer": (
        _ingress_peer({"namspaceSelector": {}}),
        "spec.ingress[0].from[1].namspaceSelector", "unknown field",
    ),
    "unknown field in a rule": (
        {"podSelector": {}, "egress": [{"from": []}]},
        "spec.egress[0].from", "unknown field",
    ),
    "unknown field in a port": (
        _ingress_port({"port": 80, "end_port": 81}),
        "spec.ingress[0].ports[0].end_port", "unknown field",
    ),
    "unknown field in ipBlock": (
        _ingress_peer({"ipBlock": {"cidr": "10.0.0.0/8", "excepts": []}}),
        "spec.ingress[0].from[1].ipBlock.excepts", "unknown field",
    ),
    "unknown field in a selector": (
        {"podSelector": {"matchLabel": {"a": "b"}}},
        "spec.podSelector.matchLabel", "unknown field",
    ),
    "bad policy type": (
        {"podSelector": {}, "policyTypes": ["Ingress", "Outgress"]},
        "spec.policyTypes[1]", "Ingress or Egress",
    ),
    "ingress not a list": (
        {"podSelector": {}, "ingress": {"from": []}},
        "spec.ingress", "must be a list",
    ),
    "peer not an object": (
        _ingress_peer("pod=a"),
        "spec.ingress[0].from[1]", "must be an object",
    ),
}


@pytest.mark.parametrize("spec,field,fragment", V1_ERRORS.values(), ids=V1_ERRORS.keys())
def test_v1_validation_error_names_file_object_and_field(tmp_path, spec, field, fragment):
    err = load_error(tmp_path, netpol(spec))
    assert err.obj == "NetworkPolicy x/allow-a"
    assert err.field == field
    assert fragment in err.message
    assert f"NetworkPolicy x/allow-a: {field}: " in str(err)


def test_egress_validation_errors_use_the_to_path(tmp_path):
    spec = {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/24"]}}]}]}
    err = load_error(tmp_path, netpol(spec))
    assert err.field == "spec.egress[0].to[0].ipBlock.except[0]"


def test_unknown_top_level_field_of_a_policy_is_rejected(tmp_path):
    doc = netpol({"podSelector": {}})
    doc["sepc"] = {}
    err = load_error(tmp_path, doc)
    assert err.field == "sepc"
    assert "did you mean \"spec\"" in err.message


def test_the_first_invalid_thing_is_reported(tmp_path):
    spec = {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}, {"port": 0}]}]}
    assert load_error(tmp_path, netpol(spec)).field == "spec.ingress[0].ports[0].protocol"


def test_error_in_a_later_document_names_that_object(tmp_path):
    docs = [
        netpol({"podSelector": {}}, name="fine"),
        netpol({"podSelector": {}, "ingress": [{"from": [{}]}]}, name="broken", ns="y"),
    ]
    err = load_error(tmp_path, docs)
    assert err.obj == "NetworkPolicy y/broken"
    assert err.field == "spec.ingress[0].from[0]"


def test_missing_name_is_an_error(tmp_path):
    doc = netpol({"podSelector": {}})
    del doc["metadata"]["name"]
    err = load_error(tmp_path, doc)
    assert err.field == "metadata.name"
    assert "required" in err.message
    assert err.obj.startswith("NetworkPolicy <unnamed")


def test_invalid_name_is_an_error(tmp_path):
    err = load_error(tmp_path, netpol({"podSelector": {}}, name="Allow_A"))
    assert err.field == "metadata.name"


def test_unsupported_networkpolicy_api_version_is_an_error_not_a_skip(tmp_path):
    # Skipping it would silently drop a policy; better refuse.
    err = load_error(tmp_path, netpol({"podSelector": {}}, api="networking.k8s.io/v2"))
    assert err.field == "apiVersion"
    assert API_V1 in err.message


def test_missing_kind_is_an_error(tmp_path):
    err = load_error(tmp_path, [{"apiVersion": "v1", "metadata": {"name": "x"}}])
    assert err.field == "kind"
    assert err.obj == "document 1"


def test_yaml_syntax_error_names_the_file(tmp_path):
    err = load_error(tmp_path, "kind: Pod\nmetadata: {name: [\n")
    assert err.obj == "" and err.field == ""
    assert "invalid YAML" in err.message


def test_json_syntax_error_names_the_file(tmp_path):
    err = load_error(tmp_path, '{"kind": "Pod",', name="bad.json")
    assert "invalid JSON" in err.message


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_paths([str(tmp_path / "nope.yaml")])
    assert info.value.file.endswith("nope.yaml")


def test_no_partial_state_escapes_on_error():
    cluster = Cluster()
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
        netpol({"podSelector": {}, "ingress": [{"from": [{}]}]}),
    ]
    with pytest.raises(ManifestError):
        load_documents(docs, "in.yaml", cluster)
    assert cluster == Cluster()


def test_no_partial_state_from_a_later_bad_file(tmp_path):
    good = write(tmp_path, "a.yaml", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    bad = write(tmp_path, "b.yaml", netpol({"podSelector": {}, "bogus": 1}))
    cluster = Cluster()
    with pytest.raises(ManifestError) as info:
        load_paths([good, bad], cluster=cluster)
    assert info.value.file == bad
    assert cluster == Cluster()


# ------------------------------------------------------------------------------------------
# networking.k8s.io/v1: mapping and defaulting


def test_v1_policy_full_mapping():
    pol = one_policy(
        {
            "podSelector": {
                "matchLabels": {"pod": "a"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db", "cache"]}],
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                        {"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.3.0/24"]}},
                    ],
                    "ports": [
                        {"port": 80},
                        {"protocol": "UDP", "port": "serve-81-udp"},
                        {"protocol": "SCTP"},
                        {"port": 8000, "endPort": 8080},
                    ],
                }
            ],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/96"]}}]}],
        }
    )
    assert (pol.namespace, pol.name, pol.form, pol.origin) == ("x", "allow-a", FORM_V1, "mem.yaml")
    assert pol.key == "x/allow-a"
    assert pol.pod_selector == LabelSelector((("pod", "a"),), (Requirement("tier", "NotIn", ("db", "cache")),))
    assert pol.policy_types == {INGRESS, EGRESS}
    (rule,) = pol.ingress
    assert rule.peers == (
        Peer(pod_selector=LabelSelector((("pod", "b"),))),
        Peer(namespace_selector=LabelSelector((("ns", "y"),))),
        Peer(pod_selector=LabelSelector((), (Requirement("pod", "Exists"),)), namespace_selector=ALL),
        Peer(ip_block=IPBlock("10.0.0.0/8", ("10.1.0.0/16", "10.2.3.0/24"))),
    )
    assert rule.ports == (
        PolicyPort("TCP", 80),
        PolicyPort("UDP", "serve-81-udp"),
        PolicyPort("SCTP", None),
        PolicyPort("TCP", 8000, 8080),
    )
    assert pol.egress == (PolicyRule(peers=(Peer(ip_block=IPBlock("fd00::/64", ("fd00::/96",))),)),)


def test_namespace_defaults_to_default():
    doc = netpol({"podSelector": {}})
    del doc["metadata"]["namespace"]
    assert parse_object(doc, "f").namespace == "default"


def test_absent_pod_selector_and_spec_select_all_pods():
    assert one_policy({}).pod_selector == ALL
    pol = one_policy(None)
    assert pol.pod_selector == ALL and pol.ingress == () and pol.policy_types == {INGRESS}


@pytest.mark.parametrize(
    "spec,types",
    [
        ({"podSelector": {}}, {INGRESS}),
        ({"podSelector": {}, "ingress": [{}]}, {INGRESS}),
        ({"podSelector": {}, "egress": [{}]}, {INGRESS, EGRESS}),
        ({"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]}, {INGRESS, EGRESS}),
        # `egress: []` without policyTypes does NOT isolate egress.
        ({"podSelector": {}, "egress": []}, {INGRESS}),
        ({"podSelector": {}, "egress": None}, {INGRESS}),
        ({"podSelector": {}, "policyTypes": [], "egress": []}, {INGRESS}),
        ({"podSelector": {}, "policyTypes": [], "egress": [{}]}, {INGRESS, EGRESS}),
        # Explicit policyTypes are taken as they are.
        ({"podSelector": {}, "policyTypes": ["Egress"]}, {EGRESS}),
        ({"podSelector": {}, "policyTypes": ["Egress"], "egress": []}, {EGRESS}),
        ({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, {INGRESS, EGRESS}),
        ({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]}, {INGRESS}),
    ],
    ids=[
        "nothing", "ingress-rules", "egress-rule", "egress-rule-with-peer", "egress-empty-list",
        "egress-null", "empty-types-egress-empty", "empty-types-egress-rule", "egress-only",
        "egress-only-deny-all", "both", "ingress-only-with-egress-rules",
    ],
)
def test_policy_types_defaulting(spec, types):
    assert one_policy(spec).policy_types == frozenset(types)


def test_rules_of_an_unlisted_type_are_kept_but_warned_about():
    docs = [netpol({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]})]
    cluster, warnings = load_documents(docs, "f.yaml")
    pol = cluster.policies[(FORM_V1, "x", "allow-a")]
    assert pol.policy_types == {INGRESS} and pol.egress == (PolicyRule(),)
    assert any("spec.egress" in w and "policyTypes" in w for w in warnings)


def test_ingress_absent_or_empty_means_no_rules():
    assert one_policy({"podSelector": {}}).ingress == ()
    assert one_policy({"podSelector": {}, "ingress": []}).ingress == ()


@pytest.mark.parametrize("rule", [{}, {"from": []}, {"ports": []}, {"from": [], "ports": []}, {"from": None}])
def test_v1_from_and_ports_absent_or_empty_mean_all(rule):
    (got,) = one_policy({"podSelector": {}, "ingress": [rule]}).ingress
    assert got == PolicyRule(peers=None, ports=None)


@pytest.mark.parametrize("rule", [{}, {"to": []}, {"ports": []}])
def test_v1_to_absent_or_empty_means_all(rule):
    (got,) = one_policy({"podSelector": {}, "egress": [rule]}).egress
    assert got == PolicyRule(peers=None, ports=None)


def test_protocol_only_port_and_protocol_default():
    (rule,) = one_policy({"ingress": [{"ports": [{"protocol": "UDP"}, {"port": 53}]}]}).ingress
    assert rule.ports == (PolicyPort("UDP", None, None), PolicyPort("TCP", 53, None))


def test_endport_equal_to_port_is_fine():
    (rule,) = one_policy({"ingress": [{"ports": [{"port": 80, "endPort": 80}]}]}).ingress
    assert rule.ports == (PolicyPort("TCP", 80, 80),)


def test_selector_with_all_operators():
    exprs = [
        {"key": "a", "operator": "In", "values": ["1", "2"]},
        {"key": "b", "operator": "NotIn", "values": ["3"]},
        {"key": "c", "operator": "Exists"},
        {"key": "d", "operator": "DoesNotExist", "values": []},
    ]
    sel = one_policy({"podSelector": {"matchExpressions": exprs}}).pod_selector
    assert sel.match_expressions == (
        Requirement("a", "In", ("1", "2")),
        Requirement("b", "NotIn", ("3",)),
        Requirement("c", "Exists"),
        Requirement("d", "DoesNotExist"),
    )
    assert sel.matches({"a": "1", "c": ""}) and not sel.matches({"a": "1", "b": "3", "c": ""})


def test_prefixed_label_keys_are_valid():
    sel = one_policy({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]})
    assert sel.ingress[0].peers[0].namespace_selector.match_labels == (("kubernetes.io/metadata.name", "y"),)


def test_ipblock_with_host_bits_is_kept_as_given_with_a_warning():
    doc = netpol({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/24", "except": ["10.0.0.128/25"]}}]}]})
    cluster, warnings = load_documents([doc], "f.yaml")
    pol = cluster.policies[(FORM_V1, "x", "allow-a")]
    assert pol.ingress[0].peers[0].ip_block == IPBlock("10.0.0.1/24", ("10.0.0.128/25",))
    assert any("host bits" in w and "10.0.0.0/24" in w for w in warnings)


def test_ipv6_ipblock():
    (rule,) = one_policy({"egress": [{"to": [{"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}}]}]}).egress
    assert rule.peers == (Peer(ip_block=IPBlock("2001:db8::/32", ("2001:db8:1::/48",))),)


def test_status_is_tolerated_on_a_policy():
    assert one_policy({"podSelector": {}}, status={}).name == "allow-a"


# ------------------------------------------------------------------------------------------
# extensions/v1beta1 (2016)


def test_beta_mapping():
    pol = one_policy(
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}, {"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                    "ports": [{"port": 80}, {"protocol": "UDP", "port": "dns"}],
                }
            ],
        },
        api=API_BETA,
    )
    assert pol.form == FORM_BETA
    assert pol.key == "x/allow-a[v1beta1]"
    assert pol.policy_types == {INGRESS}
    assert pol.pod_selector == LabelSelector((("pod", "a"),))
    assert pol.ingress == (
        PolicyRule(
            peers=(Peer(pod_selector=LabelSelector((("pod", "b"),))), Peer(namespace_selector=LabelSelector((("ns", "y"),)))),
            ports=(PolicyPort("TCP", 80), PolicyPort("UDP", "dns")),
        ),
    )
    assert pol.egress == ()


def test_beta_absent_means_all_but_empty_list_means_nothing():
    pol = one_policy(
        {"podSelector": {}, "ingress": [{}, {"from": []}, {"ports": []}, {"from": [], "ports": []}]},
        api=API_BETA,
    )
    assert pol.ingress == (
        PolicyRule(peers=None, ports=None),
        PolicyRule(peers=(), ports=None),
        PolicyRule(peers=None, ports=()),
        PolicyRule(peers=(), ports=()),
    )


def test_beta_without_ingress_allows_nothing():
    pol = one_policy({"podSelector": {}}, api=API_BETA)
    assert pol.ingress == () and pol.policy_types == {INGRESS}


BETA_ERRORS = {
    "ipBlock did not exist": (
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
        "spec.ingress[0].from[0].ipBlock", "not supported",
    ),
    "peer with both selectors": (
        {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]},
        "spec.ingress[0].from[0]", "exactly one",
    ),
    "empty peer": (
        {"podSelector": {}, "ingress": [{"from": [{}]}]},
        "spec.ingress[0].from[0]", "exactly one",
    ),
    "egress did not exist": (
        {"podSelector": {}, "egress": [{}]},
        "spec.egress", "unknown field",
    ),
    "policyTypes did not exist": (
        {"podSelector": {}, "policyTypes": ["Ingress"]},
        "spec.policyTypes", "unknown field",
    ),
    "endPort did not exist": (
        {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]},
        "spec.ingress[0].ports[0].endPort", "unknown field",
    ),
    "bad protocol": (
        {"podSelector": {}, "ingress": [{"ports": [{"protocol": "icmp"}]}]},
        "spec.ingress[0].ports[0].protocol", "unsupported protocol",
    ),
    "bad operator": (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "in", "values": ["b"]}]}},
        "spec.podSelector.matchExpressions[0].operator", "unknown operator",
    ),
}


@pytest.mark.parametrize("spec,field,fragment", BETA_ERRORS.values(), ids=BETA_ERRORS.keys())
def test_beta_validation_errors(tmp_path, spec, field, fragment):
    err = load_error(tmp_path, netpol(spec, api=API_BETA))
    assert err.obj == "NetworkPolicy x/allow-a"
    assert err.field == field
    assert fragment in err.message


# ------------------------------------------------------------------------------------------
# net.alpha.kubernetes.io/v1alpha1 (2016)


def test_alpha_mapping():
    pol = one_policy(
        {
            "podSelector": {"pod": "a"},
            "allowIncoming": {
                "from": [{"pods": {"pod": "b"}}, {"namespaces": {"ns": "y"}}],
                "toPorts": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}, {"port": "http"}],
            },
        },
        api=API_ALPHA,
    )
    assert pol.form == FORM_ALPHA
    assert pol.key == "x/allow-a[v1alpha1]"
    assert pol.policy_types == {INGRESS}
    assert pol.pod_selector == LabelSelector((("pod", "a"),))
    assert pol.ingress == (
        PolicyRule(
            peers=(Peer(pod_selector=LabelSelector((("pod", "b"),))), Peer(namespace_selector=LabelSelector((("ns", "y"),)))),
            ports=(PolicyPort("TCP", 80), PolicyPort("UDP", 53), PolicyPort("TCP", "http")),
        ),
    )


def test_alpha_absent_from_and_toports_mean_all():
    pol = one_policy({"podSelector": {}, "allowIncoming": {}}, api=API_ALPHA)
    assert pol.ingress == (PolicyRule(peers=None, ports=None),)
    pol = one_policy({"podSelector": {"pod": "a"}, "allowIncoming": {"toPorts": [{"port": 80}]}}, api=API_ALPHA)
    assert pol.ingress == (PolicyRule(peers=None, ports=(PolicyPort("TCP", 80),)),)


def test_alpha_empty_lists_mean_nothing_as_in_the_beta():
    pol = one_policy({"podSelector": {}, "allowIncoming": {"from": [], "toPorts": []}}, api=API_ALPHA)
    assert pol.ingress == (PolicyRule(peers=(), ports=()),)


def test_alpha_without_allow_incoming_allows_nothing():
    pol = one_policy({"podSelector": {"pod": "a"}}, api=API_ALPHA)
    assert pol.ingress == () and pol.policy_types == {INGRESS}


ALPHA_ERRORS = {
    "selector is a label map, not a LabelSelector": (
        {"podSelector": {"matchLabels": {"pod": "a"}}},
        "spec.podSelector.matchLabels", "plain label map",
    ),
    "peer with both": (
        {"allowIncoming": {"from": [{"pods": {"a": "b"}, "namespaces": {"c": "d"}}]}},
        "spec.allowIncoming.from[0]", "exactly one",
    ),
    "unknown peer field": (
        {"allowIncoming": {"from": [{"podSelector": {}}]}},
        "spec.allowIncoming.from[0].podSelector", "unknown field",
    ),
    "bad protocol": (
        {"allowIncoming": {"toPorts": [{"port": 80, "protocol": "ICMP"}]}},
        "spec.allowIncoming.toPorts[0].protocol", "unsupported protocol",
    ),
    "bad port": (
        {"allowIncoming": {"toPorts": [{"port": 0}]}},
        "spec.allowIncoming.toPorts[0].port", "between 1 and 65535",
    ),
    "allowIncoming is one object": (
        {"allowIncoming": [{"from": []}]},
        "spec.allowIncoming", "must be an object",
    ),
    "v1 field": (
        {"podSelector": {}, "ingress": []},
        "spec.ingress", "unknown field",
    ),
}


@pytest.mark.parametrize("spec,field,fragment", ALPHA_ERRORS.values(), ids=ALPHA_ERRORS.keys())
def test_alpha_validation_errors(tmp_path, spec, field, fragment):
    err = load_error(tmp_path, netpol(spec, api=API_ALPHA))
    assert err.obj == "NetworkPolicy x/allow-a"
    assert err.field == field
    assert fragment in err.message


def test_three_forms_of_the_same_name_coexist():
    docs = [netpol({}, api=api) for api in (API_V1, API_BETA, API_ALPHA)]
    cluster, warnings = load_documents(docs)
    assert sorted(cluster.policies) == [(FORM_V1, "x", "allow-a"), (FORM_ALPHA, "x", "allow-a"), (FORM_BETA, "x", "allow-a")]
    assert warnings == []


# ------------------------------------------------------------------------------------------
# Namespaces


def ns_doc(name, labels=None, annotations=None):
    meta = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def test_namespace_labels_and_annotations():
    ns = parse_object(ns_doc("x", {"ns": "x"}, {"note": "hi"}), "f")
    assert ns == Namespace("x", (("ns", "x"),), (("note", "hi"),))
    assert ns.label_map == {"ns": "x", "kubernetes.io/metadata.name": "x"}


@pytest.mark.parametrize(
    "value,enabled",
    [
        ('{"ingress": {"isolation": "DefaultDeny"}}', True),
        ('{"ingress": {"isolation": "None"}}', False),
        ("{}", False),
        ('"DefaultDeny"', False),
        ("[]", False),
    ],
)
def test_beta_annotation_well_formed(value, enabled):
    from sdn.policy.annotations import beta_default_deny

    ns = parse_object(ns_doc("x", annotations={"net.beta.kubernetes.io/network-policy": value}), "f")
    assert beta_default_deny(ns) is enabled


def test_beta_annotation_malformed_json_is_an_error(tmp_path):
    doc = ns_doc("x", annotations={"net.beta.kubernetes.io/network-policy": "{ingress: DefaultDeny"})
    err = load_error(tmp_path, doc)
    assert err.obj == "Namespace x"
    assert err.field == "metadata.annotations[net.beta.kubernetes.io/network-policy]"
    assert "malformed JSON" in err.message


def test_beta_annotation_with_unexpected_isolation_warns():
    doc = ns_doc("x", annotations={"net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "defaultdeny"}}'})
    _, warnings = load_documents([doc], "f.yaml")
    assert len(warnings) == 1 and "f.yaml: Namespace x" in warnings[0]


def test_alpha_annotation_unknown_value_warns():
    _, warnings = load_documents([ns_doc("x", annotations={"net.alpha.kubernetes.io/network-isolation": "maybe"})])
    assert any("neither on nor off" in w for w in warnings)
    _, warnings = load_documents([ns_doc("x", annotations={"net.alpha.kubernetes.io/network-isolation": "on"})])
    assert warnings == []


def test_unquoted_yaml_boolean_annotation_is_an_error_with_a_hint(tmp_path):
    text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations:\n    net.alpha.kubernetes.io/network-isolation: on\n"
    err = load_error(tmp_path, text)
    assert err.field == "metadata.annotations[net.alpha.kubernetes.io/network-isolation]"
    assert "quote it" in err.message


def test_label_value_must_be_a_string(tmp_path):
    err = load_error(tmp_path, ns_doc("x", {"replicas": 3}))
    assert err.field == "metadata.labels.replicas"


def test_bad_namespace_name(tmp_path):
    err = load_error(tmp_path, ns_doc("X_y"))
    assert err.obj == "Namespace X_y" and err.field == "metadata.name"


# ------------------------------------------------------------------------------------------
# Pods


def pod_doc(name="a", ns="x", labels=None, node=None, containers=None, status=None):
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels or {}}}
    spec = {"containers": containers or [{"name": "c", "image": "img"}]}
    if node:
        spec["nodeName"] = node
    doc["spec"] = spec
    if status is not None:
        doc["status"] = status
    return doc


def test_pod_mapping():
    containers = [
        {"name": "c1", "ports": [{"containerPort": 80, "name": "serve-80-tcp"}, {"containerPort": 80, "protocol": "UDP", "name": "serve-80-udp"}]},
        {"name": "c2", "ports": [{"containerPort": 81, "protocol": "SCTP"}]},
    ]
    pod = parse_object(
        pod_doc(labels={"pod": "a"}, node="n1", containers=containers, status={"podIP": "10.0.0.5", "phase": "Running"}),
        "f",
    )
    assert pod == Pod(
        "x", "a", (("pod", "a"),), "n1", ("10.0.0.5",),
        (ContainerPort(80, "TCP", "serve-80-tcp"), ContainerPort(80, "UDP", "serve-80-udp"), ContainerPort(81, "SCTP", None)),
    )
    assert pod.resolve_port("serve-80-udp", "UDP") == 80


def test_pod_namespace_defaults_to_default():
    doc = pod_doc()
    del doc["metadata"]["namespace"]
    assert parse_object(doc, "f").key == "default/a"


def test_pod_without_ip():
    pod = parse_object(pod_doc(status={"phase": "Pending"}), "f")
    assert pod.ips == () and pod.ip is None
    assert parse_object(pod_doc(), "f").ips == ()
    assert parse_object(pod_doc(status={"podIP": ""}), "f").ips == ()


def test_pod_ips_pod_ip_first_without_duplicates():
    status = {"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
    assert parse_object(pod_doc(status=status), "f").ips == ("10.0.0.5", "fd00::5")
    status = {"podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}]}
    assert parse_object(pod_doc(status=status), "f").ips == ("fd00::5", "10.0.0.5")
    status = {"podIP": "10.0.0.5", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}]}
    assert parse_object(pod_doc(status=status), "f").ips == ("10.0.0.5", "fd00::5")


def test_pod_ipv6_is_normalised():
    status = {"podIP": "FD00:0:0::5", "podIPs": [{"ip": "fd00::5"}]}
    assert parse_object(pod_doc(status=status), "f").ips == ("fd00::5",)


@pytest.mark.parametrize(
    "doc,field",
    [
        (pod_doc(status={"podIP": "10.0.0.256"}), "status.podIP"),
        (pod_doc(status={"podIP": "10.0.0.1", "podIPs": [{"ip": "nope"}]}), "status.podIPs[0].ip"),
        (pod_doc(containers=[{"ports": [{"containerPort": 0}]}]), "spec.containers[0].ports[0].containerPort"),
        (pod_doc(containers=[{"ports": [{"name": "http"}]}]), "spec.containers[0].ports[0].containerPort"),
        (pod_doc(containers=[{}, {"ports": [{"containerPort": 80, "protocol": "ICMP"}]}]), "spec.containers[1].ports[0].protocol"),
        (pod_doc(containers=[{"ports": [{"containerPort": 80, "name": "Http"}]}]), "spec.containers[0].ports[0].name"),
        (
            pod_doc(containers=[{"ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]}]),
            "spec.containers[0].ports[1].name",
        ),
    ],
    ids=["bad-podIP", "bad-podIPs", "port-zero", "no-containerPort", "bad-protocol", "bad-port-name",
         "duplicate-port-name"],
)
def test_pod_validation_errors(tmp_path, doc, field):
    err = load_error(tmp_path, doc)
    assert err.obj == "Pod x/a"
    assert err.field == field


def test_pod_init_containers_are_not_read():
    doc = pod_doc()
    doc["spec"]["initContainers"] = [{"ports": [{"containerPort": 9}]}]
    assert parse_object(doc, "f").ports == ()


# ------------------------------------------------------------------------------------------
# Nodes


def test_node_mapping():
    doc = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.7"},
                {"type": "InternalIP", "address": "192.168.0.11"},
                {"type": "InternalIP", "address": "fd00::11"},
            ]
        },
    }
    assert parse_object(doc, "f") == Node(
        "n1", (("zone", "a"),), ("10.244.1.0/24", "fd00:1::/64"), ("192.168.0.11", "fd00::11", "203.0.113.7")
    )


def test_node_bad_pod_cidr(tmp_path):
    err = load_error(tmp_path, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.0.0.0/99"]}})
    assert err.obj == "Node n1" and err.field == "spec.podCIDRs[0]"


def test_node_bad_address(tmp_path):
    doc = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "n1"}]}}
    assert load_error(tmp_path, doc).field == "status.addresses[0].address"


# ------------------------------------------------------------------------------------------
# Files, directories, formats


def test_multi_document_yaml_with_empty_documents(tmp_path):
    text = (
        "---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n"
        "---\n"
        "---\n"
        "# only a comment\n"
        "---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n"
        "status: {podIP: 10.0.0.5}\n"
        "---\n"
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}}\n"
    )
    cluster, warnings = load_paths([write(tmp_path, "all.yaml", text)])
    assert warnings == []
    assert list(cluster.namespaces) == ["x"]
    assert list(cluster.pods) == ["x/a"]
    pol = cluster.policies[(FORM_V1, "x", "deny")]
    assert pol.origin == str(tmp_path / "all.yaml")


def test_json_file(tmp_path):
    path = write(tmp_path, "p.json", netpol({"podSelector": {}, "egress": [{}]}))
    cluster, _ = load_paths([path])
    assert cluster.policies[(FORM_V1, "x", "allow-a")].policy_types == {INGRESS, EGRESS}


def test_list_kind_and_typed_lists(tmp_path):
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [ns_doc("x"), pod_doc("a"), netpol({"podSelector": {}})],
    }
    typed = {"apiVersion": "v1", "kind": "PodList", "items": [{"metadata": {"name": "b", "namespace": "x"}}]}
    cluster, warnings = load_paths([write(tmp_path, "list.json", doc), write(tmp_path, "pods.yaml", typed)])
    assert warnings == []
    assert set(cluster.pods) == {"x/a", "x/b"}
    assert set(cluster.namespaces) == {"x"}
    assert (FORM_V1, "x", "allow-a") in cluster.policies


def test_error_inside_a_list_item(tmp_path):
    doc = {"apiVersion": "v1", "kind": "List", "items": [netpol({"podSelector": {}, "ingress": [{"from": [{}]}]})]}
    err = load_error(tmp_path, doc)
    assert err.obj == "NetworkPolicy x/allow-a" and err.field == "spec.ingress[0].from[0]"


def test_directories_recurse_sorted_and_skip_other_files(tmp_path):
    write(tmp_path, "d/b.yaml", netpol({"podSelector": {"matchLabels": {"from": "b"}}}))
    write(tmp_path, "d/a.yml", netpol({"podSelector": {"matchLabels": {"from": "a"}}}))
    write(tmp_path, "d/sub/c.json", pod_doc("c"))
    write(tmp_path, "d/README.md", "not a manifest: [")
    write(tmp_path, "d/.hidden/x.yaml", "broken: [")
    cluster, warnings = load_paths([str(tmp_path / "d")])
    assert set(cluster.pods) == {"x/c"}
    # Sorted: a.yml before b.yaml, so b.yaml's definition wins and the duplicate is reported.
    pol = cluster.policies[(FORM_V1, "x", "allow-a")]
    assert pol.pod_selector.match_labels == (("from", "b"),)
    assert pol.origin.endswith("b.yaml")
    assert len(warnings) == 1 and "defined again" in warnings[0] and "a.yml" in warnings[0]


def test_explicit_file_is_read_whatever_its_suffix(tmp_path):
    cluster, _ = load_paths([write(tmp_path, "policy.txt", ns_doc("x"))])
    assert "x" in cluster.namespaces


def test_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all([ns_doc("x"), pod_doc("a")])))
    cluster, _ = load_paths(["-"])
    assert set(cluster.pods) == {"x/a"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(netpol({}))))
    cluster, _ = load_paths(["-"])
    assert cluster.policies[(FORM_V1, "x", "allow-a")].origin == "<stdin>"


def test_unknown_kinds_are_skipped_with_a_warning(tmp_path):
    docs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "x"}, "spec": {"bogus": 1}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "x"}},
        ns_doc("x"),
    ]
    path = write(tmp_path, "mixed.yaml", docs)
    cluster, warnings = load_paths([path])
    assert set(cluster.namespaces) == {"x"}
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{path}: ") and "Deployment" in warnings[0]
    assert "Service x/web" in warnings[1]
    _, warnings = load_documents([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}}], "c.yaml")
    assert warnings[0].startswith("c.yaml: skipped ClusterRole r ")


def test_parse_object_returns_none_for_unknown_kind():
    assert parse_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "f") is None


def test_non_object_document_is_an_error(tmp_path):
    err = load_error(tmp_path, "- 1\n- 2\n")
    assert "must be an object" in err.message


# ------------------------------------------------------------------------------------------
# load_documents into an existing cluster; helpers


def test_load_documents_adds_into_and_replaces_in_a_cluster():
    cluster, _ = load_documents([pod_doc("a", labels={"v": "1"}), ns_doc("x")], "one.yaml")
    again, warnings = load_documents([pod_doc("a", labels={"v": "2"}), pod_doc("b")], "two.yaml", cluster)
    assert again is cluster
    assert warnings == []  # replacing an object of an earlier load is an update, not a duplicate
    assert dict(cluster.pods["x/a"].labels) == {"v": "2"}
    assert set(cluster.pods) == {"x/a", "x/b"}
    assert set(cluster.namespaces) == {"x"}


def test_load_text():
    cluster, _ = load_text("kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n", "t.yaml")
    assert set(cluster.namespaces) == {"y"}


def test_object_key_describe_add_remove():
    pol = one_policy({}, api=API_BETA)
    pod = parse_object(pod_doc(), "f")
    assert object_key(pol) == ("policies", (FORM_BETA, "x", "allow-a"))
    assert object_key(pod) == ("pods", "x/a")
    assert object_key(Namespace("x")) == ("namespaces", "x")
    assert object_key(Node("n1")) == ("nodes", "n1")
    assert describe(pol) == "NetworkPolicy x/allow-a" and describe(pod) == "Pod x/a"
    cluster = Cluster()
    add_object(cluster, pol)
    add_object(cluster, pod)
    assert cluster.policies[(FORM_BETA, "x", "allow-a")] is pol
    assert remove_object(cluster, pod) and not remove_object(cluster, pod)
    assert cluster.pods == {}


def test_effective_policies_after_loading_alpha_and_beta():
    docs = [
        ns_doc("x", annotations={"net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "DefaultDeny"}}'}),
        ns_doc("y"),
        netpol({}, api=API_BETA, ns="x", name="b"),
        netpol({}, api=API_BETA, ns="y", name="b"),
        netpol({}, api=API_ALPHA, ns="y", name="a"),
    ]
    cluster, _ = load_documents(docs)
    keys = [p.key for p in cluster.effective_policies()]
    assert "x/b[v1beta1]" in keys
    assert "y/b[v1beta1]" not in keys and "y/a[v1alpha1]" not in keys
