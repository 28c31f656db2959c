"""The OpenFlow match fields and NXM field references the pipeline uses, with their widths and
their ovs-ofctl spellings (ovs-fields(7)). Values are held as integers everywhere; these
definitions turn them into ovs-ofctl text and back."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ETH_IP = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmp6": 58}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}

# ct_state bits (ovs-fields(7)).
CT_BITS = {"new": 0x01, "est": 0x02, "rel": 0x04, "rpl": 0x08, "inv": 0x10, "trk": 0x20,
           "snat": 0x40, "dnat": 0x80}


@dataclass(frozen=True)
class FieldDef:
    name: str  # ovs-ofctl match name
    bits: int
    kind: str  # int | hex | mac | ipv4 | ipv6 | ct_state
    nxm: str | None = None  # NXM name for load/move


_DEFS = [
    FieldDef("in_port", 32, "int", "NXM_OF_IN_PORT"),
    FieldDef("dl_src", 48, "mac", "NXM_OF_ETH_SRC"),
    FieldDef("dl_dst", 48, "mac", "NXM_OF_ETH_DST"),
    FieldDef("dl_type", 16, "hex", "NXM_OF_ETH_TYPE"),
    FieldDef("nw_src", 32, "ipv4", "NXM_OF_IP_SRC"),
    FieldDef("nw_dst", 32, "ipv4", "NXM_OF_IP_DST"),
    FieldDef("ipv6_src", 128, "ipv6", "NXM_NX_IPV6_SRC"),
    FieldDef("ipv6_dst", 128, "ipv6", "NXM_NX_IPV6_DST"),
    FieldDef("nw_proto", 8, "int", "NXM_OF_IP_PROTO"),
    FieldDef("tp_src", 16, "port", None),
    FieldDef("tp_dst", 16, "port", None),
    FieldDef("arp_op", 16, "int", "NXM_OF_ARP_OP"),
    FieldDef("arp_spa", 32, "ipv4", "NXM_OF_ARP_SPA"),
    FieldDef("arp_tpa", 32, "ipv4", "NXM_OF_ARP_TPA"),
    FieldDef("arp_sha", 48, "mac", "NXM_NX_ARP_SHA"),
    FieldDef("arp_tha", 48, "mac", "NXM_NX_ARP_THA"),
    FieldDef("ct_state", 32, "ct_state", "NXM_NX_CT_STATE"),
    FieldDef("ct_zone", 16, "int", "NXM_NX_CT_ZONE"),
    FieldDef("ct_mark", 32, "hex", "NXM_NX_CT_MARK"),
    FieldDef("ct_label", 128, "hex", "NXM_NX_CT_LABEL"),
    FieldDef("conj_id", 32, "int", None),
    FieldDef("tun_dst", 32, "ipv4", "NXM_NX_TUN_IPV4_DST"),
    FieldDef("tun_id", 64, "hex", "NXM_NX_TUN_ID"),
] + [FieldDef(f"reg{i}", 32, "hex", f"NXM_NX_REG{i}") for i in range(16)]

FIELDS: dict[str, FieldDef] = {d.name: d for d in _DEFS}
BY_NXM: dict[str, FieldDef] = {d.nxm: d for d in _DEFS if d.nxm}
# Other spellings ovs-ofctl accepts or prints for the same fields.
ALIASES = {
    "eth_src": "dl_src", "eth_dst": "dl_dst", "eth_type": "dl_type", "ip_src": "nw_src",
    "ip_dst": "nw_dst", "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "ip_proto": "nw_proto",
    "tcp_dst": "tp_dst", "tcp_src": "tp_src", "udp_dst": "tp_dst", "udp_src": "tp_src",
    "sctp_dst": "tp_dst", "sctp_src": "tp_src", "tun_ipv4_dst": "tun_dst",
}
# Canonical order of match fields when rendering (close to the order ovs-ofctl prints).
ORDER = {name: i for i, name in enumerate(
    ["conj_id", "ct_state", "ct_zone", "ct_mark", "ct_label"] + [f"reg{i}" for i in range(16)]
    + ["in_port", "tun_dst", "tun_id", "dl_src", "dl_dst", "dl_type", "nw_proto", "arp_op",
       "arp_spa", "arp_tpa", "arp_sha", "arp_tha", "nw_src", "nw_dst", "ipv6_src", "ipv6_dst",
       "tp_src", "tp_dst"])}


def canonical_name(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in FIELDS:
        raise ValueError(f"unknown field {name!r}")
    return name


def full_mask(bits: int) -> int:
    return (1 << bits) - 1


def parse_mac(text: str) -> int:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    return int("".join(p.zfill(2) for p in parts), 16)


def format_mac(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def _prefix_len(mask: int, bits: int) -> int | None:
    """The prefix length if mask is a contiguous high-bit mask, else None."""
    inv = full_mask(bits) ^ mask
    if inv & (inv + 1):
        return None
    return bits - inv.bit_length()


def parse_value(field: str, text: str) -> tuple[int, int | None]:
    """Parse an ovs-ofctl match value for field: (value, mask) with mask None when exact."""
    d = FIELDS[field]
    if d.kind == "ct_state":
        return _parse_ct_state(text)
    if "/" in text:
        vtext, mtext = text.split("/", 1)
    else:
        vtext, mtext = text, None
    if d.kind in ("ipv4", "ipv6"):
        addr = ipaddress.ip_address(vtext)
        value = int(addr)
        if mtext is None:
            mask = None
        elif mtext.isdigit():
            plen = int(mtext)
            mask = full_mask(d.bits) ^ full_mask(d.bits - plen)
        else:
            mask = int(ipaddress.ip_address(mtext))
    elif d.kind == "mac":
        value = parse_mac(vtext)
        mask = parse_mac(mtext) if mtext else None
    else:
        value = int(vtext, 0)
        mask = int(mtext, 0) if mtext else None
    if mask is not None and mask == full_mask(d.bits):
        mask = None
    if mask is not None:
        value &= mask
    return value, mask


def format_value(field: str, value: int, mask: int | None) -> str:
    d = FIELDS[field]
    if d.kind == "ct_state":
        return _format_ct_state(value, mask)
    if d.kind in ("ipv4", "ipv6"):
        addr = str(ipaddress.ip_address(value) if d.kind == "ipv6" else ipaddress.IPv4Address(value))
        if mask is None:
            return addr
        plen = _prefix_len(mask, d.bits)
        if plen is not None:
            return f"{addr}/{plen}"
        m = ipaddress.IPv6Address(mask) if d.kind == "ipv6" else ipaddress.IPv4Address(mask)
        return f"{addr}/{m}"
    if d.kind == "mac":
        return format_mac(value) + (f"/{format_mac(mask)}" if mask is not None else "")
    if mask is not None:
        return f"{value:#x}/{mask:#x}"
    if d.kind == "hex":
        return f"{value:#x}"
    return str(value)


def _parse_ct_state(text: str) -> tuple[int, int | None]:
    value = mask = 0
    token = ""
    sign = None
    for ch in text + "+":
        if ch in "+-":
            if sign is not None:
                bit = CT_BITS[token]
                mask |= bit
                if sign == "+":
                    value |= bit
            sign, token = ch, ""
        else:
            token += ch
    return value, mask


def _format_ct_state(value: int, mask: int | None) -> str:
    mask = full_mask(32) if mask is None else mask
    out = []
    for name, bit in CT_BITS.items():
        if mask & bit:
            out.append(("+" if value & bit else "-") + name)
    return "".join(out)


@dataclass(frozen=True, order=True)
class FieldRef:
    """A bit range of an NXM field, as in load/move actions: NXM_NX_REG3[0..15]."""

    field: str
    start: int = 0
    end: int | None = None  # inclusive; None = to the top bit

    @property
    def stop(self) -> int:
        return FIELDS[self.field].bits - 1 if self.end is None else self.end

    @property
    def width(self) -> int:
        return self.stop - self.start + 1

    def render(self) -> str:
        d = FIELDS[self.field]
        if self.end is None and self.start == 0:
            return f"{d.nxm}[]"
        if self.start == self.stop:
            return f"{d.nxm}[{self.start}]"
        return f"{d.nxm}[{self.start}..{self.stop}]"

    @classmethod
    def parse(cls, text: str) -> FieldRef:
        name, _, rng = text.partition("[")
        rng = rng.rstrip("]")
        d = BY_NXM.get(name) or FIELDS.get(canonical_name(name.lower()))
        if d is None:
            raise ValueError(f"unknown field {name!r} in {text!r}")
        if rng == "":
            return cls(d.name)
        if ".." in rng:
            a, b = (int(x) for x in rng.split(".."))
        else:
            a = b = int(rng)
        if a == 0 and b == d.bits - 1:
            return cls(d.name)
        return cls(d.name, a, b)
