"""The lab in kubernetes mode (`sdnctl lab up --kubernetes`): a real control plane on the
underlay, and per node what a real node runs beside Open vSwitch.

    PREFIX_cp           etcd, kube-apiserver, kube-controller-manager, kube-scheduler
                        (sdn/lab/controlplane.py), reached by every node over the underlay
    PREFIX-NODE         the node: its Open vSwitch, the kubelet stand-in (sdn/lab/kubelet.py),
                        our agent run as deploy/daemonset.yaml runs it (its command and env,
                        the settings of deploy/configmap.yaml, the ServiceAccount of
                        deploy/rbac.yaml), kube-proxy

The lab writes objects through the API server and waits for what the cluster reports: pods
Running (their kubelet), then every agent having folded in the API's current version of every
object it watches and realized it on its bridge (the agent's /status). Changes made with
`sdnctl lab kubectl` reach the agents the same way: they watch.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sdn import proc
from sdn.k8s.binaries import binary
from sdn.k8s.resources import ALPHA_NETWORK_POLICIES, NODES
from sdn.k8s.rest import Rest
from sdn.lab import dns
from sdn.lab import nodes as N
from sdn.lab import topology as T
from sdn.lab.controlplane import CLUSTER_DOMAIN, ControlPlane, ControlPlaneError
from sdn.lab.kube_objects import ObjectsMixin, exists, lab_error
from sdn.lab.netns_thread import NetnsThread

if TYPE_CHECKING:
    from sdn.lab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
METRICS_PORT = 9470
# The objects kube-system holds for the agent (deploy/): applied at `lab up`.
DEPLOY_FILES = ("crd-v1alpha1-networkpolicys.yaml", "rbac.yaml", "configmap.yaml")


def cp_netns(prefix: str) -> str:
    return f"{prefix}_cp"


class KubeMode(ObjectsMixin):
    """The kubernetes-mode parts of one lab (its record: lab.record["kubernetes"])."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.info: dict = lab.record.setdefault("kubernetes", {})
        self._rest: Rest | None = None
        self._cp: ControlPlane | None = None
        self._threads: dict[str, NetnsThread] = {}

    # ------------------------------------------------------------------ plumbing
    @property
    def dir(self) -> Path:
        return self.lab.state.dir / "controlplane"

    @property
    def cp(self) -> ControlPlane:
        if self._cp is None:
            self._cp = ControlPlane.load(self.dir)
        return self._cp

    @property
    def rest(self) -> Rest:
        if self._rest is None:
            from sdn.k8s.connect import api_client
            self._rest = Rest(api_client(str(self.cp.admin_kubeconfig)))
        return self._rest

    def api(self, fn, *args, **kwargs):
        """Call fn(rest, ...) inside the control plane's namespace."""
        return self.cp.run(fn, self.rest, *args, **kwargs)

    def node_thread(self, node: str) -> NetnsThread:
        if node not in self._threads:
            self._threads[node] = NetnsThread(self.lab.record["nodes"][node]["netns"])
        return self._threads[node]

    def close(self) -> None:
        for t in self._threads.values():
            t.close()
        if self._cp is not None:
            self._cp.close()

    # ------------------------------------------------------------------ up
    def start_control_plane(self, plans: dict[str, T.NodePlan]) -> None:
        rec = self.lab.record
        prefix = rec["prefix"]
        ul = rec["underlay"]
        net = ipaddress.ip_network(f"{next(iter(plans.values())).address}/{ul['prefixlen']}", strict=False)
        taken = {p.address for p in plans.values()} | {(self.lab.record.get("external") or {}).get("address")}
        address = next(str(a) for a in reversed(list(net.hosts())) if str(a) not in taken)
        ns = cp_netns(prefix)
        cluster = self.lab.cluster_cidr()
        self.info.update({"netns": ns, "address": address, "dir": str(self.dir), "cluster_cidr": str(cluster),
                          "kubelets": {}, "proxies": {}})
        self.lab.save()
        N.host_on_underlay(ul, ns, "cp0", "ncp", address)
        self.lab.log(f"control plane {ns}: {address} (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)")
        self._cp = ControlPlane(self.dir, address=address, netns=ns, cluster_cidr=str(cluster))
        try:
            self._cp.start()
        except ControlPlaneError as e:
            raise lab_error(f"the control plane did not start: {e}") from None
        for f in DEPLOY_FILES:
            for doc in yaml.safe_load_all((DEPLOY / f).read_text()):
                if doc:
                    self.api(lambda r, d=doc: r.apply_manifest(d))
        crd = f"{ALPHA_NETWORK_POLICIES.plural}.{ALPHA_NETWORK_POLICIES.group}"
        self._wait(lambda: self.api(lambda r: r.crd_established(crd)), 30,
                   "the v1alpha1 NetworkPolicy CRD to be established")
        token = self.api(lambda r: r.service_account_token("kube-system", "sdn-agent"))
        from sdn.lab import pki
        pki.kubeconfig(self.dir / "sdn-agent.kubeconfig", server=self.cp.url, ca=self.cp.ca,
                       user="system:serviceaccount:kube-system:sdn-agent", token=token)

    def start_node(self, node: str, doc: dict | None) -> None:
        """The node's kubelet stand-in (it registers the Node with its pod CIDR and the
        manifest's labels), then the CNI install, kube-proxy and the agent."""
        info = self.lab.record["nodes"][node]
        labels = ((doc or {}).get("metadata") or {}).get("labels") or {}
        ndir = Path(info["rundir"])
        for d in ("etc/sdn", "etc/cni/net.d", "opt/cni/bin", "var/lib/cni/networks", "logs"):
            (ndir / d).mkdir(parents=True, exist_ok=True)
        settings = self._node_settings(info)
        (ndir / "etc/sdn/sdn.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
        kubelet_cfg = self.cp.user_kubeconfig(f"kubelet-{node}", f"system:node:{node}", ("system:nodes",))
        proxy_cfg = self.cp.user_kubeconfig("kube-proxy", "system:kube-proxy")
        nsenter = ["nsenter", f"--net=/run/netns/{info['netns']}"]
        kubelet = nsenter + [sys.executable, "-m", "sdn.lab.kubelet", "--node", node, "--kubeconfig",
                             str(kubelet_cfg), "--address", info["address"], "--dir", str(ndir), "--prefix",
                             self.lab.prefix, "--cni-conf-dir", str(ndir / "etc/cni/net.d"),
                             "--cni-bin-dir", str(ndir / "opt/cni/bin"), "--pod-cidr", info["cidr"],
                             "--node-labels", ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                             "--cluster-dns", dns.cluster_dns_ip(self.cp.service_cidr),
                             "--cluster-domain", CLUSTER_DOMAIN]
        self.info["kubelets"][node] = self._spawn(f"kubelet-{node}", kubelet)
        self._wait(lambda: self.api(lambda r: exists(r, NODES, node)), 30, f"node {node} to register")
        self._install_cni(node, ndir)
        proxy = ["ip", "netns", "exec", info["netns"], binary("kube-proxy"), f"--kubeconfig={proxy_cfg}",
                 f"--hostname-override={node}", f"--cluster-cidr={self.info['cluster_cidr']}",
                 "--proxy-mode=iptables", "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
                 "--conntrack-tcp-timeout-close-wait=0", "--metrics-bind-address=127.0.0.1:10249",
                 "--healthz-bind-address=127.0.0.1:10256", "--oom-score-adj=0", "--v=1"]
        self.info["proxies"][node] = self._spawn(f"kube-proxy-{node}", proxy)
        self.start_agent(node)

    def start_dns(self) -> None:
        """The cluster DNS add-on (sdn/lab/dns.py): CoreDNS pods behind the kube-dns Service."""
        for doc in dns.objects(self.cp.service_cidr, CLUSTER_DOMAIN):
            self.api(lambda r, d=doc: r.apply_manifest(d))
        self.info["dns"] = {"address": dns.cluster_dns_ip(self.cp.service_cidr), "domain": CLUSTER_DOMAIN}
        self.lab.save()
        self.lab.log(f"cluster DNS: CoreDNS behind kube-system/kube-dns {self.info['dns']['address']}")

    def _spawn(self, name: str, argv: list[str]) -> int:
        logs = self.lab.state.logs
        logs.mkdir(parents=True, exist_ok=True)
        pid = proc.spawn_daemon(argv, logs / f"{name}.log", self.lab.state.dir / f"{name}.pid")
        self.lab.save()
        self.lab.log(f"{name}: pid {pid}")
        return pid

    def _node_settings(self, info: dict) -> dict:
        """deploy/configmap.yaml's sdn.yaml, with what differs on a lab node (its own OVS
        run directory and IPAM store, the lab's tunnel, metrics on the node's loopback, the
        userspace datapath, the lab's pod and Service ranges: the agent's node set-up at start
        finds the node the lab made and changes nothing)."""
        cm = yaml.safe_load((DEPLOY / "configmap.yaml").read_text())
        settings = yaml.safe_load(cm["data"]["sdn.yaml"]) or {}
        settings.update({"ovsdb": f"unix:{info['rundir']}/db.sock", "openflow": f"unix:{info['openflow']}",
                         "tunnel": self.lab.record.get("tunnel", "vxlan"), "metricsAddress": "127.0.0.1",
                         "metricsPort": METRICS_PORT,
                         "ipamDataDir": str(Path(info["rundir"]) / "var/lib/cni/networks"),
                         "datapathType": "netdev", "clusterCIDR": self.info["cluster_cidr"],
                         "serviceCIDR": self.cp.service_cidr})
        return settings

    def _install_cni(self, node: str, ndir: Path) -> None:
        """The DaemonSet's init container: the plugin and the conflist for the node's pod CIDR."""
        plugin = Path(sys.executable).parent / "sdn-cni"
        argv = ["nsenter", f"--net=/run/netns/{self.lab.record['nodes'][node]['netns']}", sys.executable, "-m",
                "sdn.k8s.install_cni", "--node", node, "--config", str(ndir / "etc/sdn/sdn.yaml"),
                "--kubeconfig", str(self.dir / "sdn-agent.kubeconfig"), "--binary", str(plugin),
                "--cni-bin-dir", str(ndir / "opt/cni/bin"), "--cni-conf-dir", str(ndir / "etc/cni/net.d")]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise lab_error(f"node {node}: the CNI install step failed: {out.stderr.strip()[-800:]}")

    def agent_argv(self, node: str) -> list[str]:
        """The DaemonSet's agent container: its command with $(NODE_NAME) from the downward
        API, the config volume at the node's etc/sdn; the in-cluster service account becomes a
        kubeconfig holding a token of that account."""
        info = self.lab.record["nodes"][node]
        ds = yaml.safe_load((DEPLOY / "daemonset.yaml").read_text())
        agent = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "agent")
        mounts = {m["name"]: m["mountPath"] for m in agent.get("volumeMounts", [])}
        argv = []
        for word in agent["command"] + agent.get("args", []):
            word = word.replace("$(NODE_NAME)", node)
            word = word.replace(mounts["config"], str(Path(info["rundir"]) / "etc/sdn"))
            argv.append(word)
        if argv[0] == "sdnctl":
            argv = [sys.executable, "-m", "sdn.cli"] + argv[1:]
        return (["ip", "netns", "exec", info["netns"], "env", f"NODE_NAME={node}"] + argv +
                ["--kubeconfig", str(self.dir / "sdn-agent.kubeconfig"),
                 "--control", str(Path(info["rundir"]) / "control.sock")])

    def start_agent(self, node: str) -> None:
        info = self.lab.record["nodes"][node]
        argv = self.agent_argv(node)
        log = self.lab.state.logs / f"agent-{node}.log"
        pid = proc.spawn_daemon(argv, log, self.lab.state.dir / f"agent-{node}.pid")
        self.lab.record["controllers"][node] = {"pid": pid, "control": str(Path(info["rundir"]) / "control.sock"),
                                                "log": str(log), "netns": info["netns"], "nodes": [node],
                                                "argv": argv, "metrics": f"http://127.0.0.1:{METRICS_PORT}"}
        self.lab.save()
        self.lab.log(f"agent for {node}: pid {pid}")

    def wait_nodes_ready(self, timeout: float) -> None:
        names = set(self.lab.record["nodes"])

        def ready() -> bool:
            items = self.api(lambda r: r.list(NODES))["items"]
            ok = {n["metadata"]["name"] for n in items
                  if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))}
            return names <= ok
        self._wait(ready, timeout, "every Node to be Ready (the kubelet stand-ins' status)")

    # ------------------------------------------------------------------ questions, down
    def status(self) -> dict:
        out: dict[str, Any] = {"control_plane": self.cp.status(), "nodes": {}}
        for node in sorted(self.lab.record["nodes"]):
            k, p = self.info.get("kubelets", {}).get(node), self.info.get("proxies", {}).get(node)
            out["nodes"][node] = {"kubelet": {"pid": k, "running": bool(k and proc.alive(k))},
                                  "kube_proxy": {"pid": p, "running": bool(p and proc.alive(p))}}
        return out

    def kubectl(self, args: list[str]) -> int:
        argv = ["ip", "netns", "exec", self.info["netns"], binary("kubectl"),
                f"--kubeconfig={self.cp.admin_kubeconfig}", *args]
        return subprocess.call(argv)

    def stop_daemons(self) -> None:
        """Kubelet stand-ins and kube-proxies first (nothing may recreate a pod while the lab
        goes), then the control plane."""
        pids = list(self.info.get("kubelets", {}).values()) + list(self.info.get("proxies", {}).values())
        mine = [p for p in pids if p and proc.alive(p) and str(self.lab.state.dir).encode() in _cmdline(p)]
        if mine:
            proc.terminate(mine, timeout=5.0)
        if (self.dir / "controlplane.json").exists():
            self.cp.stop()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
