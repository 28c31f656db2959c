"""Shared fixtures: private Open vSwitch instances in their own network namespaces.

Tests that use these need root and Open vSwitch (``make test`` installs it); they FAIL,
not skip, when that is missing.  Every namespace made here is called ``sdnt<pid>-...`` (the
pid of the pytest worker), so parallel xdist workers never collide and a later session can
remove what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterator

import pytest

from sdn.ovs.instance import OvsInstance, del_netns, netns_list

NS_PREFIX = "sdnt"
_seq = itertools.count(1)


def unique_name(tag: str = "") -> str:
    """A short network-namespace name unique to this worker process."""
    return f"{NS_PREFIX}{os.getpid()}-{tag}{next(_seq)}"


def require_ovs() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (network namespaces, a private ovs-vswitchd); "
                    "run them with `make test` as root", pytrace=False)
    missing = [p for p in ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ovs-ofctl", "ip",
                           "ethtool") if shutil.which(p) is None and
               not os.path.exists(f"/usr/sbin/{p}")]
    if missing:
        pytest.fail(f"missing programs {missing}: `make test` installs openvswitch-switch, "
                    f"iproute2 and ethtool", pytrace=False)


def _sweep_stale_netns() -> None:
    """Delete sdnt<pid>-* namespaces whose pytest process is gone (killed sessions)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return
    try:
        names = netns_list()
    except Exception:  # noqa: BLE001 - no namespaces to list: nothing to clean
        return
    for ns in names:
        m = re.match(rf"^{NS_PREFIX}(\d+)-", ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            try:
                del_netns(ns)
            except Exception:  # noqa: BLE001 - best effort: its owner may be removing it too
                pass


def pytest_sessionstart(session: pytest.Session) -> None:
    _sweep_stale_netns()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave nothing in /tmp after a green run: pytest's base temporary directory (the workers'
    are inside it) goes, and its per-user parent when nothing else is in it. A failed run keeps
    it for a look (tmp_path_retention_policy)."""
    if exitstatus != 0 or hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None or factory._given_basetemp:
        return
    base = factory._basetemp
    shutil.rmtree(base, ignore_errors=True)
    for link in base.parent.glob("*-current"):  # pytest's pointer to the newest base directory
        if link.is_symlink() and not link.exists():
            link.unlink()
    with contextlib.suppress(OSError):
        base.parent.rmdir()  # only when empty: another session's directories stay


class OvsFactory:
    """Makes started OvsInstances; ``close()`` stops all of them (even after failures)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self.instances: list[OvsInstance] = []

    def __call__(self, bridges: dict[str, int] | None = None, **kwargs) -> OvsInstance:
        require_ovs()
        ns = unique_name("o")
        rundir = self._tmp.mktemp(ns, numbered=False)
        inst = OvsInstance(rundir, netns=ns, **kwargs)
        self.instances.append(inst)  # registered before start: cleaned even if start fails
        inst.start()
        for name, dpid in (bridges or {}).items():
            inst.add_bridge(name, dpid=dpid)
        return inst

    def close(self) -> None:
        errors = []
        for inst in reversed(self.instances):
            try:
                inst.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                errors.append(e)
        self.instances.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def ovs_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsFactory]:
    """``ovs_factory(bridges={"br0": 1})`` -> a started OvsInstance, stopped at teardown."""
    factory = OvsFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def ovs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsInstance]:
    """A started private OVS with bridge ``br0`` (dpid 1), shared by a test module.

    Tests sharing it should set the flows they need with ``replace_flows``.
    """
    factory = OvsFactory(tmp_path_factory)
    try:
        yield factory(bridges={"br0": 1})
    finally:
        factory.close()


@pytest.fixture
def netns_name() -> Callable[[str], str]:
    """``netns_name("pod")`` -> a unique namespace name (for pods made by add_veth_port)."""
    return unique_name


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `--dist loadgroup` (pyproject.toml) work: pytest-xdist groups the tests marked
    ``xdist_group(NAME)`` onto one worker by the ``@NAME`` suffix it puts on their node ids,
    but it writes ``item._nodeid``, which pytest 9 no longer reads (node ids live in
    ``item._id``). Each live lab module (tests/test_lab_*.py) needs its tests on one worker,
    so that its lab is brought up once."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own suffix works there
        return
    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}
        nodeid = item.nodeid
        if not names or nodeid.rfind("@") > nodeid.rfind("]") or not hasattr(item, "_id"):
            continue
        item._id = NodeId.parse(f"{nodeid}@{'_'.join(sorted(names))}")
