"""Judge a new connection with OVS's own `ofproto/trace` on the lab's real bridges.

For what the kernel cannot send (SCTP: no SCTP sockets here), the lab asks each switch on the
path what it would do with the packet, with the real ofports from OVSDB: the source node's
bridge from the pod's port, then (host mode) the destination node's bridge from the tunnel
port, or (fabric mode) the fabric switch from the node's link and the destination node's
bridge from its uplink. Each bridge sees the packet as new (`--ct-next trk,new`), as a first
packet of a connection would be.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sdn.lab import nodes as N
from sdn.layout import FABRIC_UPLINK_OFPORT, GATEWAY_MAC, TUNNEL_OFPORT
from sdn.ovs.instance import OvsInstance
from sdn.ovs.trace import split_actions


def interface_ports(ovs: OvsInstance) -> dict[str, int]:
    """pod key -> ofport, from the Interface external_ids k8s.pod the CNI plugin wrote."""
    out = ovs.vsctl("--format=json", "--columns=ofport,external_ids", "list", "Interface")
    doc = json.loads(out)
    ports = {}
    for ofport, ext in doc.get("data", []):
        ids = dict(ext[1]) if isinstance(ext, list) and ext and ext[0] == "map" else {}
        pod = ids.get("k8s.pod")
        if pod and isinstance(ofport, int) and ofport > 0:
            ports[pod] = ofport
    return ports


class Tracer:
    """ofproto/trace across the lab's bridges; one instance per lab state snapshot."""

    def __init__(self, record: dict):
        self.record = record
        self.ovs = {n: OvsInstance(Path(i["rundir"]), netns=i["netns"]) for n, i in record["nodes"].items()}
        fab = record.get("fabric")
        self.fabric = OvsInstance(Path(fab["rundir"]), netns=fab["netns"]) if fab else None
        self.ports = {n: interface_ports(o) for n, o in self.ovs.items()}
        self.by_address = {i["address"]: n for n, i in record["nodes"].items()}

    def connect(self, src: str, dst: str, port: int, protocol: str) -> dict:
        """{"allowed": bool, "hops": [(bridge, outputs)]} for a new connection src -> dst."""
        pods = self.record["pods"]
        s, d = pods[src], pods[dst]
        l4 = protocol.lower()
        mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in s["ip"].split("."))
        fields = (f"{l4},dl_src={mac},dl_dst={GATEWAY_MAC},nw_src={s['ip']},nw_dst={d['ip']},"
                  f"{l4}_src=40000,{l4}_dst={port}")
        want = self.ports[d["node"]].get(dst)
        hops: list[tuple[str, list[int]]] = []
        bridge, ovs, name, in_port = s["node"], self.ovs[s["node"]], N.BRIDGE, self.ports[s["node"]].get(src)
        if in_port is None or want is None:
            return {"allowed": False, "hops": hops, "error": "pod not plugged in"}
        for _ in range(4):
            res = ovs.trace(name, f"{fields},in_port={in_port}", ct_next="trk,new")
            outs = res.openflow_outputs
            if not outs and any(a == "IN_PORT" for st in res.steps for a in split_actions(st.actions)):
                outs = [in_port]  # a hairpin (the fabric switch back down the link it came from)
            hops.append((bridge, outs))
            if len(outs) != 1:
                return {"allowed": False, "hops": hops}
            out = outs[0]
            if bridge == N.FABRIC_BRIDGE:
                nodes = {v["fabric_ofport"]: n for n, v in self.record["nodes"].items()}
                if out not in nodes:
                    return {"allowed": False, "hops": hops}
                bridge = nodes[out]
                ovs, name, in_port = self.ovs[bridge], N.BRIDGE, FABRIC_UPLINK_OFPORT
                continue
            if bridge == d["node"] and out == want:
                return {"allowed": True, "hops": hops}
            if out == FABRIC_UPLINK_OFPORT and self.fabric is not None:
                in_port = self.record["nodes"][bridge]["fabric_ofport"]
                bridge, ovs, name = N.FABRIC_BRIDGE, self.fabric, N.FABRIC_BRIDGE
                continue
            if out == TUNNEL_OFPORT:
                # the tunnel goes to the node whose address the flows put into tun_dst
                dsts = re.findall(r"set_field:([0-9.]+)->tun_dst", res.raw)
                if not dsts or dsts[-1] not in self.by_address:
                    return {"allowed": False, "hops": hops}
                bridge = self.by_address[dsts[-1]]
                ovs, name, in_port = self.ovs[bridge], N.BRIDGE, TUNNEL_OFPORT
                continue
            return {"allowed": False, "hops": hops}
        return {"allowed": False, "hops": hops}
