"""OFPT_ERROR decoded by name: the standard OpenFlow 1.3 types and codes, and the experimenter
errors Open vSwitch sends for OpenFlow 1.2+ (Nicira "NX1.2+(n)" and ONF "ONF1.3(n)" numbering,
from OVS's include/openvswitch/ofp-errors.h), so a rejected flow_mod or bundle can be logged
as "OFPBMC_BAD_PREREQ" or "NXBAC_BAD_CONJUNCTION" rather than as numbers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

NX_VENDOR_ID = 0x00002320
ONF_EXPERIMENTER = 0x4F4E4600
_HEADER = struct.Struct("!BBHI")


_OF_ERRORS = {
    0: ("OFPET_HELLO_FAILED", {0: "OFPHFC_INCOMPATIBLE", 1: "OFPHFC_EPERM"}),
    1: ("OFPET_BAD_REQUEST", {0: "OFPBRC_BAD_VERSION", 1: "OFPBRC_BAD_TYPE", 2: "OFPBRC_BAD_STAT",
                              3: "OFPBRC_BAD_EXPERIMENTER", 4: "OFPBRC_BAD_EXP_TYPE", 5: "OFPBRC_EPERM",
                              6: "OFPBRC_BAD_LEN", 7: "OFPBRC_BUFFER_EMPTY", 8: "OFPBRC_BUFFER_UNKNOWN",
                              9: "OFPBRC_BAD_TABLE_ID", 10: "OFPBRC_IS_SLAVE", 11: "OFPBRC_BAD_PORT",
                              12: "OFPBRC_BAD_PACKET", 13: "OFPBRC_MULTIPART_BUFFER_OVERFLOW"}),
    2: ("OFPET_BAD_ACTION", {0: "OFPBAC_BAD_TYPE", 1: "OFPBAC_BAD_LEN", 2: "OFPBAC_BAD_EXPERIMENTER",
                             3: "OFPBAC_BAD_EXP_TYPE", 4: "OFPBAC_BAD_OUT_PORT", 5: "OFPBAC_BAD_ARGUMENT",
                             6: "OFPBAC_EPERM", 7: "OFPBAC_TOO_MANY", 8: "OFPBAC_BAD_QUEUE",
                             9: "OFPBAC_BAD_OUT_GROUP", 10: "OFPBAC_MATCH_INCONSISTENT",
                             11: "OFPBAC_UNSUPPORTED_ORDER", 12: "OFPBAC_BAD_TAG",
                             13: "OFPBAC_BAD_SET_TYPE", 14: "OFPBAC_BAD_SET_LEN",
                             15: "OFPBAC_BAD_SET_ARGUMENT"}),
    3: ("OFPET_BAD_INSTRUCTION", {0: "OFPBIC_UNKNOWN_INST", 1: "OFPBIC_UNSUP_INST", 2: "OFPBIC_BAD_TABLE_ID",
                                  3: "OFPBIC_UNSUP_METADATA", 4: "OFPBIC_UNSUP_METADATA_MASK",
                                  5: "OFPBIC_BAD_EXPERIMENTER", 6: "OFPBIC_BAD_EXP_TYPE",
                                  7: "OFPBIC_BAD_LEN", 8: "OFPBIC_EPERM"}),
    4: ("OFPET_BAD_MATCH", {0: "OFPBMC_BAD_TYPE", 1: "OFPBMC_BAD_LEN", 2: "OFPBMC_BAD_TAG",
                            3: "OFPBMC_BAD_DL_ADDR_MASK", 4: "OFPBMC_BAD_NW_ADDR_MASK",
                            5: "OFPBMC_BAD_WILDCARDS", 6: "OFPBMC_BAD_FIELD", 7: "OFPBMC_BAD_VALUE",
                            8: "OFPBMC_BAD_MASK", 9: "OFPBMC_BAD_PREREQ", 10: "OFPBMC_DUP_FIELD",
                            11: "OFPBMC_EPERM"}),
    5: ("OFPET_FLOW_MOD_FAILED", {0: "OFPFMFC_UNKNOWN", 1: "OFPFMFC_TABLE_FULL", 2: "OFPFMFC_BAD_TABLE_ID",
                                  3: "OFPFMFC_OVERLAP", 4: "OFPFMFC_EPERM", 5: "OFPFMFC_BAD_TIMEOUT",
                                  6: "OFPFMFC_BAD_COMMAND", 7: "OFPFMFC_BAD_FLAGS"}),
    11: ("OFPET_ROLE_REQUEST_FAILED", {0: "OFPRRFC_STALE", 1: "OFPRRFC_UNSUP", 2: "OFPRRFC_BAD_ROLE"}),
}
# Nicira experimenter errors (OpenFlow 1.2+ numbering, lib/ofp-errors.h "NX1.2+(n)").
_NX_ERRORS = {
    2: "NXBRC_NXM_INVALID: invalid NXM flow match",
    3: "NXBRC_NXM_BAD_TYPE: NXM field type invalid or not implemented",
    4: "NXBRC_MUST_BE_ZERO: must-be-zero field had a nonzero value",
    11: "NXBAC_MUST_BE_ZERO: must-be-zero action argument had a nonzero value",
    12: "NXFMFC_HARDWARE: generic hardware error",
    13: "NXFMFC_BAD_TABLE_ID: nonexistent table id",
    15: "NXBAC_BAD_CONJUNCTION: conjunction must be the only action, 1 <= k <= n, 2 <= n <= 64",
}
# ONF experimenter errors for OpenFlow 1.3 ("ONF1.3(n)").
_ONF_ERRORS = {
    2300: "OFPBFC_UNKNOWN: unspecified bundle error",
    2301: "OFPBFC_EPERM: bundle permissions error",
    2302: "OFPBFC_BAD_ID: bundle id does not exist",
    2303: "OFPBFC_BUNDLE_EXIST: bundle id already exists",
    2304: "OFPBFC_BUNDLE_CLOSED: bundle is closed",
    2305: "OFPBFC_OUT_OF_BUNDLES: too many bundles",
    2306: "OFPBFC_BAD_TYPE: unknown bundle control type",
    2307: "OFPBFC_BAD_FLAGS: bundle flags unsupported or inconsistent",
    2308: "OFPBFC_MSG_BAD_LEN: length problem in a bundled message",
    2309: "OFPBFC_MSG_BAD_XID: inconsistent or duplicate xid in a bundled message",
    2310: "OFPBFC_MSG_UNSUP: message not supported in a bundle",
    2311: "OFPBFC_MSG_CONFLICT: unsupported message combination in the bundle",
    2312: "OFPBFC_MSG_TOO_MANY: too many messages in the bundle",
    2313: "OFPBFC_MSG_FAILED: one message in the bundle failed",
    2314: "OFPBFC_TIMEOUT: bundle is taking too long",
    2315: "OFPBFC_BUNDLE_IN_PROGRESS: bundle is locking the resource",
    2600: "OFPBIC_DUP_INST: duplicate instruction",
    4250: "OFPBAC_BAD_SET_MASK: set-field with the has-mask bit",
}


@dataclass(frozen=True)
class OFError:
    """A decoded OFPT_ERROR: `name` like OFPBMC_BAD_PREREQ or NXBAC_BAD_CONJUNCTION,
    `request` the (start of the) message that failed, `xid` the failing message's xid."""

    xid: int
    type: int
    code: int
    experimenter: int | None
    name: str
    request: bytes

    @property
    def request_type(self) -> int | None:
        return self.request[1] if len(self.request) >= 8 else None

    def __str__(self) -> str:
        return self.name


def decode_error(data: bytes) -> OFError:
    """Decode an OFPT_ERROR, standard or experimenter (Nicira, ONF)."""
    _, _, length, xid = _HEADER.unpack_from(data)
    etype, code = struct.unpack_from("!HH", data, 8)
    if etype == 0xFFFF:
        experimenter = struct.unpack_from("!I", data, 12)[0]
        request = bytes(data[16:length])
        table = {NX_VENDOR_ID: _NX_ERRORS, ONF_EXPERIMENTER: _ONF_ERRORS}.get(experimenter, {})
        vendor = {NX_VENDOR_ID: "Nicira", ONF_EXPERIMENTER: "ONF"}.get(experimenter, f"{experimenter:#x}")
        name = table.get(code, f"{vendor} experimenter error {code}")
        return OFError(xid, etype, code, experimenter, name, request)
    tname, codes = _OF_ERRORS.get(etype, (f"error type {etype}", {}))
    name = codes.get(code, f"{tname} code {code}")
    return OFError(xid, etype, code, None, name, bytes(data[12:length]))
