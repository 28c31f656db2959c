"""The CNI plugin, run as a runtime runs it: the `sdn-cni` executable found in CNI_PATH,
CNI_* variables in its environment, the network configuration on stdin, the result or the
error object on stdout.  Pods are network namespaces made here; the bridge is br-sdn of a
private ovs-vswitchd (userspace datapath) in its own namespace, named by "ovsNetns".
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_interface
from pathlib import Path

import pytest

from sdn.cni.config import IpamConfig, parse_config
from sdn.cni.ipam import Store
from sdn.cni.veth import host_ifname, pod_mac
from sdn.layout import BRIDGE_NAME
from sdn.layout import pod_mac as layout_pod_mac
from sdn.ovs.instance import OvsInstance, add_netns, del_netns, netns_exists
from sdn.policy.model import Pod

from .conftest import OvsFactory, unique_name

pytestmark = pytest.mark.ovs

TIMEOUT = 30
HOST_LOCAL = Path("/usr/lib/cni/host-local")  # Debian's containernetworking-plugins


# --------------------------------------------------------------------------- harness

def _plugin_executable() -> Path:
    exe = Path(sys.executable).parent / "sdn-cni"
    if not exe.exists():
        pytest.fail(f"{exe} missing: install the project (pip install -e .) so the sdn-cni "
                    f"console script exists", pytrace=False)
    return exe


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[OvsInstance]:
    """One node: a private OVS with the bridge br-sdn, shared by the tests of a worker."""
    factory = OvsFactory(tmp_path_factory)
    try:
        yield factory(bridges={BRIDGE_NAME: 1})
    finally:
        factory.close()


@pytest.fixture(scope="module")
def cni_path(tmp_path_factory) -> Path:
    """A CNI_PATH directory holding the plugin under its type name, as on a node."""
    d = tmp_path_factory.mktemp("cnibin")
    (d / "sdn-cni").symlink_to(_plugin_executable())
    if HOST_LOCAL.exists():  # the standard IPAM plugin, for delegation (make test installs it)
        (d / "host-local").symlink_to(HOST_LOCAL)
    return d


class Runtime:
    """Plays the container runtime: makes pod namespaces, calls the plugin, and at teardown
    DELs every container it ADDed and deletes every namespace it made."""

    def __init__(self, node: OvsInstance | None, cni_path: Path, data_dir: Path):
        self.node = node
        self.cni_path = cni_path
        self.data_dir = data_dir
        self.network = unique_name("net").replace("-", "_")
        self.namespaces: list[str] = []
        self.added: dict[str, tuple[dict, dict]] = {}  # container id -> (config, env)

    def config(self, version: str = "1.0.0", **ipam) -> dict:
        conf = {"cniVersion": version, "name": self.network, "type": "sdn-cni",
                "bridge": BRIDGE_NAME, "mtu": 1400,
                "ipam": {"type": "sdn-ipam", "subnet": "10.244.1.0/24",
                         "dataDir": str(self.data_dir), **ipam}}
        if self.node is not None:
            conf.update(ovsdb=self.node.db_remote, ovsNetns=self.node.netns, ovsTimeout=5)
        return conf

    def pod_netns(self) -> str:
        name = unique_name("p")
        self.namespaces.append(name)
        add_netns(name)
        return name

    def env(self, command: str, container: str, netns: str | None, *, pod: str = "default/web",
            ifname: str = "eth0") -> dict[str, str]:
        ns, name = pod.split("/")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_IFNAME": ifname,
               "CNI_PATH": str(self.cni_path),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};"
                           f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID=uid-{container}"}
        if netns is not None:
            env["CNI_NETNS"] = f"/run/netns/{netns}"
        return env

    def start(self, env: dict[str, str], stdin: str | bytes) -> subprocess.Popen:
        if isinstance(stdin, str):
            stdin = stdin.encode()
        proc = subprocess.Popen([str(self.cni_path / "sdn-cni")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        proc.stdin.write(stdin)
        proc.stdin.close()
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen) -> tuple[int, dict | None]:
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"the plugin did not finish within {TIMEOUT}s")
        out = proc.stdout.read().decode()
        proc.stdout.close()
        proc.stderr.close()
        return proc.returncode, (json.loads(out) if out.strip() else None)

    def call(self, env: dict[str, str], stdin: str | bytes | dict) -> tuple[int, dict | None]:
        """Run the plugin once: (exit status, parsed stdout)."""
        if isinstance(stdin, dict):
            stdin = json.dumps(stdin)
        return self.finish(self.start(env, stdin))

    def add(self, container: str, netns: str, conf: dict, **kw) -> dict:
        env = self.env("ADD", container, netns, **kw)
        self.added[container] = (conf, env)
        rc, out = self.call(env, conf)
        assert rc == 0, f"ADD failed: {out}"
        return out

    def delete(self, container: str) -> tuple[int, dict | None]:
        conf, env = self.added[container]
        return self.call(dict(env, CNI_COMMAND="DEL"), conf)

    def check(self, container: str, prev: dict | None = None) -> tuple[int, dict | None]:
        conf, env = self.added[container]
        if prev is not None:
            conf = dict(conf, prevResult=prev)
        return self.call(dict(env, CNI_COMMAND="CHECK"), conf)

    def close(self) -> None:
        for container in list(self.added):
            try:
                self.delete(container)
            except Exception:  # noqa: BLE001 - keep cleaning
                pass
        for ns in self.namespaces:
            del_netns(ns)


@pytest.fixture
def runtime(node, cni_path, tmp_path) -> Iterator[Runtime]:
    rt = Runtime(node, cni_path, tmp_path / "ipam")
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def offline(cni_path, tmp_path) -> Runtime:
    """A runtime for calls that never get as far as OVS (no node started)."""
    return Runtime(None, cni_path, tmp_path / "ipam")


# --------------------------------------------------------------------------- what we look at

def assert_spec_result(result: dict, version: str) -> None:
    """The ADD result's shape, as SPEC.md ("Success") describes it for ``version``."""
    assert set(result) <= {"cniVersion", "interfaces", "ips", "routes", "dns"}, result
    assert result["cniVersion"] == version
    interfaces = result["interfaces"]
    for itf in interfaces:
        assert set(itf) <= {"name", "mac", "sandbox"} and isinstance(itf["name"], str)
        assert len(itf["name"]) <= 15
    for ip in result["ips"]:
        allowed = {"address", "gateway", "interface"} | ({"version"} if version == "0.4.0"
                                                          else set())
        assert set(ip) <= allowed, ip
        if version == "0.4.0":
            assert ip["version"] == "4"
        ip_interface(ip["address"])
        ip_address(ip["gateway"])
        assert 0 <= ip["interface"] < len(interfaces)
        assert "sandbox" in interfaces[ip["interface"]]
    for route in result["routes"]:
        assert set(route) <= {"dst", "gw"}
        ip_interface(route["dst"])
        ip_address(route.get("gw", "0.0.0.0"))
    assert isinstance(result["dns"], dict)


def assert_error(out: dict | None, rc: int, code: int, *words: str, version="1.0.0") -> None:
    """A spec error object on stdout with a non-zero exit."""
    assert rc != 0 and out is not None, (rc, out)
    assert set(out) <= {"cniVersion", "code", "msg", "details"}
    assert out["cniVersion"] == version and out["code"] == code, out
    for w in words:
        assert w in out["msg"], out


def ip_json(netns: str, *args: str) -> list:
    out = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def link(netns: str, name: str) -> dict | None:
    found = ip_json(netns, "addr", "show", "dev", name)
    return found[0] if found else None


def interface_row(node: OvsInstance, name: str) -> dict | None:
    out = json.loads(node.vsctl("--format=json", "--columns=ofport,external_ids", "find",
                                "Interface", f"name={name}"))
    if not out["data"]:
        return None
    ofport, ids = out["data"][0]
    return {"ofport": ofport, "external_ids": dict(ids[1])}


def reservations(rt: Runtime) -> dict[str, str]:
    """Address file -> its exact content (host-local's "<id>\\r\\n<ifname>")."""
    d = rt.data_dir / rt.network
    if not d.exists():
        return {}
    def is_address(name: str) -> bool:
        try:
            ip_address(name)
            return True
        except ValueError:
            return False
    return {p.name: p.read_bytes().decode() for p in d.iterdir() if is_address(p.name)}


# --------------------------------------------------------------------------- the contract

def test_add_check_del(runtime, node):
    ns = runtime.pod_netns()
    conf = runtime.config()
    result = runtime.add("c0ffee01", ns, conf, pod="shop/web-1")
    assert_spec_result(result, "1.0.0")
    host, pod_itf = result["interfaces"]
    assert pod_itf == {"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": f"/run/netns/{ns}"}
    assert result["ips"] == [{"address": "10.244.1.2/24", "gateway": "10.244.1.1",
                              "interface": 1}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert host["name"].startswith("veth") and len(host["name"]) == 12

    # the pod's side: interface, address, MAC, MTU, default route, TX offload off
    eth0 = link(ns, "eth0")
    assert eth0["address"] == pod_itf["mac"] and eth0["mtu"] == 1400 and "UP" in eth0["flags"]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] \
        == [("10.244.1.2", 24)]
    assert {"dst": "default", "gateway": "10.244.1.1", "dev": "eth0"}.items() <= \
        ip_json(ns, "route", "show", "default")[0].items()
    ethtool = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", "eth0"],
                             capture_output=True, text=True, check=True).stdout
    assert "tx-checksumming: off" in ethtool.splitlines()

    # the host side: in the OVS namespace, on br-sdn, with the pod's identity
    assert link(node.netns, host["name"])["address"] == host["mac"]
    assert node.vsctl("port-to-br", host["name"]).strip() == BRIDGE_NAME
    row = interface_row(node, host["name"])
    assert row["ofport"] > 0
    assert row["external_ids"] == {
        "k8s.pod": "shop/web-1", "iface-id": "shop/web-1", "attached-mac": "0a:58:0a:f4:01:02",
        "ip": "10.244.1.2", "container-id": "c0ffee01", "netns": f"/run/netns/{ns}",
        "ifname": "eth0", "k8s.pod-uid": "uid-c0ffee01"}
    assert reservations(runtime) == {"10.244.1.2": "c0ffee01\r\neth0"}

    assert runtime.check("c0ffee01", prev=result) == (0, None)
    assert runtime.check("c0ffee01") == (0, None)  # without prevResult: against the records

    assert runtime.delete("c0ffee01") == (0, None)
    assert link(ns, "eth0") is None and link(node.netns, host["name"]) is None
    assert interface_row(node, host["name"]) is None
    assert reservations(runtime) == {}
    assert runtime.delete("c0ffee01") == (0, None)  # DEL twice is fine


def test_cni_0_4_0(runtime):
    dns = {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}
    conf = dict(runtime.config("0.4.0"), dns=dns)
    result = runtime.add("v040", runtime.pod_netns(), conf)
    assert_spec_result(result, "0.4.0")
    assert result["ips"][0]["version"] == "4"
    assert result["dns"] == dns
    assert runtime.check("v040", prev=result) == (0, None)


def test_check_fails_when_the_interface_is_gone(runtime, node):
    ns = runtime.pod_netns()
    result = runtime.add("gone1", ns, runtime.config())
    subprocess.run(["ip", "-n", ns, "link", "del", "eth0"], check=True)
    rc, out = runtime.check("gone1", prev=result)
    assert_error(out, rc, 103, "eth0 not found")
    assert "host end" in out["details"]  # the pair went as a whole
    assert runtime.delete("gone1") == (0, None)  # DEL still cleans the port row and the IP
    assert interface_row(node, result["interfaces"][0]["name"]) is None
    assert reservations(runtime) == {}


def test_check_fails_on_a_different_address(runtime):
    ns = runtime.pod_netns()
    result = runtime.add("moved1", ns, runtime.config())
    subprocess.run(["ip", "-n", ns, "addr", "flush", "dev", "eth0"], check=True)
    rc, out = runtime.check("moved1", prev=result)
    assert_error(out, rc, 103, "10.244.1.2/24 missing")


def test_del_of_unknown_container_and_vanished_netns(runtime):
    env = runtime.env("DEL", "neveradded", None)
    assert runtime.call(env, runtime.config()) == (0, None)
    env = runtime.env("DEL", "neveradded", "no-such-netns")
    assert runtime.call(env, runtime.config()) == (0, None)


def test_version(offline):
    env = {"CNI_COMMAND": "VERSION", "PATH": os.environ["PATH"]}
    rc, out = offline.call(env, {"cniVersion": "0.4.0"})
    assert rc == 0 and out == {"cniVersion": "0.4.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    rc, out = offline.call(env, b"")
    assert rc == 0 and out["cniVersion"] == "1.1.0"


# --------------------------------------------------------------------------- errors

def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


BAD_CONFIGS = {
    "not JSON": (lambda c: b"{not json", 6, "decode"),
    "not an object": (lambda c: b"[1, 2]", 6, "JSON object"),
    "no cniVersion": (lambda c: _without(c, "cniVersion"), 7, "cniVersion"),
    "old cniVersion": (lambda c: dict(c, cniVersion="0.2.0"), 1, "incompatible CNI version"),
    "no name": (lambda c: _without(c, "name"), 7, "name"),
    "no ipam": (lambda c: _without(c, "ipam"), 7, "ipam"),
    "no subnet": (lambda c: dict(c, ipam={"type": "sdn-ipam"}), 7, "ipam.subnet"),
    "bad subnet": (lambda c: dict(c, ipam={"subnet": "10.244.1.0/33"}), 7, "not a CIDR"),
    "host bits": (lambda c: dict(c, ipam={"subnet": "10.244.1.7/24"}), 7, "10.244.1.0/24"),
    "IPv6 subnet": (lambda c: dict(c, ipam={"subnet": "fd00::/64"}), 7, "IPv6"),
    "tiny subnet": (lambda c: dict(c, ipam={"subnet": "10.0.0.0/31"}), 7, "too small"),
    "empty range": (lambda c: dict(c, ipam={"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.1",
                                            "rangeEnd": "10.244.1.1"}), 7, "no address"),
    "range outside": (lambda c: dict(c, ipam={"subnet": "10.244.1.0/24",
                                              "rangeStart": "10.244.2.1"}), 7, "rangeStart"),
    "other ipam": (lambda c: dict(c, ipam={"type": "dhcp", "subnet": "10.1.0.0/24"}), 7,
                   "ipam.type"),
    "bad mtu": (lambda c: dict(c, mtu="1500"), 7, "mtu"),
    "bad ovsdb": (lambda c: dict(c, ovsdb="/run/db.sock"), 7, "ovsdb"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config(offline, case):
    make, code, word = BAD_CONFIGS[case]
    stdin = make(offline.config())
    rc, out = offline.call(offline.env("ADD", "bad1", "some-netns"), stdin)
    # the error speaks the configuration's version, or the latest when it has none
    version = stdin.get("cniVersion", "1.1.0") if isinstance(stdin, dict) else "1.1.0"
    assert_error(out, rc, code, word, version=version)


BAD_ENVS = {
    "no CNI_COMMAND": (lambda e: _without(e, "CNI_COMMAND"), "CNI_COMMAND"),
    "unknown CNI_COMMAND": (lambda e: dict(e, CNI_COMMAND="UP"), "UP"),
    "no CNI_CONTAINERID": (lambda e: _without(e, "CNI_CONTAINERID"), "CNI_CONTAINERID"),
    "no CNI_NETNS": (lambda e: _without(e, "CNI_NETNS"), "CNI_NETNS"),
    "no CNI_IFNAME": (lambda e: _without(e, "CNI_IFNAME"), "CNI_IFNAME"),
    "no CNI_PATH": (lambda e: _without(e, "CNI_PATH"), "CNI_PATH"),
    "bad CNI_IFNAME": (lambda e: dict(e, CNI_IFNAME="a-very-long-ifname"), "CNI_IFNAME"),
    "bad CNI_CONTAINERID": (lambda e: dict(e, CNI_CONTAINERID="-x y"), "CNI_CONTAINERID"),
    "CNI_NETNS not a path": (lambda e: dict(e, CNI_NETNS="pod1"), "not a path"),
    "no such CNI_NETNS": (lambda e: dict(e, CNI_NETNS="/run/netns/sdn-no-such-ns"),
                          "does not exist"),
    "no pod in CNI_ARGS": (lambda e: dict(e, CNI_ARGS="IgnoreUnknown=1"), "K8S_POD_NAME"),
    "bad CNI_ARGS": (lambda e: dict(e, CNI_ARGS="K8S_POD_NAME"), "CNI_ARGS"),
}


@pytest.mark.parametrize("case", BAD_ENVS)
def test_bad_environment(offline, case):
    make, word = BAD_ENVS[case]
    rc, out = offline.call(make(offline.env("ADD", "bad2", "some-netns")),
                           offline.config("0.4.0"))
    assert_error(out, rc, 4, word, version="0.4.0")


def test_unreachable_ovsdb_is_try_again_and_undone(runtime, node):
    ns = runtime.pod_netns()
    conf = dict(runtime.config(), ovsdb=f"unix:{node.rundir}/no-such-db.sock")
    env = runtime.env("ADD", "noovs1", ns)
    rc, out = runtime.call(env, conf)
    assert_error(out, rc, 11, "cannot reach OVSDB")
    assert link(ns, "eth0") is None
    assert link(node.netns, host_ifname("noovs1", "eth0")) is None
    assert reservations(runtime) == {}


def test_ovs_vswitchd_down_is_try_again_and_undone(runtime, ovs_factory):
    """OVSDB answers but nobody applies the change: ovs-vsctl's timeout ends the wait."""
    other = ovs_factory(bridges={BRIDGE_NAME: 2})
    os.kill(other.vswitchd_pid, signal.SIGKILL)
    conf = dict(runtime.config(), ovsdb=other.db_remote, ovsNetns=other.netns, ovsTimeout=1)
    rc, out = runtime.call(runtime.env("ADD", "novswitchd1", runtime.pod_netns()), conf)
    assert_error(out, rc, 11, "timed out after 1s")
    assert other.vsctl("list-ports", BRIDGE_NAME).split() == []
    assert link(other.netns, host_ifname("novswitchd1", "eth0")) is None
    assert reservations(runtime) == {}


def test_host_end_outside_the_ovs_namespace_is_a_clear_error(runtime, node):
    elsewhere = runtime.pod_netns()
    conf = dict(runtime.config(), ovsNetns=f"/run/netns/{elsewhere}")
    rc, out = runtime.call(runtime.env("ADD", "wrongns1", runtime.pod_netns()), conf)
    assert_error(out, rc, 102, "could not open port")
    assert "ovsNetns" in out["details"]
    assert interface_row(node, host_ifname("wrongns1", "eth0")) is None  # undone
    assert link(elsewhere, host_ifname("wrongns1", "eth0")) is None
    assert reservations(runtime) == {}


# --------------------------------------------------------------------------- IPAM

def test_ipam_exhaustion_and_release(runtime):
    conf = runtime.config(subnet="10.99.0.0/30")  # .0 network, .1 gateway, .3 broadcast
    first = runtime.add("only1", runtime.pod_netns(), conf)
    assert first["ips"][0]["address"] == "10.99.0.2/30"
    ns2 = runtime.pod_netns()
    env2 = runtime.env("ADD", "second", ns2)
    rc, out = runtime.call(env2, conf)
    assert_error(out, rc, 100, "no free address in 10.99.0.0/30")
    assert link(ns2, "eth0") is None
    assert runtime.delete("only1") == (0, None)
    runtime.added["second"] = (conf, env2)
    assert runtime.call(env2, conf)[1]["ips"][0]["address"] == "10.99.0.2/30"


def test_ipam_narrow_range_round_robin_and_persistence(runtime):
    conf = runtime.config(subnet="10.98.0.0/24", rangeStart="10.98.0.10",
                          rangeEnd="10.98.0.12")
    addr = {c: runtime.add(c, runtime.pod_netns(), conf)["ips"][0]["address"]
            for c in ("rr1", "rr2")}
    assert addr == {"rr1": "10.98.0.10/24", "rr2": "10.98.0.11/24"}
    runtime.delete("rr1")
    # round-robin: the next address, not the one just freed; then wrap around to it
    assert runtime.add("rr3", runtime.pod_netns(), conf)["ips"][0]["address"] == "10.98.0.12/24"
    assert runtime.add("rr4", runtime.pod_netns(), conf)["ips"][0]["address"] == "10.98.0.10/24"
    assert reservations(runtime) == {"10.98.0.10": "rr4\r\neth0", "10.98.0.11": "rr2\r\neth0",
                                     "10.98.0.12": "rr3\r\neth0"}
    rc, out = runtime.call(runtime.env("ADD", "rr5", runtime.pod_netns()), conf)
    assert_error(out, rc, 100, "10.98.0.10-10.98.0.12")


def test_concurrent_adds_get_distinct_addresses(runtime, node):
    conf = runtime.config()
    procs = {}
    for i in range(6):
        env = runtime.env("ADD", f"conc{i}", runtime.pod_netns(), pod=f"default/conc-{i}")
        runtime.added[f"conc{i}"] = (conf, env)
        procs[f"conc{i}"] = runtime.start(env, json.dumps(conf))
    results = {c: runtime.finish(p) for c, p in procs.items()}
    assert all(rc == 0 for rc, _ in results.values()), results
    addrs = [out["ips"][0]["address"] for _, out in results.values()]
    assert len(set(addrs)) == 6
    ofports = {interface_row(node, out["interfaces"][0]["name"])["ofport"]
               for _, out in results.values()}
    assert len(ofports) == 6 and min(ofports) > 0


def test_ipam_store_never_hands_out_an_address_twice(tmp_path):
    """Four processes allocate 15 addresses each from one store at the same time."""
    script = textwrap.dedent(f"""
        import sys
        from ipaddress import IPv4Address, IPv4Network
        from pathlib import Path
        from sdn.cni.config import IpamConfig, parse_config
        from sdn.cni.ipam import Store
        net = IPv4Network("10.97.0.0/26")
        store = Store(IpamConfig(net, net[1], net[-2], net[1], Path({str(tmp_path)!r}), ()))
        for i in range(15):
            print(store.allocate(f"p{{sys.argv[1]}}-{{i}}", "eth0")[0].ip, flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parent.parent)
             for n in range(4)]
    got = []
    for p in procs:
        out, _ = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0
        got += out.split()
    assert len(got) == 60 == len(set(got))
    net = IPv4Network("10.97.0.0/26")
    store = Store(IpamConfig(net, net[1], net[-2], net[1], tmp_path, ()))
    assert store.lookup("p2-7", "eth0") is not None  # a fresh process reads them back
    assert {str(a) for a in store.release("p2-7", "eth0")} <= set(got)
    assert store.lookup("p2-7", "eth0") is None


def test_the_documented_conflist_is_valid():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cni.md").read_text()
    conflist = json.loads(re.search(r"```json\n(.*?)```", doc, re.S).group(1))
    (plugin,) = conflist["plugins"]
    # what a runtime hands the plugin: its entry, with the list's cniVersion and name
    conf = parse_config(json.dumps(dict(plugin, cniVersion=conflist["cniVersion"],
                                        name=conflist["name"])).encode())
    assert conf.ovs_netns == "/run/netns/node-1" and conf.bridge == BRIDGE_NAME
    assert conf.ipam.store == Path("/var/lib/cni/networks/sdn")
    assert str(conf.ipam.gateway) == "10.244.1.1"


def test_pod_mac_is_the_layout_convention():
    for ip in ("10.244.1.2", "192.168.255.254", "1.2.3.4"):
        assert pod_mac(IPv4Address(ip)) == layout_pod_mac(Pod("ns", "p", ips=(ip,)))


# --------------------------------------------------------------------------- traffic

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(1); print("ready", flush=True)
s.settimeout(20); c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
"""
CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], 8080), timeout=5); break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
c.sendall(b"hello over ovs"); print(c.recv(100).decode())
"""


def test_two_pods_talk_tcp_through_the_bridge(runtime, node):
    """With a plain NORMAL switch, no proxy ARP: the pods' /24 is on-link (the kernel route
    of the address), so they ARP for each other and NORMAL forwards the replies; the
    default route via the gateway is not used here.  ovsNetns is given as a path."""
    node.replace_flows(BRIDGE_NAME, "priority=0,actions=NORMAL")
    conf = dict(runtime.config(), ovsNetns=f"/run/netns/{node.netns}")
    a, b = runtime.pod_netns(), runtime.pod_netns()
    runtime.add("tcpa", a, conf, pod="default/a")
    b_ip = runtime.add("tcpb", b, conf, pod="default/b")["ips"][0]["address"].split("/")[0]
    server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", SERVER, b_ip],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", CLIENT, b_ip],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert client.stdout.strip() == "HELLO OVER OVS", client.stderr
        server.wait(TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stdout.close()
    assert netns_exists(a) and netns_exists(b)


# --------------------------------------------------------------------------- CNI 1.1: STATUS, GC

def lifecycle_env(command: str, rt: Runtime) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
            "CNI_PATH": str(rt.cni_path)}


def test_status_says_whether_an_add_can_succeed(runtime, node):
    rc, out = runtime.call(lifecycle_env("STATUS", runtime), runtime.config("1.1.0"))
    assert (rc, out) == (0, None)
    # a configuration of an older version may not ask
    rc, out = runtime.call(lifecycle_env("STATUS", runtime), runtime.config("1.0.0"))
    assert_error(out, rc, 1, "STATUS needs cniVersion 1.1.0")
    # no such bridge, OVSDB away, the namespace of ovs-vswitchd gone: 50, naming the cause
    rc, out = runtime.call(lifecycle_env("STATUS", runtime), dict(runtime.config("1.1.0"), bridge="br-nope"))
    assert_error(out, rc, 50, "bridge br-nope does not exist", version="1.1.0")
    rc, out = runtime.call(lifecycle_env("STATUS", runtime),
                           dict(runtime.config("1.1.0"), ovsdb="unix:/nonexistent/db.sock", ovsTimeout=1))
    assert_error(out, rc, 50, "cannot reach OVSDB", version="1.1.0")
    rc, out = runtime.call(lifecycle_env("STATUS", runtime), dict(runtime.config("1.1.0"), ovsNetns="nope-ns"))
    assert_error(out, rc, 50, "ovsNetns", version="1.1.0")
    # every address taken: an ADD could not succeed
    tight = runtime.config("1.1.0", rangeStart="10.244.1.10", rangeEnd="10.244.1.10")
    runtime.add("c-status", runtime.pod_netns(), tight)
    rc, out = runtime.call(lifecycle_env("STATUS", runtime), tight)
    assert_error(out, rc, 50, "no free address", version="1.1.0")


def test_gc_removes_what_the_runtime_no_longer_uses(runtime, node):
    conf = runtime.config("1.1.0")
    kept, gone = "c-keep", ["c-gone1", "c-gone2"]
    for c in [kept, *gone]:
        runtime.add(c, runtime.pod_netns(), conf, pod=f"default/{c}")
    assert len(reservations(runtime)) == 3
    valid = {"cni.dev/valid-attachments": [{"containerID": kept, "ifname": "eth0"}]}
    rc, out = runtime.call(lifecycle_env("GC", runtime), dict(conf, **valid))
    assert (rc, out) == (0, None)
    assert list(reservations(runtime).values()) == [f"{kept}\r\neth0"]
    for c in gone:
        host = host_ifname(c, "eth0")
        assert interface_row(node, host) is None and link(node.netns, host) is None
    assert interface_row(node, host_ifname(kept, "eth0")) is not None
    assert runtime.check(kept)[0] == 0
    for c in gone:  # the runtime's DEL of what GC took away still succeeds
        assert runtime.delete(c)[0] == 0
        del runtime.added[c]
    # another network's port on the same bridge is not this network's to collect
    other = Runtime(node, runtime.cni_path, runtime.data_dir)
    try:
        other_conf = dict(other.config("1.1.0", subnet="10.245.0.0/24"))
        other.add("c-other", other.pod_netns(), other_conf, pod="default/other")
        rc, _ = runtime.call(lifecycle_env("GC", runtime), dict(conf, **{"cni.dev/valid-attachments": []}))
        assert rc == 0 and interface_row(node, host_ifname("c-other", "eth0")) is not None
        assert reservations(runtime) == {} and interface_row(node, host_ifname(kept, "eth0")) is None
        del runtime.added[kept]
    finally:
        other.close()


def test_gc_needs_the_valid_attachments(runtime):
    rc, out = runtime.call(lifecycle_env("GC", runtime), runtime.config("1.1.0"))
    assert_error(out, rc, 7, "cni.dev/valid-attachments", version="1.1.0")
    rc, out = runtime.call(lifecycle_env("GC", runtime),
                           dict(runtime.config("1.1.0"), **{"cni.dev/valid-attachments": [{"ifname": "eth0"}]}))
    assert_error(out, rc, 7, "containerID", version="1.1.0")


# --------------------------------------------------------------------------- IPAM delegated to host-local

def host_local(rt: Runtime, version: str = "1.1.0", **extra) -> dict:
    if not HOST_LOCAL.exists():
        pytest.fail(f"{HOST_LOCAL} missing: make test installs containernetworking-plugins", pytrace=False)
    conf = rt.config(version)
    conf["ipam"] = {"type": "host-local", "subnet": "10.244.1.0/24", "dataDir": str(rt.data_dir),
                    "routes": [{"dst": "0.0.0.0/0"}], **extra}
    return conf


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0"])
def test_host_local_allocates_when_the_configuration_names_it(runtime, node, version):
    conf = host_local(runtime, version)
    ns = runtime.pod_netns()
    result = runtime.add("c-hl1", ns, conf)
    assert_spec_result(result, version)
    (ip,) = result["ips"]
    assert ip_interface(ip["address"]) in [ip_interface(f"10.244.1.{i}/24") for i in range(2, 255)]
    assert ip["gateway"] == "10.244.1.1" and result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    # host-local's own store, in its format: the reservation is its
    assert reservations(runtime) == {ip_interface(ip["address"]).ip.exploded: "c-hl1\r\neth0"}
    pod = link(ns, "eth0")
    assert ip["address"] in [f"{a['local']}/{a['prefixlen']}" for a in pod["addr_info"]]
    assert interface_row(node, host_ifname("c-hl1", "eth0"))["external_ids"]["ip"] == ip["address"].split("/")[0]
    assert runtime.check("c-hl1", prev=result)[0] == 0
    assert runtime.delete("c-hl1")[0] == 0
    assert reservations(runtime) == {} and interface_row(node, host_ifname("c-hl1", "eth0")) is None
    del runtime.added["c-hl1"]


def test_host_local_ranges_status_gc_and_a_missing_binary(runtime, node):
    conf = host_local(runtime)
    conf["ipam"] = {"type": "host-local", "dataDir": str(runtime.data_dir), "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.50", "rangeEnd": "10.244.1.52"}]]}
    first = runtime.add("c-hl2", runtime.pod_netns(), conf, pod="default/a")
    assert first["ips"][0]["address"] == "10.244.1.50/24"
    runtime.add("c-hl3", runtime.pod_netns(), conf, pod="default/b")
    rc, out = runtime.call(lifecycle_env("STATUS", runtime), conf)
    assert (rc, out) == (0, None)
    rc, out = runtime.call(lifecycle_env("GC", runtime), dict(conf, **{"cni.dev/valid-attachments": [
        {"containerID": "c-hl2", "ifname": "eth0"}]}))
    assert (rc, out) == (0, None)
    assert reservations(runtime) == {"10.244.1.50": "c-hl2\r\neth0"}
    assert interface_row(node, host_ifname("c-hl3", "eth0")) is None
    # host-local hands out the collected address again
    assert runtime.add("c-hl4", runtime.pod_netns(), conf, pod="default/c")["ips"][0]["address"] in (
        "10.244.1.51/24", "10.244.1.52/24")
    # without host-local in CNI_PATH: ADD names where it looked, STATUS is not available
    bare = runtime.cni_path.parent / "bare-cni-bin"
    bare.mkdir(exist_ok=True)
    if not (bare / "sdn-cni").exists():
        (bare / "sdn-cni").symlink_to(_plugin_executable())
    env = dict(runtime.env("ADD", "c-hl5", runtime.pod_netns()), CNI_PATH=str(bare))
    rc, out = runtime.call(env, conf)
    assert_error(out, rc, 7, "no executable host-local in CNI_PATH", version="1.1.0")
    rc, out = runtime.call(dict(lifecycle_env("STATUS", runtime), CNI_PATH=str(bare)), conf)
    assert_error(out, rc, 50, "host-local", version="1.1.0")


# --------------------------------------------------------------------------- IPv6 pod addresses

SERVER_ANY = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(1); print("ready", flush=True)
s.settimeout(20); c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
"""


def dual_stack(rt: Runtime, version: str = "1.1.0") -> dict:
    conf = rt.config(version)
    conf["ipam"] = {"type": "sdn-ipam", "dataDir": str(rt.data_dir),
                    "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    return conf


def test_an_ipv6_range_gives_pods_ipv6_addresses_the_compiled_flows_carry(runtime, node):
    """A node with an IPv6 pod CIDR: each pod gets its IPv4 and its IPv6 address (reserved in
    host-local's format, recorded in OVSDB, checked by CHECK), and TCP over IPv6 between two
    pods goes through the bridge programmed with the flows `sdnctl compile` makes for them."""
    from sdn.compile import compile_cluster
    from sdn.policy.manifests import load_documents
    from tests.switch_support import add_tunnel
    conf = dual_stack(runtime)
    a, b = runtime.pod_netns(), runtime.pod_netns()
    if interface_row(node, "tun0") is None:
        add_tunnel(node, BRIDGE_NAME, "tun0", 1)  # ofport 1 is the tunnel's in the compiled tables
    res_a = runtime.add("six-a", a, conf, pod="default/a")
    res_b = runtime.add("six-b", b, conf, pod="default/b")
    assert_spec_result(res_a, "1.1.0")
    ips = {n: [ip_interface(ip["address"]) for ip in r["ips"]] for n, r in (("a", res_a), ("b", res_b))}
    assert [i.version for i in ips["a"]] == [4, 6] and ips["a"][1] in ip_interface("fd00:10:244:1::/64").network
    assert res_a["ips"][1]["gateway"] == "fd00:10:244:1::1"
    assert {"dst": "::/0", "gw": "fd00:10:244:1::1"} in res_a["routes"]
    assert sorted(reservations(runtime)) == sorted(str(i.ip) for v in ips.values() for i in v)
    row = interface_row(node, host_ifname("six-a", "eth0"))
    assert row["external_ids"]["ip"] == f"{ips['a'][0].ip},{ips['a'][1].ip}"
    assert runtime.check("six-a")[0] == 0
    # the flows sdnctl compiles for these two pods, with their real ofports
    docs = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
             "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]}}]
    ports = {}
    for name, cid in (("a", "six-a"), ("b", "six-b")):
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                     "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
                     "status": {"podIP": str(ips[name][0].ip), "podIPs": [{"ip": str(i.ip)} for i in ips[name]]}})
        ports[f"default/{name}"] = interface_row(node, host_ifname(cid, "eth0"))["ofport"]
    cluster, _ = load_documents(docs)
    program = compile_cluster(cluster, ["node-1"], {"node-1": ports}).programs["node-1"]
    node.replace_flows(BRIDGE_NAME, program.render())
    for family in (4, 6):
        server_ip = str(ips["b"][0 if family == 4 else 1].ip)
        server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", SERVER_ANY, server_ip],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready"
            client = subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", CLIENT, server_ip],
                                    capture_output=True, text=True, timeout=TIMEOUT)
            assert client.stdout.strip() == "HELLO OVER OVS", (family, client.stderr)
        finally:
            if server.poll() is None:
                server.kill()
            server.wait()
            server.stdout.close()
    # DEL frees both addresses
    for c in ("six-a", "six-b"):
        assert runtime.delete(c)[0] == 0
        del runtime.added[c]
    assert reservations(runtime) == {}


def test_an_ipv6_range_alone_or_with_host_local_is_refused(offline):
    conf = offline.config()
    conf["ipam"] = {"ranges": [[{"subnet": "fd00::/64"}]]}
    rc, out = offline.call(offline.env("ADD", "x6", "some-netns"), conf)
    assert_error(out, rc, 7, "no IPv4 range")
    conf["ipam"] = {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00::/64"}]]}
    rc, out = offline.call(offline.env("ADD", "x6", "some-netns"), conf)
    assert_error(out, rc, 7, "IPv6 range with host-local")
