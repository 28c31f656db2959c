"""`sdnctl controller`: start os-ken programmatically (4.x ships no manager script), follow the
inputs, stop cleanly on SIGTERM/SIGINT.

Start-up order matters (notes/os-ken.md): os_ken.base.app_manager first, then the
configuration (listen address and port overridden, so os-ken opens no second, default
listener), then the socket wrapper, then the apps. The main thread then runs the input loop:
the source (sdn.sources: manifest files, polled; or the Kubernetes API, pushed) hands whole
clusters to the core, OVSDB changes arrive from the monitors, and each change is compiled and
handed to the bridges.

Shutdown: os-ken's native hub threads cannot be killed and are not daemons (pitfall 2), so
after our own parts have stopped -- control socket closed, each bridge's current operation
finished -- the process ends with os._exit. A bundle cut off by a harder death is discarded
by OVS with the connection; bridges keep their flows (fail_mode=secure).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdn.proc import remove_stale_socket
from sdn.sources.base import Source
from sdn.sources.files import SETTLE, FileSource
from sdn.switch.control import DEFAULT_SOCKET, ControlServer
from sdn.switch.core import ControllerCore, NodeSpec

log = logging.getLogger("sdn.switch.controller")

DEFAULT_LISTEN = "unix:/run/sdn/openflow.sock"


@dataclass
class Options:
    manifests: list[str]
    nodes: list[NodeSpec]
    listen: str = DEFAULT_LISTEN
    control: str = DEFAULT_SOCKET
    poll: float = 0.5
    configure_bridges: bool = True
    log_level: str = "INFO"
    log_file: str | None = None
    enforce: str = "host"
    # The input instead of manifest files (the Kubernetes API: sdn.sources.kubernetes).
    source: Source | None = None
    settle: float = SETTLE  # how long a manifest modified in place must rest before it is read


class StartupError(RuntimeError):
    pass


def parse_listen(target: str) -> tuple[str, Any]:  # ("unix", path) or ("tcp", (host, port))
    """'unix:/path' -> ("unix", path); 'tcp:HOST:PORT' / 'tcp:PORT' -> ("tcp", (host, port))."""
    if target.startswith("unix:"):
        path = target[5:]
        if not os.path.isabs(path):
            raise StartupError(f"--listen {target}: the unix socket path must be absolute")
        return "unix", path
    if target.startswith("tcp:"):
        rest = target[4:]
        host, _, port = rest.rpartition(":")
        if not port.isdigit():
            raise StartupError(f"--listen {target}: expected tcp:HOST:PORT")
        return "tcp", (host.strip("[]") or "127.0.0.1", int(port))
    raise StartupError(f"--listen {target}: expected unix:PATH or tcp:HOST:PORT")


def _prepare_unix(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        remove_stale_socket(path)
    except OSError as e:
        raise StartupError(str(e)) from None


LINK_NAME = "sdn-openflow.sock"


def controller_target(listen: str, spec: NodeSpec) -> tuple[str, Callable[[], None] | None]:
    """The target a node's bridge should connect to, and what must exist for it to work.

    OVS only connects to unix sockets inside its own run directory ("possibility for remote
    exploit" otherwise), so for a unix listener elsewhere a symlink RUNDIR/sdn-openflow.sock
    points at it: one listener then serves OVS instances in any network namespace (unix socket
    paths are files, not per namespace). The symlink is (re)made whenever the node's OVSDB
    connects, so a node that is down at start-up gets it when it comes up."""
    kind, where = parse_listen(listen)
    if kind == "tcp" or spec.ovs_rundir is None:
        return listen, None
    rundir = spec.ovs_rundir
    if os.path.dirname(where) == rundir:
        return listen, None
    link = os.path.join(rundir, LINK_NAME)

    def ensure() -> None:
        if os.path.islink(link) and os.readlink(link) == where:
            return
        tmp = f"{link}.{os.getpid()}"
        os.symlink(where, tmp)
        os.replace(tmp, link)

    return f"unix:{link}", ensure


def _check_tcp_free(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError as e:
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    finally:
        s.close()


def _wait_listening(kind: str, where, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX if kind == "unix" else
                          (socket.AF_INET6 if ":" in where[0] else socket.AF_INET), socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(where)
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise StartupError(f"os-ken did not start listening on {where}: {e}") from None
        finally:
            s.close()
        time.sleep(0.05)


def start_osken(kind: str, where, core) -> None:
    """Load and start the os-ken apps, listening at `where`."""
    import os_ken.base.app_manager  # noqa: F401 - first, before any other os-ken module
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from sdn.switch import app

    cfg.CONF(args=[], project="os_ken")
    if kind == "unix":
        cfg.CONF.set_override("ofp_listen_host", where)  # a path: os-ken opens a unix socket
        cfg.CONF.set_override("ofp_tcp_listen_port", 6653)  # unused for unix, but stops the 6633 listener
    else:
        cfg.CONF.set_override("ofp_listen_host", where[0])
        cfg.CONF.set_override("ofp_tcp_listen_port", where[1])
    # Large bundles: a send may wait while OVS works through the queue; os-ken's 5 s default
    # would drop the connection.
    cfg.CONF.set_override("socket_timeout", 60.0)
    app.install_socket_wrapper()
    app.attach(core)
    mgr = AppManager.get_instance()
    mgr.load_apps(["sdn.switch.app"])
    contexts = mgr.create_contexts()
    mgr.instantiate_apps(**contexts)


def setup_logging(level: str, log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # os-ken logs every connection and app load at INFO; keep ours readable.
    for noisy in ("os_ken.base.app_manager", "os_ken.controller.controller", "ofp_event"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(opts: Options) -> int:
    """Run the controller until SIGTERM/SIGINT. Returns only on a start-up error (exit code);
    otherwise the process ends here with os._exit(0)."""
    setup_logging(opts.log_level, opts.log_file)
    try:
        kind, where = parse_listen(opts.listen)
        if not opts.nodes:
            raise StartupError("no bridge to control: give --bridge NODE=OVSDB_REMOTE (repeatable)")
        if kind == "unix":
            _prepare_unix(where)
        else:
            _check_tcp_free(*where)
        targets: dict[str, tuple[str | None, Callable[[], None] | None]] = {n.node: controller_target(opts.listen, n) if opts.configure_bridges else (None, None)
                   for n in opts.nodes}
        core = ControllerCore(opts.nodes, targets, opts.enforce)
    except (StartupError, OSError, ValueError) as e:
        log.error("cannot start: %s", e)
        return 1
    # The source is attached before the control socket opens (a `reload` must find it) and
    # started with the core, once os-ken listens.
    source = opts.source or (FileSource(opts.manifests, opts.settle) if opts.manifests else None)
    if source is not None:
        core.attach(source)
    try:
        control = ControlServer(core, opts.control).start()
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()
        core.changed.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        start_osken(kind, where, core)
        _wait_listening(kind, where)
    except (StartupError, Exception) as e:  # noqa: BLE001 - any os-ken start failure is fatal
        log.error("cannot start os-ken: %s", e)
        control.stop()
        logging.shutdown()
        os._exit(1)
    log.info("listening for switches on %s; control socket %s; nodes %s", opts.listen, opts.control,
             ", ".join(f"{n.node}={n.ovsdb}" for n in opts.nodes))
    try:
        core.start()
    except Exception as e:  # noqa: BLE001 - a source that cannot start is fatal
        log.error("cannot start: %s", e)
        if source is not None:
            source.stop()
        control.stop()
        core.stop()
        logging.shutdown()
        os._exit(1)
    while not stop.is_set():
        try:
            core.poll()
        except Exception:
            log.exception("input loop")
        core.changed.wait(opts.poll)
        core.changed.clear()
    if source is not None:
        source.stop()
    control.stop()
    core.stop()
    if kind == "unix":
        try:
            os.unlink(where)
        except OSError:
            pass
    log.info("stopped")
    logging.shutdown()
    os._exit(0)
