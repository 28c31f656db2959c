"""sdn.switch.core without a switch: node specs, generations from a source of the cluster (the
Kubernetes agent), and the switch target of each node."""

from __future__ import annotations

import os

import pytest

from sdn.policy.manifests import load_documents
from sdn.switch.controller import controller_target
from sdn.switch.core import ControllerCore, NodeSpec
from tests.e2e_model import base_cluster


def test_node_specs():
    assert NodeSpec.parse("node-1=unix:/run/ovs/db.sock") == NodeSpec("node-1", "unix:/run/ovs/db.sock")
    assert NodeSpec.parse("node-1/br0=/run/ovs/db.sock") == NodeSpec("node-1", "unix:/run/ovs/db.sock", "br0")
    assert NodeSpec.parse("n=tcp:10.0.0.1:6640").ovs_rundir is None
    assert NodeSpec.parse("n=unix:/run/ovs/db.sock").ovs_rundir == "/run/ovs"
    for bad in ("node-1", "=unix:/x", "node-1=db.sock"):
        with pytest.raises(ValueError, match="--bridge"):
            NodeSpec.parse(bad)


def test_a_cluster_from_another_source_is_not_clobbered_by_polling():
    core = ControllerCore([])
    cluster, _ = load_documents(base_cluster())
    assert core.set_cluster(cluster) == 1
    core.poll()  # no source: nothing to reload
    assert core.cluster is cluster and core.generation == 1
    assert core.set_cluster(cluster) == 2
    assert core.wait(2, 0.1)["realized"]  # no bridge has a program yet: nothing to wait for


def test_unix_controller_target_is_linked_into_the_ovs_rundir(tmp_path):
    rundir = tmp_path / "ovs"
    rundir.mkdir()
    target, ensure = controller_target(f"unix:{tmp_path}/of.sock", NodeSpec("n", f"unix:{rundir}/db.sock"))
    assert target == f"unix:{rundir}/sdn-openflow.sock"
    ensure()
    ensure()  # idempotent
    assert os.readlink(rundir / "sdn-openflow.sock") == f"{tmp_path}/of.sock"
    assert controller_target("tcp:127.0.0.1:6653", NodeSpec("n", f"unix:{rundir}/db.sock")) == \
        ("tcp:127.0.0.1:6653", None)
