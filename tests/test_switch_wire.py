"""flows.wire: our OpenFlow 1.3 bytes against os-ken's own serialisation, and against a real
ovs-vswitchd (install with our bytes, read back with `ovs-ofctl dump-flows` and with our own
flow stats decoder: the same Flow set). Errors the switch sends, standard and experimenter,
are decoded by name; a bundle with a rejected flow is discarded and changes nothing."""

from __future__ import annotations

import ipaddress
import struct

import os_ken.base.app_manager  # noqa: F401 - os-ken wants this imported first
import pytest
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from flows import wire
from flows.fields import FIELDS, FieldRef, format_mac
from flows.flow import (
    CT,
    Conjunction,
    Flow,
    GotoTable,
    InPort,
    Load,
    Match,
    Move,
    Output,
    parse_flow,
    parse_flows,
)
from sdn.compile import compile_cluster
from sdn.policy.manifests import load_documents, load_paths
from sdn.switch import channel, ofclient, reconcile
from tests.conftest import OvsFactory
from tests.e2e_cases import ALL_CASES, replay

DP = ProtocolDesc(ofp.OFP_VERSION)

# Flows that use every encoding path: masks, IPv6, ARP, conntrack, partial loads, moves,
# ct with nested exec, IN_PORT, shared clause flows, tunnel destination.
TRICKY = [parse_flow(t) for t in [
    "cookie=0x5d02000000000001,table=30,priority=59999,ip,nw_src=10.1.0.0/16 actions=conjunction(7,1/3),conjunction(9,2/2)",
    "cookie=0x5d03000000000000,table=40,priority=100,tcp,tp_dst=0x400/0xfc00 actions=conjunction(7,3/3)",
    "cookie=0x5d03000000000000,table=40,priority=100,udp,tp_dst=53 actions=conjunction(8,2/2)",
    "cookie=0x5d03000000000000,table=40,priority=100,sctp,tp_dst=9000 actions=conjunction(8,1/2)",
    "cookie=0x5d02000000000002,table=40,priority=60000,conj_id=4294967295 actions=load:0xffffffff->NXM_NX_REG3[],goto_table:50",
    "cookie=0x5d01000000000000,table=10,priority=200,ipv6,in_port=12,dl_src=0a:58:0a:00:00:0c,ipv6_src=fd00::c actions=goto_table:20",
    "cookie=0x5d01000000000000,table=40,priority=7,ipv6,ipv6_dst=fd00:10::/64 actions=goto_table:41",
    "cookie=0x5d01000000000000,table=10,priority=200,arp,in_port=3,dl_src=0a:58:0a:00:00:03,arp_spa=10.0.0.3,arp_sha=0a:58:0a:00:00:03 actions=goto_table:11",
    "cookie=0x5d01000000000000,table=11,priority=200,arp,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:0a:58:a9:fe:00:01->eth_src,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:0a:58:a9:fe:00:01->arp_sha,move:NXM_OF_ARP_TPA[]->NXM_NX_REG4[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],move:NXM_NX_REG4[]->NXM_OF_ARP_SPA[],IN_PORT",
    "cookie=0x5d01000000000000,table=20,priority=200,ip actions=ct(table=21,zone=1)",
    "cookie=0x5d01000000000000,table=21,priority=200,ct_state=+inv+trk actions=drop",
    "cookie=0x5d01000000000000,table=21,priority=190,ct_state=-new+est-inv+trk actions=goto_table:60",
    "cookie=0x5d01000000000000,table=50,priority=200,ip,ct_state=+new+trk actions=ct(commit,zone=1,exec(move:NXM_NX_REG2[]->NXM_NX_CT_LABEL[0..31],move:NXM_NX_REG3[]->NXM_NX_CT_LABEL[32..63])),goto_table:60",
    "cookie=0x5d01000000000000,table=60,priority=100,ip,nw_dst=10.244.2.0/24 actions=load:0xc0a8320c->NXM_NX_TUN_IPV4_DST[],output:1",
    "cookie=0x5d01000000000000,table=60,priority=110,ip,in_port=1,nw_dst=10.244.2.0/24 actions=IN_PORT",
    "cookie=0x5d01000000000000,table=60,priority=300,ip,reg0=0x1 actions=load:0x5->NXM_NX_REG5[8..15],output:2",
    "cookie=0x5d01000000000000,table=60,priority=50,reg1=0x10/0xf0,dl_dst=0a:00:00:00:00:00/ff:00:00:00:00:00 actions=output:3",
    "cookie=0x5d01000000000000,table=60,priority=40,ct_mark=0x1,ct_zone=1 actions=drop",
    "cookie=0x5d01000000000000,table=60,priority=30,ct_label=0x1/0x1 actions=drop",
    "cookie=0x5d01000000000000,table=0,priority=0 actions=drop",
]]


# ---- os-ken's serialisation of the same flows ------------------------------------------------

_OSKEN_MATCH = {"in_port": "in_port", "dl_src": "eth_src", "dl_dst": "eth_dst", "dl_type": "eth_type",
                "nw_proto": "ip_proto", "nw_src": "ipv4_src", "nw_dst": "ipv4_dst", "ipv6_src": "ipv6_src",
                "ipv6_dst": "ipv6_dst", "arp_op": "arp_op", "arp_spa": "arp_spa", "arp_tpa": "arp_tpa",
                "arp_sha": "arp_sha", "arp_tha": "arp_tha", "ct_state": "ct_state", "ct_zone": "ct_zone",
                "ct_mark": "ct_mark", "ct_label": "ct_label", "conj_id": "conj_id", "tun_dst": "tun_ipv4_dst",
                "tun_id": "tunnel_id", **{f"reg{i}": f"reg{i}" for i in range(16)}}


def _osken_value(name: str, value: int):
    kind = FIELDS[name].kind
    if kind == "mac":
        return format_mac(value)
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(value))
    if kind == "ipv6":
        return str(ipaddress.IPv6Address(value))
    return value


def osken_match(flow: Flow) -> parser.OFPMatch:
    proto = {6: "tcp", 17: "udp", 132: "sctp"}.get(getattr(flow.get("nw_proto"), "value", None))
    kw = {}
    for m in flow.match:
        name = f"{proto}_{m.field[3:]}" if m.field in ("tp_src", "tp_dst") else _OSKEN_MATCH[m.field]
        v = _osken_value(m.field, m.value)
        kw[name] = v if m.mask is None else (v, _osken_value(m.field, m.mask))
    return parser.OFPMatch(**kw)


def _ref_name(ref: FieldRef) -> str:
    return _OSKEN_MATCH[ref.field]


def osken_action(a):
    if isinstance(a, Output):
        return parser.OFPActionOutput(a.port, 0)
    if isinstance(a, InPort):
        return parser.OFPActionOutput(ofp.OFPP_IN_PORT, 0)
    if isinstance(a, Conjunction):
        return parser.NXActionConjunction(a.clause - 1, a.n_clauses, a.id)
    if isinstance(a, Move):
        return parser.NXActionRegMove(_ref_name(a.src), _ref_name(a.dst), a.src.width, a.src.start, a.dst.start)
    if isinstance(a, Load):
        if a.dst.start == 0 and a.dst.end is None:
            return parser.OFPActionSetField(**{_ref_name(a.dst): _osken_value(a.dst.field, a.value)})
        return parser.NXActionRegLoad((a.dst.start << 6) | (a.dst.width - 1), _ref_name(a.dst), a.value)
    if isinstance(a, CT):
        return parser.NXActionCT(nicira_ext.NX_CT_F_COMMIT if a.commit else 0, "", a.zone,
                                 nicira_ext.NX_CT_RECIRC_NONE if a.table is None else a.table, 0,
                                 [osken_action(x) for x in a.exec])
    raise AssertionError(a)


def osken_flow_mod(flow: Flow, xid: int) -> bytes:
    acts = [osken_action(a) for a in flow.actions if not isinstance(a, GotoTable)]
    ins = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts)] if acts else []
    ins += [parser.OFPInstructionGotoTable(a.table) for a in flow.actions if isinstance(a, GotoTable)]
    msg = parser.OFPFlowMod(DP, flow.cookie, 0, flow.table, ofp.OFPFC_ADD, 0, 0, flow.priority,
                            ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, osken_match(flow), ins)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def decode_flow_mod(data: bytes) -> Flow:
    """Our decoder on a whole OFPT_FLOW_MOD."""
    cookie, = struct.unpack_from("!Q", data, 8)
    table, priority = data[24], struct.unpack_from("!H", data, 30)[0]
    fields, offset = wire.decode_match(data, 48)
    return Flow(table, priority, fields, wire.decode_instructions(data[offset:]), cookie)


def osken_parsed(data: bytes) -> tuple:
    """os-ken's parser on a flow_mod body: (match fields, instructions), order-insensitive."""
    match = parser.OFPMatch.parser(data, 48)
    mlen = struct.unpack_from("!H", data, 50)[0]
    offset = 48 + mlen + (-mlen % 8)
    ins = []
    while offset < len(data):
        i = parser.OFPInstruction.parser(data, offset)
        ins.append(i.to_jsondict())
        offset += i.len
    fields = sorted(str(f) for f in match.to_jsondict()["OFPMatch"]["oxm_fields"])
    return fields, ins


def _program_flows() -> list[Flow]:
    out = []
    cluster, _ = load_paths(["examples"])
    for program in compile_cluster(cluster).programs.values():
        out += program.flows
    for case in ALL_CASES[::4]:
        for _, _, docs in replay(case):
            for program in compile_cluster(load_documents(docs)[0]).programs.values():
                out += program.flows
    return sorted(set(out))


ALL_FLOWS = TRICKY + _program_flows()


@pytest.mark.parametrize("flow", TRICKY, ids=lambda f: f.render(cookie=False)[:60])
def test_tricky_flows_agree_with_osken(flow):
    ours = wire.flow_mod(flow, wire.OFPFC_ADD, 7)
    theirs = osken_flow_mod(flow, 7)
    assert decode_flow_mod(ours) == flow
    assert decode_flow_mod(theirs) == flow
    assert osken_parsed(ours) == osken_parsed(theirs)


def test_compiled_programs_agree_with_osken():
    assert len(ALL_FLOWS) > 250
    for flow in ALL_FLOWS:
        ours = wire.flow_mod(flow, wire.OFPFC_ADD, 9)
        theirs = osken_flow_mod(flow, 9)
        assert decode_flow_mod(ours) == flow, flow
        assert decode_flow_mod(theirs) == flow, flow
        assert osken_parsed(ours) == osken_parsed(theirs), flow
        if len(flow.match) <= 1:  # one field: no ordering freedom, so the bytes are equal
            assert ours == theirs, flow


def test_bundle_and_stats_messages_are_byte_equal_to_osken():
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    for ctrl in (ofp.ONF_BCT_OPEN_REQUEST, ofp.ONF_BCT_COMMIT_REQUEST, ofp.ONF_BCT_DISCARD_REQUEST):
        m = parser.ONFBundleCtrlMsg(DP, 77, ctrl, flags, [])
        m.set_xid(5)
        m.serialize()
        assert wire.bundle_ctrl(5, 77, ctrl, flags) == bytes(m.buf)
    flow = TRICKY[0]
    fm = parser.OFPFlowMod(DP, flow.cookie, 0, flow.table, ofp.OFPFC_ADD, 0, 0, flow.priority, ofp.OFP_NO_BUFFER,
                           ofp.OFPP_ANY, ofp.OFPG_ANY, 0, osken_match(flow),
                           [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                         [osken_action(a) for a in flow.actions])])
    add = parser.ONFBundleAddMsg(DP, 77, flags, fm, [])
    add.set_xid(6)
    add.serialize()
    assert wire.bundle_add(osken_flow_mod(flow, 6), 77, flags) == bytes(add.buf)
    assert wire.bundled_flow_mod(flow, wire.OFPFC_ADD, 6, 77, flags)[24:48] == bytes(add.buf)[24:48]
    assert wire.bundle_add(wire.flow_mod(flow, wire.OFPFC_ADD, 6), 77, flags) == \
        wire.bundled_flow_mod(flow, wire.OFPFC_ADD, 6, 77, flags)
    req = parser.OFPFlowStatsRequest(DP, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0x5d << 56, 0xff << 56,
                                     parser.OFPMatch())
    req.set_xid(8)
    req.serialize()
    assert wire.flow_stats_request(8, wire.OFPTT_ALL, 0x5d << 56, 0xff << 56) == bytes(req.buf)
    d = parser.OFPFlowMod(DP, 0x1234, 0xFFFFFFFFFFFFFFFF, ofp.OFPTT_ALL, ofp.OFPFC_DELETE, 0, 0, 0,
                          ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, parser.OFPMatch(), [])
    d.set_xid(9)
    d.serialize()
    assert wire.delete_by_cookie(0x1234, 9) == bytes(d.buf)


def test_errors_decode_by_name():
    # standard: OFPET_BAD_MATCH / OFPBMC_BAD_PREREQ, carrying the failed request
    request = wire.flow_mod(TRICKY[1], wire.OFPFC_ADD, 41)
    e = parser.OFPErrorMsg(DP, ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ, request)
    e.set_xid(41)
    e.serialize()
    err = wire.decode_error(bytes(e.buf))
    assert (err.name, err.xid, err.request_type) == ("OFPBMC_BAD_PREREQ", 41, wire.OFPT_FLOW_MOD)
    assert err.request == request
    # Nicira experimenter error (OpenFlow 1.2+ numbering) and ONF bundle error
    for experimenter, code, name in ((wire.NX_VENDOR_ID, 15, "NXBAC_BAD_CONJUNCTION"),
                                     (wire.ONF_EXPERIMENTER, 2313, "OFPBFC_MSG_FAILED"),
                                     (wire.ONF_EXPERIMENTER, 2302, "OFPBFC_BAD_ID")):
        e = parser.OFPErrorExperimenterMsg(DP, ofp.OFPET_EXPERIMENTER, code, experimenter, b"x" * 16)
        e.set_xid(3)
        e.serialize()
        err = wire.decode_error(bytes(e.buf))
        assert err.name.startswith(name) and err.experimenter == experimenter
    assert "unknown" not in wire.decode_error(
        struct.pack("!BBHIHH", 4, 1, 12, 1, 5, 3)).name  # OFPET_FLOW_MOD_FAILED / OVERLAP
    assert wire.decode_error(struct.pack("!BBHIHH", 4, 1, 12, 1, 5, 3)).name == "OFPFMFC_OVERLAP"


def test_unencodable_flows_are_refused_locally():
    with pytest.raises(wire.WireError, match="tp_dst needs nw_proto"):
        wire.flow_mod(Flow(40, 1, (Match("dl_type", 0x800), Match("tp_dst", 80))), wire.OFPFC_ADD, 1)
    huge = Flow(40, 1, (Match("dl_type", 0x800), Match("nw_src", 1)),
                tuple(Conjunction(i, 1, 2) for i in range(1, 5000)))
    with pytest.raises(wire.WireError, match="too large"):
        wire.flow_mod(huge, wire.OFPFC_ADD, 1)


# ---- a real ovs-vswitchd -------------------------------------------------------------------

@pytest.fixture(scope="module")
def ovs(tmp_path_factory):
    factory = OvsFactory(tmp_path_factory)
    try:
        yield factory(bridges={"br0": 1})
    finally:
        factory.close()


@pytest.fixture
def switch(ovs):
    ovs.del_flows("br0")
    with ofclient.DirectChannel(f"unix:{ovs.mgmt('br0')}") as ch:
        yield ch




@pytest.mark.ovs
def test_installed_with_our_bytes_dumps_and_reads_back_identically(ovs, switch):
    flows = sorted(set(ALL_FLOWS), key=lambda f: f.key)
    unique = list({f.key: f for f in flows}.values())  # one flow per switch key
    result = channel.apply_plan(switch, reconcile.plan([], unique))
    assert result.committed, result.describe_failure()
    assert set(parse_flows(ovs.dump_flows("br0"))) == set(unique)
    installed = channel.read_flows(switch)
    assert {i.flow for i in installed} == set(unique)
    assert all(not i.error and i.packets == 0 for i in installed)
    assert reconcile.plan(installed, unique).empty


@pytest.mark.ovs
def test_foreign_flows_are_read_and_removed(ovs, switch):
    ours = TRICKY[:3]
    assert channel.apply_plan(switch, reconcile.plan([], ours)).committed
    ovs.add_flows("br0", ["cookie=0x1234,table=0,priority=5,dl_vlan=7 actions=NORMAL",
                          "cookie=0x5d02000000abcdef,table=40,priority=9,ip actions=NORMAL",
                          f"cookie={TRICKY[0].cookie:#x},table=30,priority=3,dl_vlan=8 actions=drop"])
    installed = channel.read_flows(switch)
    undecoded = [i for i in installed if i.error]
    assert sorted(i.table for i in undecoded) == [0, 30]  # dl_vlan is not a field we use
    assert all(i.flow is None for i in undecoded)
    plan = reconcile.plan(installed, ours)
    assert plan.delete_cookies == (0x1234, 0x5d02000000abcdef)
    assert [i.table for i in plan.delete_raw] == [30]  # a known cookie: deleted by its raw match
    assert channel.apply_plan(switch, plan).committed
    assert set(parse_flows(ovs.dump_flows("br0"))) == set(ours)


@pytest.mark.ovs
def test_a_rejected_flow_discards_the_whole_bundle(ovs, switch):
    before = TRICKY[:4]
    assert channel.apply_plan(switch, reconcile.plan([], before)).committed
    dump_before = ovs.dump_flows("br0")
    bad = Flow(30, 100, (Match("dl_type", 0x800), Match("nw_src", 5)), (Conjunction(3, 1, 1),),
               0x5d03000000000000)  # n must be >= 2: the switch refuses it
    good = Flow(30, 101, (Match("dl_type", 0x800),), (GotoTable(31),), 0x5d01000000000000)
    result = channel.apply_plan(switch, reconcile.plan(before, before[1:] + [good, bad]))
    assert not result.committed and result.discarded
    rej = result.rejections[0]
    assert rej.error.name.startswith("NXBAC_BAD_CONJUNCTION") and rej.op.flow == bad
    assert "conjunction(3,1/1)" in str(rej)
    assert ovs.dump_flows("br0") == dump_before  # nothing changed, the good flow included
    # the channel is still usable
    assert channel.apply_plan(switch, reconcile.plan(before, before + [good])).committed


@pytest.mark.ovs
def test_table_full_at_commit_names_the_flow(ovs, switch):
    """A limit OVS checks only when the bundle commits: the error names the flow that failed."""
    ovs.vsctl("--", "--id=@ft", "create", "Flow_Table", "flow_limit=2", "overflow_policy=refuse",
              "--", "set", "Bridge", "br0", "flow_tables:45=@ft")
    try:
        flows = [Flow(45, 10 + i, (Match("dl_type", 0x800), Match("nw_dst", i + 1)), (), 0x5d04000000000000 + i)
                 for i in range(3)]
        result = channel.apply_plan(switch, reconcile.plan([], flows))
        assert not result.committed
        names = [r.error.name for r in result.rejections]
        assert "OFPFMFC_TABLE_FULL" in names
        assert any(n.startswith("OFPBFC_MSG_FAILED") for n in names)  # the ONF error for the commit
        assert any(r.op is not None and r.op.flow in flows for r in result.rejections)
        assert ovs.dump_flows("br0", "table=45") == ""
    finally:
        ovs.vsctl("clear", "Bridge", "br0", "flow_tables")


@pytest.mark.ovs
def test_bulk_install_in_one_bundle(ovs, switch):
    flows = [Flow(30, 100, (Match("dl_type", 0x800), Match("nw_src", int(ipaddress.IPv4Address("11.0.0.0")) + i)),
                  (Conjunction(i % 1000 + 1, 1, 2),), 0x5d03000000000000) for i in range(20000)]
    result = channel.apply_plan(switch, reconcile.plan([], flows))
    assert result.committed and result.messages == 20000
    installed = channel.read_flows(switch)
    assert len(installed) == 20000 and reconcile.plan(installed, flows).empty
