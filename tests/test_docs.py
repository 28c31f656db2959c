"""The docs show real output: every ```console block that starts with `$ sdnctl ...` in
README.md and docs/*.md is re-run and must print exactly what the block shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdn.cli import main

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```console\n\$ (sdnctl [^\n]*)\n(.*?)```", re.S)


def _blocks():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if doc.exists():
            for m in BLOCK.finditer(doc.read_text()):
                yield pytest.param(m.group(1), m.group(2), id=f"{doc.name}:{m.group(1)[:60]}")


@pytest.mark.parametrize("command,shown", list(_blocks()))
def test_doc_output_is_real(command, shown, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, shlex.split(command)[1:])
    assert result.output.rstrip() == shown.rstrip(), f"{command}: output changed; regenerate the docs"


def test_sdnctl_is_on_path_after_the_readme_setup():
    # README: `make venv && . .venv/bin/activate`, then `sdnctl`. The venv running the tests
    # stands for .venv (make test runs them from it).
    assert "make venv && . .venv/bin/activate" in (ROOT / "README.md").read_text()
    venv = Path(sys.prefix)
    proc = subprocess.run(["bash", "-c", f". {shlex.quote(str(venv / 'bin/activate'))} && cd / && "
                           "command -v sdnctl && sdnctl --version"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/root"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(venv / "bin/sdnctl") and "version" in proc.stdout


def test_the_keep_hint_names_sdnctl_by_a_path_that_works():
    make = subprocess.run(["make", "-s", "--no-print-directory", "lab-hint", f"VENV={sys.prefix}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    commands = [line.split() for line in make.stdout.splitlines() if line.startswith("  ")]
    assert {" ".join(c[1:3]) for c in commands} >= {"lab status", "lab down", "flows show"}
    for cmd in commands:
        assert cmd[0] == f"{sys.prefix}/bin/sdnctl"
        proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stderr == "", (cmd, proc.stderr)


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy/README.md",
        ROOT / "benchmarks/README.md", ROOT / "vagrant/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_link_only_inside_the_repository_and_name_no_issue_numbers(doc):
    text = doc.read_text()
    assert not re.findall(r"https?://[\w.-]*\.[a-z]{2,}\b", text, re.I)  # a host name: outside (IP placeholders are not)
    assert "../shared" not in text and not re.findall(r"\bissues? #?\d+", text, re.I)
    for target in LINK.findall(text):
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: broken or outside link {target}"


def test_readme_benchmark_numbers_are_those_of_the_results():
    import json
    readme = (ROOT / "README.md").read_text()
    full = json.loads((ROOT / "benchmarks/results/full/results.json").read_text())
    ratio = full["meta"]["controller_install"]["ratio"]
    assert f"{ratio:.2f}x the time of `ovs-ofctl`" in readme
    assert f"about {ratio:.1f}x the time of" in readme
    ev = full["results"]["S1"]["stages"]["switch"]["events"]
    assert f"CPU {ev['committed_cpu_ms']['p99']:.1f} ms, wall {ev['committed_ms']['p99']:.1f} ms" in readme
