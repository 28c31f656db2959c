"""The whole upstream e2e NetworkPolicy suite on a live lab in host mode: each node bridge
judges its own pods, programmed by its own agent (`sdnctl controller`), pods on both nodes,
real TCP and UDP traffic through VXLAN between the nodes; SCTP through ofproto/trace on the
real bridges. See tests/lab_harness.py."""

from __future__ import annotations

import pytest

from tests.e2e_cases import ALL_CASES
from tests.lab_harness import (
    check_external,
    check_new_pods,
    check_node_traffic,
    make_lab,
    replay_case,
)
from tests.lab_live import (
    check_live_commands_and_trace,
    check_spoofguard_drops_are_router_solicitations,
)

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("lab-host")]


@pytest.fixture(scope="module")
def lab():
    yield from make_lab("h", "host")


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_e2e_case(lab, case):
    replay_case(lab, case)


def test_new_pods_labels_and_deletes(lab):
    check_new_pods(lab)


def test_live_commands_find_the_lab_and_trace_every_pair(lab, monkeypatch):
    """After `make demo KEEP=1`: flows show/diff, status, policy status and trace --live find
    the lab's agents without --control; the live trace follows every pod pair across the
    tunnel and agrees with the evaluator."""
    check_live_commands_and_trace(lab, monkeypatch)


def test_what_the_spoof_guard_drops_before_any_probe(lab):
    check_spoofguard_drops_are_router_solicitations(lab)


def test_nodes_reach_their_own_pods_and_are_judged_elsewhere(lab):
    check_node_traffic(lab)


def test_the_external_host_in_and_out(lab):
    check_external(lab)
