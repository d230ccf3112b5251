"""Imports run one way: ``models`` at the bottom imports neither ``scp_node`` nor ``workers``;
``scp_node`` does not import ``workers`` (spinenode/core/broker.py); no module imports itself in a
circle. Read from the source with ``ast`` (function-level imports included), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scp_node", "workers", "models")

#: Circles that other work of issue 13 removes; each entry goes when its circle does.
KNOWN_CIRCLES: set[frozenset[str]] = {
    frozenset({"scp_node.scp", "scp_node.scp_pool"}),
    frozenset({"scp_node.admin.app", "scp_node.admin.dashboard"}),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts a.b when it is a module)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan), package faces left out:
    an ``__init__`` that only hands names on is not a dependency of its own."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part: set[str] = set()
            while True:
                w = stack.pop()
                on.discard(w)
                part.add(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(frozenset(part))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_models_is_the_ground_floor() -> None:
    wrong = {(a, b) for a, deps in _graph().items() if a.startswith("models")
             for b in deps if b.split(".")[0] in ("scp_node", "workers")}
    assert not wrong


def test_receiver_does_not_import_the_stages() -> None:
    wrong = {(a, b) for a, deps in _graph().items() if a.startswith("scp_node")
             for b in deps if b.startswith("workers")}
    assert not wrong


def test_no_new_import_circle() -> None:
    graph = _graph()
    assert "models.train_data" in graph["models.train_grader"]  # the graph is read at all
    assert set(_circles(graph)) <= KNOWN_CIRCLES
