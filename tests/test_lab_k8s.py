"""The upstream e2e NetworkPolicy suite through a real Kubernetes control plane
(`sdnctl lab up --kubernetes`): every object is written to kube-apiserver, pods are placed by
kube-scheduler where they name no node and started by each node's kubelet stand-in through the
installed CNI plugin, and each node's agent (deploy/'s DaemonSet command, its ServiceAccount)
learns everything by watching. Real TCP and UDP between the nodes; SCTP through ofproto/trace.
extensions/v1beta1 cases stay in file mode: no current API server serves that version."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sdn.lab.lab import LabError
from tests.e2e_cases import ALL_CASES, base_cluster, replay
from tests.lab_harness import check_new_pods, make_lab, replay_case

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("lab-k8s")]


def _uses_beta(case) -> bool:
    return any(d.get("apiVersion") == "extensions/v1beta1" for _, _, docs in replay(case) for d in docs)


K8S_CASES = [c for c in ALL_CASES if not _uses_beta(c)]


@pytest.fixture(scope="module")
def lab():
    yield from make_lab("k", "host", kubernetes=True)


def test_the_beta_cases_are_the_only_ones_left_out():
    left = [c.name for c in ALL_CASES if c not in K8S_CASES]
    assert left and all("beta" in n.lower() or "1.3" in n or "legacy" in n.lower() for n in left), left


@pytest.mark.parametrize("case", K8S_CASES, ids=lambda c: c.name)
def test_e2e_case(lab, case):
    replay_case(lab, case)


def test_new_pods_labels_and_deletes(lab):
    check_new_pods(lab)
