"""The whole upstream e2e NetworkPolicy suite on a live lab in host mode: each node bridge
judges its own pods, programmed by its own agent (`sdnctl controller`), pods on both nodes,
real TCP and UDP traffic through VXLAN between the nodes; SCTP through ofproto/trace on the
real bridges. See tests/lab_harness.py."""

from __future__ import annotations

import pytest

from tests.e2e_cases import ALL_CASES
from tests.lab_harness import check_new_pods, make_lab, replay_case

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("lab-host")]


@pytest.fixture(scope="module")
def lab():
    yield from make_lab("h", "host")


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_e2e_case(lab, case):
    replay_case(lab, case)


def test_new_pods_labels_and_deletes(lab):
    check_new_pods(lab)
