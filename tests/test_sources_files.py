"""The manifest file source (sdn.sources.files) feeding a real controller core (no bridge):
it takes complete snapshots only. A file still open for writing, or modified in place within
the settle interval, waits; a file renamed into place is taken at once; a file that does not
parse, holds no document, or suddenly drops every policy or every pod is refused and the last
good input stays, unless an explicitly empty list says it is meant."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from sdn.sources.files import FileSource, manifest_files, manifest_stamp
from sdn.switch.core import ControllerCore
from tests.e2e_model import base_cluster, deny_ingress

POLICY = deny_ingress("x")


def write_manifests(directory: Path, docs: list[dict]) -> None:
    """Atomically, as a careful tool would, with nothing declared explicitly empty."""
    (directory / ".cluster.yaml.tmp").write_text(yaml.safe_dump_all(docs))
    os.replace(directory / ".cluster.yaml.tmp", directory / "cluster.yaml")


def started(directory: Path, settle: float = 0.3) -> tuple[FileSource, ControllerCore]:
    core = ControllerCore([])
    source = FileSource([str(directory)], settle)
    core.attach(source)
    core.start()  # no bridge: no thread; the source reads its first input
    return source, core


def test_manifest_stamp_changes_with_any_manifest_and_ignores_editor_files(tmp_path):
    (tmp_path / "a.yaml").write_text("x")
    s1 = manifest_stamp([str(tmp_path)])
    (tmp_path / "b.json").write_text("{}")
    s2 = manifest_stamp([str(tmp_path)])
    for other in ("notes.txt", ".a.yaml.swp", ".#a.yaml", "#a.yaml#", "a.yaml~", ".cluster.yaml.tmp"):
        (tmp_path / other).write_text("ignored")
    assert s1 != s2 == manifest_stamp([str(tmp_path)])
    assert manifest_files([str(tmp_path)]) == [str(tmp_path / "a.yaml"), str(tmp_path / "b.json")]


def test_a_file_open_for_writing_is_not_taken_until_it_is_complete(tmp_path):
    write_manifests(tmp_path, base_cluster() + [POLICY])
    source, core = started(tmp_path)
    assert core.generation == 1 and len(core.cluster.policies) == 1
    text = yaml.safe_dump_all(base_cluster() + [POLICY, deny_ingress("y")])
    with open(tmp_path / "cluster.yaml", "w") as fh:  # in place, as `cat > f` does
        fh.write(text[: len(text) // 2])
        fh.flush()
        deadline = time.monotonic() + 1.0  # over three settle intervals, the writer still there
        while time.monotonic() < deadline:
            source.poll()
            time.sleep(0.05)
        assert core.generation == 1 and "open for writing" in source.waiting
        fh.write(text[len(text) // 2:])
    deadline = time.monotonic() + 5
    while core.generation == 1:
        assert time.monotonic() < deadline, source.status()
        source.poll()
        time.sleep(0.05)
    assert len(core.cluster.policies) == 2 and not core.input_error


def test_a_file_modified_in_place_waits_for_the_settle_interval_a_renamed_one_does_not(tmp_path):
    write_manifests(tmp_path, base_cluster() + [POLICY])
    source, core = started(tmp_path, settle=1.0)
    write_manifests(tmp_path, base_cluster() + [POLICY, deny_ingress("y")])  # a rename: at once
    source.poll()
    assert core.generation == 2
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump_all(base_cluster()))  # in place, closed
    os.utime(tmp_path / "cluster.yaml")
    source.poll()
    assert core.generation == 2 and "modified" in source.waiting
    time.sleep(1.1)
    source.poll()  # settled: read, and refused (every policy gone)
    assert core.generation == 2 and len(core.cluster.policies) == 2


def test_an_emptied_file_is_refused_and_the_last_good_input_stays(tmp_path):
    write_manifests(tmp_path, base_cluster() + [POLICY])
    _source, core = started(tmp_path)
    good = core.cluster
    (tmp_path / ".tmp").write_text("")
    os.replace(tmp_path / ".tmp", tmp_path / "cluster.yaml")
    result = core.reload()
    assert result["generation"] == 1 and "no documents" in result["error"] and "kind: List" in result["error"]
    assert core.cluster is good and core.generation == 1
    st = core.status()
    assert "no documents" in st["manifest_error"] and st["inputs"][0]["refusals"] == 1
    assert st["manifests"] == [str(tmp_path)]
    write_manifests(tmp_path, [{"apiVersion": "v1", "kind": "List", "items": []}])  # meant: nothing at all
    assert core.reload() == {"generation": 2, "error": ""}
    assert not core.cluster.pods and not core.status()["manifest_error"]


def test_an_input_that_drops_every_policy_is_refused_unless_an_empty_list_says_so(tmp_path):
    write_manifests(tmp_path, base_cluster() + [POLICY])
    _source, core = started(tmp_path)
    write_manifests(tmp_path, base_cluster())  # e.g. cut short between the pods and the policies
    result = core.reload()
    assert "no NetworkPolicy (the installed input has 1)" in result["error"]
    assert "NetworkPolicyList" in result["error"] and len(core.cluster.policies) == 1
    write_manifests(tmp_path, base_cluster()[:2])  # and every pod: both named
    assert "and no Pod" in core.reload()["error"]
    write_manifests(tmp_path, base_cluster() + [{"apiVersion": "networking.k8s.io/v1",
                                                 "kind": "NetworkPolicyList", "items": []}])
    assert core.reload()["error"] == "" and not core.cluster.policies and core.cluster.pods


def test_a_file_cut_mid_document_is_refused(tmp_path):
    write_manifests(tmp_path, base_cluster() + [POLICY])
    _source, core = started(tmp_path)
    text = yaml.safe_dump_all(base_cluster() + [POLICY])
    (tmp_path / ".tmp").write_text(text[: text.rindex("podSelector") + 5])
    os.replace(tmp_path / ".tmp", tmp_path / "cluster.yaml")
    assert core.reload()["error"] and core.generation == 1 and len(core.cluster.policies) == 1
