"""The upstream Kubernetes e2e NetworkPolicy suite (test/e2e/network/netpol) as our own data.

`ALL_CASES` holds every case: the upstream tests restated (`tests.e2e_upstream`), then our own
on the same model, the 2016 policy forms and the spec points upstream leaves implicit
(`tests.e2e_extra`). The model, the case vocabulary and the replay helpers live in
`tests.e2e_model` and are re-exported here, so a consumer needs only this module:

    for case in ALL_CASES:
        for index, step, docs in replay(case):      # docs: the manifests in force
            cluster, _ = load_documents(docs)
            for probe in step.probes:
                want = expected_matrix(probe, pod_keys())   # {("x/a", "y/b"): bool, ...}

Expectations are written by hand, never computed by the evaluator under test.
"""

from __future__ import annotations

from tests.e2e_extra import LEGACY_CASES, SPEC_CASES
from tests.e2e_model import (
    NAMESPACES,
    NODES,
    POD_NAMES,
    SERVED_PORTS,
    SERVED_PROTOCOLS,
    E2ECase,
    Probe,
    Step,
    apply_step,
    base_cluster,
    doc_identity,
    expected_matrix,
    node_of,
    pod_ip,
    pod_keys,
    replay,
)
from tests.e2e_upstream import UPSTREAM_CASES

ALL_CASES: list[E2ECase] = [*UPSTREAM_CASES, *SPEC_CASES, *LEGACY_CASES]

CASES_BY_NAME: dict[str, E2ECase] = {c.name: c for c in ALL_CASES}
if len(CASES_BY_NAME) != len(ALL_CASES):
    raise AssertionError("two e2e cases share a name")

__all__ = [
    "ALL_CASES",
    "CASES_BY_NAME",
    "LEGACY_CASES",
    "NAMESPACES",
    "NODES",
    "POD_NAMES",
    "SERVED_PORTS",
    "SERVED_PROTOCOLS",
    "SPEC_CASES",
    "UPSTREAM_CASES",
    "E2ECase",
    "Probe",
    "Step",
    "apply_step",
    "base_cluster",
    "doc_identity",
    "expected_matrix",
    "node_of",
    "pod_ip",
    "pod_keys",
    "replay",
]
