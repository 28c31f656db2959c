"""The map of rooms in docs/architecture.md ("Rooms and what each may import"), kept true: every
import in sdn/, flows/ and benchmarks/ is read (ast, nothing is imported) and checked against it.
flows/ imports nothing of sdn/, no room imports one above it, and no private (underscore) name
is imported from another package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# room -> the modules in it (a name, or a package with everything below it)
ROOMS: dict[str, tuple[str, ...]] = {
    "flows": ("flows",),
    "proc": ("sdn.proc",),
    "output": ("sdn.cli_output",),
    "policy": ("sdn.policy",),
    "ovs": ("sdn.ovs",),
    "node": ("sdn.node_setup",),
    "cni": ("sdn.cni",),
    "compile": ("sdn.layout", "sdn.engine", "sdn.compile", "sdn.verify", "sdn.show"),
    "k8s": ("sdn.k8s",),
    "sources": ("sdn.sources",),
    "switch": ("sdn.switch",),
    "agent": ("sdn.agent", "sdn.agent_setup", "sdn.sources.kubernetes"),
    "lab": ("sdn.lab",),
    "cli": ("sdn.cli", "sdn.cli_live", "sdn.cli_locate", "sdn.cli_matrix", "sdn.cli_policy",
            "sdn.cli_trace", "sdn"),
    "benchmarks": ("benchmarks",),
}

# room -> the rooms it may import (besides itself); the order of ROOMS is bottom to top, and
# a room may import only rooms listed before it.
MAY_IMPORT: dict[str, set[str]] = {
    "flows": set(),
    "proc": set(),
    "output": set(),
    "policy": {"flows"},
    "ovs": {"proc"},
    "node": {"proc"},
    "cni": {"proc"},
    "compile": {"flows", "policy"},
    "k8s": {"flows", "policy"},
    "sources": {"flows", "proc", "policy", "compile", "k8s"},
    "switch": {"flows", "proc", "policy", "ovs", "compile", "sources"},
    "agent": {"flows", "proc", "policy", "node", "compile", "k8s", "sources", "switch"},
    "lab": {"flows", "proc", "output", "policy", "ovs", "node", "cni", "compile", "k8s", "sources",
            "switch", "agent"},
    "cli": {"flows", "proc", "output", "policy", "ovs", "node", "cni", "compile", "k8s", "sources",
            "switch", "agent", "lab"},
    "benchmarks": {"flows", "proc", "output", "policy", "ovs", "node", "cni", "compile", "k8s",
                   "sources", "switch", "agent", "lab", "cli"},
}


def room_of(module: str) -> str | None:
    """The room of a module of this project (the longest matching entry; "sdn" itself only
    exactly), None for others."""
    best, best_len = None, -1
    for room, prefixes in ROOMS.items():
        for p in prefixes:
            if (module == p or (p != "sdn" and module.startswith(p + "."))) and len(p) > best_len:
                best, best_len = room, len(p)
    return best


def package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def sources() -> list[tuple[str, Path]]:
    out = []
    for top in ("flows", "sdn", "benchmarks"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out.append((module, path))
    return out


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for every absolute import in a file,
    also those inside functions and under TYPE_CHECKING."""
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((node.lineno, sub, None) if is_module(sub) else (node.lineno, node.module, a.name))
    return out


def test_the_map_runs_one_way():
    order = list(ROOMS)
    assert set(order) == set(MAY_IMPORT)
    for room, allowed in MAY_IMPORT.items():
        assert all(order.index(a) < order.index(room) for a in allowed), room


@pytest.mark.parametrize("module,path", sources(), ids=lambda x: x if isinstance(x, str) else "")
def test_imports_follow_the_map(module, path):
    room = room_of(module)
    assert room is not None, f"{module}: in no room of the map (tests/test_architecture.py, docs/architecture.md)"
    wrong = []
    for line, target, name in imports(path):
        other = room_of(target)
        where = f"{path.relative_to(ROOT)}:{line}"
        if other is not None and other != room and other not in MAY_IMPORT[room]:
            wrong.append(f"{where}: {room} imports {target} ({other}), not in its map")
        target_package = target if (ROOT.joinpath(*target.split(".")) / "__init__.py").exists() \
            else target.rpartition(".")[0]
        if (name and name.startswith("_") and not name.startswith("__") and other is not None
                and target_package != package_of(module, path)):
            wrong.append(f"{where}: private {name} imported from {target}, another package")
    assert not wrong, "\n".join(wrong)


def test_flows_imports_nothing_of_sdn():
    for module, path in sources():
        if room_of(module) == "flows":
            assert not [t for _, t, _ in imports(path) if t == "sdn" or t.startswith("sdn.")], module
