"""`--bridge NODE[/BRIDGE]=OVSDB`: which bridges the controller programs, and where their
OVSDB (and, for a unix remote, their OVS run directory) is."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeSpec:
    """A node, its OVSDB remote and (optionally) bridge name."""

    node: str
    ovsdb: str
    bridge: str | None = None

    @classmethod
    def parse(cls, text: str) -> NodeSpec:
        name, sep, remote = text.partition("=")
        if not sep or not name or not remote:
            raise ValueError(f"--bridge {text!r}: expected NODE=OVSDB_REMOTE or NODE/BRIDGE=OVSDB_REMOTE "
                             f"(e.g. node-1=unix:/run/openvswitch/db.sock)")
        node, _, bridge = name.partition("/")
        if not remote.startswith(("unix:", "tcp:", "ssl:")):
            if remote.startswith("/"):
                remote = "unix:" + remote
            else:
                raise ValueError(f"--bridge {text!r}: OVSDB remote must be unix:PATH or tcp:HOST:PORT")
        return cls(node, remote, bridge or None)

    @property
    def ovs_rundir(self) -> str | None:
        """Where this OVS keeps its sockets (ovs-vswitchd's control socket for ofproto/trace)."""
        return os.path.dirname(self.ovsdb[5:]) if self.ovsdb.startswith("unix:") else None
