"""A real Kubernetes control plane from the built binaries (`make k8s`): etcd, kube-apiserver
(TLS, client-certificate authentication, Node and RBAC authorization, service-account tokens),
kube-controller-manager and kube-scheduler, each a detached daemon with a pid file and a log
under DIR, in a network namespace (the lab's `PREFIX_cp`, on the underlay) or on loopback
(tests). What was started is written to DIR/controlplane.json, so another process (`lab
status`, `lab down`) can find, check and stop it.

Faults a test injects are the real ones: stop and start kube-apiserver (an outage; every watch
is cut), compact etcd (lists and watches from an older resourceVersion get 410 Gone).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sdn import proc
from sdn.k8s.binaries import binary
from sdn.lab import pki
from sdn.lab.netns_thread import NetnsThread

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
RECORD = "controlplane.json"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DOMAIN = "cluster.local"


class ControlPlaneError(RuntimeError):
    """A component did not start (with its last log lines) or a request to it failed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ControlPlane:
    dir: Path
    address: str = "127.0.0.1"  # where kube-apiserver serves (the underlay address in the lab)
    netns: str | None = None  # None: the daemons run here (tests, on loopback)
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = SERVICE_CIDR
    # kube-controller-manager's controllers ("*" all; tests without kubelets drop the node
    # lifecycle controller, which would taint and evict their kubelet-less pods)
    controllers: str = "*"
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        self._thread = NetnsThread(self.netns)

    # ------------------------------------------------------------------ record
    @classmethod
    def load(cls, dir: Path) -> ControlPlane:
        data = json.loads((Path(dir) / RECORD).read_text())
        data["dir"] = Path(data["dir"])
        return cls(**data)

    def _save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["dir"] = str(self.dir)
        tmp = self.dir / (RECORD + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.dir / RECORD)

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.ports['kube-apiserver']}"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    def admin_kubeconfig_for(self, apiserver: str) -> Path:
        """The admin's kubeconfig for another kube-apiserver of this control plane."""
        crt, key = self.pki / "admin.crt", self.pki / "admin.key"
        return pki.kubeconfig(self.dir / f"admin-{apiserver}.kubeconfig",
                              server=f"https://{self.address}:{self.ports[apiserver]}", ca=self.ca,
                              user="kubernetes-admin", cert=crt, key=key)

    def run(self, fn, *args, **kwargs):
        """Call fn where the control plane is reachable (inside its namespace)."""
        return self._thread.run(fn, *args, **kwargs)

    # ------------------------------------------------------------------ start / stop
    def start(self, components: tuple[str, ...] = COMPONENTS, timeout: float = 90.0) -> None:
        """Certificates, then the components in order, each checked healthy before the next."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if not self.ports:
            loop = "127.0.0.1"
            self.ports = {"etcd": free_port(loop), "etcd-peer": free_port(loop),
                          "kube-apiserver": 6443 if self.netns else free_port(loop),
                          "kube-controller-manager": 10257 if self.netns else free_port(loop),
                          "kube-scheduler": 10259 if self.netns else free_port(loop)}
        self._pki()
        self._save()
        for name in components:
            self.start_component(name, timeout)

    def _pki(self) -> None:
        pki.make_ca(self.pki)
        service_ip = _first_host(self.service_cidr)
        pki.issue(self.pki, "apiserver", cn="kube-apiserver", server=True,
                  dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "localhost"),
                  ips=tuple(dict.fromkeys((self.address, "127.0.0.1", service_ip))))
        users = {"admin": ("kubernetes-admin", ("system:masters",)),
                 "kube-controller-manager": ("system:kube-controller-manager", ()),
                 "kube-scheduler": ("system:kube-scheduler", ())}
        for name, (cn, groups) in users.items():
            crt, key = pki.issue(self.pki, name, cn=cn, groups=groups)
            path = self.admin_kubeconfig if name == "admin" else self.dir / f"{name}.kubeconfig"
            pki.kubeconfig(path, server=self.url, ca=self.ca, user=cn, cert=crt, key=key)

    def user_kubeconfig(self, name: str, cn: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig with a client certificate for user `cn` in `groups` (a node's kubelet:
        system:node:NAME in system:nodes; kube-proxy: system:kube-proxy)."""
        crt, key = pki.issue(self.pki, name, cn=cn, groups=groups)
        return pki.kubeconfig(self.dir / f"{name}.kubeconfig", server=self.url, ca=self.ca, user=cn,
                              cert=crt, key=key)

    def _argv(self, name: str) -> list[str]:
        p, d, k = self.ports, self.dir, self.pki
        if name == "etcd":
            peer = f"http://127.0.0.1:{p['etcd-peer']}"
            return [binary("etcd"), "--name", "cp", "--data-dir", str(d / "etcd"),
                    "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
                    "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"cp={peer}", "--unsafe-no-fsync", "--log-level", "warn"]
        if name.startswith("kube-apiserver"):  # a second one ("kube-apiserver-b"): the same etcd
            return [binary("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                    f"--bind-address={self.address}", f"--advertise-address={self.address}",
                    f"--secure-port={p[name]}",
                    f"--tls-cert-file={k / 'apiserver.crt'}", f"--tls-private-key-file={k / 'apiserver.key'}",
                    f"--client-ca-file={self.ca}", "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                    f"--service-account-key-file={k / 'sa.pub'}",
                    f"--service-account-signing-key-file={k / 'sa.key'}",
                    f"--service-cluster-ip-range={self.service_cidr}", "--allow-privileged=true",
                    # on loopback (tests) the `kubernetes` Service would point at 127.0.0.1
                    f"--endpoint-reconciler-type={'lease' if self.netns else 'none'}",
                    "--profiling=false", "--event-ttl=1h", "--v=1"]
        if name == "kube-controller-manager":
            return [binary("kube-controller-manager"), f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                    f"--authentication-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                    f"--authorization-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
                    f"--service-account-private-key-file={k / 'sa.key'}", f"--root-ca-file={self.ca}",
                    "--use-service-account-credentials=true", f"--controllers={self.controllers}",
                    f"--cluster-cidr={self.cluster_cidr}", f"--service-cluster-ip-range={self.service_cidr}",
                    "--bind-address=127.0.0.1", f"--secure-port={p['kube-controller-manager']}",
                    "--leader-elect=false", "--profiling=false", "--v=1"]
        if name == "kube-scheduler":
            return [binary("kube-scheduler"), f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                    f"--authentication-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                    f"--authorization-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
                    "--bind-address=127.0.0.1", f"--secure-port={p['kube-scheduler']}",
                    "--leader-elect=false", "--profiling=false", "--v=1"]
        raise ValueError(name)

    def start_component(self, name: str, timeout: float = 90.0) -> None:
        if name not in self.ports:  # a component added later (a second kube-apiserver)
            self.ports[name] = free_port(self.address)
        argv = self._argv(name)
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        log = self.logs / f"{name}.log"
        self.pids[name] = proc.spawn_daemon(argv, log, self.dir / f"{name}.pid")
        self._save()
        deadline = time.monotonic() + timeout
        while True:
            if not proc.alive(self.pids[name]):
                raise ControlPlaneError(f"{name} exited while starting; last lines of {log}:\n{proc.tail(log, 15)}")
            if self.healthy(name):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{name} was not healthy within {timeout:.0f}s; last lines of {log}:\n"
                                        f"{proc.tail(log, 15)}")
            time.sleep(0.2)

    def stop_component(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (0: a crash, as an outage test wants)."""
        pid = self.pids.get(name)
        if pid and proc.alive(pid) and str(self.dir).encode() in _cmdline(pid):
            proc.terminate([pid], timeout=grace)
        self.pids.pop(name, None)
        self._save()

    def close(self) -> None:
        """Let go of the thread that reaches into the control plane's namespace (the daemons
        keep running)."""
        self._thread.close()

    def stop(self) -> None:
        errors = []
        for name in [n for n in self.pids if n not in COMPONENTS] + list(reversed(COMPONENTS)):
            try:
                self.stop_component(name)
            except Exception as e:  # noqa: BLE001 - stop the others all the same
                errors.append(f"{name}: {e}")
        self.close()
        if errors:
            raise ControlPlaneError("; ".join(errors))

    # ------------------------------------------------------------------ questions
    def healthy(self, name: str) -> bool:
        if name == "etcd":
            url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        elif name.startswith("kube-apiserver"):
            url = f"https://{self.address}:{self.ports[name]}/readyz"
        else:
            url = f"https://127.0.0.1:{self.ports[name]}/healthz"
        return self.run(_get_ok, url, self.ca if name.startswith("kube-apiserver") else None)

    def status(self) -> dict:
        """Per component: pid, running, healthy; the API server's version."""
        out: dict = {"url": self.url, "netns": self.netns, "components": {}}
        for name in COMPONENTS:
            pid = self.pids.get(name)
            running = bool(pid and proc.alive(pid))
            out["components"][name] = {"pid": pid, "running": running,
                                       "healthy": running and self.healthy(name)}
        try:
            out["version"] = json.loads(self.run(_get, f"{self.url}/version", self.ca))["gitVersion"]
        except (OSError, ValueError, KeyError) as e:
            out["version"] = None
            out["error"] = str(e)
        return out

    def compact(self) -> int:
        """Compact etcd at its current revision: older resourceVersions are gone (410)."""
        ctl = [binary("etcd").replace("/etcd", "/etcdctl"), f"--endpoints=http://127.0.0.1:{self.ports['etcd']}"]
        pre = ["ip", "netns", "exec", self.netns] if self.netns else []
        st = subprocess.run(pre + ctl + ["endpoint", "status", "-w", "json"], capture_output=True, text=True,
                            check=True)
        rev = int(json.loads(st.stdout)[0]["Status"]["header"]["revision"])
        subprocess.run(pre + ctl + ["compact", str(rev)], capture_output=True, text=True, check=True)
        return rev


def _first_host(cidr: str) -> str:
    import ipaddress
    return str(next(ipaddress.ip_network(cidr).hosts()))


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _context(ca: Path | None) -> ssl.SSLContext:
    if ca is None:  # the components' own self-signed health endpoints
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(ca))


def _get(url: str, ca: Path | None) -> bytes:
    ctx = _context(ca) if url.startswith("https") else None
    with urllib.request.urlopen(url, timeout=3, context=ctx) as r:
        return r.read()


def _get_ok(url: str, ca: Path | None) -> bool:
    try:
        _get(url, ca)
        return True
    except (OSError, ValueError):
        return False
