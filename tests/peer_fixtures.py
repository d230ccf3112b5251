"""pytest fixtures for the real peers in the ``peers`` package.

Loaded as a plugin (``pytest_plugins = ["peer_fixtures"]`` in ``tests/conftest.py``, or
``-p peer_fixtures``).  Every fixture stops its processes by PID in teardown, also when
the test failed; working directories (with the peers' logs) live under pytest's
``tmp_path``, which keeps the last few runs for inspection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from peers import OrthancServer, PostgresServer, RedisServer, StorescpServer

OrthancFactory = Callable[..., OrthancServer]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port (``.url``, ``.kill()``, ``.start()``)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session; tests that restart it must leave it running."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, uniquely named database, dropped after the test."""
    if not postgres_server.running():
        postgres_server.start()
    name = postgres_server.unique_database()
    yield postgres_server.url_for(name)
    if not postgres_server.running():
        postgres_server.start()
    postgres_server.drop_database(name)


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[OrthancFactory]:
    """Build and start Orthanc instances; all are stopped after the test.

    Call as ``orthanc_factory(modalities={"NODE": ("SPINENODE", "127.0.0.1", port)},
    ae_title="ORTHANC", extra_config={...})``.
    """
    started: list[OrthancServer] = []

    def build(
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        ae_title: str = "ORTHANC",
        extra_config: Mapping[str, Any] | None = None,
        dicom_port: int | None = None,
    ) -> OrthancServer:
        workdir = tmp_path / f"orthanc-{len(started)}"
        server = OrthancServer(workdir, ae_title=ae_title, modalities=modalities,
                               extra_config=extra_config, dicom_port=dicom_port)
        started.append(server)
        return server.start()

    try:
        yield build
    finally:
        for server in started:
            server.close()


@pytest.fixture
def storescp_server(tmp_path: Path) -> Iterator[StorescpServer]:
    """DCMTK storescp (AE ``STORESCP``) writing received files to ``.output_dir``."""
    with StorescpServer(tmp_path / "storescp") as server:
        yield server
