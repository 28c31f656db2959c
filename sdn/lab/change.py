"""Changing a running lab: objects applied and deleted in one change of the agents' input (file
mode) or through the API server (kubernetes mode)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sdn.lab import topology as T
from sdn.lab.base import SYNC_TIMEOUT, LabError, NotRealized, PodSpec, partly_realized, read_docs

if TYPE_CHECKING:
    from sdn.lab.lab import Lab


class LabChange:
    def __init__(self, lab: Lab):
        self.lab = lab

    def apply(self, paths: list[str], timeout: float = SYNC_TIMEOUT) -> list[str]:
        return self.change(apply=read_docs(paths), timeout=timeout)

    def apply_docs(self, docs: list[dict], timeout: float = SYNC_TIMEOUT) -> list[str]:
        return self.change(apply=docs, timeout=timeout)

    def delete(self, paths: list[str], timeout: float = SYNC_TIMEOUT, ignore_not_found: bool = False) -> list[str]:
        return self.change(delete=read_docs(paths), timeout=timeout, ignore_not_found=ignore_not_found)

    def delete_docs(self, docs: list[dict], timeout: float = SYNC_TIMEOUT,
                    ignore_not_found: bool = False) -> list[str]:
        return self.change(delete=docs, timeout=timeout, ignore_not_found=ignore_not_found)

    def change(self, apply: Sequence[dict] = (), delete: Sequence[dict] = (), timeout: float = SYNC_TIMEOUT,
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
        with self.lab.state.locked():
            record = self.lab.require_ready()
            if "kubernetes" in record:
                return self._change_kubernetes(apply, delete, timeout, ignore_not_found)
            self.lab.plugging.finish_deletes()
            self.lab.docs = self.lab.questions.read_manifests()
            current = {T.doc_key(d): d for d in self.lab.docs}
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
            remaining = [d for d in self.lab.docs if T.doc_key(d) not in gone]
            merged = T.merge(remaining, list(apply))
            self.lab.bringup.validate(merged)
            current = {T.doc_key(d): d for d in remaining}
            self.lab.docs = remaining
            # -- applies
            new_nodes: list[T.NodePlan] = []
            updates: list[dict] = []
            new_pods: list[dict] = []
            restart: list[tuple[str, dict]] = []
            plans = {n: T.NodePlan(n, i["address"], i["cidr"]) for n, i in self.lab.record["nodes"].items()
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
                    pod = f"{key[2]}/{key[3]}"
                    if old is None:
                        new_pods.append(doc)
                        report.append(f"{what} created")
                        continue
                    node = old["spec"]["nodeName"]
                    want = (doc.get("spec") or {}).get("nodeName")
                    if want and want != node:
                        raise LabError(f"pod {pod}: spec.nodeName cannot change ({node} -> {want}); delete the pod "
                                       f"and create it again")
                    new = T.pod_manifest(doc, node, self.lab.record["pods"][pod]["ip"])
                    if T.served(T.pod_ports(new)) != T.served(T.pod_ports(old)):
                        restart.append((pod, new))
                    updates.append(new)
                    report.append(f"{what} {'configured' if new != old else 'unchanged'}")
                    continue
                updates.append(copy.deepcopy(doc))
                report.append(f"{what} {'created' if old is None else ('configured' if doc != old else 'unchanged')}")
            # -- make it so: nodes and pods first, then the agents' input, then unplug
            for dead in dead_pods:
                self.lab.record["pods"][dead]["deleting"] = True
            self.lab.save()
            if dead_nodes:
                self.lab.bringup.remove_nodes(dead_nodes)
            if new_nodes:
                self.lab.bringup.add_nodes(new_nodes, list(apply))
                plans = {n: T.NodePlan(n, i["address"], i["cidr"]) for n, i in self.lab.record["nodes"].items()}
            self.lab.docs = T.merge(self.lab.docs, updates)
            for pod, new in restart:
                self.lab.plugging.stop_server(pod)
                self.lab.plugging.start_server(pod, new)
            if new_pods:
                counts: dict[str, int] = {}
                for rec in self.lab.record["pods"].values():
                    if not rec.get("deleting"):
                        counts[rec["node"]] = counts.get(rec["node"], 0) + 1
                placement = T.spread(new_pods, list(plans), counts, round_robin=False)
                specs = []
                for d in new_pods:
                    pod = T.pod_key(d)
                    node = (d.get("spec") or {}).get("nodeName") or placement[pod]
                    if node not in plans:
                        raise LabError(f"pod {pod}: node {node} unknown (apply a Node object first)")
                    specs.append(PodSpec(pod, node, d))
                self.lab.plugging.add_pods(specs)
            self.lab.agents.write_manifests()
            # flows first (nothing forwards to a deleted pod's address any more), then it goes
            try:
                self.lab.agents.sync(timeout)
            except NotRealized as e:
                raise partly_realized(e, report, f"saved in {self.lab.state.manifests_path}") from None
            self.lab.plugging.finish_deletes()
            if missing and not ignore_not_found:
                raise LabError("not found: " + ", ".join(missing) + (
                    f" (done: {'; '.join(report)})" if report else ""))
            return report

    def _change_kubernetes(self, apply, delete, timeout: float, ignore_not_found: bool) -> list[str]:
        """Write through the API server; return once every agent realized the result."""
        from sdn.lab.kube import KubeMode
        from sdn.lab.kube_objects import check_docs
        check_docs(list(apply))
        kube = KubeMode(self.lab)
        try:
            report, missing = kube.write(list(apply), list(delete))
            try:
                kube.settle(timeout)
            except NotRealized as e:
                raise partly_realized(e, report, "written to the API server") from None
        finally:
            kube.close()
        if missing and not ignore_not_found:
            raise LabError("not found: " + ", ".join(missing) + (f" (done: {'; '.join(report)})" if report else ""))
        return report
