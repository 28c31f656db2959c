"""The big-manifest benchmark: the file is what it says (policies, pods, valid manifests), and
the CLI shows progress on a terminal while it reads and compiles (a small file here)."""

from __future__ import annotations

from benchmarks import manifest as M
from sdn.policy.manifests import load_paths


def test_manifest_holds_the_objects_it_names(tmp_path):
    path = tmp_path / "cluster.yaml"
    size = M.write_manifest(path, policies=60, pods=50)
    assert size == path.stat().st_size
    cluster, warnings = load_paths([str(path)])
    assert not warnings
    assert len(cluster.policies) == 60 and len(cluster.pods) == 50
    assert len(cluster.namespaces) == M.NAMESPACES and len(cluster.nodes) == M.NODES
    assert M.write_manifest(tmp_path / "again.yaml", policies=60, pods=50) == size  # seeded text


def test_progress_shows_on_a_terminal_and_reading_is_counted(tmp_path):
    path = tmp_path / "cluster.yaml"
    M.write_manifest(path, policies=1500, pods=50)
    seen: list[tuple[str, int]] = []
    load_paths([str(path)], progress=lambda origin, n: seen.append((origin, n)))
    assert seen[0] == (str(path), 1000) and seen[-1] == (str(path), 1500 + 50 + M.NAMESPACES + M.NODES)
    res = M.time_cli(path)
    assert res["returncode"] == 0
    assert res["progress"].startswith("yes"), res
