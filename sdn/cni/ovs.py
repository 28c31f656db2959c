"""The pod's port on the node bridge, through ovs-vsctl.

The plugin lives for one command, so it uses ovs-vsctl (one transaction, waits until
ovs-vswitchd has applied it) rather than an OVSDB IDL, which pays off only in a process
that stays connected (the controller).  Every call has a timeout; an OVSDB that cannot be
reached, or an ovs-vswitchd that does not apply a change in time, is CNI code 11 ("try
again later"); any other failure is ERR_OVS with ovs-vsctl's own message.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sdn.cni.spec import ERR_OVS, ERR_TRY_AGAIN, CniError

OFPORT_WAIT = 3.0  # seconds for an ofport to show up once ovs-vswitchd has applied add-port


@dataclass(frozen=True)
class Vsctl:
    db: str
    timeout: float

    def __call__(self, *args: str) -> str:
        t = max(1, int(self.timeout))
        argv = ["ovs-vsctl", f"--db={self.db}", f"--timeout={t}", *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=t + 5)
        except FileNotFoundError:
            raise CniError(ERR_OVS, "ovs-vsctl not found (install openvswitch-switch)") from None
        except subprocess.TimeoutExpired:
            proc = None
        # ovs-vsctl --timeout ends itself with SIGALRM (returncode -14).
        if proc is None or proc.returncode < 0:
            raise CniError(ERR_TRY_AGAIN,
                           f"ovs-vsctl timed out after {t}s on OVSDB {self.db}: ovsdb-server "
                           f"did not answer or ovs-vswitchd did not apply the change; is this "
                           f"node's Open vSwitch running?", " ".join(argv))
        if proc.returncode != 0:
            err = proc.stderr.strip()
            if "database connection failed" in err or "connection attempt failed" in err:
                raise CniError(ERR_TRY_AGAIN, f"cannot reach OVSDB {self.db}: {err}",
                               "is this node's ovsdb-server running, and is \"ovsdb\" in the "
                               "network config its socket?")
            raise CniError(ERR_OVS, f"ovs-vsctl failed: {err}", " ".join(argv))
        return proc.stdout


def _q(text: str) -> str:
    """An OVSDB string atom as ovs-vsctl parses it (quoted, JSON escapes)."""
    return json.dumps(text)


def add_port(vsctl: Vsctl, bridge: str, name: str, external_ids: Mapping[str, str]) -> int:
    """Add ``name`` to ``bridge`` with ``external_ids`` on its Interface; its ofport.

    ``--may-exist`` keeps a retried ADD from failing on a port row it already wrote.
    """
    ids = [f"external_ids:{_q(k)}={_q(v)}" for k, v in sorted(external_ids.items())]
    vsctl("--may-exist", "add-port", bridge, name, "--", "set", "Interface", name, *ids)
    deadline = time.monotonic() + OFPORT_WAIT
    while True:
        ofport, error = vsctl("get", "Interface", name, "ofport", "error").splitlines()
        if ofport.strip().lstrip("-").isdigit() and int(ofport) > 0:
            return int(ofport)
        # ovs-vswitchd sets ofport -1 and an error (e.g. "No such device") when it cannot open it.
        if time.monotonic() > deadline or error.strip() not in ("", "[]"):
            raise CniError(ERR_OVS, f"ovs-vswitchd could not open port {name} on {bridge} "
                           f"(ofport {ofport.strip()}, error {error.strip()})",
                           "with the userspace (netdev) datapath the host end of the veth "
                           "must be in the namespace where ovs-vswitchd runs: set "
                           "\"ovsNetns\" in the network config to it")
        time.sleep(0.05)


def del_port(vsctl: Vsctl, name: str) -> None:
    """Remove port ``name`` from whichever bridge has it; no error if none does.

    ``--no-wait``: once the row is gone ovs-vswitchd drops the port whenever it runs, so
    DEL (and undoing a failed ADD) works while ovs-vswitchd is down.
    """
    vsctl("--no-wait", "--if-exists", "del-port", name)


@dataclass(frozen=True)
class PortState:
    bridge: str
    ofport: int
    external_ids: Mapping[str, str]


def port_state(vsctl: Vsctl, name: str) -> PortState | None:
    """The Interface row ``name`` and its bridge, or None if there is no such port."""
    out = vsctl("--format=json", "--columns=ofport,external_ids", "find", "Interface",
                f"name={_q(name)}")
    rows = json.loads(out)["data"]
    if not rows:
        return None
    ofport, ids = rows[0]
    ofport = ofport if isinstance(ofport, int) else -1  # ["set", []] while unassigned
    bridge = vsctl("port-to-br", name).strip()
    return PortState(bridge, ofport, dict(ids[1]))


def attached_ports(vsctl: Vsctl, bridge: str) -> dict[str, Mapping[str, str]]:
    """The ports of ``bridge`` that this plugin attached (their Interface has a container-id
    and an ifname in external_ids): port name -> external_ids."""
    ports = set(vsctl("list-ports", bridge).split())
    rows = json.loads(vsctl("--format=json", "--columns=name,external_ids", "list", "Interface"))["data"]
    out: dict[str, Mapping[str, str]] = {}
    for name, ids in rows:
        ids = dict(ids[1])
        if name in ports and ids.get("container-id") and ids.get("ifname"):
            out[name] = ids
    return out


def bridge_exists(vsctl: Vsctl, bridge: str) -> bool:
    try:
        vsctl("br-exists", bridge)
    except CniError as e:
        if e.code == ERR_OVS:  # br-exists exits 2 for a missing bridge
            return False
        raise
    return True
