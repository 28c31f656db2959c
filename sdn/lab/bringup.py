"""Bringing a lab up: nodes, the fabric switch, the external host; nodes added and removed later."""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdn.lab import nodes as N
from sdn.lab import topology as T
from sdn.lab.base import SYNC_TIMEOUT, LabError, PodSpec, now, parallel, read_docs
from sdn.lab.controlplane import SERVICE_CIDR
from sdn.layout import FABRIC_GATEWAY_OFPORT, GATEWAY_OFPORT
from sdn.ovs.instance import run_cmd
from sdn.policy.manifests import ManifestError, load_documents

if TYPE_CHECKING:
    from sdn.lab.lab import Lab


class LabBringup:
    def __init__(self, lab: Lab):
        self.lab = lab

    def up(self, paths: list[str], enforce: str = "host", tunnel: str = "vxlan",
           timeout: float = SYNC_TIMEOUT, kubernetes: bool = False) -> dict:
        return self.up_docs(read_docs(paths), enforce, tunnel, timeout, kubernetes)

    def up_docs(self, docs: list[dict], enforce: str = "host", tunnel: str = "vxlan",
                timeout: float = SYNC_TIMEOUT, kubernetes: bool = False) -> dict:
        if enforce not in ("host", "fabric"):
            raise LabError(f"--enforce must be host or fabric, not {enforce!r}", 2)
        if tunnel not in N.TUNNEL_TYPES:
            raise LabError(f"--tunnel must be one of {', '.join(N.TUNNEL_TYPES)}", 2)
        if kubernetes and enforce != "host":
            raise LabError("--kubernetes runs with --enforce host (each node's agent judges its pods); "
                           "nothing was made", 2)
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, Open vSwitch): run it as root")
        docs = [copy.deepcopy(d) for d in docs]
        if not docs:
            raise LabError("no objects in the given manifests", 2)
        self.validate(docs)
        if kubernetes:
            from sdn.k8s.binaries import BinariesMissing, binary
            from sdn.lab.kube_objects import check_docs
            check_docs(docs)
            try:
                binary("kube-apiserver")
            except BinariesMissing as e:
                raise LabError(f"{e}; nothing was made") from None
        started = time.monotonic()
        with self.lab.state.locked():
            existing = self.lab.state.load()
            if existing is not None:
                raise LabError(
                    f"a lab is already running (state {self.lab.state.dir}, phase {existing.get('phase', '?')}, "
                    f"since {existing.get('created', '?')}); nothing changed. `sdnctl lab status` shows it, "
                    f"`sdnctl lab down` removes it")
            left = self.lab.teardown.our_netns()
            procs = self.lab.teardown.our_processes()
            if left or procs:
                raise LabError(
                    f"leftovers of an earlier lab exist ({', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"
                    f"{'; processes ' + ', '.join(map(str, procs[:5])) if procs else ''}); nothing changed. "
                    f"`sdnctl lab down` removes them")
            try:
                self._up(docs, enforce, tunnel, timeout, kubernetes)
            except BaseException as e:
                self.lab.log(f"lab up failed: {e}; tearing down what was made")
                try:
                    self.lab.teardown.remove()
                except Exception as e2:  # noqa: BLE001
                    self.lab.log(f"tear-down after the failure was incomplete: {e2}")
                if isinstance(e, LabError):
                    raise
                if isinstance(e, Exception):
                    raise LabError(f"lab up failed: {e}") from e
                raise
        took = time.monotonic() - started
        return {"nodes": sorted(self.lab.record["nodes"]), "pods": len(self.lab.record["pods"]),
                "enforce": enforce, "kubernetes": kubernetes, "seconds": round(took, 1)}

    def validate(self, docs: list[dict]) -> None:
        try:
            load_documents(docs, "<lab>")
        except ManifestError as e:
            raise LabError(str(e), 2) from None

    def _up(self, docs: list[dict], enforce: str, tunnel: str, timeout: float, kubernetes: bool = False) -> None:
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
        self.lab.state.dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.lab.state.ipam_dir, self.lab.state.dir / "nodes", self.lab.state.fabric_dir, self.lab.state.logs):
            shutil.rmtree(stale, ignore_errors=True)  # no lab record: nothing here is in use
        self.lab.state.manifests_path.unlink(missing_ok=True)
        self.lab.record = {
            "version": 1, "prefix": self.lab.prefix, "state_dir": str(self.lab.state.dir), "phase": "starting",
            "created": now(), "enforce": enforce, "tunnel": tunnel,
            "underlay": {"netns": N.underlay_netns(self.lab.prefix),
                         "prefixlen": T.underlay_prefix([p.address for p in plans.values()])},
            "nodes": {}, "fabric": None, "pods": {}, "controllers": {},
        }
        if kubernetes:
            self.lab.record["kubernetes"] = {}
        self.lab.save()
        self.lab.log(f"underlay {self.lab.record['underlay']['netns']}")
        N.create_underlay(self.lab.prefix)
        if enforce == "fabric":
            self.lab.record["fabric"] = {"netns": N.fabric_netns(self.lab.prefix), "rundir": str(self.lab.state.fabric_dir)}
            self.lab.save()
        names = sorted(plans)
        for slot, name in enumerate(names):
            self._record_node(plans[name], slot)
        self.cluster_cidr()
        self.lab.save()
        jobs: list[Callable[[], Any]] = [partial(self._start_node, n) for n in names]
        if enforce == "fabric":
            jobs.append(self._start_fabric)
        parallel(jobs)
        if enforce == "fabric":
            self._link_fabric_all()
        self.neighbours()
        self._start_external()
        if kubernetes:
            self._up_kubernetes(docs, plans, timeout)
            return
        # documents the controllers will read: nodes, namespaces, policies now, pods as plugged
        others = [d for d in docs if d.get("kind") not in ("Pod", "Node")]
        node_docs = {T.doc_key(d)[3]: d for d in docs if d.get("kind") == "Node"}
        self.lab.docs = [T.node_manifest(plans[n], node_docs.get(n)) for n in names] + others
        specs = []
        for d in sorted(pod_docs, key=T.pod_key):
            key = T.pod_key(d)
            node = (d.get("spec") or {}).get("nodeName") or placement[key]
            specs.append(PodSpec(key, node, d))
        self.lab.plugging.add_pods(specs)
        self.lab.agents.write_manifests()
        self.lab.agents.start_controllers()
        self.lab.agents.sync(timeout)
        self._ready()

    def _ready(self) -> None:
        """The lab is up: recorded as ready, and its supervisor restarts dead agents from now
        on (sdn/lab/supervise.py)."""
        from sdn.lab import supervise
        self.lab.record["phase"] = "ready"
        self.lab.record["ready"] = now()
        self.lab.record["supervisor"] = {"pidfile": str(self.lab.state.dir / supervise.PIDFILE),
                                         "log": str(self.lab.state.logs / "supervisor.log")}
        self.lab.save()
        supervise.start(self.lab.state)

    def _up_kubernetes(self, docs: list[dict], plans: dict[str, T.NodePlan], timeout: float) -> None:
        """The control plane, then per node its Node object, kubelet stand-in, kube-proxy and
        agent; then FILE's objects through the API, and wait until every agent realized them."""
        from sdn.lab.kube import KubeMode
        kube = KubeMode(self.lab)
        try:
            kube.start_control_plane(plans)
            node_docs = {T.doc_key(d)[3]: d for d in docs if d.get("kind") == "Node"}
            for name in sorted(plans):
                kube.start_node(name, node_docs.get(name))
            kube.wait_nodes_ready(timeout)
            kube.write([d for d in docs if d.get("kind") != "Node"], [])
            kube.start_dns()  # after FILE's pods: the addresses they ask for are theirs
            kube.settle(timeout)
        finally:
            kube.close()
        self._ready()

    def _start_external(self) -> None:
        """The external host on the underlay, its route to the pods through the first node,
        and every node masquerading what its pods send out of the cluster."""
        import ipaddress

        from sdn.lab import external as X
        nodes = self.lab.record["nodes"]
        first = nodes[sorted(nodes)[0]]
        net = ipaddress.ip_network(f"{first['address']}/{self.lab.record['underlay']['prefixlen']}", strict=False)
        address = X.pick_address(net, {i["address"] for i in nodes.values()})
        for info in nodes.values():
            X.masquerade(info["netns"], self.cluster_cidr())
        self.lab.record["external"] = {"netns": X.ext_netns(self.lab.prefix), "address": address}
        self.lab.save()
        self.lab.record["external"] = X.start(self.lab.prefix, self.lab.record["underlay"], address,
                                          {i["cidr"]: i["address"] for i in nodes.values()}, self.lab.state.logs)
        self.lab.save()
        self.lab.log(f"external host {self.lab.record['external']['netns']}: {address}")

    def _record_node(self, plan: T.NodePlan, slot: int) -> None:
        self.lab.record["nodes"][plan.name] = {
            "slot": slot, "netns": N.node_netns(self.lab.prefix, plan.name),
            "rundir": str(self.lab.state.node_dir(plan.name)), "address": plan.address, "cidr": plan.cidr,
            "gateway": plan.gateway, "dpid": slot + 1, "mac": N.phy_mac(plan.address),
            "openflow": str(self.lab.state.node_dir(plan.name) / "openflow.sock"),
        }

    def _start_node(self, name: str) -> None:
        info = self.lab.record["nodes"][name]
        Path(info["rundir"]).mkdir(parents=True, exist_ok=True)
        self.lab.log(f"node {name}: {info['netns']}, address {info['address']}, pod CIDR {info['cidr']}")
        N.start_node(self.lab.ovs(name), prefix=self.lab.prefix, slot=info["slot"], dpid=info["dpid"],
                     address=info["address"], underlay_prefixlen=self.lab.record["underlay"]["prefixlen"],
                     controller=f"unix:{info['openflow']}", tunnel=self.lab.record.get("tunnel", "vxlan"),
                     gateway=(info["cidr"], self.cluster_cidr(), SERVICE_CIDR if "kubernetes" in self.lab.record else ""),
                     gateway_ofport=FABRIC_GATEWAY_OFPORT if self.lab.record.get("enforce") == "fabric" else GATEWAY_OFPORT)

    def cluster_cidr(self) -> str:
        """The pod network routed through each node's gateway port: recorded at `up` (a later
        node keeps it, or the lab says its CIDR is outside it)."""
        if not self.lab.record.get("cluster_cidr"):
            self.lab.record["cluster_cidr"] = T.cluster_cidr([i["cidr"] for i in self.lab.record["nodes"].values()])
            self.lab.save()
        return self.lab.record["cluster_cidr"]

    def _start_fabric(self) -> None:
        info = self.lab.record["fabric"]
        Path(info["rundir"]).mkdir(parents=True, exist_ok=True)
        info["openflow"] = str(Path(info["rundir"]) / "openflow.sock")
        self.lab.save()
        self.lab.log(f"fabric switch: {info['netns']}")
        N.start_fabric(self.lab.fabric_ovs(), controller=f"unix:{info['openflow']}")

    def _link_fabric_all(self) -> None:
        """Link every node to the fabric switch at port 100+i (i: the node's place in name
        order, sdn/layout.py); a node added or removed shifts the others: they move first."""
        ports = N.fabric_ofports(list(self.lab.record["nodes"]))
        fabric = self.lab.fabric_ovs()
        nodes = self.lab.record["nodes"]
        moves = {n: (i["slot"], ports[n]) for n, i in nodes.items()
                 if i.get("fabric_ofport") is not None and i["fabric_ofport"] != ports[n]}
        if moves:
            N.renumber_fabric_ports(fabric, moves)
            for n in moves:
                nodes[n]["fabric_ofport"] = ports[n]
        for name, info in sorted(nodes.items()):
            if info.get("fabric_ofport") is None:
                N.link_fabric(self.lab.ovs(name), fabric, info["slot"], ports[name], name)
                info["fabric_ofport"] = ports[name]
        self.lab.save()

    def neighbours(self) -> None:
        nodes = self.lab.record["nodes"]
        for name, _info in nodes.items():
            others = {o["address"]: o["mac"] for n, o in nodes.items() if n != name}
            if others:
                N.set_neighbours(self.lab.ovs(name), others)

    def add_nodes(self, new: list[T.NodePlan], docs: list[dict]) -> None:
        existing = {n: T.NodePlan(n, i["address"], i["cidr"]) for n, i in self.lab.record["nodes"].items()}
        given = [d for d in docs if d.get("kind") == "Node"]
        plans = T.plan_nodes(given, existing)
        problems = T.check_nodes(plans)
        if problems:
            raise LabError("; ".join(problems), 2)
        import ipaddress
        ul = self.lab.record["underlay"]["prefixlen"]
        first = next(iter(self.lab.record["nodes"].values()))["address"]
        net = ipaddress.ip_network(f"{first}/{ul}", strict=False)
        slot = max(i["slot"] for i in self.lab.record["nodes"].values()) + 1
        names = []
        for name in sorted(set(plans) - set(existing)):
            p = plans[name]
            if ipaddress.ip_address(p.address) not in net:
                raise LabError(f"node {name}: address {p.address} is outside the lab's underlay {net}")
            self._record_node(p, slot)
            slot += 1
            names.append(name)
        self.lab.save()
        parallel([partial(self._start_node, n) for n in names])
        ext = self.lab.record.get("external")
        if ext:
            from sdn.lab import external as X
            for n in names:
                X.masquerade(self.lab.record["nodes"][n]["netns"], self.cluster_cidr())
                X.route(ext["netns"], self.lab.record["nodes"][n]["cidr"], self.lab.record["nodes"][n]["address"])
        if self.lab.record.get("fabric"):
            self._link_fabric_all()
        self.neighbours()
        node_docs = {T.doc_key(d)[3]: d for d in given}
        self.lab.docs = T.merge(self.lab.docs, [T.node_manifest(plans[n], node_docs.get(n)) for n in names])
        self.lab.agents.start_controllers(only=names)

    def remove_nodes(self, names: list[str]) -> None:
        from sdn.lab import supervise
        for name in names:
            with supervise.holding(self.lab.state):  # gone from the record before it stops
                ctl = self.lab.record["controllers"].pop(name, None)
                self.lab.save()
                if ctl:
                    self.lab.agents.kill_controller(name, ctl)
            for _key, rec in self.lab.record["pods"].items():
                if rec["node"] == name:
                    rec["ip"] = None  # its switch goes away with it: no port to wait for
            info = self.lab.record["nodes"][name]
            if self.lab.record.get("fabric"):
                N.unlink_fabric(self.lab.fabric_ovs(), info["slot"])
            self.lab.ovs(name).stop()
            run_cmd(["ip", "-n", self.lab.record["underlay"]["netns"], "link", "del", f"n{info['slot']}"], check=False)
            del self.lab.record["nodes"][name]
        self.lab.save()
        if self.lab.record.get("fabric"):
            self._link_fabric_all()
