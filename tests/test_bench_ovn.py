"""The OVN comparison of the benchmarks (benchmarks/ovn.py) end to end on the example cluster:
real NB/SB ovsdb-servers, ovn-northd and ovn-controller driving a netdev br-int, next to our
bridge on another private ovs-vswitchd. Both sides install the policies, ofproto/trace on both
bridges gives the semantic evaluator's verdict for every sampled pod pair, and label flips
reach both switches; the NB translation is checked on its own first."""

from __future__ import annotations

import os

import pytest

from benchmarks import ovn_nb as NB
from benchmarks.ovn import small_case, unavailable
from flows.ir import INGRESS, Bridge, Isolation, PodPort, PortRange, Rule, RuleId
from sdn.ovs.instance import netns_list

pytestmark = [pytest.mark.ovs, pytest.mark.xdist_group("ovn")]  # OVN daemons: one worker


def _bridge() -> Bridge:
    return Bridge("br", (PodPort("x/a", 10, "0a:58:0a:00:00:02", ("10.0.0.2",)),
                         PodPort("x/b", 11, "0a:58:0a:00:00:03", ("10.0.0.3",))))


def test_translation_is_ovn_kubernetes_shaped():
    rid = RuleId("x/web", INGRESS, 0)
    same_peers = RuleId("x/api", INGRESS, 0)
    rules = [Rule(rid, frozenset({"10.0.0.2", "10.9.9.9"}), ("10.1.0.0/24", "10.2.0.5/32"),
                  (PortRange("tcp", 80), PortRange("tcp", 443), PortRange("tcp", 9000, 9099),
                   PortRange("udp", 53))),
             Rule(same_peers, frozenset({"10.0.0.3"}), ("10.1.0.0/24", "10.2.0.5/32"), None),
             Rule(RuleId("x/far", INGRESS, 0), frozenset({"10.9.9.9"}), None, None)]  # no local target
    st = NB.translate(_bridge(), rules, [Isolation(INGRESS, "10.0.0.2", ("x/web",))])
    assert st.ports == {"x_a": "0a:58:0a:00:00:02 10.0.0.2", "x_b": "0a:58:0a:00:00:03 10.0.0.3"}
    assert list(st.address_sets.values()) == [frozenset({"10.1.0.0/24", "10.2.0.5/32"})]  # shared
    (aset,) = st.address_sets
    assert len(st.port_groups) == 3  # two policies + x's ingress default deny
    matches = sorted((a.priority, a.action, a.match) for acls in st.acls.values() for a in acls)
    web = next(pg for pg, ports in st.port_groups.items()
               if ports == {"x_a"} and any(a.action == "allow-related" for a in st.acls[pg]))
    assert (1001, "allow-related", f"outport == @{web} && ip4.src == ${aset} && "
            "(tcp.dst == {80, 443} || (tcp.dst >= 9000 && tcp.dst <= 9099))") in matches
    assert (1001, "allow-related", f"outport == @{web} && ip4.src == ${aset} && udp.dst == 53") in matches
    deny = [m for m in matches if m[1] == "drop"]
    assert len(deny) == 1 and deny[0][0] == 1000
    assert sum(1 for m in matches if m[1] == "allow" and "arp" in m[2]) == 1
    # a label change that grows the peer set mutates the address set in place
    grown = NB.translate(_bridge(), [Rule(r.id, r.targets, (*r.peers, "10.3.0.1/32") if r.peers else r.peers,
                                          r.ports) for r in rules],
                         [Isolation(INGRESS, "10.0.0.2", ("x/web",))])
    ops, recs = NB.diff_ops(st, grown, NB.Uuids())
    assert [(o["op"], o["table"]) for o in ops] == [("mutate", "Address_Set")] and not recs


def test_ovn_side_by_side_small_case():
    why = unavailable()
    assert why is None, f"the OVN comparison cannot run: {why} (`make test` installs ovn-central ovn-host)"
    r = small_case(events=4, pairs=10, rounds=1)
    assert r["pods_on_node"] >= 2
    ours, ovn = r["ours"], r["ovn"]
    assert ours["flows"] > ours["flows_pods_only"] > 0  # the rules reached our bridge
    assert ours["flows"] == ours["flows_by_kind"]["total"]
    assert ovn["flows"] > ovn["flows_pods_only"] > 0  # ovn-controller installed the ACLs
    assert ovn["flows_by_stage"]["acl_stages"] > 0
    assert ours["seconds"] > 0 and ovn["seconds"] > 0
    v = r["verdicts"]
    assert v["probes"] >= 10 and v["allowed"] and v["denied"]
    assert v["disagree"] == 0, v["disagreements"]
    inc = r["incremental"]
    assert inc["n"] >= 2, inc
    assert r["ours_in_sync_after_events"]
    tag = f"{os.getpid() % 100000}x"
    assert not [n for n in netns_list() if n.startswith((f"sdnovn{tag}", f"sdnour{tag}"))]  # torn down
