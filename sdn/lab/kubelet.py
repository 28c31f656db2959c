"""A kubelet stand-in for one lab node (the machine has no container runtime).

It does what a kubelet does for the network and nothing else, through the API with the node's
own identity (user system:node:NAME, so the Node authorizer and NodeRestriction apply):
- registers its Node (the pod CIDR and labels given, as kubelet's --pod-cidr and
  --node-labels) and keeps its status (addresses, capacity, Ready) and its Lease in kube-node-lease fresh;
- watches the Pods bound to its node; for each new one: a network namespace, the installed
  CNI plugin called as a container runtime calls it (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
  CNI_IFNAME, CNI_ARGS with K8S_POD_NAMESPACE/K8S_POD_NAME, CNI_PATH, each plugin of the
  node's conflist on stdin with the list's name and cniVersion), a server for the pod's
  containerPorts (CoreDNS for a CoreDNS pod, sdn/lab/dns.py), the pod's resolv.conf for the
  cluster DNS (--cluster-dns, --cluster-domain), then pods/status (Running, podIP/podIPs, Ready);
- for a Pod being deleted (deletionTimestamp) or gone: CNI DEL, the server and the namespace
  go, then the Pod is deleted for good (grace period 0), as the kubelet confirms a deletion.

It runs inside the node's network namespace (`nsenter --net`, keeping the host's mount
namespace so the pod namespaces it adds under /run/netns are visible to everyone) and records
the pods it runs in NODE_DIR/kubelet.json, so a restarted stand-in and `lab down` know them.

    python -m sdn.lab.kubelet --node NAME --kubeconfig K --address IP --dir NODE_DIR \\
        --prefix PREFIX --cni-conf-dir D --cni-bin-dir B
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from sdn import proc
from sdn.lab import dns as D
from sdn.lab import pods as P
from sdn.lab import topology as T
from sdn.ovs.instance import add_netns, del_netns, netns_exists

log = logging.getLogger("sdn.lab.kubelet")
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0
RETRY_SECONDS = 2.0  # after a pod failed to start (or stop): its next attempt
VERSION = "v1.36.3-sdnlab"
# A pod may ask for its address (the lab keeps a manifest's status.podIP so ipBlock rules
# written for it hold): passed to the CNI plugin as CNI_ARGS IP=..., as host-local takes it.
REQUESTED_IP = "lab.sdn-netpol.io/requested-ip"


def _now(micro: bool = False) -> str:
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    def __init__(self, node: str, api: Any, address: str, dir: Path, prefix: str,
                 cni_conf_dir: Path, cni_bin_dir: Path, pod_cidr: str = "",
                 labels: dict[str, str] | None = None, kubeconfig: Path | None = None,
                 cluster_dns: str = "", cluster_domain: str = "cluster.local"):
        from kubernetes import client
        self.node, self.api, self.address, self.dir, self.prefix = node, api, address, dir, prefix
        self.cni_conf_dir, self.cni_bin_dir = cni_conf_dir, cni_bin_dir
        self.pod_cidr, self.labels = pod_cidr, labels or {}
        self.kubeconfig, self.cluster_dns, self.cluster_domain = kubeconfig, cluster_dns, cluster_domain
        # Any: called with plain dict bodies and _preload_content=False (raw responses), which
        # the client's annotations do not describe
        self.core: Any = client.CoreV1Api(api)
        self.coord: Any = client.CoordinationV1Api(api)
        self.record_path = dir / "kubelet.json"
        self.pods: dict[str, dict] = self._load()
        self.desired: dict[str, dict | None] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="pod")
        self._stop = threading.Event()

    # ------------------------------------------------------------------ record
    def _load(self) -> dict[str, dict]:
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        with self._lock:
            text = json.dumps(self.pods, indent=1, sort_keys=True)
        tmp = self.record_path.with_name(self.record_path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(self.record_path)

    # ------------------------------------------------------------------ node
    def register(self) -> None:
        """Create this node's Node object, as a kubelet registers itself (--node-labels,
        --pod-cidr); an existing one is kept (a restarted kubelet)."""
        from kubernetes.client.exceptions import ApiException
        body: dict = {"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node,
                                                                "kubernetes.io/os": "linux", **self.labels}},
                      "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]} if self.pod_cidr else {}}
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise

    def post_status(self) -> None:
        now = _now()
        body = {"status": {
            "addresses": [{"type": "InternalIP", "address": self.address}, {"type": "Hostname", "address": self.node}],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "sdn lab kubelet stand-in is posting ready status",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"kubeletVersion": VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "sdnlab://0",
                         "kernelVersion": os.uname().release, "osImage": "sdn lab", "machineID": "",
                         "systemUUID": "", "bootID": ""}}}
        self.core.patch_node_status(self.node, body)

    def renew_lease(self) -> None:
        from kubernetes.client.exceptions import ApiException
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": _now(micro=True)}}
        try:
            self.coord.patch_namespaced_lease(self.node, "kube-node-lease", body)
        except ApiException as e:
            if e.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat(self) -> None:
        last_status = 0.0
        while not self._stop.is_set():
            try:
                self.renew_lease()
                if time.monotonic() - last_status > STATUS_EVERY:
                    self.post_status()
                    last_status = time.monotonic()
            except Exception as e:  # noqa: BLE001 - an API outage: try again later
                log.warning("heartbeat: %s", e)
            self._stop.wait(RENEW_EVERY)

    # ------------------------------------------------------------------ pods
    def run(self) -> None:
        self.register()
        self.post_status()
        self.renew_lease()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        backoff = 0.5
        while not self._stop.is_set():
            try:
                rv = self._relist()
                backoff = 0.5
                self._watch(rv)
            except Exception as e:  # noqa: BLE001 - 410, outages: list again after a pause
                log.warning("pods: %s; listing again", e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _relist(self) -> str:
        raw = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}",
                                                    _preload_content=False)
        data = json.loads(raw.data)
        seen = set()
        for pod in data.get("items", []):
            key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            seen.add(key)
            self._want(key, pod)
        for key in set(self.pods) | set(self.desired):
            if key not in seen:
                self._want(key, None)
        return data["metadata"]["resourceVersion"]

    def _watch(self, rv: str) -> None:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", watch=True, resource_version=rv,
            allow_watch_bookmarks=True, timeout_seconds=60, _preload_content=False, _request_timeout=90)
        try:
            for line in resp:
                ev = json.loads(line)
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                if ev.get("type") == "BOOKMARK":
                    continue
                key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                self._want(key, None if ev["type"] == "DELETED" else obj)
        finally:
            resp.release_conn()

    def _want(self, key: str, pod: dict | None) -> None:
        with self._lock:
            self.desired[key] = pod
            lock = self._key_locks.setdefault(key, threading.Lock())
        self._pool.submit(self._sync, key, lock)

    def _sync(self, key: str, lock: threading.Lock) -> None:
        with lock:
            with self._lock:
                pod = self.desired.get(key)
            have = self.pods.get(key)
            try:
                if pod is None or pod["metadata"].get("deletionTimestamp"):
                    if have is not None:
                        self._teardown(key)
                    if pod is not None:
                        self._confirm_deletion(pod)
                    return
                if have is not None and have.get("uid") != pod["metadata"]["uid"]:
                    self._teardown(key)  # the same name, another pod
                    have = None
                if have is None or not have.get("ip"):
                    self._start(key, pod)
                elif (pod.get("status") or {}).get("podIP") != have["ip"]:
                    self._post_pod_status(pod, have["ip"])
            except Exception as e:  # noqa: BLE001 - one pod's failure must not stop the others
                # As a kubelet's sync loop: undo what was half made, try again a little later.
                log.error("pod %s: %s; trying again in %.0fs", key, e, RETRY_SECONDS)
                if key in self.pods:
                    try:
                        self._teardown(key)
                    except Exception as e2:  # noqa: BLE001
                        log.error("pod %s: cleaning up: %s", key, e2)
                if not self._stop.is_set():
                    timer = threading.Timer(RETRY_SECONDS, lambda: self._pool.submit(self._sync, key, lock))
                    timer.daemon = True
                    timer.start()

    def _start(self, key: str, pod: dict) -> None:
        netns = P.pod_netns(self.prefix, key)
        rec = {"uid": pod["metadata"]["uid"], "netns": netns, "container_id": P.container_id(self.prefix, key),
               "ip": None, "server_pid": None}
        with self._lock:
            self.pods[key] = rec
        self._save()
        if not netns_exists(netns):
            add_netns(netns)
        want = (pod["metadata"].get("annotations") or {}).get(REQUESTED_IP)
        result = None
        if want:
            try:
                result = self._cni("ADD", key, rec, ip=want)
            except RuntimeError as e:
                log.info("pod %s: %s; the IPAM picks another address", key, e)
        if result is None:
            result = self._cni("ADD", key, rec)
        rec["ip"] = P.result_ip(result or {})
        logfile = self.dir / "logs" / f"pod-{key.replace('/', '_')}.log"
        if D.is_coredns(pod):
            rec["server_pid"] = self._start_coredns(key, pod, netns, logfile)
        else:
            tcp, udp = T.served(T.pod_ports(pod))
            rec["server_pid"] = P.start_server(netns, key, tcp, udp, logfile)
            rec["served"] = {"tcp": tcp, "udp": udp}
        if self.cluster_dns and (pod["spec"].get("dnsPolicy") or "ClusterFirst") == "ClusterFirst":
            D.write_resolv_conf(netns, D.resolv_conf(key.split("/", 1)[0], self.cluster_dns, self.cluster_domain))
        self._save()
        self._post_pod_status(pod, rec["ip"])
        log.info("pod %s running at %s", key, rec["ip"])

    def _teardown(self, key: str) -> None:
        rec = self.pods[key]
        pid = rec.get("server_pid")
        if pid and proc.alive(pid):
            proc.terminate([pid], timeout=2.0)
        try:
            self._cni("DEL", key, rec)
        except Exception as e:  # noqa: BLE001 - DEL must not leave the namespace behind
            log.warning("pod %s: %s", key, e)
        if netns_exists(rec["netns"]):
            del_netns(rec["netns"], timeout=2.0)
        D.remove_resolv_conf(rec["netns"])
        with self._lock:
            del self.pods[key]
        self._save()
        log.info("pod %s torn down", key)

    def _confirm_deletion(self, pod: dict) -> None:
        from kubernetes.client.exceptions import ApiException
        meta = pod["metadata"]
        try:
            # the options in the body: with a body, the API server ignores the query's
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body={
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}})
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def _post_pod_status(self, pod: dict, ip: str) -> None:
        now = _now()
        conds = [{"type": t, "status": "True", "lastTransitionTime": now}
                 for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        containers = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
                       "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                      for c in pod["spec"].get("containers", [])]
        body = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": self.address,
                           "hostIPs": [{"ip": self.address}], "startTime": now, "conditions": conds,
                           "containerStatuses": containers}}
        self.core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], body)

    def _start_coredns(self, key: str, pod: dict, netns: str, logfile: Path) -> int:
        """CoreDNS with the Corefile of the pod's ConfigMap volume and a token of the pod's
        service account bound to the pod (what a kubelet mounts for it)."""
        from sdn.lab import pki
        meta, spec = pod["metadata"], pod["spec"]
        names = {v["configMap"]["name"] for v in spec.get("volumes") or [] if v.get("configMap")}
        cms = {n: self.core.read_namespaced_config_map(n, meta["namespace"]).to_dict() for n in names}
        token = self.core.create_namespaced_service_account_token(
            spec.get("serviceAccountName") or "default", meta["namespace"],
            {"spec": {"expirationSeconds": 24 * 3600,
                      "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}}})
        if self.kubeconfig is None:
            raise RuntimeError("the kubelet has no --kubeconfig to take the API server's address from")
        cfg = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]
        work = self.dir / "pods" / key.replace("/", "_")
        work.mkdir(parents=True, exist_ok=True)
        kcfg = pki.kubeconfig(work / "kubeconfig", server=cfg["server"], ca=Path(cfg["certificate-authority"]),
                              user=f"system:serviceaccount:{meta['namespace']}:{spec.get('serviceAccountName')}",
                              token=token.status.token)
        return D.start_coredns(netns, key, D.corefile_of(pod, cms), kcfg, work, logfile)

    # ------------------------------------------------------------------ CNI, as a runtime
    def _conflist(self) -> dict:
        files = sorted(p for p in self.cni_conf_dir.glob("*.conflist"))
        if not files:
            raise RuntimeError(f"no CNI configuration in {self.cni_conf_dir}")
        return json.loads(files[0].read_text())

    def _cni(self, command: str, key: str, rec: dict, ip: str | None = None) -> dict | None:
        ns, name = key.split("/", 1)
        conflist = self._conflist()
        plugins = conflist["plugins"] if command == "ADD" else list(reversed(conflist["plugins"]))
        result = None
        for plugin in plugins:
            conf = dict(plugin, name=conflist["name"], cniVersion=conflist["cniVersion"])
            if result is not None and command == "ADD":
                conf["prevResult"] = result
            env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=rec["container_id"],
                       CNI_NETNS=f"/run/netns/{rec['netns']}", CNI_IFNAME=P.CNI_IFNAME,
                       CNI_PATH=str(self.cni_bin_dir),
                       CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};"
                                f"K8S_POD_INFRA_CONTAINER_ID={rec['container_id']};K8S_POD_UID={rec['uid']}"
                                + (f";IP={ip}" if ip else ""))
            exe = self.cni_bin_dir / plugin["type"]
            out = subprocess.run([str(exe)], input=json.dumps(conf), env=env, capture_output=True, text=True,
                                 timeout=60)
            if out.returncode != 0:
                try:
                    msg = json.loads(out.stdout).get("msg")
                except ValueError:
                    msg = None
                raise RuntimeError(f"CNI {command} ({exe}) failed: {msg or out.stderr.strip() or out.stdout.strip()}")
            if command == "ADD":
                result = json.loads(out.stdout)
        return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdn.lab.kubelet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--node", required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--address", required=True, help="the node's InternalIP")
    ap.add_argument("--dir", required=True, type=Path, help="the node's state directory")
    ap.add_argument("--prefix", required=True, help="the lab's name prefix (pod namespaces)")
    ap.add_argument("--cni-conf-dir", required=True, type=Path)
    ap.add_argument("--cni-bin-dir", required=True, type=Path)
    ap.add_argument("--pod-cidr", default="", help="the Node's spec.podCIDR when it registers")
    ap.add_argument("--node-labels", default="", help="k=v,... labels the Node registers with")
    ap.add_argument("--cluster-dns", default="", help="the cluster DNS Service's address (pods' resolv.conf)")
    ap.add_argument("--cluster-domain", default="cluster.local")
    args = ap.parse_args(argv)
    labels = dict(kv.split("=", 1) for kv in args.node_labels.split(",") if kv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sdn.k8s.connect import api_client
    kubelet = Kubelet(args.node, api_client(args.kubeconfig), args.address, args.dir, args.prefix,
                      args.cni_conf_dir, args.cni_bin_dir, args.pod_cidr, labels, Path(args.kubeconfig),
                      args.cluster_dns, args.cluster_domain)
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
