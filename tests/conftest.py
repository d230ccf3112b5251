"""Shared fixtures: real peers (peer_fixtures) and the node as a real process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["peer_fixtures"]

# Tests never reach a network; keep threaded math libraries to one core each.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The longest modules (minutes each on a loaded machine), started first: ``make test``
#: runs whole modules on parallel workers (pytest-xdist ``--dist loadfile``, which hands
#: out modules in collection order), and a long module started last keeps one worker
#: busy while the others idle. Order only; every test runs.
LONGEST_FIRST = (
    "test_remote_workers.py", "test_study_variants.py", "test_first_hour.py", "test_load.py",
    "test_restarts.py", "test_redis_postgres.py", "test_crash.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start ``spinenode serve`` processes; all are stopped after the test."""
    from nodeproc import Node

    nodes: list[Node] = []

    def build(name: str = "node", start: bool = True, **settings: Any) -> Node:
        node = Node(tmp_path / name, **settings)
        nodes.append(node)
        if start:
            node.start()
        return node

    yield build
    for node in nodes:
        node.close()


@pytest.fixture
def study_dir(tmp_path: Path) -> Callable[..., Any]:
    """Write a small synthetic multi-series MR study (tests/dicomgen.py)."""
    import dicomgen

    def make(seed: int = 0, name: str = "study", **kwargs: Any) -> Any:
        return dicomgen.write_study(tmp_path / name, seed=seed, **kwargs)

    return make


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs mounted for the test (root): a disk that really fills up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
