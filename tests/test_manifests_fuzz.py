"""The manifest loader under hostile input: arbitrary YAML/JSON-like documents and mutated
valid manifests are loaded or refused with ManifestError, never anything else; `sdnctl
compile` on such files exits 0 or 2 with one `error:` line and no traceback; an error quotes
an offending value only in part (a 400 KB value once filled the terminal), still naming file,
object and field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdn.policy.manifests import ManifestError, load_documents, load_paths, load_text

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = yaml.safe_load_all((REPO / "examples" / "policies.yaml").read_text())
VALID = [d for d in EXAMPLES if d] + [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"ns": "x"}}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
     "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
         {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"}]}]},
     "status": {"podIP": "10.244.1.2"}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"},
     "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}]}},
]

# Scalars the API's JSON and YAML can carry, and some that only YAML can (dates, binary,
# huge and odd numbers).
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["TCP", "UDP", "SCTP", "Ingress", "Egress", "In", "NotIn", "Exists", "10.0.0.0/8",
                     "10.0.0.1", "::/0", "300.1.1.1/40", "x", "", "-", "serve-80-tcp", "v1",
                     "networking.k8s.io/v1", "NetworkPolicy", "Pod", "Namespace", "Node", "List"]),
    st.dates(), st.binary(max_size=8))
KEYS = ["apiVersion", "kind", "metadata", "name", "namespace", "labels", "spec", "podSelector", "ingress",
        "egress", "from", "to", "ports", "port", "endPort", "protocol", "ipBlock", "cidr", "except",
        "namespaceSelector", "matchLabels", "matchExpressions", "key", "operator", "values", "policyTypes",
        "items", "status", "podIP", "podIPs", "ip", "nodeName", "containers", "containerPort", "annotations"]
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=5)),
                      max_leaves=25)
documents = st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=6))


def _loads_or_refuses(docs: list) -> None:
    try:
        load_documents(docs, "<fuzz>")
    except ManifestError as e:
        assert str(e).startswith("<fuzz>") and len(str(e)) < 2000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, max_size=4))
def test_arbitrary_documents_load_or_raise_manifest_error(docs):
    _loads_or_refuses(docs)


def _paths(doc, at=()):
    """Every path into a document (dict keys, list indexes)."""
    yield at
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, at + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, at + (i,))


@st.composite
def mutated(draw):
    """A valid manifest with a few places replaced, dropped or duplicated."""
    docs = copy.deepcopy(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=4)))
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, len(docs) - 1))
        places = [p for p in _paths(docs[n]) if p]
        if not places:
            docs[n] = draw(values)
            continue
        path = draw(st.sampled_from(places))
        parent = docs[n]
        for step in path[:-1]:
            parent = parent[step]
        how = draw(st.sampled_from(["replace", "drop", "wrap"]))
        if how == "drop":
            del parent[path[-1]]
        elif how == "wrap":
            parent[path[-1]] = [parent[path[-1]], parent[path[-1]]]
        else:
            parent[path[-1]] = draw(values)
    return docs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_valid_manifests_load_or_raise_manifest_error(docs):
    _loads_or_refuses(docs)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]:-,'\"&*!|>#%@` \n\tabk0")), max_size=60))
def test_arbitrary_text_loads_or_raises_manifest_error(text):
    for origin in ("<fuzz>",):
        try:
            load_text(text, origin)
        except ManifestError as e:
            assert str(e).startswith(origin)


def _fuzzed_files(tmp: Path) -> list[Path]:
    """A few files a fuzzer found worth keeping: every kind of brokenness the loader meets."""
    docs = {
        "scalars.yaml": "- 1\n- 2.5\n- 2020-01-01\n",
        "not-a-doc.json": "[1, {\"kind\": null}]",
        "binary.yaml": "apiVersion: !!binary aGVsbG8=\nkind: Pod\n",
        "date-name.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: 2020-01-01}\n",
        "anchors.yaml": "a: &x [*x]\n",
        "nested-list.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [[{"kind": "Pod"}]]}),
        "huge-int.yaml": yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                         "metadata": {"name": "p", "namespace": "x"},
                                         "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 2**80}]}]}}),
        "truncated.yaml": (REPO / "examples" / "policies.yaml").read_text()[:700],
        "tab.yaml": "kind:\tPod\n\t- x\n",
        "keys.yaml": "? [a, b]\n: c\n",
    }
    out = []
    for name, text in docs.items():
        (tmp / name).write_text(text)
        out.append(tmp / name)
    return out


def test_sdnctl_compile_on_fuzzed_files_exits_cleanly(tmp_path):
    for path in _fuzzed_files(tmp_path):
        out = subprocess.run([sys.executable, "-m", "sdn.cli", "compile", "-f", str(path)],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode in (0, 2), (path.name, out.returncode, out.stderr)
        assert "Traceback" not in out.stderr, (path.name, out.stderr)
        if out.returncode == 2:
            assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, (path.name, out.stderr)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(docs=st.one_of(mutated(), st.lists(documents, max_size=3)), as_json=st.booleans())
def test_sdnctl_compile_on_generated_files_never_shows_a_traceback(tmp_path, docs, as_json):
    from click.testing import CliRunner

    from sdn.cli import main
    path = tmp_path / ("fuzz.json" if as_json else "fuzz.yaml")
    if as_json:
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, default=str))
    else:
        path.write_text(yaml.safe_dump_all(docs))
    result = CliRunner().invoke(main, ["-q", "compile", "-f", str(path)])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


BIG = "a" * 400_000


@pytest.mark.parametrize("where", ["label value", "cidr", "protocol", "name", "key"])
def test_an_error_quotes_a_huge_value_only_in_part(tmp_path, where):
    pol = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "p", "namespace": "x"}, "spec": {"podSelector": {}}}
    field = {"label value": "spec.podSelector.matchLabels.app", "cidr": "spec.ingress[0].from[0].ipBlock.cidr",
             "protocol": "spec.ingress[0].ports[0].protocol", "name": "metadata.name",
             "key": "spec.podSelector.matchLabels"}[where]
    if where == "label value":
        pol["spec"]["podSelector"] = {"matchLabels": {"app": BIG}}
    elif where == "cidr":
        pol["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": BIG}}]}]
    elif where == "protocol":
        pol["spec"]["ingress"] = [{"ports": [{"protocol": BIG}]}]
    elif where == "name":
        pol["metadata"]["name"] = BIG
    else:
        pol["spec"]["podSelector"] = {"matchLabels": {BIG: "x"}}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(pol))
    with pytest.raises(ManifestError) as info:
        load_paths([str(path)])
    text = str(info.value)
    assert len(text) < 1000, len(text)
    assert text.startswith(f"{path}: NetworkPolicy x/") and field in text, text
    assert "400000 characters" in text, text
    out = subprocess.run([sys.executable, "-m", "sdn.cli", "compile", "-f", str(path)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and len(out.stderr) < 1200 and "Traceback" not in out.stderr, out.stderr[:2000]
