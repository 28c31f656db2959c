"""Run a private Open vSwitch (ovsdb-server + ovs-vswitchd) in its own network namespace.

Used by the tests, the local lab and (later) the controller.  Nothing here touches the
system Open vSwitch service: every file lives under ``rundir`` and both daemons run inside
a network namespace (only one netdev-datapath ovs-vswitchd can run per namespace, because
each one creates a tap device called ``ovs-netdev``).

Typical use::

    with OvsInstance(Path("/tmp/ovs1"), netns="node1") as ovs:
        ovs.add_bridge("br0", dpid=1)
        ovs.add_veth_port("br0", "veth-a", "pod-a", mac="02:00:00:00:00:01",
                          ip_cidr="10.0.0.1/24", ofport_request=1)
        ovs.add_flows("br0", "priority=0,actions=NORMAL")
        print(ovs.dump_flows("br0"))
        print(ovs.trace("br0", "tcp,in_port=1,nw_dst=10.0.0.2,tp_dst=80").verdict)

All commands that fail raise :class:`OvsCommandError`, whose message names the command
and carries its stderr (OVS's own error text).

Facts this relies on (checked with OVS 3.1):

* The unix sockets are plain files, so ``ovs-vsctl --db=unix:RUNDIR/db.sock``,
  ``ovs-ofctl ... RUNDIR/BR.mgmt`` and ``ovs-appctl -t RUNDIR/ovs-vswitchd.PID.ctl`` work
  from outside the namespace.
* ovs-vswitchd (netdev datapath) opens ports by interface name in ITS namespace: the host end
  of a pod's veth pair must live in the OVS namespace.
* TCP over veth with the userspace datapath needs TX checksum offload off in the pod.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sdn.ovs.errors import OvsCommandError, OvsError
from sdn.ovs.trace import TraceError, TraceResult, normalize_ct_state, parse_dpif_show, parse_trace
from sdn.proc import (
    ProcessError,
    alive,
    comm,
    proc_state,
    read_pidfile,
    socket_ready,
    tail,
    terminate,
    wait_gone,
)

__all__ = [
    "OF_VERSION",
    "OvsCommandError",
    "OvsError",
    "OvsInstance",
    "add_netns",
    "del_netns",
    "netns_exists",
    "netns_list",
    "netns_pids",
    "run_cmd",
]

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
PKGDATADIR = Path("/usr/share/openvswitch")
OF_VERSION = "OpenFlow13"
DEFAULT_PROTOCOLS = ("OpenFlow10", "OpenFlow13", "OpenFlow14")
# Unix socket paths are limited to 108 bytes (sun_path), including the NUL.
_MAX_SOCK_PATH = 107
_IFNAMSIZ = 15

_counter = itertools.count(1)


def run_cmd(argv: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``argv`` (no shell), capture text output, raise OvsCommandError on failure."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              env=dict(env) if env is not None else None, timeout=timeout)
    except FileNotFoundError as e:
        raise OvsCommandError(argv, 127, "",
                              f"{e} (is the program installed and on PATH?)") from None
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise OvsCommandError(argv, None, out, err, note=f"timeout after {timeout}s") from None
    if check and proc.returncode != 0:
        raise OvsCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


# --------------------------------------------------------------------------- netns helpers

def netns_list() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = run_cmd(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists() or name in netns_list()


def add_netns(name: str) -> None:
    """Create network namespace ``name`` and bring its loopback up."""
    last: Exception | None = None
    for _ in range(3):  # concurrent first `ip netns add` calls can race on /run/netns
        try:
            run_cmd(["ip", "netns", "add", name])
            break
        except OvsCommandError as e:
            if netns_exists(name):
                raise OvsError(f"network namespace {name!r} already exists") from e
            last = e
            time.sleep(0.1)
    else:
        assert last is not None
        raise last
    run_cmd(["ip", "-n", name, "link", "set", "lo", "up"])


def netns_pids(name: str) -> list[int]:
    """Pids of processes living in namespace ``name`` (empty if it does not exist)."""
    proc = run_cmd(["ip", "netns", "pids", name], check=False)
    if proc.returncode != 0:
        return []
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def del_netns(name: str, *, kill_processes: bool = True, timeout: float = 5.0) -> None:
    """Delete namespace ``name`` (no error if missing).

    With ``kill_processes`` the processes still inside it are ended first (TERM, then KILL),
    otherwise the kernel namespace would outlive its name.
    """
    if not netns_exists(name):
        return
    if kill_processes:
        _terminate([p for p in netns_pids(name) if p != os.getpid()], timeout=timeout)
    proc = run_cmd(["ip", "netns", "del", name], check=False)
    if proc.returncode != 0 and netns_exists(name):
        raise OvsCommandError(["ip", "netns", "del", name], proc.returncode, proc.stdout,
                              proc.stderr)


# --------------------------------------------------------------------------- process helpers

# Process helpers live in sdn.proc; these names stay for the modules that use them here.
_proc_state = proc_state
_alive = alive
_comm = comm
_wait_gone = wait_gone
_read_pidfile = read_pidfile
_tail = tail


def _terminate(pids: Iterable[int], timeout: float = 5.0) -> None:
    """SIGTERM ``pids``, wait up to ``timeout``, then SIGKILL the survivors."""
    try:
        terminate(pids, timeout)
    except ProcessError as e:
        raise OvsError(str(e)) from None


_socket_ready = socket_ready


def _check_ifname(name: str) -> None:
    if not name or len(name) > _IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise ValueError(f"bad interface name {name!r} (1..{_IFNAMSIZ} chars, no '/' or spaces)")


# --------------------------------------------------------------------------- the instance

class OvsInstance:
    """A private ovsdb-server + ovs-vswitchd, in its own network namespace.

    ``rundir``: private directory for the database, sockets, pid files and logs.
    ``netns``: namespace the daemons run in.  ``None`` with ``create_netns=True`` (the
    default) picks a unique name (``ovs<pid>-<n>``); ``None`` with ``create_netns=False``
    runs the daemons in the caller's namespace (only one netdev OVS per namespace!).
    ``create_netns``: create the namespace at :meth:`start` and delete it at :meth:`stop`;
    with ``False`` the namespace must already exist and is left alone.

    :meth:`stop` is idempotent and works on a fresh object pointing at the rundir of a
    crashed run (it reads the pid files and ``netns.owned``).
    """

    VSWITCHD = "ovs-vswitchd"
    OVSDB = "ovsdb-server"

    def __init__(self, rundir: Path | str, netns: str | None = None, create_netns: bool = True,
                 *, timeout: float = 15.0, cmd_timeout: float = 60.0):
        self.rundir = Path(rundir).resolve()
        if netns is None and create_netns:
            netns = f"ovs{os.getpid()}-{next(_counter)}"
        self.netns = netns
        self.create_netns = create_netns
        self.timeout = timeout
        self.cmd_timeout = cmd_timeout
        self._started = False

    # -- paths
    @property
    def db_path(self) -> Path:
        return self.rundir / "conf.db"

    @property
    def db_sock(self) -> Path:
        return self.rundir / "db.sock"

    @property
    def db_remote(self) -> str:
        return f"unix:{self.db_sock}"

    @property
    def ovsdb_pidfile(self) -> Path:
        return self.rundir / "ovsdb-server.pid"

    @property
    def vswitchd_pidfile(self) -> Path:
        return self.rundir / "ovs-vswitchd.pid"

    @property
    def ovsdb_ctl(self) -> Path:
        return self.rundir / "ovsdb-server.ctl"

    @property
    def ovsdb_log(self) -> Path:
        return self.rundir / "ovsdb-server.log"

    @property
    def vswitchd_log(self) -> Path:
        return self.rundir / "ovs-vswitchd.log"

    @property
    def _owned_file(self) -> Path:
        return self.rundir / "netns.owned"

    @property
    def vswitchd_pid(self) -> int | None:
        return _read_pidfile(self.vswitchd_pidfile)

    @property
    def ovsdb_pid(self) -> int | None:
        return _read_pidfile(self.ovsdb_pidfile)

    @property
    def vswitchd_ctl(self) -> Path:
        """ovs-vswitchd's control socket, RUNDIR/ovs-vswitchd.<pid>.ctl."""
        pid = self.vswitchd_pid
        if pid is None:
            raise OvsError(f"ovs-vswitchd is not running (no pid file {self.vswitchd_pidfile})")
        return self.rundir / f"ovs-vswitchd.{pid}.ctl"

    def mgmt(self, bridge: str) -> Path:
        """The OpenFlow management socket of ``bridge`` (RUNDIR/BRIDGE.mgmt)."""
        return self.rundir / f"{bridge}.mgmt"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OVS_RUNDIR=str(self.rundir), OVS_DBDIR=str(self.rundir),
                   OVS_LOGDIR=str(self.rundir), OVS_PKGDATADIR=str(PKGDATADIR),
                   OVS_SYSCONFDIR=str(self.rundir))
        return env

    @property
    def running(self) -> bool:
        pids = (self.vswitchd_pid, self.ovsdb_pid)
        return all(p is not None and _alive(p) for p in pids)

    def __repr__(self) -> str:
        return f"OvsInstance(rundir={str(self.rundir)!r}, netns={self.netns!r})"

    # -- command running
    def _ns_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def run(self, *argv: str, input: str | None = None, in_netns: bool = False,
            check: bool = True, timeout: float | None = None) -> str:
        """Run a command with the private OVS environment (optionally inside the netns)."""
        cmd = (self._ns_prefix() if in_netns else []) + [str(a) for a in argv]
        return run_cmd(cmd, input=input, env=self.env, timeout=timeout or self.cmd_timeout,
                       check=check).stdout

    def netns_exec(self, netns: str | None, *argv: str, input: str | None = None,
                   check: bool = True, timeout: float | None = None) -> str:
        """Run ``argv`` inside namespace ``netns`` (None: the caller's namespace)."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        return run_cmd(prefix + [str(a) for a in argv], input=input, env=self.env,
                       timeout=timeout or self.cmd_timeout, check=check).stdout

    # -- lifecycle
    def __enter__(self) -> OvsInstance:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> OvsInstance:
        """Create the netns and DB, start both daemons, wait until they answer."""
        for prog in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl",
                     "ovs-appctl", "ip"):
            if shutil.which(prog) is None and not Path("/usr/sbin", prog).exists():
                raise OvsError(f"{prog} not found: install openvswitch-switch and iproute2")
        if os.geteuid() != 0:
            raise OvsError("a private OVS in a network namespace needs root")
        if not SCHEMA.exists():
            raise OvsError(f"OVS schema {SCHEMA} not found (openvswitch-common installed?)")
        longest = self.rundir / "ovs-vswitchd.4194304.ctl"
        if len(str(longest)) > _MAX_SOCK_PATH:
            raise OvsError(f"rundir {self.rundir} is too long for unix socket paths "
                           f"({len(str(longest))} > {_MAX_SOCK_PATH} bytes); use a shorter one")
        if self.running:
            raise OvsError(f"{self!r} is already running")

        self.rundir.mkdir(parents=True, exist_ok=True)
        # leftovers of an earlier (crashed) run in the same rundir
        self.stop()
        for stale in list(self.rundir.glob("*.ctl")) + list(self.rundir.glob("*.mgmt")) + \
                list(self.rundir.glob("*.snoop")) + [self.db_sock, self.db_path]:
            stale.unlink(missing_ok=True)

        try:
            if self.netns and self.create_netns:
                add_netns(self.netns)
                self._own_netns(self.netns)
            elif self.netns and not netns_exists(self.netns):
                raise OvsError(f"network namespace {self.netns!r} does not exist "
                               f"(create_netns=False)")
            self.run("ovsdb-tool", "create", str(self.db_path), str(SCHEMA))
            self.run("ovsdb-server", str(self.db_path),
                     f"--remote=punix:{self.db_sock}",
                     f"--pidfile={self.ovsdb_pidfile}",
                     f"--unixctl={self.ovsdb_ctl}",
                     f"--log-file={self.ovsdb_log}",
                     "-vconsole:off", "--detach", in_netns=True)
            self._wait(lambda: _socket_ready(self.db_sock), "ovsdb-server", self.ovsdb_log)
            self.vsctl("init", no_wait=True)
            self.run("ovs-vswitchd", self.db_remote,
                     f"--pidfile={self.vswitchd_pidfile}",
                     f"--log-file={self.vswitchd_log}",
                     "-vconsole:off", "--detach", in_netns=True)
            self._wait(self._vswitchd_ready, "ovs-vswitchd", self.vswitchd_log)
        except BaseException:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
            raise
        self._started = True
        return self

    def _vswitchd_ready(self) -> bool:
        pid = self.vswitchd_pid
        if pid is None:
            return False
        ctl = self.rundir / f"ovs-vswitchd.{pid}.ctl"
        if not _socket_ready(ctl):
            return False
        proc = run_cmd(["ovs-appctl", "-t", str(ctl), "version"], env=self.env, check=False,
                       timeout=5)
        return proc.returncode == 0

    def _wait(self, ready, what: str, log: Path) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            if ready():
                return
            if time.monotonic() > deadline:
                raise OvsError(f"{what} did not become ready within {self.timeout}s "
                               f"({self!r}); last lines of {log}:\n{_tail(log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill both daemons (TERM, then KILL) and delete the namespaces this instance made.

        Idempotent; safe after a crash (stale pid files, leftover namespaces).
        """
        errors: list[str] = []
        for pidfile, name in ((self.vswitchd_pidfile, self.VSWITCHD),
                              (self.ovsdb_pidfile, self.OVSDB)):
            pid = _read_pidfile(pidfile)
            if pid is not None and _alive(pid) and _comm(pid).startswith(name[:15]):
                try:
                    _terminate([pid])
                except OvsError as e:
                    errors.append(str(e))
            pidfile.unlink(missing_ok=True)
        for ns in reversed(self._owned_netns()):
            try:
                del_netns(ns)
            except OvsError as e:
                errors.append(str(e))
        if not errors:
            self._owned_file.unlink(missing_ok=True)
        self._started = False
        if errors:
            raise OvsError(f"stop of {self!r} incomplete:\n" + "\n".join(errors))

    # -- namespaces owned (created) by this instance, persisted for crash recovery
    def _owned_netns(self) -> list[str]:
        try:
            return [n for n in self._owned_file.read_text().split() if n]
        except OSError:
            return []

    def _own_netns(self, name: str) -> None:
        if name not in self._owned_netns():
            with self._owned_file.open("a") as f:
                f.write(name + "\n")

    # -- ovs tools
    def vsctl(self, *args: str, no_wait: bool = False, timeout: float | None = None) -> str:
        """``ovs-vsctl --db=unix:RUNDIR/db.sock [--no-wait] ARGS``; returns stdout."""
        t = int(timeout or self.cmd_timeout)
        argv = ["ovs-vsctl", f"--db={self.db_remote}", f"--timeout={t}"]
        if no_wait:
            argv.append("--no-wait")
        return self.run(*argv, *args, timeout=t + 5)

    def ofctl(self, *args: str, input: str | None = None, timeout: float | None = None) -> str:
        """``ovs-ofctl -O OpenFlow13 ARGS``; returns stdout.

        The first positional argument after the command (the switch target) is replaced by
        the bridge's management socket when it names a bridge of this instance, so
        ``ofctl("dump-flows", "br0")`` works from outside the namespace.
        """
        args_l = [str(a) for a in args]
        positional = [i for i, a in enumerate(args_l) if not a.startswith("-") or a == "-"]
        if len(positional) >= 2:
            i = positional[1]
            if "/" not in args_l[i] and ":" not in args_l[i] and self.mgmt(args_l[i]).exists():
                args_l[i] = str(self.mgmt(args_l[i]))
        return self.run("ovs-ofctl", "-O", OF_VERSION, *args_l, input=input, timeout=timeout)

    def appctl(self, *args: str, target: str = "vswitchd", timeout: float | None = None) -> str:
        """``ovs-appctl -t <ctl socket> ARGS`` (target "vswitchd" or "ovsdb-server")."""
        ctl = self.vswitchd_ctl if target in ("vswitchd", self.VSWITCHD) else self.ovsdb_ctl
        return self.run("ovs-appctl", "-t", str(ctl), *args, timeout=timeout)

    # -- bridges
    def add_bridge(self, name: str, dpid: int, fail_mode: str = "secure",
                   controller: str | Sequence[str] | None = None, *,
                   protocols: Sequence[str] = DEFAULT_PROTOCOLS,
                   datapath_type: str = "netdev",
                   other_config: Mapping[str, str] | None = None,
                   external_ids: Mapping[str, str] | None = None) -> None:
        """Create ``name`` in one transaction: netdev datapath, pinned datapath-id (16 hex
        digits), in-band disabled, ``fail_mode`` and (optionally) controller(s).

        Setting fail_mode and the controller in the same transaction as the bridge matters:
        changing either later (with no controller) deletes all flows.
        """
        _check_ifname(name)
        if not 0 <= dpid < 2 ** 64:
            raise ValueError(f"dpid {dpid} out of range")
        args = ["add-br", name, "--", "set", "bridge", name,
                f"datapath_type={datapath_type}",
                f"fail_mode={fail_mode}",
                f"other-config:datapath-id={dpid:016x}",
                "other-config:disable-in-band=true",
                "protocols=" + ",".join(protocols)]
        for k, v in (other_config or {}).items():
            args.append(f'other-config:{k}="{v}"')
        for k, v in (external_ids or {}).items():
            args.append(f'external_ids:{k}="{v}"')
        if controller:
            ctrls = [controller] if isinstance(controller, str) else list(controller)
            args += ["--", "set-controller", name, *ctrls]
        self.vsctl(*args)
        self._wait(lambda: _socket_ready(self.mgmt(name)), f"bridge {name} mgmt socket",
                   self.vswitchd_log)

    def del_bridge(self, name: str) -> None:
        self.vsctl("--if-exists", "del-br", name)

    def set_controller(self, bridge: str, *targets: str) -> None:
        self.vsctl("set-controller", bridge, *targets)

    def datapath_id(self, bridge: str) -> int:
        return int(self.vsctl("get", "bridge", bridge, "datapath_id").strip().strip('"'), 16)

    # -- flows
    def _target(self, bridge: str) -> str:
        path = self.mgmt(bridge)
        if not path.exists():
            raise OvsError(f"bridge {bridge!r} has no management socket {path} "
                           f"(not created, or ovs-vswitchd not running)")
        return str(path)

    @staticmethod
    def _text(flows: str | Iterable[str]) -> str:
        text = flows if isinstance(flows, str) else "\n".join(flows)
        return text if text.endswith("\n") else text + "\n"

    def add_flows(self, bridge: str, text: str | Iterable[str], *, bundle: bool = True) -> None:
        """``add-flows --bundle`` from stdin (atomic: all or nothing).  Raises
        OvsCommandError with OVS's message (``-:LINE: ...``) on a bad flow."""
        text = self._text(text)
        if not text.strip():
            return
        opts = ["--bundle"] if bundle else []
        self.ofctl(*opts, "add-flows", self._target(bridge), "-", input=text)

    def replace_flows(self, bridge: str, text: str | Iterable[str], *,
                      bundle: bool = True) -> None:
        """``replace-flows --bundle``: make the flow table exactly ``text``, atomically."""
        opts = ["--bundle"] if bundle else []
        self.ofctl(*opts, "replace-flows", self._target(bridge), "-", input=self._text(text))

    def del_flows(self, bridge: str, match: str | None = None, *, strict: bool = False) -> None:
        """``del-flows`` (all flows if ``match`` is None)."""
        cmd = ["--strict"] if strict else []
        self.ofctl(*cmd, "del-flows", self._target(bridge), *([match] if match else []))

    def dump_flows(self, bridge: str, match: str | None = None, *, stats: bool = False,
                   names: bool = False) -> str:
        """Flow table as text, one flow per line (the ``OFPST_FLOW reply`` header removed).

        ``stats=False`` uses ``--no-stats`` (no cookie=0/duration/n_packets noise, stable for
        comparisons); ``names=False`` uses ``--no-names`` (port numbers, not names).
        """
        opts = []
        if not stats:
            opts.append("--no-stats")
        opts.append("--names" if names else "--no-names")
        out = self.ofctl(*opts, "dump-flows", self._target(bridge), *([match] if match else []))
        return "".join(line + "\n" for line in out.splitlines()
                       if line.strip() and not line.startswith("OFPST_FLOW reply"))

    def dump_flows_with_stats(self, bridge: str, match: str | None = None) -> str:
        return self.dump_flows(bridge, match, stats=True)

    def flow_lines(self, bridge: str, match: str | None = None) -> list[str]:
        """``dump_flows`` without stats, stripped lines."""
        return [line.strip() for line in self.dump_flows(bridge, match).splitlines()]

    # -- tracing
    def trace(self, bridge: str, flow: str, ct_next: Sequence[str] | str | None = None,
              extra_args: Sequence[str] = ()) -> TraceResult:
        """``ovs-appctl ofproto/trace BRIDGE FLOW [--ct-next STATE]...``, parsed (sdn.ovs.trace).

        ``ct_next``: the conntrack state after each recirculation, in order (one string per
        ``ct(table=...)`` traversed; a plain string means a single one); ``"trk,new"``,
        ``"+trk+est"`` or ``"trk|est"`` all work.  Later recirculations get OVS's default
        ``trk,new``.  Raises :class:`TraceError` with OVS's message on a bad flow/bridge.
        """
        states = [] if ct_next is None else ([ct_next] if isinstance(ct_next, str) else list(ct_next))
        norm = [normalize_ct_state(s) for s in states]
        args = ["ofproto/trace", bridge, flow]
        for s in norm:
            args += ["--ct-next", s]
        args += list(extra_args)
        try:
            out = self.appctl(*args)
        except OvsCommandError as e:
            raise TraceError(f"ofproto/trace {bridge} {flow!r} failed: "
                             f"{e.stderr.strip() or e}") from e
        return parse_trace(out, self.port_map(), bridge=bridge, flow=flow, ct_next=norm)

    def port_map(self, bridge: str | None = None) -> dict[int, tuple[str, int]]:
        """Datapath port number -> (port name, OpenFlow port) from ``dpif/show``."""
        out = self.appctl("dpif/show")
        return parse_dpif_show(out, bridge)

    # -- ports
    def ofport(self, port: str) -> int:
        """OpenFlow port number of interface ``port`` (raises if OVS could not open it)."""
        deadline = time.monotonic() + self.timeout
        while True:
            raw = self.vsctl("get", "interface", port, "ofport").strip()
            try:
                n = int(raw)
            except ValueError:
                n = -1
            if n > 0:
                return n
            if time.monotonic() > deadline:
                err = self.vsctl("get", "interface", port, "error").strip()
                raise OvsError(f"interface {port!r} has no OpenFlow port (ofport={raw}, "
                               f"error={err}); see {self.vswitchd_log}:\n"
                               f"{_tail(self.vswitchd_log, 10)}")
            time.sleep(0.05)

    def add_internal_port(self, bridge: str, name: str, ofport_request: int | None = None,
                          external_ids: Mapping[str, str] | None = None) -> int:
        """An OVS internal port (a tap in the OVS namespace); returns its ofport."""
        _check_ifname(name)
        args = ["add-port", bridge, name, "--", "set", "interface", name, "type=internal"]
        if ofport_request is not None:
            args.append(f"ofport_request={ofport_request}")
        for k, v in (external_ids or {}).items():
            args.append(f'external_ids:{k}="{v}"')
        self.vsctl(*args)
        return self.ofport(name)

    def add_veth_port(self, bridge: str, port_name: str, peer_netns: str,
                      peer_ifname: str = "eth0", mac: str | None = None,
                      ip_cidr: str | Sequence[str] | None = None,
                      ofport_request: int | None = None,
                      external_ids: Mapping[str, str] | None = None, *,
                      gateway: str | Sequence[str] | None = None,
                      mtu: int | None = None) -> int:
        """Plug a "pod" into ``bridge`` with a veth pair; returns the OpenFlow port.

        The host end ``port_name`` is created in the OVS namespace (ovs-vswitchd opens it by
        name there) and added to the bridge with ``ofport_request``/``external_ids``.  The
        peer ``peer_ifname`` goes into ``peer_netns`` (created -- and later deleted by
        :meth:`stop` -- if missing) with ``mac``, ``ip_cidr`` (one or more, IPv6 added
        ``nodad``), optional default ``gateway``(s); TX checksum offload is turned off
        there (``ethtool -K IF tx off``), which TCP over the userspace datapath needs.
        """
        _check_ifname(port_name)
        _check_ifname(peer_ifname)
        if not netns_exists(peer_netns):
            add_netns(peer_netns)
            self._own_netns(peer_netns)
        host_ns = ["ip", "-n", self.netns] if self.netns else ["ip"]
        pod = ["ip", "-n", peer_netns]
        run_cmd(host_ns + ["link", "add", port_name, *(["mtu", str(mtu)] if mtu else []),
                           "type", "veth", "peer", "name", peer_ifname, "netns", peer_netns])
        try:
            if mtu:
                run_cmd(pod + ["link", "set", peer_ifname, "mtu", str(mtu)])
            if mac:
                run_cmd(pod + ["link", "set", peer_ifname, "address", mac])
            cidrs = [ip_cidr] if isinstance(ip_cidr, str) else list(ip_cidr or [])
            for cidr in cidrs:
                extra = ["nodad"] if ":" in cidr else []
                run_cmd(pod + ["addr", "add", cidr, "dev", peer_ifname, *extra])
            run_cmd(pod + ["link", "set", peer_ifname, "up"])
            run_cmd(host_ns + ["link", "set", port_name, "up"])
            gws = [gateway] if isinstance(gateway, str) else list(gateway or [])
            for gw in gws:
                run_cmd(pod + (["-6"] if ":" in gw else []) +
                        ["route", "add", "default", "via", gw, "dev", peer_ifname])
            self.netns_exec(peer_netns, "ethtool", "-K", peer_ifname, "tx", "off")
            args = ["add-port", bridge, port_name]
            iface = []
            if ofport_request is not None:
                iface.append(f"ofport_request={ofport_request}")
            for k, v in (external_ids or {}).items():
                iface.append(f'external_ids:{k}="{v}"')
            if iface:
                args += ["--", "set", "interface", port_name, *iface]
            self.vsctl(*args)
            return self.ofport(port_name)
        except BaseException:
            self.vsctl("--if-exists", "del-port", bridge, port_name)
            run_cmd(host_ns + ["link", "del", port_name], check=False)
            raise

    def del_port(self, bridge: str, port_name: str, *, delete_link: bool = True) -> None:
        """Remove ``port_name`` from ``bridge``; with ``delete_link`` also delete the veth
        (both ends) from the OVS namespace.  No error if already gone."""
        self.vsctl("--if-exists", "del-port", bridge, port_name)
        if delete_link:
            host_ns = ["ip", "-n", self.netns] if self.netns else ["ip"]
            run_cmd(host_ns + ["link", "del", port_name], check=False)

    def delete_netns(self, name: str) -> None:
        """Delete a (pod) namespace now, ending its processes; forget it if we made it."""
        del_netns(name)
        owned = [n for n in self._owned_netns() if n != name]
        if owned:
            self._owned_file.write_text("".join(n + "\n" for n in owned))
        else:
            self._owned_file.unlink(missing_ok=True)

    def pod_exec(self, pod_netns: str, *argv: str, input: str | None = None,
                 check: bool = True, timeout: float | None = None) -> str:
        """Run a command inside a pod namespace."""
        return self.netns_exec(pod_netns, *argv, input=input, check=check, timeout=timeout)
