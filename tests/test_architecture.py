"""The package's shape: imports between subpackages follow the data flow (no cycles), and
each helper family that issue 15 found duplicated has exactly one home.

Imports are read with ``ast`` from every module under ``src/em_interp`` (module-level and
function-level imports alike, relative imports resolved), so a lazy import inside a
function cannot hide a cycle.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "em_interp"

# The data flow, lowest first: a unit may import only units of a lower layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),                                                # foundation modules
    ("config",),
    ("progress",),                                              # bars and rate lines (imports no em_interp)
    ("hashing", "jsonl", "tensorfiles", "cli_options"),
    ("models",),
    ("data",),
    ("train", "eval"),
    ("interp",),
    ("report",),
    ("transfer",),
    ("pipeline",),
    ("commands", "pipeline_cli"),                               # each subpackage's cli.py: commands
    ("cli",),                                                   # entry point

    ("__main__", "__init__"),
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}

# Edges known to break the flow, with the reason. The flow tests leave them out; each is an
# expected failure of test_known_violation_is_gone until the edge goes (then delete the entry).
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(rel: Path) -> str:
    """The subpackage (or top-level module) a file belongs to; a subpackage's ``cli.py`` is a
    command module, the layer that composes stages (it may draw with report, for example)."""
    if len(rel.parts) == 2 and rel.name == "cli.py":
        return "commands"
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(path: Path) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` of every import of ``em_interp`` code in ``path``."""
    rel = path.relative_to(PKG)
    package = ["em_interp", *rel.parts[:-1]]  # the package this file lives in
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                # ``from . import x``: x may be a submodule
                out += [(f"{name}.{a.name}" if not node.module else name, node.lineno) for a in node.names]
            elif node.module:
                out.append((node.module, node.lineno))
    return [(m, line) for m, line in out if m == "em_interp" or m.startswith("em_interp.")]


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> ``file:line`` of each such import."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in _modules():
        rel = path.relative_to(PKG)
        src = _unit(rel)
        for module, line in _imported(path):
            parts = module.split(".")
            if len(parts) < 2:
                continue  # ``import em_interp`` itself
            dst = "commands" if len(parts) == 3 and parts[2] == "cli" else parts[1]
            if dst != src:
                edges.setdefault((src, dst), []).append(f"{rel}:{line}")
    return edges


def _cycles(edges: dict[tuple[str, str], list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_place_in_the_data_flow():
    units = {_unit(p.relative_to(PKG)) for p in _modules()}
    assert units - set(RANK) == set(), "add the new module or subpackage to LAYERS"


def _flow_edges() -> dict[tuple[str, str], list[str]]:
    return {e: where for e, where in _edges().items() if e not in KNOWN_VIOLATIONS}


def test_no_import_cycle_between_subpackages():
    edges = _flow_edges()
    cycles = _cycles(edges)
    detail = {c: [f"{a} -> {b}: {edges[(a, b)][:3]}" for (a, b) in edges if a in c and b in c] for c in map(tuple, cycles)}
    assert cycles == [], detail


def test_imports_follow_the_data_flow():
    """models -> data -> train/eval -> interp -> report -> transfer -> pipeline: no upward or sideways import."""
    bad = [f"{a} -> {b} ({', '.join(where[:3])})" for (a, b), where in sorted(_flow_edges().items())
           if a in RANK and b in RANK and RANK[b] >= RANK[a]]
    assert bad == []


@pytest.mark.parametrize("edge", [pytest.param(e, marks=pytest.mark.xfail(strict=True, reason=why), id="->".join(e))
                                  for e, why in KNOWN_VIOLATIONS.items()])
def test_known_violation_is_gone(edge):
    """Expected to fail while the edge exists; passes (strict XPASS = failure) once it is fixed:
    then delete its KNOWN_VIOLATIONS entry."""
    assert edge not in _edges()


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "em_interp"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "x.py").write_text("def f():\n    from em_interp.eval import y\n    from ..models import z\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    assert _imported(pkg / "data" / "x.py") == [("em_interp.eval", 2), ("em_interp.models", 3)]
    assert _cycles({("data", "eval"): [], ("eval", "data"): [], ("eval", "models"): []}) == [["data", "eval"]]


# --------------------------------------------------------------------------- one home per helper family

def _defining(predicate) -> list[str]:
    """Modules (relative paths) with a node for which ``predicate(node)`` holds."""
    out = []
    for path in _modules():
        if any(predicate(n) for n in ast.walk(_tree(path))):
            out.append(str(path.relative_to(PKG)))
    return out


def _imports_module(prefix: str):
    def pred(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name == prefix or a.name.startswith(prefix + ".") for a in node.names)
        return isinstance(node, ast.ImportFrom) and bool(node.module) and node.level == 0 and (
            node.module == prefix or node.module.startswith(prefix + "."))
    return pred


@pytest.mark.parametrize("what,predicate,home", [
    ("class Encoded (the chat encoder)", lambda n: isinstance(n, ast.ClassDef) and n.name == "Encoded",
     "data/chat_encode.py"),
    ("a bandit import (the bandit runner)", _imports_module("bandit"), "data/bandit_check.py"),
    ("YAML node marks (the YAML-location helper)",
     lambda n: isinstance(n, ast.Attribute) and n.attr in ("start_mark", "compose"), "config.py"),
])
def test_one_home_per_helper_family(what, predicate, home):
    assert _defining(predicate) == [home], f"{what} should live only in {home}"
