"""Tests clean up after themselves: a run leaves nothing behind in the temporary directory.
A sample of the suite (the manifests written for ovs-ofctl, a controller with its private
sockets, the CLI's tmp_path files) runs in a pytest of its own with TMPDIR pointing at an
empty directory, which must be empty again afterwards (pytest's own per-user directory aside,
which it keeps for every run on the machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ovs
def test_a_test_run_leaves_nothing_in_the_temporary_directory():
    if os.geteuid() != 0:
        pytest.fail("needs root (private ovs-vswitchd): run the tests as make test does")
    tmp = Path(tempfile.mkdtemp(prefix="sdnhyg"))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
             "tests/test_ovs_compile.py::test_ofproto_trace_agrees_with_evaluator[named-port-ingress]",
             "tests/test_switch_controller.py::test_flows_show_diff_and_trace_live",
             "tests/test_cli.py::test_a_duplicate_key_is_an_error_naming_file_line_and_key"],
            cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:]
        left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                      if not (p.is_dir() and p.name.startswith("pytest-of-")))
        assert left == [], left
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
