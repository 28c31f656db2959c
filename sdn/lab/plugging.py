"""Pods in file mode: plugged into their node's bridge through the CNI plugin, served, unplugged."""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING

from sdn import proc
from sdn.lab import nodes as N
from sdn.lab import pods as P
from sdn.lab import topology as T
from sdn.lab.base import PodSpec, parallel
from sdn.ovs.instance import add_netns, del_netns, netns_exists

if TYPE_CHECKING:
    from sdn.lab.lab import Lab


class LabPlugging:
    def __init__(self, lab: Lab):
        self.lab = lab

    def finish_deletes(self) -> None:
        """Pods an interrupted `delete` left half-deleted (gone from the manifests, still
        plugged in): unplug them now."""
        left = [k for k, rec in self.lab.record["pods"].items() if rec.get("deleting")]
        if left:
            parallel([partial(self._unplug, k) for k in left], workers=6)
            for k in left:
                del self.lab.record["pods"][k]
            self.lab.save()

    def add_pods(self, specs: list[PodSpec]) -> None:
        for s in specs:  # recorded before anything is made
            self.lab.record["pods"][s.key] = {"node": s.node, "netns": P.pod_netns(self.lab.prefix, s.key),
                                          "container_id": P.container_id(self.lab.prefix, s.key),
                                          "ip": None, "server_pid": None}
        self.lab.save()
        results = parallel([partial(self._plug, s) for s in specs], workers=6, collect=True)
        docs = {T.doc_key(d): d for d in self.lab.docs}
        for s, ip in zip(specs, results):
            docs[T.doc_key(s.doc)] = T.pod_manifest(s.doc, s.node, ip)
        self.lab.docs = list(docs.values())

    def _cni_config(self, node: str, request: str | None = None) -> dict:
        info = self.lab.record["nodes"][node]
        return P.cni_config(network=f"{self.lab.prefix}-{node}", ovsdb=f"unix:{info['rundir']}/db.sock",
                            ovs_netns=info["netns"], cidr=info["cidr"], gateway=info["gateway"],
                            data_dir=self.lab.state.ipam_dir, bridge=N.BRIDGE, request=request)

    def _plug(self, spec: PodSpec) -> str:
        try:
            return self._plug1(spec)
        except BaseException:
            if self.lab.record.get("phase") == "ready":  # apply: take the half-made pod away again
                try:
                    self._unplug(spec.key)
                except Exception:  # noqa: BLE001 - the original error matters
                    pass
                with self.lab.rec_lock:
                    self.lab.record["pods"].pop(spec.key, None)
                self.lab.save()
            raise

    def _plug1(self, spec: PodSpec) -> str:
        rec = self.lab.record["pods"][spec.key]
        info = self.lab.record["nodes"][spec.node]
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
                self.lab.log(f"pod {spec.key}: {want} is taken; the IPAM picks another address")
        if result is None:
            result = P.cni("ADD", self._cni_config(spec.node), rec["container_id"], rec["netns"], spec.key)
        if result is None:
            raise P.PodError(f"pod {spec.key}: the CNI plugin returned no result to ADD")
        ip = P.result_ip(result)
        with self.lab.rec_lock:
            rec["ip"] = ip
        self.lab.save()
        self.start_server(spec.key, spec.doc)
        self.lab.log(f"pod {spec.key}: {ip} on {spec.node}, serving")
        return ip

    def start_server(self, key: str, doc: dict) -> None:
        rec = self.lab.record["pods"][key]
        ports = T.pod_ports(doc)
        tcp, udp = T.served(ports)
        pid = P.start_server(rec["netns"], key, tcp, udp, self.lab.state.logs / f"pod-{key.replace('/', '_')}.log")
        with self.lab.rec_lock:
            rec["server_pid"] = pid
            rec["served"] = {"tcp": tcp, "udp": udp}
        self.lab.save()

    def stop_server(self, key: str) -> None:
        pid = self.lab.record["pods"][key].get("server_pid")
        if pid and proc.alive(pid) and self.pid_in_netns(pid, self.lab.record["pods"][key]["netns"]):
            proc.terminate([pid], timeout=2.0)

    @staticmethod
    def pid_in_netns(pid: int, netns: str) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
        except OSError:
            return False

    def _unplug(self, key: str) -> None:
        rec = self.lab.record["pods"][key]
        self.stop_server(key)
        if rec["node"] not in self.lab.record["nodes"]:  # its node is gone, and the veth with it
            del_netns(rec["netns"])
            return
        try:
            P.cni("DEL", self._cni_config(rec["node"]), rec["container_id"], rec["netns"], key)
        except P.PodError as e:
            self.lab.log(f"pod {key}: {e}")
        del_netns(rec["netns"])
