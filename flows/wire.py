"""Flows as OpenFlow 1.3 bytes, and back: flow_mods, ONF bundles, flow stats, errors.

Building one os-ken OFPFlowMod/OFPMatch object per flow costs more than the switch needs to
install it (notes/os-ken.md, pitfall 4), so the controller encodes flows itself, with `struct`
only. Match fields are OXM (class 0x8000) where OpenFlow 1.3 has one and Nicira NXM_NX (class
0x0001) for registers, conntrack, conj_id and tunnel fields -- the encoding Open vSwitch itself
uses for OpenFlow 1.3. Actions: output, IN_PORT, set_field, Nicira reg_load, reg_move,
conjunction and ct (with nested exec); goto_table is an instruction. Bundles are the ONF
extension (EXT-230) that OVS implements for OpenFlow 1.3.

Decoding accepts every header OVS may answer with for a field (OXM or NXM), so what the switch
reports reads back as the same `Flow` values the compiler builds. Layouts: OpenFlow 1.3.5
section 7, and OVS's include/openflow/nicira-ext.h, lib/ofp-actions.c, lib/ofp-errors.h.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flows.fields import FIELDS, FieldRef
from flows.flow import CT, Conjunction, Flow, GotoTable, InPort, Load, Match, Move, Output
from flows.ofp_errors import NX_VENDOR_ID, ONF_EXPERIMENTER, OFError, decode_error  # noqa: F401 - API

OFP_VERSION = 0x04  # OpenFlow 1.3

# Message types (OpenFlow 1.3).
OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY, OFPT_EXPERIMENTER = 0, 1, 2, 3, 4
OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 5, 6
OFPT_FLOW_MOD = 14
OFPT_MULTIPART_REQUEST, OFPT_MULTIPART_REPLY = 18, 19
OFPT_BARRIER_REQUEST, OFPT_BARRIER_REPLY = 20, 21

OFPFC_ADD, OFPFC_MODIFY, OFPFC_MODIFY_STRICT, OFPFC_DELETE, OFPFC_DELETE_STRICT = 0, 1, 2, 3, 4
OFPTT_ALL = 0xFF
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFP_NO_BUFFER = 0xFFFFFFFF
OFPMP_FLOW = 1
OFPMPF_REPLY_MORE = 1

# ONF bundle extension for OpenFlow 1.3 (experimenter messages).
ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE = 2300, 2301
BUNDLE_OPEN_REQUEST, BUNDLE_OPEN_REPLY = 0, 1
BUNDLE_CLOSE_REQUEST, BUNDLE_CLOSE_REPLY = 2, 3
BUNDLE_COMMIT_REQUEST, BUNDLE_COMMIT_REPLY = 4, 5
BUNDLE_DISCARD_REQUEST, BUNDLE_DISCARD_REPLY = 6, 7
BUNDLE_ATOMIC, BUNDLE_ORDERED = 1, 2

NXAST_REG_MOVE, NXAST_REG_LOAD, NXAST_REG_LOAD2, NXAST_CONJUNCTION, NXAST_CT = 6, 7, 33, 34, 35
NX_CT_F_COMMIT = 1
NX_CT_RECIRC_NONE = 0xFF

OFPAT_OUTPUT, OFPAT_SET_FIELD, OFPAT_EXPERIMENTER = 0, 25, 0xFFFF
OFPIT_GOTO_TABLE, OFPIT_APPLY_ACTIONS = 1, 4

OXM_BASIC, NXM_0, NXM_1 = 0x8000, 0x0000, 0x0001

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # header + ofp_flow_mod fixed part (48 bytes)
_BUNDLE_ADD = struct.Struct("!BBHIIIIHH")  # header + experimenter + exp_type + id + pad + flags
_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")  # header + experimenter + exp_type + id + type + flags
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")  # ofp_flow_stats up to the match (48 bytes)
_MP_REPLY = struct.Struct("!HH4x")
_MATCH_HEAD = struct.Struct("!HH")


class WireError(ValueError):
    """Bytes that cannot be encoded or decoded as the flows this project uses."""


# ---- fields --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Field:
    name: str
    cls: int
    code: int
    size: int  # bytes

    def header(self, masked: bool) -> int:
        size = self.size * 2 if masked else self.size
        return (self.cls << 16) | (self.code << 9) | (int(masked) << 8) | size


# What we send: OXM for the OpenFlow 1.3 basic fields, NXM_NX for the Nicira ones. tp_src and
# tp_dst are resolved per protocol (tcp/udp/sctp) from nw_proto.
_ENCODE: dict[str, _Field] = {f.name: f for f in [
    _Field("in_port", OXM_BASIC, 0, 4),
    _Field("dl_dst", OXM_BASIC, 3, 6),
    _Field("dl_src", OXM_BASIC, 4, 6),
    _Field("dl_type", OXM_BASIC, 5, 2),
    _Field("nw_proto", OXM_BASIC, 10, 1),
    _Field("nw_src", OXM_BASIC, 11, 4),
    _Field("nw_dst", OXM_BASIC, 12, 4),
    _Field("arp_op", OXM_BASIC, 21, 2),
    _Field("arp_spa", OXM_BASIC, 22, 4),
    _Field("arp_tpa", OXM_BASIC, 23, 4),
    _Field("arp_sha", OXM_BASIC, 24, 6),
    _Field("arp_tha", OXM_BASIC, 25, 6),
    _Field("ipv6_src", OXM_BASIC, 26, 16),
    _Field("ipv6_dst", OXM_BASIC, 27, 16),
    _Field("tun_id", OXM_BASIC, 38, 8),
    _Field("tun_dst", NXM_1, 32, 4),
    _Field("conj_id", NXM_1, 37, 4),
    _Field("ct_state", NXM_1, 105, 4),
    _Field("ct_zone", NXM_1, 106, 2),
    _Field("ct_mark", NXM_1, 107, 4),
    _Field("ct_label", NXM_1, 108, 16),
] + [_Field(f"reg{i}", NXM_1, i, 4) for i in range(16)]}

_L4 = {6: (13, 14), 17: (15, 16), 132: (17, 18)}  # nw_proto -> OXM (src, dst) codes

# What we accept: (class, code) -> field name, for every header OVS may use.
_DECODE: dict[tuple[int, int], tuple[str, int]] = {(f.cls, f.code): (f.name, f.size) for f in _ENCODE.values()}
_DECODE.update({
    (OXM_BASIC, 13): ("tp_src", 2), (OXM_BASIC, 14): ("tp_dst", 2),
    (OXM_BASIC, 15): ("tp_src", 2), (OXM_BASIC, 16): ("tp_dst", 2),
    (OXM_BASIC, 17): ("tp_src", 2), (OXM_BASIC, 18): ("tp_dst", 2),
    (NXM_0, 0): ("in_port", 2), (NXM_0, 1): ("dl_dst", 6), (NXM_0, 2): ("dl_src", 6),
    (NXM_0, 3): ("dl_type", 2), (NXM_0, 6): ("nw_proto", 1), (NXM_0, 7): ("nw_src", 4),
    (NXM_0, 8): ("nw_dst", 4), (NXM_0, 9): ("tp_src", 2), (NXM_0, 10): ("tp_dst", 2),
    (NXM_0, 11): ("tp_src", 2), (NXM_0, 12): ("tp_dst", 2), (NXM_0, 15): ("arp_op", 2),
    (NXM_0, 16): ("arp_spa", 4), (NXM_0, 17): ("arp_tpa", 4),
    (NXM_1, 16): ("tun_id", 8), (NXM_1, 17): ("arp_sha", 6), (NXM_1, 18): ("arp_tha", 6),
    (NXM_1, 19): ("ipv6_src", 16), (NXM_1, 20): ("ipv6_dst", 16),
})


def _field_for(name: str, proto: int | None) -> _Field:
    if name in ("tp_src", "tp_dst"):
        codes = _L4.get(proto or -1)
        if codes is None:
            raise WireError(f"{name} needs nw_proto tcp, udp or sctp (got {proto})")
        return _Field(name, OXM_BASIC, codes[name == "tp_dst"], 2)
    f = _ENCODE.get(name)
    if f is None:
        raise WireError(f"no OpenFlow encoding for field {name!r}")
    return f


def _tlv(f: _Field, value: int, mask: int | None) -> bytes:
    n = f.size
    if mask is None:
        return struct.pack("!I", f.header(False)) + value.to_bytes(n, "big")
    return struct.pack("!I", f.header(True)) + (value & mask).to_bytes(n, "big") + mask.to_bytes(n, "big")


# field name -> (exact header bytes, masked header bytes, size); tp_* per protocol.
_HEADERS = {name: (struct.pack("!I", f.header(False)), struct.pack("!I", f.header(True)), f.size)
            for name, f in _ENCODE.items()}
_L4_HEADERS = {(proto, name): (struct.pack("!I", f.header(False)), struct.pack("!I", f.header(True)), 2)
               for proto in _L4 for name in ("tp_src", "tp_dst") for f in [_field_for(name, proto)]}
_PADS = [b"\0" * (-n % 8) for n in range(8)]


def encode_match(match: Sequence[Match]) -> bytes:
    """An ofp_match (OXM type, padded to 8 bytes). Fields go in `Flow` order, which puts
    every prerequisite (dl_type, nw_proto) before the fields that need it, as OVS requires."""
    proto: int | None = None
    parts: list[bytes] = []
    append = parts.append
    headers = _HEADERS
    for m in match:
        name = m.field
        spec = headers.get(name)
        if spec is None:
            spec = _L4_HEADERS.get((-1 if proto is None else proto, name))
            if spec is None:
                _field_for(name, proto)  # raises the right WireError
                raise AssertionError(f"{name}: a field without header")
        elif name == "nw_proto":
            proto = m.value
        mask = m.mask
        if mask is None:
            append(spec[0] + m.value.to_bytes(spec[2], "big"))
        else:
            append(spec[1] + (m.value & mask).to_bytes(spec[2], "big") + mask.to_bytes(spec[2], "big"))
    body = b"".join(parts)
    length = 4 + len(body)
    return _MATCH_HEAD.pack(1, length) + body + _PADS[length % 8]


_match_field_cache: dict[bytes, Match] = {}


def decode_match_fields(data: bytes) -> tuple[Match, ...]:
    """The fields of an OXM match body (no ofp_match header, no padding)."""
    out = []
    cache = _match_field_cache
    pos, end = 0, len(data)
    while pos < end:
        length = data[pos + 3]
        raw = data[pos:pos + 4 + length]
        m = cache.get(raw)
        if m is None:
            m = cache[raw] = _decode_tlv(raw)
        out.append(m)
        pos += 4 + length
    return tuple(out)


def _decode_tlv(raw: bytes) -> Match:
    if len(raw) < 4:
        raise WireError("truncated match field header")
    header = int.from_bytes(raw[:4], "big")
    cls, code, hasmask, length = header >> 16, (header >> 9) & 0x7F, header & 0x100, header & 0xFF
    if cls == 0xFFFF:
        raise WireError("experimenter OXM fields are not used here")
    known = _DECODE.get((cls, code))
    if known is None:
        raise WireError(f"unknown match field class {cls:#06x} code {code}")
    name, size = known
    if length != len(raw) - 4 or length != size * (2 if hasmask else 1):
        raise WireError(f"bad length {length} for field {name}")
    value = int.from_bytes(raw[4:4 + size], "big")
    if not hasmask:
        return Match(name, value)
    mask = int.from_bytes(raw[4 + size:], "big")
    if mask == (1 << FIELDS[name].bits) - 1:
        return Match(name, value)
    return Match(name, value & mask, mask)


def decode_match(data: bytes, offset: int = 0) -> tuple[tuple[Match, ...], int]:
    """An ofp_match at `offset` -> (fields, offset after its padding)."""
    mtype, length = struct.unpack_from("!HH", data, offset)
    if mtype != 1:
        raise WireError(f"match type {mtype} is not OXM")
    fields = decode_match_fields(data[offset + 4:offset + length])
    return fields, offset + length + (-length % 8)


# ---- actions -------------------------------------------------------------------------------

def _nxm_header(ref: FieldRef) -> int:
    return _field_for(ref.field, None).header(False)


def _nx(subtype: int, body: bytes) -> bytes:
    length = 10 + len(body)
    pad = -length % 8
    return struct.pack("!HHIH", OFPAT_EXPERIMENTER, length + pad, NX_VENDOR_ID, subtype) + body + b"\0" * pad


def _encode_action(a) -> bytes:
    if isinstance(a, Output):
        return struct.pack("!HHIH6x", OFPAT_OUTPUT, 16, a.port, 0)
    if isinstance(a, InPort):
        return struct.pack("!HHIH6x", OFPAT_OUTPUT, 16, OFPP_IN_PORT, 0)
    if isinstance(a, Conjunction):
        return _nx(NXAST_CONJUNCTION, struct.pack("!BBI", a.clause - 1, a.n_clauses, a.id))
    if isinstance(a, Move):
        return _nx(NXAST_REG_MOVE, struct.pack("!HHHII", a.src.width, a.src.start, a.dst.start,
                                               _nxm_header(a.src), _nxm_header(a.dst)))
    if isinstance(a, Load):
        f = _field_for(a.dst.field, None)
        if a.dst.start == 0 and a.dst.end is None:
            tlv = _tlv(f, a.value, None)
            length = 4 + len(tlv)
            return struct.pack("!HH", OFPAT_SET_FIELD, length + (-length % 8)) + tlv + b"\0" * (-length % 8)
        if a.dst.width > 64:
            raise WireError(f"load into more than 64 bits of {a.dst.field} is not supported")
        ofs_nbits = (a.dst.start << 6) | (a.dst.width - 1)
        return _nx(NXAST_REG_LOAD, struct.pack("!HIQ", ofs_nbits, f.header(False), a.value))
    if isinstance(a, CT):
        nested = b"".join(_encode_action(x) for x in a.exec)
        flags = NX_CT_F_COMMIT if a.commit else 0
        table = NX_CT_RECIRC_NONE if a.table is None else a.table
        body = struct.pack("!HIHB3xH", flags, 0, a.zone, table, 0) + nested
        return struct.pack("!HHIH", OFPAT_EXPERIMENTER, 10 + len(body), NX_VENDOR_ID, NXAST_CT) + body
    raise WireError(f"no OpenFlow encoding for action {a!r}")


_CONJ = struct.Struct("!HHIHBBI")
_OUTPUT = struct.Struct("!HHIH6x")
_APPLY_HEAD = struct.Struct("!HH4x")
_GOTO = [struct.pack("!HHB3x", OFPIT_GOTO_TABLE, 8, t) for t in range(256)]
_action_cache: dict[object, bytes] = {}


def encode_instructions(actions: Sequence) -> bytes:
    """Apply-Actions with every action but goto_table, then a Goto-Table instruction."""
    parts: list[bytes] = []
    append = parts.append
    goto = None
    for a in actions:
        kind = type(a)
        if kind is Conjunction:  # the bulk of rule tables: no cache, one pack
            append(_CONJ.pack(OFPAT_EXPERIMENTER, 16, NX_VENDOR_ID, NXAST_CONJUNCTION,
                              a.clause - 1, a.n_clauses, a.id))
        elif kind is GotoTable:
            goto = a.table
        elif kind is Output:
            append(_OUTPUT.pack(OFPAT_OUTPUT, 16, a.port, 0))
        else:
            enc = _action_cache.get(a)
            if enc is None:
                enc = _encode_action(a)
                if len(_action_cache) < 100_000:
                    _action_cache[a] = enc
            append(enc)
    if parts:
        body = b"".join(parts)
        if len(body) > 0xFFFF - 8:
            raise WireError(f"flow too large for one OpenFlow message ({len(body)} bytes of actions)")
        out = _APPLY_HEAD.pack(OFPIT_APPLY_ACTIONS, 8 + len(body)) + body
        return out if goto is None else out + _GOTO[goto]
    return b"" if goto is None else _GOTO[goto]


def _ref(header: int, start: int, width: int) -> FieldRef:
    cls, code = header >> 16, (header >> 9) & 0x7F
    known = _DECODE.get((cls, code))
    if known is None:
        raise WireError(f"unknown field header {header:#010x} in an action")
    name = known[0]
    bits = FIELDS[name].bits
    if start == 0 and width == bits:
        return FieldRef(name)
    return FieldRef(name, start, start + width - 1)


def decode_actions(data: bytes) -> tuple:
    out = []
    pos, end = 0, len(data)
    while pos < end:
        atype, length = struct.unpack_from("!HH", data, pos)
        if length < 8 or pos + length > end:
            raise WireError(f"bad action length {length}")
        out.append(_decode_action(data[pos:pos + length], atype))
        pos += length
    return tuple(out)


def _decode_action(raw: bytes, atype: int):
    if atype == OFPAT_OUTPUT:
        port = struct.unpack_from("!I", raw, 4)[0]
        return InPort() if port == OFPP_IN_PORT else Output(port)
    if atype == OFPAT_SET_FIELD:
        header = int.from_bytes(raw[4:8], "big")
        m = _decode_tlv(raw[4:8 + (header & 0xFF)])
        if m.mask is not None:
            raise WireError("masked set_field is not used here")
        return Load(m.value, FieldRef(m.field))
    if atype != OFPAT_EXPERIMENTER:
        raise WireError(f"unsupported action type {atype}")
    vendor, subtype = struct.unpack_from("!IH", raw, 4)
    if vendor != NX_VENDOR_ID:
        raise WireError(f"unsupported experimenter action {vendor:#x}")
    if subtype == NXAST_CONJUNCTION:
        clause, n, ident = struct.unpack_from("!BBI", raw, 10)
        return Conjunction(ident, clause + 1, n)
    if subtype == NXAST_REG_MOVE:
        n_bits, src_ofs, dst_ofs, src, dst = struct.unpack_from("!HHHII", raw, 10)
        return Move(_ref(src, src_ofs, n_bits), _ref(dst, dst_ofs, n_bits))
    if subtype == NXAST_REG_LOAD:
        ofs_nbits, dst, value = struct.unpack_from("!HIQ", raw, 10)
        return Load(value, _ref(dst, ofs_nbits >> 6, (ofs_nbits & 0x3F) + 1))
    if subtype == NXAST_REG_LOAD2:
        header = int.from_bytes(raw[10:14], "big")
        m = _decode_tlv(raw[10:14 + (header & 0xFF)])
        if m.mask is None:
            return Load(m.value, FieldRef(m.field))
        low = (m.mask & -m.mask).bit_length() - 1
        width = m.mask.bit_length() - low
        if m.mask != ((1 << width) - 1) << low:
            raise WireError("reg_load2 with a non-contiguous mask")
        return Load(m.value >> low, FieldRef(m.field, low, low + width - 1))
    if subtype == NXAST_CT:
        flags, zone_src, zone, table, alg = struct.unpack_from("!HIHB3xH", raw, 10)
        if zone_src or alg:
            raise WireError("ct with a zone from a field or an ALG is not used here")
        return CT(zone=zone, table=None if table == NX_CT_RECIRC_NONE else table,
                  commit=bool(flags & NX_CT_F_COMMIT), exec=decode_actions(raw[24:]))
    raise WireError(f"unsupported Nicira action subtype {subtype}")


_instruction_cache: dict[bytes, tuple] = {}


def decode_instructions(data: bytes) -> tuple:
    """Instructions -> the action tuple of a `Flow` (goto_table last)."""
    cached = _instruction_cache.get(data)
    if cached is not None:
        return cached
    out: list = []
    goto = None
    pos, end = 0, len(data)
    while pos < end:
        itype, length = struct.unpack_from("!HH", data, pos)
        if length < 8 or pos + length > end:
            raise WireError(f"bad instruction length {length}")
        if itype == OFPIT_APPLY_ACTIONS:
            out.extend(decode_actions(data[pos + 8:pos + length]))
        elif itype == OFPIT_GOTO_TABLE:
            goto = GotoTable(data[pos + 4])
        else:
            raise WireError(f"unsupported instruction type {itype}")
        pos += length
    if goto is not None:
        out.append(goto)
    result = tuple(out)
    if len(_instruction_cache) < 200_000:
        _instruction_cache[data] = result
    return result


# ---- messages ------------------------------------------------------------------------------

def header(data: bytes, offset: int = 0) -> tuple[int, int, int, int]:
    """(version, type, length, xid) of the message at offset."""
    return _HEADER.unpack_from(data, offset)


def hello(xid: int) -> bytes:
    """OFPT_HELLO with a version bitmap offering OpenFlow 1.3 only."""
    element = struct.pack("!HHI", 1, 8, 1 << OFP_VERSION)
    return _HEADER.pack(OFP_VERSION, OFPT_HELLO, 8 + len(element), xid) + element


def barrier_request(xid: int) -> bytes:
    return _HEADER.pack(OFP_VERSION, OFPT_BARRIER_REQUEST, 8, xid)


def echo_reply(xid: int, data: bytes = b"") -> bytes:
    return _HEADER.pack(OFP_VERSION, OFPT_ECHO_REPLY, 8 + len(data), xid) + data


def flow_mod(flow: Flow, command: int, xid: int, *, cookie_mask: int = 0,
             out_port: int = OFPP_ANY, out_group: int = OFPG_ANY, flags: int = 0,
             match: bytes | None = None) -> bytes:
    """OFPT_FLOW_MOD for `flow`. Deletes carry no instructions and must use OFPP_ANY /
    OFPG_ANY (0 would delete only flows that output to port 0). `match` overrides the
    encoded match (an undecodable match read back from the switch)."""
    m = encode_match(flow.match) if match is None else match
    ins = b"" if command in (OFPFC_DELETE, OFPFC_DELETE_STRICT) else encode_instructions(flow.actions)
    length = 48 + len(m) + len(ins)
    if length > 0xFFFF - 24:  # must still fit into a bundle-add message
        raise WireError(f"flow too large for one OpenFlow message ({length} bytes): {flow.render()[:200]}")
    return _FLOW_MOD.pack(OFP_VERSION, OFPT_FLOW_MOD, length, xid, flow.cookie, cookie_mask, flow.table,
                          command, 0, 0, flow.priority, OFP_NO_BUFFER, out_port, out_group, flags) + m + ins


_BUNDLED_FLOW_MOD = struct.Struct("!BBHIIIIHH" "BBHIQQBBHHHIIIH2x")


def bundled_flow_mod(flow: Flow, command: int, xid: int, bundle_id: int,
                     flags: int = BUNDLE_ATOMIC | BUNDLE_ORDERED) -> bytes:
    """bundle_add(flow_mod(flow, command, xid), bundle_id, flags) for adds and modifies, in
    one pack: the bulk-install path."""
    m = encode_match(flow.match)
    ins = encode_instructions(flow.actions)
    length = 48 + len(m) + len(ins)
    if length > 0xFFFF - 24:
        raise WireError(f"flow too large for one OpenFlow message ({length} bytes): {flow.render()[:200]}")
    return _BUNDLED_FLOW_MOD.pack(
        OFP_VERSION, OFPT_EXPERIMENTER, 24 + length, xid, ONF_EXPERIMENTER, ONF_ET_BUNDLE_ADD_MESSAGE,
        bundle_id, 0, flags,
        OFP_VERSION, OFPT_FLOW_MOD, length, xid, flow.cookie, 0, flow.table, command, 0, 0,
        flow.priority, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0) + m + ins


def add_flow(flow: Flow, xid: int) -> bytes:
    return flow_mod(flow, OFPFC_ADD, xid)


def modify_flow_strict(flow: Flow, xid: int) -> bytes:
    """Replace the actions of the flow with the same table, priority and match, keeping its
    counters (a modify never changes the cookie in OpenFlow 1.3)."""
    return flow_mod(flow, OFPFC_MODIFY_STRICT, xid)


def delete_flow_strict(flow: Flow, xid: int, match: bytes | None = None) -> bytes:
    return flow_mod(Flow(flow.table, flow.priority, flow.match), OFPFC_DELETE_STRICT, xid, match=match)


def delete_by_cookie(cookie: int, xid: int, cookie_mask: int = 0xFFFFFFFFFFFFFFFF) -> bytes:
    """Delete every flow, in every table, whose cookie is `cookie` under `cookie_mask`."""
    return flow_mod(Flow(OFPTT_ALL, 0, (), (), cookie), OFPFC_DELETE, xid, cookie_mask=cookie_mask)


def bundle_ctrl(xid: int, bundle_id: int, ctrl_type: int, flags: int = BUNDLE_ATOMIC | BUNDLE_ORDERED) -> bytes:
    return _BUNDLE_CTRL.pack(OFP_VERSION, OFPT_EXPERIMENTER, 24, xid, ONF_EXPERIMENTER,
                             ONF_ET_BUNDLE_CONTROL, bundle_id, ctrl_type, flags)


def bundle_add(message: bytes, bundle_id: int, flags: int = BUNDLE_ATOMIC | BUNDLE_ORDERED) -> bytes:
    """Wrap a message into the bundle; the wrapper carries the inner message's xid, as OVS
    requires (OFPBFC_MSG_BAD_XID otherwise)."""
    xid = _HEADER.unpack_from(message)[3]
    return _BUNDLE_ADD.pack(OFP_VERSION, OFPT_EXPERIMENTER, 24 + len(message), xid, ONF_EXPERIMENTER,
                            ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, 0, flags) + message


def decode_bundle_ctrl(data: bytes) -> tuple[int, int, int] | None:
    """(bundle_id, type, flags) of an ONF bundle control message, or None if it is not one."""
    if len(data) < 24:
        return None
    _, mtype, _, _, exp, exp_type, bundle_id, ctrl_type, flags = _BUNDLE_CTRL.unpack_from(data)
    if mtype != OFPT_EXPERIMENTER or exp != ONF_EXPERIMENTER or exp_type != ONF_ET_BUNDLE_CONTROL:
        return None
    return bundle_id, ctrl_type, flags


def flow_stats_request(xid: int, table: int = OFPTT_ALL, cookie: int = 0, cookie_mask: int = 0) -> bytes:
    """OFPMP_FLOW request for every flow (of `table`, under the cookie filter)."""
    body = struct.pack("!HH4xB3xII4xQQ", OFPMP_FLOW, 0, table, OFPP_ANY, OFPG_ANY, cookie, cookie_mask)
    match = struct.pack("!HH4x", 1, 4)
    return _HEADER.pack(OFP_VERSION, OFPT_MULTIPART_REQUEST, 8 + len(body) + len(match), xid) + body + match


@dataclass(frozen=True, order=True)
class RawActions:
    """Instructions this module does not decode (another controller's flow), kept as bytes so
    such a flow is never mistaken for one of ours."""

    data: bytes
    reason: str = ""

    def render(self) -> str:
        return f"<{len(self.data)} bytes of undecoded instructions: {self.reason}>"


@dataclass(frozen=True)
class InstalledFlow:
    """A flow as the switch reports it, with its counters. `flow` is None when its match uses
    fields this module does not decode; `match_raw` (the padded ofp_match) then still allows a
    strict delete. Undecodable instructions become a `RawActions` placeholder."""

    flow: Flow | None
    table: int
    priority: int
    cookie: int
    packets: int
    bytes: int
    duration: float
    match_raw: builtins.bytes = b""  # builtins: `bytes` above is the byte counter
    error: str = ""

    @property
    def key(self) -> tuple:
        return self.flow.key if self.flow is not None else (self.table, self.priority, self.match_raw)


def multipart_reply_info(data: bytes) -> tuple[int, int]:
    """(multipart type, flags) of an OFPT_MULTIPART_REPLY."""
    return _MP_REPLY.unpack_from(data, 8)


def decode_flow_stats(messages: Iterable[bytes]) -> list[InstalledFlow]:
    """The ofp_flow_stats entries of OFPMP_FLOW reply messages."""
    out: list[InstalledFlow] = []
    unpack = _FLOW_STATS.unpack_from
    for msg in messages:
        length = _HEADER.unpack_from(msg)[2]
        pos = 16
        while pos < length:
            (entry_len, table, dsec, dnsec, priority, _idle, _hard, _flags, cookie, packets,
             nbytes) = unpack(msg, pos)
            mlen = int.from_bytes(msg[pos + 50:pos + 52], "big")
            match_raw = msg[pos + 48:pos + 48 + mlen]
            fields_end = pos + 48 + mlen
            ins_start = fields_end + (-mlen % 8)
            instructions = msg[ins_start:pos + entry_len]
            error = ""
            try:
                fields = decode_match_fields(msg[pos + 52:fields_end])
            except (WireError, ValueError, KeyError, IndexError, struct.error) as e:
                fields, error = None, f"match: {e}"
            try:
                actions = decode_instructions(instructions)
            except (WireError, ValueError, KeyError, IndexError, struct.error) as e:
                actions = (RawActions(bytes(instructions), str(e)),)
                error = error or f"actions: {e}"
            flow = None if fields is None else Flow(table, priority, fields, actions, cookie)
            padded = match_raw + b"\0" * (-mlen % 8)
            out.append(InstalledFlow(flow, table, priority, cookie, packets, nbytes,
                                     dsec + dnsec / 1e9, padded if flow is None else b"", error))
            pos += entry_len
    return out


def split_messages(buf: bytes | bytearray) -> tuple[list[bytes], int]:
    """Complete OpenFlow messages at the start of buf, and how many bytes they used."""
    out = []
    pos, n = 0, len(buf)
    while n - pos >= 8:
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 8:
            raise WireError(f"bad OpenFlow message length {length}")
        if n - pos < length:
            break
        out.append(bytes(buf[pos:pos + length]))
        pos += length
    return out, pos
