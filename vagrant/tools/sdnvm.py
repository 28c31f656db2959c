"""sdnvm: the Vagrant lab's tool on each VM (installed as /usr/local/bin/sdnvm by
vagrant/provision/sdn.sh; runs with the venv's Python, so `sdn` is importable).

On every node (provisioning)
  sdnvm setting NAME                        one value of /etc/sdn/sdn.yaml (sdn.k8s.settings)
  sdnvm configmap-settings CONFIGMAP.yaml   the sdn.yaml of deploy/configmap.yaml, validated
  sdnvm kubeconfig --server URL --ca FILE   a kubeconfig for the agent identity ($SDN_AGENT_TOKEN)
  sdnvm can-read --kubeconfig K --node N    exit 0 once that identity can read Node N
  sdnvm cni-dirs                            the CNI bin and conf directories k3s's containerd reads
On cp (the admin kubeconfig)
  sdnvm render-examples -f examples/ --nodes worker-1,worker-2   manifests for the cluster
  sdnvm state                               the objects the agents see, as one List (sdnctl -f -)
  sdnvm matrix [--port P] [--protocol TCP|UDP] [--check]   every pod pair probed with kubectl exec,
                                            next to the semantic evaluator's prediction
  sdnvm probe --from NS/POD --to NS/POD --port P [--protocol TCP|UDP]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = "/etc/sdn/sdn.yaml"
ADMIN_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
DEFAULT_CNI_DIRS = ("/opt/cni/bin", "/etc/cni/net.d")  # containerd's own defaults
# What the example pods mount (a ConfigMap per namespace): the netns lab's server, and the
# prober `matrix` runs in them.
POD_CONFIGMAP = "sdn-lab-pod"
POD_MOUNT = "/opt/sdn-lab"
PROBE_ANNOTATION = "sdn-lab/probe"  # an annotation: labels would change what selectors select
POD_PROBE_PY = HERE / "pod_probe.py"  # installed next to this file (vagrant/provision/sdn.sh)


def fail(message: str, status: int = 1) -> None:
    print(f"sdnvm: {message}", file=sys.stderr)
    sys.exit(status)


# --------------------------------------------------------------------------------- settings

def cmd_setting(args) -> None:
    from sdn.k8s.settings import SettingsError, load_settings
    try:
        settings = load_settings(args.config)
    except SettingsError as e:
        fail(str(e))
    if not hasattr(settings, args.name) or args.name.startswith("_"):
        fail(f"no setting {args.name!r} (names as in sdn.k8s.settings.Settings: bridge, ovsdb, ...)", 2)
    value = getattr(settings, args.name)
    print(str(value).lower() if isinstance(value, bool) else value)


def configmap_settings(path: str) -> str:
    """The `sdn.yaml` of the settings ConfigMap in `path`, checked with the agent's parser."""
    import yaml

    from sdn.k8s.settings import parse_settings
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    found = [d for d in docs if d.get("kind") == "ConfigMap" and "sdn.yaml" in (d.get("data") or {})]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one ConfigMap with data.sdn.yaml, found {len(found)}")
    text = found[0]["data"]["sdn.yaml"]
    parse_settings(yaml.safe_load(text), f"{path}: data.sdn.yaml")
    return text


def cmd_configmap_settings(args) -> None:
    from sdn.k8s.settings import SettingsError
    try:
        sys.stdout.write(configmap_settings(args.configmap))
    except (OSError, ValueError, SettingsError) as e:
        fail(str(e))


# ------------------------------------------------------------------------ identity and API

def kubeconfig(server: str, ca: str, token: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sdn-lab", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "sdn-agent", "user": {"token": token}}],
        "contexts": [{"name": "sdn-agent", "context": {"cluster": "sdn-lab", "user": "sdn-agent"}}],
        "current-context": "sdn-agent",
    }


def cmd_kubeconfig(args) -> None:
    import yaml
    token = os.environ.get("SDN_AGENT_TOKEN", "")
    if not token:
        fail("SDN_AGENT_TOKEN is not set")
    sys.stdout.write(yaml.safe_dump(kubeconfig(args.server, args.ca, token), sort_keys=False))


def api(kubeconfig_path: str):
    from sdn.k8s.connect import api_client
    return api_client(kubeconfig_path)


def cmd_can_read(args) -> None:
    from kubernetes import client
    try:
        node = client.CoreV1Api(api(args.kubeconfig)).read_node(args.node, _request_timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure means "not yet"
        fail(f"cannot read node {args.node}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    print(f"node {node.metadata.name}: readable")


def cluster_documents(api_client, settings=None) -> tuple[list[dict], list[str]]:
    """What the agent watches (Settings.resources()), as manifests: the objects its informers
    accept (the same validation, sdn.k8s.informer.to_model); (documents, notes about the
    objects left out as invalid or not served)."""
    from kubernetes.client.exceptions import ApiException

    from sdn.k8s.informer import list_function, to_model
    from sdn.k8s.settings import Settings
    docs: list[dict] = []
    notes: list[str] = []
    for resource in (settings or Settings()).resources():
        try:
            resp = list_function(api_client, resource)(_preload_content=False, _request_timeout=30)
        except ApiException as e:
            if e.status == 404 and resource.group:
                notes.append(f"{resource.name} is not served (is its CRD applied?): skipped")
                continue
            raise
        for raw in json.loads(resp.data).get("items") or []:
            doc = {"kind": resource.kind, "apiVersion": resource.api_version, **raw}
            doc.get("metadata", {}).pop("managedFields", None)
            model, error = to_model(resource, raw)
            if model is None:
                notes.append(error)
            else:
                docs.append(doc)
    docs.sort(key=lambda d: (d["kind"], d["apiVersion"], d["metadata"].get("namespace", ""),
                             d["metadata"].get("name", "")))
    return docs, notes


def agent_settings(path: str = SETTINGS):
    """The agent's settings on this VM (what it watches depends on them), else the defaults."""
    from sdn.k8s.settings import Settings, SettingsError, load_settings
    if not os.path.exists(path):
        return Settings()
    try:
        return load_settings(path)
    except SettingsError as e:
        fail(str(e))


def as_list(docs: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": docs}


def cmd_state(args) -> None:
    import yaml
    docs, notes = cluster_documents(api(args.kubeconfig), agent_settings())
    for note in notes:
        print(f"# left out: {note}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(as_list(docs), indent=1, sort_keys=True))
    else:
        sys.stdout.write(yaml.safe_dump(as_list(docs), sort_keys=False))


# ------------------------------------------------------------------------------- node setup

def cni_dirs(containerd_config: str) -> tuple[str, str]:
    """The CNI binary and configuration directories in k3s's containerd configuration (CRI
    `cni` table: bin_dir or bin_dirs, conf_dir), containerd's defaults where it names none:
    with --flannel-backend=none some k3s releases leave the table out."""
    bin_dir, conf_dir = DEFAULT_CNI_DIRS
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return bin_dir, conf_dir
    try:
        with open(containerd_config, "rb") as f:
            config = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return bin_dir, conf_dir

    def tables(node):
        if isinstance(node, dict):
            yield node
            for value in node.values():
                yield from tables(value)

    for table in tables(config.get("plugins", {})):
        cni = table.get("cni")
        if isinstance(cni, dict) and any(k in cni for k in ("bin_dir", "bin_dirs", "conf_dir")):
            dirs = cni.get("bin_dirs") or [cni.get("bin_dir")]
            if dirs and isinstance(dirs[0], str) and dirs[0]:
                bin_dir = dirs[0]
            if isinstance(cni.get("conf_dir"), str) and cni["conf_dir"]:
                conf_dir = cni["conf_dir"]
            break
    return bin_dir, conf_dir


def cmd_cni_dirs(args) -> None:
    print(*cni_dirs(args.containerd_config))


# ---------------------------------------------------------------------------- the examples

def render_examples(paths: list[str], nodes: list[str], image: str) -> list[dict]:
    """examples/ for the cluster: Namespaces and policies as they are, Node objects dropped,
    pods pinned to `nodes` (the examples' own nodes in name order, taken in turn; pods without
    a node spread in name order), serving their TCP and UDP containerPorts with
    sdn/lab/serve.py from the ConfigMap POD_CONFIGMAP in their namespace."""
    from sdn.lab.base import LabError, read_docs
    if not nodes:
        raise ValueError("no nodes to place the pods on")
    try:
        docs = read_docs(paths)
    except LabError as e:
        raise ValueError(str(e)) from None
    pods = sorted((d for d in docs if d["kind"] == "Pod"),
                  key=lambda d: (d["metadata"].get("namespace", "default"), d["metadata"]["name"]))
    named = sorted({d["spec"]["nodeName"] for d in pods if (d.get("spec") or {}).get("nodeName")})
    placement = {name: nodes[i % len(nodes)] for i, name in enumerate(named)}
    import sdn.lab.serve
    files = {"serve.py": Path(sdn.lab.serve.__file__).read_text(), "pod_probe.py": POD_PROBE_PY.read_text()}
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    known = {d["metadata"]["name"] for d in namespaces}
    pod_namespaces = sorted({d["metadata"].get("namespace", "default") for d in pods})
    out: list[dict] = []
    for d in namespaces:
        meta = {k: v for k, v in d["metadata"].items() if k in ("name", "labels", "annotations")}
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    for ns in pod_namespaces:
        if ns not in known and ns != "default":
            raise ValueError(f"pods in namespace {ns}, which the examples do not define")
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": POD_CONFIGMAP, "namespace": ns,
                                 "labels": {"app.kubernetes.io/part-of": "sdn-lab"}},
                    "data": files})
    unplaced = 0
    for d in pods:
        node_name = (d.get("spec") or {}).get("nodeName")
        if node_name:
            node = placement[node_name]
        else:
            node = nodes[unplaced % len(nodes)]
            unplaced += 1
        out.append(render_pod(d, node, image))
    out += [strip_status(d) for d in docs if d["kind"] == "NetworkPolicy"]
    return out


def render_pod(doc: dict, node: str, image: str) -> dict:
    meta = doc["metadata"]
    ns = meta.get("namespace", "default")
    key = f"{ns}/{meta['name']}"
    containers = []
    for i, c in enumerate((doc.get("spec") or {}).get("containers") or [{"name": "server"}]):
        ports = c.get("ports") or []
        tcp = sorted({p["containerPort"] for p in ports if p.get("protocol", "TCP") == "TCP"})
        udp = sorted({p["containerPort"] for p in ports if p.get("protocol") == "UDP"})
        command = ["python3", f"{POD_MOUNT}/serve.py", "--name", key]
        if tcp:
            command += ["--tcp", ",".join(map(str, tcp))]
        if udp:
            command += ["--udp", ",".join(map(str, udp))]
        container = {"name": c.get("name") or f"server-{i}", "image": image, "command": command,
                     "volumeMounts": [{"name": "sdn-lab", "mountPath": POD_MOUNT, "readOnly": True}]}
        if ports:
            container["ports"] = ports  # as declared: named ports are what policies refer to
        containers.append(container)
    annotations = dict(meta.get("annotations") or {})
    annotations[PROBE_ANNOTATION] = "true"
    out_meta = {"name": meta["name"], "namespace": ns, "annotations": annotations}
    if meta.get("labels"):
        out_meta["labels"] = meta["labels"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": out_meta,
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": containers,
            "volumes": [{"name": "sdn-lab", "configMap": {"name": POD_CONFIGMAP}}],
            "automountServiceAccountToken": False,  # pods cannot reach the API server here
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 2,
        },
    }


def strip_status(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "status"}


def dump_yaml(docs: list[dict]) -> str:
    """YAML documents, multi-line strings (the ConfigMap's files) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def cmd_render_examples(args) -> None:
    nodes = [n for n in args.nodes.split(",") if n]
    try:
        docs = render_examples(args.filename, nodes, args.image)
    except (ValueError, OSError) as e:
        fail(str(e), 2)
    sys.stdout.write(dump_yaml(docs))


# -------------------------------------------------------------------------------- probing

def kubectl_argv(kubeconfig_path: str) -> list[str]:
    import shutil
    base = ["k3s", "kubectl"] if shutil.which("k3s") else ["kubectl"]
    return base + ["--kubeconfig", kubeconfig_path]


def probe_pods(docs: list[dict]) -> dict[str, dict]:
    """The example pods that are running with an address: key -> {ip, container}."""
    out = {}
    for d in docs:
        meta = d["metadata"]
        status = d.get("status") or {}
        if d["kind"] != "Pod" or (meta.get("annotations") or {}).get(PROBE_ANNOTATION) != "true":
            continue
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        out[f"{meta['namespace']}/{meta['name']}"] = {
            "ip": status["podIP"], "container": d["spec"]["containers"][0]["name"]}
    return dict(sorted(out.items(), key=lambda kv: tuple(kv[0].split("/", 1))))


def run_probes(kubectl: list[str], src: str, container: str,
               targets: list[tuple[str, int, str]], timeout: float) -> list[str]:
    ns, name = src.split("/", 1)
    argv = kubectl + ["exec", "-n", ns, name, "-c", container, "--", "python3",
                      f"{POD_MOUNT}/pod_probe.py", "--timeout", str(timeout), json.dumps(targets)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        return ["error"] * len(targets)
    if done.returncode != 0:
        print(f"sdnvm: kubectl exec in {src} failed: {done.stderr.strip()}", file=sys.stderr)
        return ["error"] * len(targets)
    return json.loads(done.stdout)


def matrix(kubeconfig_path: str, probes: list[tuple[int, str]], timeout: float,
           only: tuple[str, str] | None = None) -> dict:
    """Like `sdnctl lab matrix`: measured with real packets from inside the pods, predicted by
    the semantic evaluator on the objects the agents enforce (same shape, same renderer)."""
    from sdn.policy.evaluate import evaluate
    from sdn.policy.manifests import load_documents
    docs, _ = cluster_documents(api(kubeconfig_path), agent_settings())
    cluster, _ = load_documents(docs, "<cluster>")
    pods = probe_pods(docs)
    if only:
        for key in only:
            if key not in pods:
                raise ValueError(f"{key} is not a running example pod (see: kubectl get pods -A)")
    keys = list(pods)
    sources = [only[0]] if only else keys
    dests = [only[1]] if only else keys
    kubectl = kubectl_argv(kubeconfig_path)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max(1, min(16, len(sources)))) as pool:
        jobs = {s: pool.submit(run_probes, kubectl, s, pods[s]["container"],
                               [(pods[d]["ip"], port, proto) for port, proto in probes for d in dests],
                               timeout) for s in sources}
        got = {s: job.result() for s, job in jobs.items()}
    out = {"timeout": timeout, "seconds": round(time.monotonic() - t0, 3), "pods": keys if not only else
           list(dict.fromkeys(only)), "matrices": []}
    for i, (port, proto) in enumerate(probes):
        measured, predicted, diffs = {}, {}, []
        for s in sources:
            measured[s], predicted[s] = {}, {}
            for j, d in enumerate(dests):
                state = got[s][i * len(dests) + j]
                want = evaluate(cluster, cluster.pods[s], cluster.pods[d], port, proto).allowed
                measured[s][d], predicted[s][d] = state, want
                if (state in ("allowed", "refused")) != want:
                    diffs.append({"from": s, "to": d, "measured": state,
                                  "predicted": "allowed" if want else "denied"})
        out["matrices"].append({"port": port, "protocol": proto, "measured": measured,
                                "predicted": predicted, "differences": diffs, "agree": not diffs})
    return out


def cmd_matrix(args) -> None:
    probes = [(p, proto.upper()) for proto in (args.protocol or ["TCP"]) for p in (args.port or [80])]
    doc = matrix(args.kubeconfig, probes, args.timeout)
    if not doc["pods"]:
        fail("no running example pods yet (kubectl get pods -A -o wide)")
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    else:
        from rich.console import Console

        from sdn.lab.cli import render_matrix
        render_matrix(doc, Console(highlight=False), args.check)
    if args.check and not all(m["agree"] for m in doc["matrices"]):
        sys.exit(1)


def cmd_probe(args) -> None:
    proto = args.protocol.upper()
    try:
        doc = matrix(args.kubeconfig, [(args.port, proto)], args.timeout, (args.src, args.dst))
    except ValueError as e:
        fail(str(e), 2)
    m = doc["matrices"][0]
    state = m["measured"][args.src][args.dst]
    want = "allowed" if m["predicted"][args.src][args.dst] else "denied"
    agree = "agrees" if m["agree"] else "DISAGREES"
    print(f"{args.src} -> {args.dst} {args.port}/{proto}: {state} (evaluator: {want}, {agree})")
    sys.exit(0 if m["agree"] else 1)


# ------------------------------------------------------------------------------------ main

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sdnvm", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setting", help="one value of the agent's settings")
    p.add_argument("name")
    p.add_argument("--config", default=SETTINGS)
    p.set_defaults(func=cmd_setting)

    p = sub.add_parser("configmap-settings", help="the sdn.yaml of a settings ConfigMap")
    p.add_argument("configmap")
    p.set_defaults(func=cmd_configmap_settings)

    p = sub.add_parser("kubeconfig", help="a kubeconfig for the agent identity ($SDN_AGENT_TOKEN)")
    p.add_argument("--server", required=True)
    p.add_argument("--ca", required=True)
    p.set_defaults(func=cmd_kubeconfig)

    p = sub.add_parser("can-read", help="exit 0 once the kubeconfig's identity can read the node")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node", required=True)
    p.set_defaults(func=cmd_can_read)

    p = sub.add_parser("cni-dirs", help="the CNI bin and conf directories of k3s's containerd")
    p.add_argument("--containerd-config", default=CONTAINERD_CONFIG)
    p.set_defaults(func=cmd_cni_dirs)

    p = sub.add_parser("state", help="the objects the agents see, as one List")
    p.add_argument("--kubeconfig", default=ADMIN_KUBECONFIG)
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("render-examples", help="examples/ as manifests for the cluster")
    p.add_argument("-f", "--filename", action="append", required=True)
    p.add_argument("--nodes", required=True, help="comma-separated node names")
    p.add_argument("--image", default="python:3.12-alpine")
    p.set_defaults(func=cmd_render_examples)

    for name, func in (("matrix", cmd_matrix), ("probe", cmd_probe)):
        p = sub.add_parser(name, help="probe pod pairs with kubectl exec, next to the evaluator")
        p.add_argument("--kubeconfig", default=ADMIN_KUBECONFIG)
        p.add_argument("--timeout", type=float, default=1.0, help="seconds before a probe counts as denied")
        if name == "matrix":
            p.add_argument("--port", type=int, action="append")
            p.add_argument("--protocol", action="append", choices=["TCP", "UDP", "tcp", "udp"])
            p.add_argument("--check", action="store_true", help="exit 1 where measured != predicted")
            p.add_argument("-o", "--output", choices=["table", "json"], default="table")
        else:
            p.add_argument("--from", dest="src", required=True, metavar="NS/POD")
            p.add_argument("--to", dest="dst", required=True, metavar="NS/POD")
            p.add_argument("--port", type=int, required=True)
            p.add_argument("--protocol", default="TCP", choices=["TCP", "UDP", "tcp", "udp"])
        p.set_defaults(func=func)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
