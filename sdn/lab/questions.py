"""Questions to a running lab: its objects, pods, cluster model, probe matrices, traces and status."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdn import proc
from sdn.lab import nodes as N
from sdn.lab import probe as PR
from sdn.lab import topology as T
from sdn.lab.base import PROBE_TIMEOUT, LabError
from sdn.ovs.instance import OvsInstance, netns_exists
from sdn.policy.manifests import ManifestError, load_documents

if TYPE_CHECKING:
    from sdn.lab.lab import Lab


class LabQuestions:
    def __init__(self, lab: Lab):
        self.lab = lab

    def kube(self):
        """The kubernetes-mode parts of this (ready or starting) lab; LabError in file mode."""
        from sdn.lab.kube import KubeMode
        record = self.lab.load()
        if "kubernetes" not in record:
            raise LabError("this lab runs in file mode (no API server): `sdnctl lab up --kubernetes -f ...` "
                           "starts one with a control plane", 2)
        return KubeMode(self.lab)

    def documents(self) -> list[dict]:
        """The lab's objects as manifests: the API server's (kubernetes mode) or cluster.yaml."""
        if "kubernetes" in (self.lab.record or self.lab.load()):
            from sdn.lab.kube import KubeMode
            kube = KubeMode(self.lab)
            try:
                return kube.objects()
            finally:
                kube.close()
        return self.read_manifests()

    def read_manifests(self) -> list[dict]:
        """cluster.yaml's documents; LabError if someone left it unreadable."""
        import yaml
        try:
            docs = self.lab.state.read_manifests()
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise LabError(f"the lab's objects ({self.lab.state.manifests_path}) are not valid YAML: "
                           f"{' '.join(str(e).split())[:300]}; `sdnctl lab down` removes the lab") from None
        bad = [n + 1 for n, d in enumerate(docs) if not isinstance(d, dict)]
        if bad:
            raise LabError(f"the lab's objects ({self.lab.state.manifests_path}): document {bad[0]} is not an "
                           f"object; `sdnctl lab down` removes the lab")
        return docs

    def ipam_dirs(self) -> list[Path]:
        """Where the CNI plugin keeps the lab's address reservations."""
        record = self.lab.record or self.lab.load()
        if "kubernetes" in record:
            return [Path(i["rundir"]) / "var/lib/cni/networks" for i in record["nodes"].values()]
        return [self.lab.state.ipam_dir]

    def pods(self) -> list[dict]:
        record = self.lab.load()
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
        """The lab's objects as a cluster; LabError (exit 1) if they are invalid, or lack a
        pod the lab runs (a cluster file edited by hand or cut short)."""
        record = self.lab.record or self.lab.load()
        origin = "the lab's API server" if "kubernetes" in record else str(self.lab.state.manifests_path)
        try:
            cluster, _ = load_documents(self.documents(), origin)
        except ManifestError as e:
            raise LabError(f"the lab's objects are invalid: {e}; nothing was probed") from None
        lost = sorted(k for k, rec in record.get("pods", {}).items()
                      if rec.get("ip") and not rec.get("deleting") and k not in cluster.pods)
        if lost:
            raise LabError(f"the lab's objects ({origin}) are incomplete: no Pod {', '.join(lost[:5])}"
                           f"{' ...' if len(lost) > 5 else ''}, which the lab runs; nothing was probed")
        return cluster

    def matrix(self, probes: list[tuple[int, str]], timeout: float = PROBE_TIMEOUT,
               pods: list[str] | None = None) -> dict:
        """Probe every ordered pair of pods (or of `pods`) on each (port, protocol), all in one
        parallel sweep; with the evaluator's prediction for each cell."""
        from sdn.policy.evaluate import evaluate
        record = self.lab.require_ready()
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
        base = self.lab.state.next_probe_ports(PR.PORTS_PER_SWEEP)
        t0 = time.monotonic()
        got = PR.probe(targets, base, timeout)
        took = time.monotonic() - t0
        matrices: list[dict] = []
        out = {"timeout": timeout, "seconds": round(took, 3), "pods": keys, "matrices": matrices}
        for port, proto in probes:
            measured: dict[str, dict[str, str]] = {}
            predicted: dict[str, dict[str, bool]] = {}
            diffs: list[dict] = []
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
            matrices.append({"port": port, "protocol": proto, "measured": measured,
                                    "predicted": predicted, "differences": diffs, "agree": not diffs})
        return out

    def trace(self, probes: list[tuple[int, str]], pods: list[str] | None = None) -> dict:
        """Every ordered pair on each (port, protocol) judged by ofproto/trace on the real
        bridges (for SCTP, which the kernel here cannot send): {(port, proto): {src: {dst: bool}}}."""
        from sdn.lab.trace import Tracer
        record = self.lab.require_ready()
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
        record = self.lab.load()
        switches = [(i["rundir"], i["netns"]) for i in record["nodes"].values()]
        if record.get("fabric"):
            switches.append((record["fabric"]["rundir"], record["fabric"]["netns"]))
        for rundir, netns in switches:
            OvsInstance(Path(rundir), netns=netns).appctl("revalidator/purge")

    def _refresh_neighbours(self) -> None:
        """The tunnel code forgets idle underlay neighbours after a while; a lost first packet
        would look like a denial."""
        if len(self.lab.record["nodes"]) > 1:
            try:
                self.lab.bringup.neighbours()
            except Exception:  # noqa: BLE001 - a probe can still go through
                pass

    def status(self) -> dict:
        from sdn.switch.control import ControlError, request
        record = self.lab.load()
        out: dict[str, Any] = {"state_dir": str(self.lab.state.dir), "prefix": self.lab.prefix,
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
        from sdn.lab import supervise
        seen = supervise.view(self.lab.state)
        if record.get("phase") == "ready" and record.get("controllers"):
            spid = supervise.supervisor_pid(self.lab.state)
            out["supervisor"] = {"pid": spid, "running": spid is not None}
            if spid is None:
                out["problems"].append("the lab's supervisor is not running: a dead agent is not restarted")
        for name, info, bridge in bridges:
            ovs = OvsInstance(Path(info["rundir"]), netns=info["netns"], create_netns=True)
            entry: dict[str, Any] = {"name": name, "netns": info["netns"], "bridge": bridge,
                                     "address": info.get("address"), "pod_cidr": info.get("cidr"),
                                     "ovs": ovs.running, "netns_exists": netns_exists(info["netns"])}
            ctl = record.get("controllers", {}).get(name)
            live = supervise.current(self.lab.state, name, ctl, seen) if ctl else {"pid": None, "restarts": 0}
            entry["restarts"] = live["restarts"]
            entry["agent"] = {"pid": live["pid"], "running": bool(live["pid"] and proc.alive(live["pid"])),
                              "restarts": live["restarts"]}
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
            kube = KubeMode(self.lab)
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
