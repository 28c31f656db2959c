"""A private OVN hypervisor for the side-by-side benchmark (benchmarks/ovn.py): NB and SB
ovsdb-servers, ovn-northd and ovn-controller, all in one temporary run directory, driving br-int
of a private netdev ovs-vswitchd in its own network namespace (sdn.ovs.instance.OvsInstance).

    with OvnStack(Path("/tmp/x")) as ovn:
        ovn.nb.transact([...])          # one NB transaction (JSON-RPC, no process spawned)
        ovn.wait_hv()                   # `ovn-nbctl --wait=hv sync`: flows installed on br-int
        ovn.ovs.dump_flows("br-int")

Nothing touches the system's OVN or OVS: every daemon gets explicit sockets, pid files and logs
under the run directory, ovn-controller runs inside the namespace (`ip netns exec`) with
OVS_RUNDIR pointing at the private OVS (it finds br-int.mgmt there), and `stop()` ends each
daemon by its pid file (checking the process name first), then the OVS instance and the
namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from sdn.ovs.instance import OvsError, OvsInstance, run_cmd
from sdn.proc import alive as _alive
from sdn.proc import comm as _comm
from sdn.proc import read_pidfile as _read_pidfile
from sdn.proc import socket_ready as _socket_ready
from sdn.proc import tail as _tail
from sdn.proc import terminate as _terminate

NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")
PROGRAMS = ("ovsdb-tool", "ovsdb-server", "ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl",
            "ovn-appctl")
BRIDGE = "br-int"
CHASSIS = "bench-chassis"


def missing_programs() -> list[str]:
    """OVN programs (and schemas) this harness needs that are not installed."""
    out = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()
           and not Path("/usr/bin", p).exists()]
    return out + [str(s) for s in (NB_SCHEMA, SB_SCHEMA) if not s.exists()]


class OvsdbClient:
    """A minimal OVSDB JSON-RPC client (RFC 7047) over a unix socket: `transact` sends one
    transaction and returns its per-operation results; replies to the server's echo probes."""

    def __init__(self, path: Path, database: str, timeout: float = 600.0):
        self.path, self.database, self.timeout = path, database, timeout
        self.sock: socket.socket | None = None
        self.buf = ""
        self.ids = 0
        self.decoder = json.JSONDecoder()

    def _connect(self) -> socket.socket:
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(str(self.path))
            self.sock = s
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _send(self, msg: dict) -> None:
        self._connect().sendall(json.dumps(msg, separators=(",", ":")).encode())

    def _next(self) -> dict:
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    obj, end = self.decoder.raw_decode(text)
                    self.buf = text[end:]
                    return obj
                except json.JSONDecodeError:
                    pass
            chunk = self._connect().recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"{self.path}: connection closed")
            self.buf += chunk.decode()

    def call(self, method: str, params: list):
        self.ids += 1
        ident = self.ids
        self._send({"method": method, "params": params, "id": ident})
        while True:
            msg = self._next()
            if msg.get("method") == "echo":
                self._send({"result": msg.get("params", []), "error": None, "id": msg.get("id")})
                continue
            if msg.get("id") != ident:
                continue
            if msg.get("error"):
                raise OvsError(f"{self.path} {method}: {msg['error']}")
            return msg["result"]

    def transact(self, ops: list[dict]) -> list[dict]:
        """One atomic transaction; raises with the database's message if any operation failed."""
        if not ops:
            return []
        result = self.call("transact", [self.database, *ops])
        for i, r in enumerate(result):
            if r and "error" in r:
                what = json.dumps(ops[i])[:300] if i < len(ops) else "(commit)"
                raise OvsError(f"{self.database} transaction failed: {r.get('error')}: {r.get('details', '')} "
                               f"in {what}")
        return result

    def select(self, table: str, columns: list[str], where: list | None = None) -> list[dict]:
        return self.transact([{"op": "select", "table": table, "where": where or [], "columns": columns}])[0]["rows"]


class OvnStack:
    """NB + SB ovsdb-server, ovn-northd, a private OVS with br-int (netdev, fail_mode=secure)
    and ovn-controller bound to it, all under `rundir`; `stop()` tears everything down."""

    def __init__(self, rundir: Path, netns: str | None = None, timeout: float = 60.0):
        self.rundir = Path(rundir).resolve()
        self.timeout = timeout
        self.ovs = OvsInstance(self.rundir / "ovs", netns=netns or f"sdnovn{os.getpid() % 100000}")
        self.nb_sock, self.sb_sock = self.rundir / "nb.sock", self.rundir / "sb.sock"
        self.nb = OvsdbClient(self.nb_sock, "OVN_Northbound")
        self.sb = OvsdbClient(self.sb_sock, "OVN_Southbound")

    # -- bookkeeping
    def _pidfile(self, name: str) -> Path:
        return self.rundir / f"{name}.pid"

    def _ctl(self, name: str) -> Path:
        return self.rundir / f"{name}.ctl"

    def _log(self, name: str) -> Path:
        return self.rundir / f"{name}.log"

    @property
    def env(self) -> dict[str, str]:
        env = self.ovs.env
        env.update(OVN_RUNDIR=str(self.rundir), OVN_DBDIR=str(self.rundir), OVN_LOGDIR=str(self.rundir),
                   OVN_SYSCONFDIR=str(self.rundir))
        return env

    def run(self, *argv: str, timeout: float | None = None, in_netns: bool = False) -> str:
        prefix = ["ip", "netns", "exec", str(self.ovs.netns)] if in_netns else []
        return run_cmd(prefix + [str(a) for a in argv], env=self.env, timeout=timeout or self.timeout).stdout

    def _daemon(self, name: str, argv: list[str], in_netns: bool = False, unixctl: bool = True) -> None:
        ctl = [f"--unixctl={self._ctl(name)}"] if unixctl else []  # ovn-controller: OVN_RUNDIR/NAME.PID.ctl
        self.run(*argv, f"--pidfile={self._pidfile(name)}", *ctl, f"--log-file={self._log(name)}", "--detach",
                 "--no-chdir", in_netns=in_netns)

    def _wait(self, ready, what: str, log: Path | None = None, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not ready():
            if time.monotonic() > deadline:
                tail = f"; last lines of {log}:\n{_tail(log)}" if log else ""
                raise OvsError(f"{what} not ready after {timeout or self.timeout:g}s{tail}")
            time.sleep(0.02)

    # -- lifecycle
    def __enter__(self) -> OvnStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> OvnStack:
        missing = missing_programs()
        if missing:
            raise OvsError(f"OVN not installed: missing {', '.join(missing)} (apt-get install ovn-central ovn-host)")
        self.rundir.mkdir(parents=True, exist_ok=True)
        try:
            for name, schema in (("nb", NB_SCHEMA), ("sb", SB_SCHEMA)):
                db = self.rundir / f"{name}.db"
                self.run("ovsdb-tool", "create", str(db), str(schema))
                self._daemon(f"{name}-ovsdb", ["ovsdb-server", f"--remote=punix:{self.rundir / (name + '.sock')}",
                                               str(db)])
            for sock in (self.nb_sock, self.sb_sock):
                self._wait(lambda s=sock: _socket_ready(s), f"ovsdb-server {sock}")
            self._daemon("northd", ["ovn-northd", f"--ovnnb-db=unix:{self.nb_sock}",
                                    f"--ovnsb-db=unix:{self.sb_sock}"])
            self._wait(lambda: "active" in self._appctl("northd", "status"), "ovn-northd", self._log("northd"))
            self.ovs.start()
            # br-int is ours: netdev datapath, fail_mode=secure; ovn-controller only programs it.
            self.ovs.add_bridge(BRIDGE, dpid=0x0B1, protocols=("OpenFlow13", "OpenFlow15"))
            self.ovs.vsctl("set", "open_vswitch", ".", f"external_ids:system-id={CHASSIS}",
                           f'external_ids:ovn-remote="unix:{self.sb_sock}"', "external_ids:ovn-encap-type=geneve",
                           "external_ids:ovn-encap-ip=127.0.0.1", f"external_ids:ovn-bridge={BRIDGE}",
                           "external_ids:ovn-bridge-datapath-type=netdev",
                           "external_ids:ovn-monitor-all=true")  # as OVN-Kubernetes sets it
            self._daemon("ovn-controller", ["ovn-controller", self.ovs.db_remote], in_netns=True, unixctl=False)
            self._wait(lambda: bool(self.sb.select("Chassis", ["name"], [["name", "==", CHASSIS]])),
                       "ovn-controller (its Chassis row in the SB)", self._log("ovn-controller"))
            self.wait_hv()
        except BaseException:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
            raise
        return self

    def _appctl(self, name: str, *args: str) -> str:
        try:
            return self.run("ovn-appctl", "-t", str(self._ctl(name)), *args, timeout=10)
        except OvsError:
            return ""

    def stop(self) -> None:
        """End every daemon by its pid file (name checked), then OVS and its namespace."""
        self.nb.close()
        self.sb.close()
        errors = []
        for name, comm in (("ovn-controller", "ovn-controller"), ("northd", "ovn-northd"),
                           ("sb-ovsdb", "ovsdb-server"), ("nb-ovsdb", "ovsdb-server")):
            pid = _read_pidfile(self._pidfile(name))
            if pid is not None and _alive(pid) and _comm(pid).startswith(comm[:15]):
                try:
                    _terminate([pid])
                except OvsError as e:
                    errors.append(str(e))
            self._pidfile(name).unlink(missing_ok=True)
        try:
            self.ovs.stop()
        except OvsError as e:
            errors.append(str(e))
        if errors:
            raise OvsError("OVN stack stop incomplete:\n" + "\n".join(errors))

    # -- use
    def nbctl(self, *args: str, timeout: float | None = None) -> str:
        t = timeout or self.timeout
        return self.run("ovn-nbctl", f"--db=unix:{self.nb_sock}", f"--timeout={int(t)}", *args, timeout=t + 5)

    def wait_hv(self, timeout: float | None = None) -> float:
        """`ovn-nbctl --wait=hv sync`: returns once ovn-controller reports that br-int holds the
        flows of everything committed to the NB so far; the seconds it took."""
        t = time.perf_counter()
        self.nbctl("--wait=hv", "sync", timeout=timeout)
        return time.perf_counter() - t

    def flow_lines(self) -> list[str]:
        """br-int's OpenFlow flows (OpenFlow 1.5, as ovn-controller speaks), header removed."""
        out = self.ovs.run("ovs-ofctl", "-O", "OpenFlow15", "--no-names", "dump-flows",
                           str(self.ovs.mgmt(BRIDGE)), timeout=600)
        return [line.strip() for line in out.splitlines() if line.strip() and "_FLOW reply" not in line]

    def stage_of_cookie(self) -> dict[int, str]:
        """OpenFlow cookie -> logical flow stage name: ovn-controller uses the first 32 bits of a
        logical flow's UUID as the cookie of the flows it makes from it."""
        rows = self.sb.select("Logical_Flow", ["_uuid", "external_ids"])
        out: dict[int, str] = {}
        for r in rows:
            ext = dict(r["external_ids"][1])
            out[int(r["_uuid"][1][:8], 16)] = ext.get("stage-name", "?")
        return out

    def ports_up(self, names: list[str]) -> bool:
        rows = self.nb.select("Logical_Switch_Port", ["name", "up"])
        up = {r["name"] for r in rows if r["up"] is True}
        return all(n in up for n in names)

    def wait_ports_up(self, names: list[str], timeout: float | None = None) -> None:
        self._wait(lambda: self.ports_up(names), f"{len(names)} logical ports up", self._log("ovn-controller"),
                   timeout)


__all__ = ["BRIDGE", "CHASSIS", "OvnStack", "OvsdbClient", "missing_programs"]
