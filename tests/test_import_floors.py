"""Imports run one way, floor by floor (docs/architecture.md), read from the source with ``ast``
(function-level imports included, nothing imported):

3. ``spinenode_app`` (cli, node supervisor, demo) may import every floor below;
2. ``scp_node`` (the receiver) and ``workers`` (the stages) stand beside each other, neither
   imports the other;
1. ``spinenode.core`` (and the ``spinenode`` package face), the shared core;
0. ``models``, the ground floor, imports nothing of the project.

Nothing imports a floor above its own, and no module imports itself in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spinenode_app", "spinenode", "scp_node", "workers", "models")


def floor(module: str) -> tuple[int, str]:
    """The floor of a project module and its room on that floor (floor 2 has two rooms)."""
    if module == "spinenode_app" or module.startswith("spinenode_app."):
        return 3, "app"
    top = module.split(".")[0]
    if top in ("scp_node", "workers"):
        return 2, top
    if top == "spinenode":
        return 1, "core"
    assert top == "models", module
    return 0, "models"


def wrong_way(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports that run up a floor, or sideways between the receiver and the stages."""
    out: set[tuple[str, str]] = set()
    for a, deps in graph.items():
        fa, ra = floor(a)
        for b in deps:
            fb, rb = floor(b)
            if fb > fa or (fb == fa and rb != ra):
                out.add((a, b))
    return out


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


def test_floors_are_recognised() -> None:
    assert floor("spinenode_app.cli") == (3, "app")
    assert floor("scp_node.scp") == (2, "scp_node") and floor("workers.analyze") == (2, "workers")
    assert floor("spinenode.core.settings") == (1, "core") and floor("spinenode") == (1, "core")
    assert floor("models.types") == (0, "models")


def test_the_check_sees_each_kind_of_wrong_import() -> None:
    graph = {
        "spinenode.core.settings": {"scp_node.scp", "models.types"},
        "workers.analyze": {"scp_node.scheduler", "spinenode.core.db"},
        "scp_node.scp": {"workers.tasks", "spinenode.core.status"},
        "models.types": {"spinenode.core.errors"},
        "scp_node.ingest": {"spinenode_app.node"},
        "spinenode_app.cli": {"scp_node.scp", "workers.celery_app", "models.cli", "spinenode.core.logs"},
    }
    assert wrong_way(graph) == {
        ("spinenode.core.settings", "scp_node.scp"),
        ("workers.analyze", "scp_node.scheduler"),
        ("scp_node.scp", "workers.tasks"),
        ("models.types", "spinenode.core.errors"),
        ("scp_node.ingest", "spinenode_app.node"),
    }
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]


def test_nothing_imports_upward_or_sideways() -> None:
    graph = _graph()
    # the graph is read at all, on every floor
    assert "spinenode.core.settings" in graph["workers.celery_app"]
    assert "scp_node.scheduler" in graph["spinenode_app.node"]
    assert "models.train_data" in graph["models.train_grader"]
    assert not wrong_way(graph)


def test_no_import_circle() -> None:
    assert not _circles(_graph())


#: The stages and what they share: their SQL lives in the study repository
#: (spinenode/core/repository.py), never here.
STAGE_MODULES = ("workers/analyze.py", "workers/encode.py", "workers/export_stage.py", "workers/stage.py",
                 "workers/series.py", "workers/spool.py")


def sql_in(source: str) -> list[str]:
    """What in a module's source talks to the database directly: an import of sqlalchemy
    or of the index database's modules (the ``Database`` handle a stage passes on to the
    repository excepted), or a session opened (``.session(``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            handle = node.module == "spinenode.core.db.session" and [a.name for a in node.names] == ["Database"]
            names = [] if handle else [node.module or ""]
        found += [f"imports {n}" for n in names
                  if n.split(".")[0] == "sqlalchemy" or n == "spinenode.core.db" or n.startswith("spinenode.core.db.")]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "session":
            found.append(f"opens a session (line {node.lineno})")
    return found


def test_the_check_sees_sql() -> None:
    assert sql_in("from sqlalchemy import select\n") == ["imports sqlalchemy"]
    assert sql_in("import sqlalchemy.orm\n") == ["imports sqlalchemy.orm"]
    assert sql_in("from spinenode.core.db.models import Study\n") == ["imports spinenode.core.db.models"]
    assert sql_in("def f(db):\n    with db.session() as s:\n        pass\n") == ["opens a session (line 2)"]
    assert sql_in("from spinenode.core.db.session import Database, Session\n") == [
        "imports spinenode.core.db.session"]
    assert sql_in("from spinenode.core import repository\nfrom spinenode.core.db.session import Database\n"
                  "repository.claim(db)\n") == []


def test_stage_modules_hold_no_sql() -> None:
    for rel in STAGE_MODULES:
        assert sql_in((ROOT / rel).read_text()) == [], rel
