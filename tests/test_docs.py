"""The docs show real output: every ```console block that starts with `$ sdnctl ...` in
README.md and docs/*.md is re-run and must print exactly what the block shows."""

from __future__ import annotations

import os
import re
import shlex
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
