"""sdn.switch.ovsdb: the port map of a bridge from a real OVSDB through the IDL, kept current,
and the bridge configuration restart safety needs."""

from __future__ import annotations

import threading
import time

import pytest

from sdn.switch.ovsdb import BridgeView, OvsdbMonitor, pod_identity
from tests.conftest import OvsFactory, unique_name


def test_pod_identity_conventions():
    assert pod_identity({"k8s.pod": "x/a"}) == "x/a"
    assert pod_identity({"pod_namespace": "x", "pod_name": "a"}) == "x/a"  # Antrea
    assert pod_identity({"iface-id": "x_web-1"}) == "x/web-1"  # OVN-Kubernetes
    assert pod_identity({"iface-id": "x/a"}) == "x/a"
    assert pod_identity({"attached-mac": "0a:58:00:00:00:01"}) is None


class Views:
    """Collects what the monitor reports, and waits for a condition on it."""

    def __init__(self):
        self.items: list[BridgeView | None] = []
        self.cv = threading.Condition()

    def __call__(self, view):
        with self.cv:
            self.items.append(view)
            self.cv.notify_all()

    def wait(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                if self.items and predicate(self.items[-1]):
                    return self.items[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching view; last: {self.items[-1:]}")
                self.cv.wait(left)


@pytest.fixture(scope="module")
def ovs(tmp_path_factory):
    factory = OvsFactory(tmp_path_factory)
    try:
        inst = factory()
        inst.add_bridge("br-sdn", dpid=0xAB, fail_mode="standalone")
        inst.add_bridge("other", dpid=0xCD)
        yield inst
    finally:
        factory.close()


@pytest.mark.ovs
def test_ports_appear_and_disappear_as_they_happen(ovs):
    views = Views()
    mon = OvsdbMonitor(ovs.db_remote, None, views, name="node-1").start()  # two bridges: br-sdn
    try:
        v = views.wait(lambda v: v is not None)
        assert (v.name, v.datapath_id) == ("br-sdn", 0xAB) and v.pods() == {}
        ovs.vsctl("add-port", "br-sdn", "tun0", "--", "set", "interface", "tun0", "type=vxlan",
                  "options:remote_ip=flow", "ofport_request=1")
        ovs.add_internal_port("br-sdn", "pa", ofport_request=7,
                              external_ids={"k8s.pod": "x/a", "attached-mac": "0a:58:0a:00:00:07",
                                            "ip": "10.0.0.7/24,fd00::7"})
        ovs.add_internal_port("br-sdn", "pb", external_ids={"iface-id": "y_b"})
        v = views.wait(lambda v: {"x/a", "y/b"} <= set(v.pods()) and v.tunnel_ofport == 1)
        a = v.pods()["x/a"]
        assert (a.ofport, a.mac, a.ips) == (7, "0a:58:0a:00:00:07", ("10.0.0.7", "fd00::7"))
        ovs.del_port("br-sdn", "pa", delete_link=False)
        v = views.wait(lambda v: "x/a" not in v.pods())
        assert "y/b" in v.pods()
        assert mon.status.connected and not mon.status.last_error
    finally:
        mon.stop()


@pytest.mark.ovs
def test_bridge_configured_for_restart_safety(ovs):
    views = Views()
    target = f"unix:{ovs.rundir}/sdn-openflow.sock"
    mon = OvsdbMonitor(ovs.db_remote, "br-sdn", views, controller=target, name="node-1").start()
    try:
        v = views.wait(lambda v: v is not None and v.controllers == (target,) and v.fail_mode == "secure"
                       and v.pinned_dpid == f"{0xAB:016x}")
        assert v.datapath_id == 0xAB
        assert ovs.vsctl("get", "bridge", "br-sdn", "other_config:disable-in-band").strip() == '"true"'
    finally:
        mon.stop()


@pytest.mark.ovs
def test_unreachable_ovsdb_is_reported_and_retried(tmp_path_factory):
    ns = unique_name("late")
    rundir = tmp_path_factory.mktemp(ns, numbered=False)
    views = Views()
    mon = OvsdbMonitor(f"unix:{rundir}/db.sock", None, views, name="node-9").start()
    factory = OvsFactory(tmp_path_factory)
    try:
        time.sleep(1.0)
        assert not mon.status.connected
        assert "cannot connect to OVSDB" in mon.status.last_error and "db.sock" in mon.status.last_error
        assert views.items == []  # nothing reported, nothing else disturbed
        from sdn.ovs.instance import OvsInstance
        inst = OvsInstance(rundir, netns=ns)
        factory.instances.append(inst)
        inst.start()
        inst.add_bridge("br0", dpid=5)
        v = views.wait(lambda v: v is not None, timeout=40)  # backoff is at most 30 s
        assert v.datapath_id == 5 and mon.status.connected
    finally:
        mon.stop()
        factory.close()
