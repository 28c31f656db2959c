"""The lab: bring nodes, pods and agents up from manifests, change them, probe them, tear down.

Everything the lab makes is recorded in its state directory (sdn/lab/state.py) before it is
made, so `down` can remove it after any crash; `down` also sweeps namespaces and processes by
the lab's name prefix and state path, for what a crash left unrecorded.

The agents are `sdnctl controller` processes (sdn/switch), one per node bridge -- and one for
the fabric switch with `--enforce fabric` -- each running inside its node's namespace as the
DaemonSet would on a node, reading the lab's manifests (STATE/cluster.yaml) and its node's
OVSDB. A change is: rewrite cluster.yaml (one atomic rename), ask every agent to `reload`,
and wait through its control socket until its bridge realized the new generation, with every
pod plugged into it in the port map the flows were compiled from.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sdn.lab import nodes as N
from sdn.lab import pods as P
from sdn.lab import probe as PR
from sdn import proc
from sdn.lab import topology as T
from sdn.lab.controlplane import SERVICE_CIDR
from sdn.lab.state import State
from sdn.ovs.instance import (OvsInstance, add_netns, del_netns,
                              netns_exists, netns_list, run_cmd)
from sdn.policy.manifests import ManifestError, load_documents

SYNC_TIMEOUT = 90.0
PROBE_TIMEOUT = 0.5


class LabError(RuntimeError):
    """A lab command failed; the message says what and what to do. exit_code: 1, or 2 for
    invalid input (as the other sdnctl commands)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class NoLab(LabError):
    """No lab in the state directory: exit 3, like a controller that cannot be reached."""

    def __init__(self, message: str):
        super().__init__(message, 3)


def controller_supports_fabric() -> bool:
    """Whether `sdnctl controller` can compile for fabric enforcement (`--enforce fabric`:
    node bridges as fabric-node programs, the bridge of node "fabric" as the fabric switch)."""
    try:
        from sdn.cli_live import controller_cmd
    except ImportError:
        return False
    return any(p.name == "enforce" for p in controller_cmd.params)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_docs(paths: list[str]) -> list[dict]:
    """Raw manifest documents from files/directories ('-' = stdin), `kind: List` expanded,
    validated as `sdnctl compile` validates them (ManifestError -> LabError exit 2)."""
    from sdn.policy import manifests as M
    docs: list[dict] = []
    try:
        for path in paths:
            for file in M._manifest_files(os.fspath(path)):
                origin, raw = M._read(file)
                flat: list = []
                for n, doc in enumerate(raw):
                    M._expand(doc, f"document {n + 1}", flat)
                for doc, where in flat:
                    if not isinstance(doc, dict):
                        raise ManifestError(origin, where, "", "must be an object")
                    M._parse(doc, origin, where)  # validates; unknown kinds pass (skipped below)
                    if doc.get("kind") in ("Namespace", "Pod", "Node", "NetworkPolicy"):
                        docs.append(copy.deepcopy(doc))
    except ManifestError as e:
        raise LabError(str(e), 2) from None
    except OSError as e:
        raise LabError(f"{e.filename}: {e.strerror}", 2) from None
    return docs


@dataclass
class PodSpec:
    key: str
    node: str
    doc: dict


class Lab:
    def __init__(self, state: State | None = None, *, log: Callable[[str], None] | None = None):
        self.state = state or State()
        self.prefix = self.state.prefix
        self.log = log or (lambda msg: None)
        self._rec_lock = threading.RLock()
        self.record: dict[str, Any] = {}

    # ------------------------------------------------------------------ the record
    def _save(self) -> None:
        with self._rec_lock:
            self.state.save(self.record)

    def _load(self) -> dict:
        record = self.state.load()
        if record is None:
            raise NoLab(f"no lab is running (state {self.state.dir}); start one with `sdnctl lab up -f CLUSTER.yaml`")
        if record.get("corrupt"):
            raise LabError(f"the lab record {self.state.record_path} is unreadable: run `sdnctl lab down`")
        self.record = record
        return record

    def _require_ready(self) -> dict:
        record = self._load()
        if record.get("phase") != "ready":
            raise LabError(f"the lab is not ready (phase {record.get('phase')!r}): a `lab up` failed or "
                           f"is still running; `sdnctl lab down` removes it")
        return record

    def _finish_deletes(self) -> None:
        """Pods an interrupted `delete` left half-deleted (gone from the manifests, still
        plugged in): unplug them now."""
        left = [k for k, rec in self.record["pods"].items() if rec.get("deleting")]
        if left:
            _parallel([lambda k=k: self._unplug(k) for k in left], workers=6)
            for k in left:
                del self.record["pods"][k]
            self._save()

    def _ovs(self, node: str) -> OvsInstance:
        info = self.record["nodes"][node]
        return OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True)

    def _fabric_ovs(self) -> OvsInstance:
        info = self.record["fabric"]
        return OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True)

    # ------------------------------------------------------------------ leftovers
    def _our_netns(self) -> list[str]:
        try:
            names = netns_list()
        except Exception:
            return []
        return [n for n in names if n.startswith(self.prefix + "-") or n.startswith(self.prefix + "_")]

    def _our_processes(self) -> list[int]:
        """Live processes whose command line names the state directory (daemons, agents),
        except this process and its ancestors."""
        mine = {os.getpid()}
        pid = os.getpid()
        for _ in range(64):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                pid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                break
            if pid <= 1:
                break
            mine.add(pid)
        needle = str(self.state.dir).encode()
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) in mine:
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            for arg in cmd.split(b"\0"):
                if arg == needle or arg.startswith(needle + b"/") or (b"=" + needle + b"/") in arg \
                        or (b":" + needle + b"/") in arg:
                    if proc.alive(int(d.name)):
                        found.append(int(d.name))
                    break
        return found

    # ------------------------------------------------------------------ up
    def up(self, paths: list[str], enforce: str = "host", tunnel: str = "vxlan",
           timeout: float = SYNC_TIMEOUT, kubernetes: bool = False,
           existing_connections: str = "enforce") -> dict:
        return self.up_docs(read_docs(paths), enforce, tunnel, timeout, kubernetes, existing_connections)

    def up_docs(self, docs: list[dict], enforce: str = "host", tunnel: str = "vxlan",
                timeout: float = SYNC_TIMEOUT, kubernetes: bool = False,
                existing_connections: str = "enforce") -> dict:
        if enforce not in ("host", "fabric"):
            raise LabError(f"--enforce must be host or fabric, not {enforce!r}", 2)
        if existing_connections not in ("enforce", "keep"):
            raise LabError(f"--existing-connections must be enforce or keep, not {existing_connections!r}", 2)
        if tunnel not in N.TUNNEL_TYPES:
            raise LabError(f"--tunnel must be one of {', '.join(N.TUNNEL_TYPES)}", 2)
        if enforce == "fabric" and not controller_supports_fabric():
            raise LabError("--enforce fabric needs an agent that compiles for a fabric switch "
                           "(`sdnctl controller --enforce fabric`), and this `sdnctl controller` has no "
                           "--enforce option yet; nothing was made")
        if kubernetes and enforce != "host":
            raise LabError("--kubernetes runs with --enforce host (each node's agent judges its pods); "
                           "nothing was made", 2)
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, Open vSwitch): run it as root")
        docs = [copy.deepcopy(d) for d in docs]
        if not docs:
            raise LabError("no objects in the given manifests", 2)
        self._validate(docs)
        if kubernetes:
            from sdn.lab.kube_objects import check_docs
            from sdn.k8s.binaries import BinariesMissing, binary
            check_docs(docs)
            try:
                binary("kube-apiserver")
            except BinariesMissing as e:
                raise LabError(f"{e}; nothing was made") from None
        started = time.monotonic()
        with self.state.locked():
            existing = self.state.load()
            if existing is not None:
                raise LabError(
                    f"a lab is already running (state {self.state.dir}, phase {existing.get('phase', '?')}, "
                    f"since {existing.get('created', '?')}); nothing changed. `sdnctl lab status` shows it, "
                    f"`sdnctl lab down` removes it")
            left = self._our_netns()
            procs = self._our_processes()
            if left or procs:
                raise LabError(
                    f"leftovers of an earlier lab exist ({', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"
                    f"{'; processes ' + ', '.join(map(str, procs[:5])) if procs else ''}); nothing changed. "
                    f"`sdnctl lab down` removes them")
            try:
                self._up(docs, enforce, tunnel, timeout, kubernetes, existing_connections)
            except BaseException as e:
                self.log(f"lab up failed: {e}; tearing down what was made")
                try:
                    self._down()
                except Exception as e2:  # noqa: BLE001
                    self.log(f"tear-down after the failure was incomplete: {e2}")
                if isinstance(e, LabError):
                    raise
                if isinstance(e, Exception):
                    raise LabError(f"lab up failed: {e}") from e
                raise
        took = time.monotonic() - started
        return {"nodes": sorted(self.record["nodes"]), "pods": len(self.record["pods"]),
                "enforce": enforce, "kubernetes": kubernetes, "seconds": round(took, 1)}

    def _validate(self, docs: list[dict]) -> None:
        try:
            load_documents(docs, "<lab>")
        except ManifestError as e:
            raise LabError(str(e), 2) from None

    def _up(self, docs: list[dict], enforce: str, tunnel: str, timeout: float, kubernetes: bool = False,
            existing_connections: str = "enforce") -> None:
        plans = T.plan_nodes(docs)
        problems = T.check_nodes(plans)
        if problems:
            raise LabError("; ".join(problems), 2)
        pod_docs = [d for d in docs if d.get("kind") == "Pod"]
        for d in pod_docs:
            node = (d.get("spec") or {}).get("nodeName")
            if node and node not in plans:
                raise LabError(f"pod {T.pod_key(d)}: node {node} unknown", 2)
        placement = {} if kubernetes else T.spread(pod_docs, list(plans), round_robin=True)
        self.state.dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.state.ipam_dir, self.state.dir / "nodes", self.state.fabric_dir, self.state.logs):
            shutil.rmtree(stale, ignore_errors=True)  # no lab record: nothing here is in use
        self.state.manifests_path.unlink(missing_ok=True)
        self.record = {
            "version": 1, "prefix": self.prefix, "state_dir": str(self.state.dir), "phase": "starting",
            "created": _now(), "enforce": enforce, "tunnel": tunnel,
            "existing_connections": existing_connections,
            "underlay": {"netns": N.underlay_netns(self.prefix),
                         "prefixlen": T.underlay_prefix([p.address for p in plans.values()])},
            "nodes": {}, "fabric": None, "pods": {}, "controllers": {},
        }
        if kubernetes:
            self.record["kubernetes"] = {}
        self._save()
        self.log(f"underlay {self.record['underlay']['netns']}")
        N.create_underlay(self.prefix)
        if enforce == "fabric":
            self.record["fabric"] = {"netns": N.fabric_netns(self.prefix), "rundir": str(self.state.fabric_dir)}
            self._save()
        names = sorted(plans)
        for slot, name in enumerate(names):
            self._record_node(plans[name], slot)
        self.cluster_cidr()
        self._save()
        jobs = [lambda n=n: self._start_node(n) for n in names]
        if enforce == "fabric":
            jobs.append(self._start_fabric)
        _parallel(jobs)
        if enforce == "fabric":
            self._link_fabric_all()
        self._neighbours()
        if enforce == "host":
            self._start_external()
        if kubernetes:
            self._up_kubernetes(docs, plans, timeout)
            return
        # documents the controllers will read: nodes, namespaces, policies now, pods as plugged
        others = [d for d in docs if d.get("kind") not in ("Pod", "Node")]
        node_docs = {T.doc_key(d)[3]: d for d in docs if d.get("kind") == "Node"}
        self._docs = [T.node_manifest(plans[n], node_docs.get(n)) for n in names] + others
        specs = []
        for d in sorted(pod_docs, key=T.pod_key):
            key = T.pod_key(d)
            node = (d.get("spec") or {}).get("nodeName") or placement[key]
            specs.append(PodSpec(key, node, d))
        self._add_pods(specs)
        self._write_manifests()
        self._start_controllers()
        self._sync(timeout)
        self.record["phase"] = "ready"
        self.record["ready"] = _now()
        self._save()

    def _up_kubernetes(self, docs: list[dict], plans: dict[str, T.NodePlan], timeout: float) -> None:
        """The control plane, then per node its Node object, kubelet stand-in, kube-proxy and
        agent; then FILE's objects through the API, and wait until every agent realized them."""
        from sdn.lab.kube import KubeMode
        kube = KubeMode(self)
        try:
            kube.start_control_plane(plans)
            node_docs = {T.doc_key(d)[3]: d for d in docs if d.get("kind") == "Node"}
            for name in sorted(plans):
                kube.start_node(name, node_docs.get(name))
            kube.wait_nodes_ready(timeout)
            kube.write([d for d in docs if d.get("kind") != "Node"], [])
            kube.settle(timeout)
        finally:
            kube.close()
        self.record["phase"] = "ready"
        self.record["ready"] = _now()
        self._save()

    def kube(self):
        """The kubernetes-mode parts of this (ready or starting) lab; LabError in file mode."""
        from sdn.lab.kube import KubeMode
        record = self._load()
        if "kubernetes" not in record:
            raise LabError("this lab runs in file mode (no API server): `sdnctl lab up --kubernetes -f ...` "
                           "starts one with a control plane", 2)
        return KubeMode(self)

    def _start_external(self) -> None:
        """The external host on the underlay, its route to the pods through the first node,
        and every node masquerading what its pods send out of the cluster."""
        import ipaddress

        from sdn.lab import external as X
        nodes = self.record["nodes"]
        first = nodes[sorted(nodes)[0]]
        net = ipaddress.ip_network(f"{first['address']}/{self.record['underlay']['prefixlen']}", strict=False)
        address = X.pick_address(net, {i["address"] for i in nodes.values()})
        for info in nodes.values():
            X.masquerade(info["netns"], self.cluster_cidr())
        self.record["external"] = {"netns": X.ext_netns(self.prefix), "address": address}
        self._save()
        self.record["external"] = X.start(self.prefix, self.record["underlay"], address,
                                          {i["cidr"]: i["address"] for i in nodes.values()}, self.state.logs)
        self._save()
        self.log(f"external host {self.record['external']['netns']}: {address}")

    def _record_node(self, plan: T.NodePlan, slot: int) -> None:
        self.record["nodes"][plan.name] = {
            "slot": slot, "netns": N.node_netns(self.prefix, plan.name),
            "rundir": str(self.state.node_dir(plan.name)), "address": plan.address, "cidr": plan.cidr,
            "gateway": plan.gateway, "dpid": slot + 1, "mac": N.phy_mac(plan.address),
            "openflow": str(self.state.node_dir(plan.name) / "openflow.sock"),
        }

    def _start_node(self, name: str) -> None:
        info = self.record["nodes"][name]
        Path(info["rundir"]).mkdir(parents=True, exist_ok=True)
        self.log(f"node {name}: {info['netns']}, address {info['address']}, pod CIDR {info['cidr']}")
        N.start_node(self._ovs(name), prefix=self.prefix, slot=info["slot"], dpid=info["dpid"],
                     address=info["address"], underlay_prefixlen=self.record["underlay"]["prefixlen"],
                     controller=f"unix:{info['openflow']}", tunnel=self.record.get("tunnel", "vxlan"),
                     gateway=None if self.record.get("enforce") == "fabric" else
                     (info["cidr"], self.cluster_cidr(), SERVICE_CIDR if "kubernetes" in self.record else ""))

    def cluster_cidr(self) -> str:
        """The pod network routed through each node's gateway port: recorded at `up` (a later
        node keeps it, or the lab says its CIDR is outside it)."""
        if not self.record.get("cluster_cidr"):
            self.record["cluster_cidr"] = T.cluster_cidr([i["cidr"] for i in self.record["nodes"].values()])
            self._save()
        return self.record["cluster_cidr"]

    def _start_fabric(self) -> None:
        info = self.record["fabric"]
        Path(info["rundir"]).mkdir(parents=True, exist_ok=True)
        info["openflow"] = str(Path(info["rundir"]) / "openflow.sock")
        self._save()
        self.log(f"fabric switch: {info['netns']}")
        N.start_fabric(self._fabric_ovs(), controller=f"unix:{info['openflow']}")

    def _link_fabric_all(self) -> None:
        """Link every node to the fabric switch at port 100+i (i: the node's place in name
        order, sdn/layout.py); a node added or removed shifts the others: they move first."""
        ports = N.fabric_ofports(list(self.record["nodes"]))
        fabric = self._fabric_ovs()
        nodes = self.record["nodes"]
        moves = {n: (i["slot"], ports[n]) for n, i in nodes.items()
                 if i.get("fabric_ofport") is not None and i["fabric_ofport"] != ports[n]}
        if moves:
            N.renumber_fabric_ports(fabric, moves)
            for n in moves:
                nodes[n]["fabric_ofport"] = ports[n]
        for name, info in sorted(nodes.items()):
            if info.get("fabric_ofport") is None:
                N.link_fabric(self._ovs(name), fabric, info["slot"], ports[name], name)
                info["fabric_ofport"] = ports[name]
        self._save()

    def _neighbours(self) -> None:
        nodes = self.record["nodes"]
        for name, info in nodes.items():
            others = {o["address"]: o["mac"] for n, o in nodes.items() if n != name}
            if others:
                N.set_neighbours(self._ovs(name), others)

    # ------------------------------------------------------------------ pods
    def _add_pods(self, specs: list[PodSpec]) -> None:
        for s in specs:  # recorded before anything is made
            self.record["pods"][s.key] = {"node": s.node, "netns": P.pod_netns(self.prefix, s.key),
                                          "container_id": P.container_id(self.prefix, s.key),
                                          "ip": None, "server_pid": None}
        self._save()
        results = _parallel([lambda s=s: self._plug(s) for s in specs], workers=6, collect=True)
        docs = dict((T.doc_key(d), d) for d in getattr(self, "_docs", []))
        for s, ip in zip(specs, results):
            docs[T.doc_key(s.doc)] = T.pod_manifest(s.doc, s.node, ip)
        self._docs = list(docs.values())

    def _cni_config(self, node: str, request: str | None = None) -> dict:
        info = self.record["nodes"][node]
        return P.cni_config(network=f"{self.prefix}-{node}", ovsdb=f"unix:{info['rundir']}/db.sock",
                            ovs_netns=info["netns"], cidr=info["cidr"], gateway=info["gateway"],
                            data_dir=self.state.ipam_dir, bridge=N.BRIDGE, request=request)

    def _plug(self, spec: PodSpec) -> str:
        try:
            return self._plug1(spec)
        except BaseException:
            if self.record.get("phase") == "ready":  # apply: take the half-made pod away again
                try:
                    self._unplug(spec.key)
                except Exception:  # noqa: BLE001 - the original error matters
                    pass
                with self._rec_lock:
                    self.record["pods"].pop(spec.key, None)
                self._save()
            raise

    def _plug1(self, spec: PodSpec) -> str:
        rec = self.record["pods"][spec.key]
        info = self.record["nodes"][spec.node]
        if not netns_exists(rec["netns"]):
            add_netns(rec["netns"])
        want = T.requested_ip(spec.doc, info["cidr"])
        result = None
        if want:
            try:
                result = P.cni("ADD", self._cni_config(spec.node, want), rec["container_id"], rec["netns"], spec.key)
            except P.PodError as e:
                if getattr(e, "code", None) != 100:  # not "address taken": a real failure
                    raise
                self.log(f"pod {spec.key}: {want} is taken; the IPAM picks another address")
        if result is None:
            result = P.cni("ADD", self._cni_config(spec.node), rec["container_id"], rec["netns"], spec.key)
        ip = P.result_ip(result)
        with self._rec_lock:
            rec["ip"] = ip
        self._save()
        self._start_server(spec.key, spec.doc)
        self.log(f"pod {spec.key}: {ip} on {spec.node}, serving")
        return ip

    def _start_server(self, key: str, doc: dict) -> None:
        rec = self.record["pods"][key]
        ports = T.pod_ports(doc)
        tcp, udp = T.served(ports)
        pid = P.start_server(rec["netns"], key, tcp, udp, self.state.logs / f"pod-{key.replace('/', '_')}.log")
        with self._rec_lock:
            rec["server_pid"] = pid
            rec["served"] = {"tcp": tcp, "udp": udp}
        self._save()

    def _stop_server(self, key: str) -> None:
        pid = self.record["pods"][key].get("server_pid")
        if pid and proc.alive(pid) and self._pid_in_netns(pid, self.record["pods"][key]["netns"]):
            proc.terminate([pid], timeout=2.0)

    @staticmethod
    def _pid_in_netns(pid: int, netns: str) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
        except OSError:
            return False

    def _unplug(self, key: str) -> None:
        rec = self.record["pods"][key]
        self._stop_server(key)
        if rec["node"] not in self.record["nodes"]:  # its node is gone, and the veth with it
            del_netns(rec["netns"])
            return
        try:
            P.cni("DEL", self._cni_config(rec["node"]), rec["container_id"], rec["netns"], key)
        except P.PodError as e:
            self.log(f"pod {key}: {e}")
        del_netns(rec["netns"])

    # ------------------------------------------------------------------ manifests, agents
    def _write_manifests(self) -> None:
        self.state.write_manifests(T.sort_docs(self._docs))

    def _controller_specs(self) -> dict[str, dict]:
        """name -> how to run that agent: the bridges it controls and where it runs."""
        out = {}
        for name, info in sorted(self.record["nodes"].items()):
            out[name] = {"netns": info["netns"], "bridges": [f"{name}/{N.BRIDGE}=unix:{info['rundir']}/db.sock"],
                         "listen": f"unix:{info['openflow']}", "nodes": [name],
                         "control": str(Path(info["rundir"]) / "control.sock")}
        fab = self.record.get("fabric")
        if fab:
            out[N.FABRIC_BRIDGE] = {"netns": fab["netns"],
                                    "bridges": [f"{N.FABRIC_BRIDGE}/{N.FABRIC_BRIDGE}=unix:{fab['rundir']}/db.sock"],
                                    "listen": f"unix:{fab['openflow']}", "nodes": [N.FABRIC_BRIDGE],
                                    "control": str(Path(fab["rundir"]) / "control.sock")}
        return out

    def _controller_argv(self, spec: dict) -> list[str]:
        argv = [sys.executable, "-m", "sdn.cli", "controller", "-f", str(self.state.manifests_path),
                "--listen", spec["listen"], "--control", spec["control"]]
        for b in spec["bridges"]:
            argv += ["--bridge", b]
        if self.record.get("enforce") == "fabric":
            argv += ["--enforce", "fabric"]
        if self.record.get("existing_connections", "enforce") != "enforce":
            argv += ["--existing-connections", self.record["existing_connections"]]
        return argv

    def _start_controllers(self, only: list[str] | None = None) -> None:
        self.state.logs.mkdir(parents=True, exist_ok=True)
        for name, spec in self._controller_specs().items():
            if only is not None and name not in only:
                continue
            log = self.state.logs / f"controller-{name}.log"
            argv = ["ip", "netns", "exec", spec["netns"]] + self._controller_argv(spec)
            pid = spawn_daemon(argv, log, self.state.dir / f"controller-{name}.pid")
            self.record["controllers"][name] = {"pid": pid, "control": spec["control"], "log": str(log),
                                                "netns": spec["netns"], "nodes": spec["nodes"], "argv": argv}
            self._save()
            self.log(f"agent for {name}: pid {pid}")

    def _expected_ports(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {n: set() for n in self.record["nodes"]}
        for key, rec in self.record["pods"].items():
            if rec.get("ip") and not rec.get("deleting") and rec["node"] in out:
                out[rec["node"]].add(key)
        return out

    def _sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Every agent reloads the manifests; wait until each bridge realized them, with the
        port map of exactly the pods plugged into it."""
        from sdn.switch.control import ControlError, request
        expected = self._expected_ports()
        deadline = time.monotonic() + timeout

        def one(name: str, ctl: dict) -> None:
            last = ""
            reloaded = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"agent {name} did not realize the change within {timeout:.0f}s: {last}"
                                   f"{self._log_tail(ctl['log'])}")
                if not proc.alive(ctl["pid"]):
                    raise LabError(f"agent {name} (pid {ctl['pid']}) is not running{self._log_tail(ctl['log'])}")
                try:
                    if not reloaded:  # once: later port changes recompile by themselves
                        rel = request(ctl["control"], "reload", timeout=min(left, 30))
                        if rel.get("error"):
                            raise LabError(f"agent {name} cannot use the lab's manifests: {rel['error']}")
                        reloaded = True
                    ok = True
                    for node in ctl["nodes"]:
                        if node not in expected:
                            continue
                        prog = request(ctl["control"], "program", node=node, timeout=min(left, 30))
                        have = set(prog.get("ports") or {})
                        if have != expected[node]:
                            ok = False
                            last = (f"{node}: waiting for the port map (plugged {sorted(expected[node] - have)} "
                                    f"not seen yet, {sorted(have - expected[node])} still there)")
                    if not ok:
                        time.sleep(0.05)
                        continue
                    gen = request(ctl["control"], "status", timeout=min(left, 30))["generation"]
                    w = request(ctl["control"], "wait", generation=gen, timeout=max(0.1, min(left, 30)))
                    if w.get("realized"):
                        return
                    last = f"generation {gen} not realized yet"
                except ControlError as e:
                    last = str(e)
                    time.sleep(0.1)

        _parallel([lambda n=n, c=c: one(n, c) for n, c in self.record["controllers"].items()])

    @staticmethod
    def _log_tail(path: str, lines: int = 12) -> str:
        try:
            text = Path(path).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {path}:\n" + "\n".join(text) if text else ""

    # ------------------------------------------------------------------ apply / delete
    def apply(self, paths: list[str], timeout: float = SYNC_TIMEOUT) -> list[str]:
        return self.change(apply=read_docs(paths), timeout=timeout)

    def apply_docs(self, docs: list[dict], timeout: float = SYNC_TIMEOUT) -> list[str]:
        return self.change(apply=docs, timeout=timeout)

    def delete(self, paths: list[str], timeout: float = SYNC_TIMEOUT, ignore_not_found: bool = False) -> list[str]:
        return self.change(delete=read_docs(paths), timeout=timeout, ignore_not_found=ignore_not_found)

    def delete_docs(self, docs: list[dict], timeout: float = SYNC_TIMEOUT,
                    ignore_not_found: bool = False) -> list[str]:
        return self.change(delete=docs, timeout=timeout, ignore_not_found=ignore_not_found)

    def change(self, apply: list[dict] = (), delete: list[dict] = (), timeout: float = SYNC_TIMEOUT,
               ignore_not_found: bool = False) -> list[str]:
        """Delete objects, then create or update objects, in one change of the agents' input;
        returns once every bridge has the resulting flows, with one line per object
        ("Pod x/a created", "NetworkPolicy x/deny deleted", ...).

        Updates happen in place (a Pod keeps its node, address and server; its server
        restarts only if its TCP/UDP ports changed); a new Pod is placed, plugged in and
        served before the agents see it; a deleted Pod leaves the flows first, then its
        namespace goes and its address is freed. Deleting a Namespace deletes its objects,
        deleting a Node its pods. Objects to delete that do not exist: LabError after the
        rest is done, unless ignore_not_found."""
        with self.state.locked():
            record = self._require_ready()
            if "kubernetes" in record:
                return self._change_kubernetes(apply, delete, timeout, ignore_not_found)
            self._finish_deletes()
            self._docs = self.state.read_manifests()
            current = {T.doc_key(d): d for d in self._docs}
            report: list[str] = []
            # -- deletions
            gone: set = set()
            missing = []
            for doc in delete:
                key = T.doc_key(doc)
                if key not in current:
                    missing.append(T.describe_key(key))
                    continue
                gone.add(key)
                report.append(f"{T.describe_key(key)} deleted")
                along: set = set()
                if key[1] == "Namespace":
                    along = {k for k in current if k[2] == key[3]}
                if key[1] == "Node":
                    along = {k for k, d in current.items()
                             if k[1] == "Pod" and (d.get("spec") or {}).get("nodeName") == key[3]}
                for k in sorted(along - gone):
                    report.append(f"{T.describe_key(k)} deleted (with {T.describe_key(key)})")
                gone |= along
            applying = {T.doc_key(d) for d in apply}
            dead_pods = [f"{k[2]}/{k[3]}" for k in gone if k[1] == "Pod"]
            dead_nodes = [k[3] for k in gone if k[1] == "Node"]
            for k in gone & applying:
                if k[1] in ("Pod", "Node"):
                    raise LabError(f"{T.describe_key(k)} is both deleted and applied in one change", 2)
            remaining = [d for d in self._docs if T.doc_key(d) not in gone]
            merged = T.merge(remaining, apply)
            self._validate(merged)
            current = {T.doc_key(d): d for d in remaining}
            self._docs = remaining
            # -- applies
            new_nodes: list[T.NodePlan] = []
            updates: list[dict] = []
            new_pods: list[dict] = []
            restart: list[tuple[str, dict]] = []
            plans = {n: T.NodePlan(n, i["address"], i["cidr"]) for n, i in self.record["nodes"].items()
                     if n not in dead_nodes}
            for doc in apply:
                key = T.doc_key(doc)
                kind = key[1]
                what = T.describe_key(key)
                old = current.get(key)
                if kind == "Node":
                    cidr, address = T.node_doc_info(doc)
                    name = key[3]
                    if name in plans:
                        p = plans[name]
                        if (cidr and cidr != p.cidr) or (address and address != p.address):
                            raise LabError(f"node {name}: pod CIDR and address cannot change in a running lab "
                                           f"({p.cidr}, {p.address})")
                        updates.append(T.node_manifest(p, doc))
                        report.append(f"{what} configured")
                    else:
                        new_nodes.append(T.NodePlan(name, address or "", cidr or ""))
                        report.append(f"{what} created")
                    continue
                if kind == "Pod":
                    k = f"{key[2]}/{key[3]}"
                    if old is None:
                        new_pods.append(doc)
                        report.append(f"{what} created")
                        continue
                    node = old["spec"]["nodeName"]
                    want = (doc.get("spec") or {}).get("nodeName")
                    if want and want != node:
                        raise LabError(f"pod {k}: spec.nodeName cannot change ({node} -> {want}); delete the pod "
                                       f"and create it again")
                    new = T.pod_manifest(doc, node, self.record["pods"][k]["ip"])
                    if T.served(T.pod_ports(new)) != T.served(T.pod_ports(old)):
                        restart.append((k, new))
                    updates.append(new)
                    report.append(f"{what} {'configured' if new != old else 'unchanged'}")
                    continue
                updates.append(copy.deepcopy(doc))
                report.append(f"{what} {'created' if old is None else ('configured' if doc != old else 'unchanged')}")
            # -- make it so: nodes and pods first, then the agents' input, then unplug
            for key in dead_pods:
                self.record["pods"][key]["deleting"] = True
            self._save()
            if dead_nodes:
                self._remove_nodes(dead_nodes)
            if new_nodes:
                self._add_nodes(new_nodes, apply)
                plans = {n: T.NodePlan(n, i["address"], i["cidr"]) for n, i in self.record["nodes"].items()}
            self._docs = T.merge(self._docs, updates)
            for k, new in restart:
                self._stop_server(k)
                self._start_server(k, new)
            if new_pods:
                counts: dict[str, int] = {}
                for rec in self.record["pods"].values():
                    if not rec.get("deleting"):
                        counts[rec["node"]] = counts.get(rec["node"], 0) + 1
                placement = T.spread(new_pods, list(plans), counts, round_robin=False)
                specs = []
                for d in new_pods:
                    k = T.pod_key(d)
                    node = (d.get("spec") or {}).get("nodeName") or placement[k]
                    if node not in plans:
                        raise LabError(f"pod {k}: node {node} unknown (apply a Node object first)")
                    specs.append(PodSpec(k, node, d))
                self._add_pods(specs)
            self._write_manifests()
            # flows first (nothing forwards to a deleted pod's address any more), then it goes
            self._sync(timeout)
            self._finish_deletes()
            if missing and not ignore_not_found:
                raise LabError("not found: " + ", ".join(missing) + (
                    f" (done: {'; '.join(report)})" if report else ""))
            return report

    def _change_kubernetes(self, apply, delete, timeout: float, ignore_not_found: bool) -> list[str]:
        """Write through the API server; return once every agent realized the result."""
        from sdn.lab.kube import KubeMode
        from sdn.lab.kube_objects import check_docs
        check_docs(list(apply))
        kube = KubeMode(self)
        try:
            report, missing = kube.write(list(apply), list(delete))
            kube.settle(timeout)
        finally:
            kube.close()
        if missing and not ignore_not_found:
            raise LabError("not found: " + ", ".join(missing) + (f" (done: {'; '.join(report)})" if report else ""))
        return report

    def _add_nodes(self, new: list[T.NodePlan], docs: list[dict]) -> None:
        existing = {n: T.NodePlan(n, i["address"], i["cidr"]) for n, i in self.record["nodes"].items()}
        given = [d for d in docs if d.get("kind") == "Node"]
        plans = T.plan_nodes(given, existing)
        problems = T.check_nodes(plans)
        if problems:
            raise LabError("; ".join(problems), 2)
        import ipaddress
        ul = self.record["underlay"]["prefixlen"]
        first = next(iter(self.record["nodes"].values()))["address"]
        net = ipaddress.ip_network(f"{first}/{ul}", strict=False)
        slot = max(i["slot"] for i in self.record["nodes"].values()) + 1
        names = []
        for name in sorted(set(plans) - set(existing)):
            p = plans[name]
            if ipaddress.ip_address(p.address) not in net:
                raise LabError(f"node {name}: address {p.address} is outside the lab's underlay {net}")
            self._record_node(p, slot)
            slot += 1
            names.append(name)
        self._save()
        _parallel([lambda n=n: self._start_node(n) for n in names])
        ext = self.record.get("external")
        if ext:
            from sdn.lab import external as X
            for n in names:
                X.masquerade(self.record["nodes"][n]["netns"], self.cluster_cidr())
                X.route(ext["netns"], self.record["nodes"][n]["cidr"], self.record["nodes"][n]["address"])
        if self.record.get("fabric"):
            self._link_fabric_all()
        self._neighbours()
        node_docs = {T.doc_key(d)[3]: d for d in given}
        self._docs = T.merge(self._docs, [T.node_manifest(plans[n], node_docs.get(n)) for n in names])
        self._start_controllers(only=names)

    def _remove_nodes(self, names: list[str]) -> None:
        for name in names:
            ctl = self.record["controllers"].pop(name, None)
            if ctl:
                self._kill_controller(ctl)
            for key, rec in self.record["pods"].items():
                if rec["node"] == name:
                    rec["ip"] = None  # its switch goes away with it: no port to wait for
            info = self.record["nodes"][name]
            if self.record.get("fabric"):
                N.unlink_fabric(self._fabric_ovs(), info["slot"])
            self._ovs(name).stop()
            run_cmd(["ip", "-n", self.record["underlay"]["netns"], "link", "del", f"n{info['slot']}"], check=False)
            del self.record["nodes"][name]
        self._save()
        if self.record.get("fabric"):
            self._link_fabric_all()

    def _kill_controller(self, ctl: dict) -> None:
        pid = ctl.get("pid")
        if pid and proc.alive(pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                cmd = b""
            if str(self.state.dir).encode() in cmd:
                proc.terminate([pid], timeout=5.0)

    # ------------------------------------------------------------------ questions
    def documents(self) -> list[dict]:
        """The lab's objects as manifests: the API server's (kubernetes mode) or cluster.yaml."""
        if "kubernetes" in (self.record or self._load()):
            from sdn.lab.kube import KubeMode
            kube = KubeMode(self)
            try:
                return kube.objects()
            finally:
                kube.close()
        return self.state.read_manifests()

    def ipam_dirs(self) -> list[Path]:
        """Where the CNI plugin keeps the lab's address reservations."""
        record = self.record or self._load()
        if "kubernetes" in record:
            return [Path(i["rundir"]) / "var/lib/cni/networks" for i in record["nodes"].values()]
        return [self.state.ipam_dir]

    def pods(self) -> list[dict]:
        record = self._load()
        docs = {T.pod_key(d): d for d in self.documents() if d.get("kind") == "Pod"}
        out = []
        for key in sorted(record["pods"], key=lambda k: tuple(k.split("/", 1))):
            rec = record["pods"][key]
            ns, name = key.split("/", 1)
            doc = docs.get(key, {})
            out.append({"namespace": ns, "name": name, "node": rec["node"], "ip": rec.get("ip"),
                        "netns": rec["netns"], "ports": T.pod_ports(doc) if doc else []})
        return out

    def cluster(self):
        origin = "the lab's API server" if "kubernetes" in (self.record or self._load()) \
            else str(self.state.manifests_path)
        cluster, _ = load_documents(self.documents(), origin)
        return cluster

    def matrix(self, probes: list[tuple[int, str]], timeout: float = PROBE_TIMEOUT,
               pods: list[str] | None = None) -> dict:
        """Probe every ordered pair of pods (or of `pods`) on each (port, protocol), all in one
        parallel sweep; with the evaluator's prediction for each cell."""
        from sdn.policy.evaluate import evaluate
        record = self._require_ready()
        cluster = self.cluster()
        keys = [k for k in sorted(record["pods"], key=lambda k: tuple(k.split("/", 1)))
                if record["pods"][k].get("ip") and (pods is None or k in pods)]
        targets = []
        for port, proto in probes:
            if proto not in ("TCP", "UDP"):
                raise LabError(f"cannot probe {proto} with real packets (TCP and UDP only)", 2)
            for s in keys:
                for d in keys:
                    targets.append(PR.Target(s, record["pods"][s]["netns"], d, record["pods"][d]["ip"], port, proto))
        self._refresh_neighbours()
        base = self.state.next_probe_ports(PR.PORTS_PER_SWEEP)
        t0 = time.monotonic()
        got = PR.probe(targets, base, timeout)
        took = time.monotonic() - t0
        out = {"timeout": timeout, "seconds": round(took, 3), "pods": keys, "matrices": []}
        for port, proto in probes:
            measured, predicted, diffs = {}, {}, []
            for s in keys:
                measured[s], predicted[s] = {}, {}
                for d in keys:
                    state = got[PR.Target(s, record["pods"][s]["netns"], d, record["pods"][d]["ip"], port, proto)]
                    want = evaluate(cluster, cluster.pods[s], cluster.pods[d], port, proto).allowed
                    measured[s][d] = state
                    predicted[s][d] = want
                    if (state in (PR.ALLOWED, PR.REFUSED)) != want:
                        diffs.append({"from": s, "to": d, "measured": state,
                                      "predicted": "allowed" if want else "denied"})
            out["matrices"].append({"port": port, "protocol": proto, "measured": measured,
                                    "predicted": predicted, "differences": diffs, "agree": not diffs})
        return out

    def trace(self, probes: list[tuple[int, str]], pods: list[str] | None = None) -> dict:
        """Every ordered pair on each (port, protocol) judged by ofproto/trace on the real
        bridges (for SCTP, which the kernel here cannot send): {(port, proto): {src: {dst: bool}}}."""
        from sdn.lab.trace import Tracer
        record = self._require_ready()
        tracer = Tracer(record)
        keys = [k for k in sorted(record["pods"]) if record["pods"][k].get("ip") and (pods is None or k in pods)]
        cells = [(port, proto, s, d) for port, proto in probes for s in keys for d in keys]

        def one(c):
            port, proto, s, d = c
            return True if s == d else tracer.connect(s, d, port, proto)["allowed"]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(one, cells))
        out: dict = {}
        for (port, proto, s, d), ok in zip(cells, got):
            out.setdefault((port, proto), {}).setdefault(s, {})[d] = ok
        return out

    def purge_datapath(self) -> None:
        """Empty every switch's datapath flow cache (`revalidator/purge`): the next packets
        are translated afresh from the OpenFlow tables. For diagnosis: OVS 3.1's userspace
        datapath can keep a stale megaflow after a table change (docs/lab.md)."""
        record = self._load()
        switches = [(i["rundir"], i["netns"]) for i in record["nodes"].values()]
        if record.get("fabric"):
            switches.append((record["fabric"]["rundir"], record["fabric"]["netns"]))
        for rundir, netns in switches:
            OvsInstance(Path(rundir), netns=netns).appctl("revalidator/purge")

    def _refresh_neighbours(self) -> None:
        """The tunnel code forgets idle underlay neighbours after a while; a lost first packet
        would look like a denial."""
        if len(self.record["nodes"]) > 1:
            try:
                self._neighbours()
            except Exception:  # noqa: BLE001 - a probe can still go through
                pass

    def status(self) -> dict:
        from sdn.switch.control import ControlError, request
        record = self._load()
        out: dict[str, Any] = {"state_dir": str(self.state.dir), "prefix": self.prefix,
                               "phase": record.get("phase"), "created": record.get("created"),
                               "enforce": record.get("enforce"), "tunnel": record.get("tunnel"),
                               "nodes": [], "pods": [], "problems": []}
        ext = record.get("external")
        if ext:
            out["external"] = {k: ext.get(k) for k in ("netns", "address", "tcp_port", "udp_port")}
            if not (ext.get("server_pid") and proc.alive(ext["server_pid"])):
                out["problems"].append("the external host's server is not running")
        bridges = []
        for name, info in sorted(record.get("nodes", {}).items()):
            bridges.append((name, info, N.BRIDGE))
        if record.get("fabric"):
            bridges.append((N.FABRIC_BRIDGE, record["fabric"], N.FABRIC_BRIDGE))
        for name, info, bridge in bridges:
            ovs = OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True)
            entry: dict[str, Any] = {"name": name, "netns": info["netns"], "bridge": bridge,
                                     "address": info.get("address"), "pod_cidr": info.get("cidr"),
                                     "ovs": ovs.running, "netns_exists": netns_exists(info["netns"])}
            ctl = record.get("controllers", {}).get(name)
            entry["agent"] = {"pid": ctl["pid"] if ctl else None, "running": bool(ctl and proc.alive(ctl["pid"]))}
            if ctl and entry["agent"]["running"]:
                try:
                    st = request(ctl["control"], "status", timeout=5)
                    for b in st.get("bridges", []):
                        entry["agent"].update({k: b.get(k) for k in (
                            "connected", "desired_generation", "realized_generation", "desired_flows",
                            "installed_flows", "in_sync", "last_error") if k in b})
                        entry["agent"]["raw"] = b
                    entry["agent"]["generation"] = st.get("generation")
                    for k in ("manifest_error", "compile_error"):
                        if st.get(k):
                            entry["agent"][k] = st[k]
                            out["problems"].append(f"{name}: {st[k]}")
                except ControlError as e:
                    entry["agent"]["error"] = str(e)
                    out["problems"].append(f"agent {name}: {e}")
            elif ctl is None or not entry["agent"]["running"]:
                out["problems"].append(f"agent {name} is not running")
            if not entry["ovs"]:
                out["problems"].append(f"{name}: Open vSwitch is not running")
            out["nodes"].append(entry)
        if "kubernetes" in record:
            from sdn.lab.kube import KubeMode
            kube = KubeMode(self)
            try:
                out["kubernetes"] = kube.status()
            finally:
                kube.close()
            for name, comp in out["kubernetes"]["control_plane"]["components"].items():
                if not comp["healthy"]:
                    out["problems"].append(f"control plane: {name} is {'unhealthy' if comp['running'] else 'not running'}")
            for node, parts in out["kubernetes"]["nodes"].items():
                out["problems"] += [f"{node}: {what.replace('_', '-')} is not running"
                                    for what, d in parts.items() if not d["running"]]
        for key in sorted(record.get("pods", {}), key=lambda k: tuple(k.split("/", 1))):
            rec = record["pods"][key]
            alive = bool(rec.get("server_pid") and proc.alive(rec["server_pid"]))
            out["pods"].append({"pod": key, "node": rec["node"], "ip": rec.get("ip"), "netns": rec["netns"],
                                "server": alive})
            if not alive:
                out["problems"].append(f"pod {key}: its server is not running")
        return out

    # ------------------------------------------------------------------ down
    def down(self) -> dict:
        with self.state.locked() if self._lock_quickly() else _nullcontext():
            return self._down()

    def _lock_quickly(self) -> bool:
        """Take the lock unless a hung command holds it for long (down must always work)."""
        import fcntl
        self.state.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for _ in range(100):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    return True
                except BlockingIOError:
                    time.sleep(0.1)
            self.log("another lab command holds the lock; tearing down anyway")
            return False
        finally:
            os.close(fd)

    def _down(self) -> dict:
        record = self.state.load() or {}
        if record.get("corrupt"):
            record = {}
        removed: dict[str, list] = {"processes": [], "netns": [], "files": []}
        errors: list[str] = []
        # 1. agents first: they would otherwise reconnect and log errors while we tear down
        for name, ctl in (record.get("controllers") or {}).items():
            try:
                if ctl.get("pid") and proc.alive(ctl["pid"]):
                    self._kill_controller(ctl)
                    removed["processes"].append(ctl["pid"])
            except Exception as e:  # noqa: BLE001
                errors.append(f"agent {name}: {e}")
        # 1b. kubernetes mode: kubelet stand-ins (they would recreate pods), kube-proxies, the
        # control plane; the pods the kubelets ran
        if "kubernetes" in record:
            from sdn.lab.kube import KubeMode
            from sdn.lab.kube_objects import kubelet_record
            self.record = record
            try:
                KubeMode(self).stop_daemons()
            except Exception as e:  # noqa: BLE001
                errors.append(f"control plane: {e}")
            for info in (record.get("nodes") or {}).values():
                for key, rec in kubelet_record(Path(info["rundir"])).items():
                    record.setdefault("pods", {}).setdefault(key, rec)
        # 2. pods: their namespaces (servers die with them; the veths go with the node's)
        for key, rec in (record.get("pods") or {}).items():
            try:
                if rec.get("server_pid") and proc.alive(rec["server_pid"]) and self._pid_in_netns(rec["server_pid"], rec["netns"]):
                    proc.terminate([rec["server_pid"]], timeout=2.0)
                if netns_exists(rec["netns"]):
                    del_netns(rec["netns"], timeout=2.0)
                    removed["netns"].append(rec["netns"])
            except Exception as e:  # noqa: BLE001
                errors.append(f"pod {key}: {e}")
        # 3. switches: daemons by their pid files, then their namespaces
        switches = [(n, i) for n, i in (record.get("nodes") or {}).items()]
        if record.get("fabric"):
            switches.append((N.FABRIC_BRIDGE, record["fabric"]))
        for name, info in switches:
            try:
                if netns_exists(info["netns"]):
                    removed["netns"].append(info["netns"])
                OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True).stop()
                if netns_exists(info["netns"]):
                    del_netns(info["netns"])
            except Exception as e:  # noqa: BLE001
                errors.append(f"{name}: {e}")
        # 4. daemons a crash left without a record: the nodes' rundirs under the state dir
        for rundir in list(self.state.dir.glob("nodes/*")) + [self.state.fabric_dir]:
            if (rundir / "ovs-vswitchd.pid").exists() or (rundir / "ovsdb-server.pid").exists():
                try:
                    OvsInstance(rundir, netns=None, create_netns=False).stop()
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{rundir}: {e}")
        # 5. sweep: anything still alive that names the state dir, any namespace with our prefix
        procs = self._our_processes()
        if procs:
            try:
                proc.terminate(procs, timeout=3.0)
                removed["processes"].extend(procs)
            except Exception as e:  # noqa: BLE001
                errors.append(f"processes {procs}: {e}")
        for ns in sorted(self._our_netns(), key=lambda n: (n.endswith("_underlay"), n)):
            try:
                del_netns(ns, timeout=2.0)
                removed["netns"].append(ns)
            except Exception as e:  # noqa: BLE001
                errors.append(f"netns {ns}: {e}")
        # 6. the state directory itself
        if self.state.dir.exists():
            shutil.rmtree(self.state.dir, ignore_errors=True)
            removed["files"].append(str(self.state.dir))
        removed["netns"] = sorted(set(removed["netns"]))
        removed["processes"] = sorted(set(removed["processes"]))
        if errors:
            raise LabError("lab down incomplete:\n  " + "\n  ".join(errors))
        return removed


def spawn_daemon(argv: list[str], log: Path, pidfile: Path, timeout: float = 10.0) -> int:
    """sdn.proc.spawn_daemon, failing as a LabError."""
    try:
        return proc.spawn_daemon(argv, log, pidfile, timeout)
    except proc.ProcessError as e:
        raise LabError(str(e)) from None


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _parallel(jobs: list[Callable[[], Any]], workers: int = 8, collect: bool = False) -> list:
    """Run jobs in threads; the first exception (after all finished) is raised."""
    if not jobs:
        return []
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
        futures = [pool.submit(j) for j in jobs]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]
