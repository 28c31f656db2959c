"""The whole upstream e2e NetworkPolicy suite on a live lab in fabric mode: node bridges only
guard and deliver and send every pod packet to one fabric switch, which judges every rule with
the same rule tables (the design card's fabric-level enforcement); one agent per node bridge
and one for the fabric switch. Real TCP and UDP traffic, pods on both nodes; SCTP through
ofproto/trace on the real bridges. See tests/lab_harness.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdn.lab import nodes as N
from sdn.layout import FABRIC_UPLINK_OFPORT
from sdn.ovs.instance import OvsInstance
from tests.e2e_cases import ALL_CASES, base_cluster
from tests.e2e_model import deny_ingress
from tests.lab_harness import (
    check_external,
    check_new_pods,
    check_node_traffic,
    make_lab,
    replay_case,
)
from tests.lab_live import check_live_commands_and_trace

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("lab-fabric")]


@pytest.fixture(scope="module")
def lab():
    yield from make_lab("f", "fabric")


def test_policy_tables_are_on_the_fabric_switch(lab):
    """The rule tables (30, 31, 40, 41) and conntrack are on the fabric switch only; node
    bridges guard, deliver and send every pod packet up their fabric link."""
    record = lab.lab.state.load()
    lab.goto(base_cluster() + [deny_ingress("x")])
    fab = record["fabric"]
    tables = _tables(OvsInstance(Path(fab["rundir"]), netns=fab["netns"]).dump_flows(N.FABRIC_BRIDGE))
    assert {20, 21, 30, 31, 40, 41, 50} <= tables
    for info in record["nodes"].values():
        flows = OvsInstance(Path(info["rundir"]), netns=info["netns"]).dump_flows(N.BRIDGE)
        assert _tables(flows) & {20, 21, 30, 31, 40, 41, 50} == set(), flows
        assert f"output:{FABRIC_UPLINK_OFPORT}" in flows
    lab.goto(base_cluster())


def _tables(dump: str) -> set[int]:
    return {int(m) for m in re.findall(r"table=(\d+)", dump)} | ({0} if dump.strip() else set())


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.name)
def test_e2e_case(lab, case):
    replay_case(lab, case)


def test_new_pods_labels_and_deletes(lab):
    check_new_pods(lab)


def test_live_commands_find_the_lab_and_trace_every_pair(lab, monkeypatch):
    """After `make demo KEEP=1`: flows show/diff, status, policy status and trace --live find
    the lab's agents without --control; the live trace follows every pod pair across the
    fabric switch and agrees with the evaluator."""
    check_live_commands_and_trace(lab, monkeypatch)


def test_nodes_reach_their_own_pods_and_are_judged_elsewhere(lab):
    """Each node bridge's gateway port (ofport 3: 2 is its fabric link): what it gives goes up
    to the fabric switch, which lets a node reach its own pods and judges the rest."""
    check_node_traffic(lab)


def test_the_external_host_in_and_out(lab):
    check_external(lab)
