"""Schema migrations match the models; the export retry policy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from spinenode.core import status
from spinenode.core.db import Base, Database
from workers.export import backoff_seconds, next_attempt
from workers.exporters.dimse import classify_status


def test_migrations_match_models(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate(tmp_path)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.dispose()


@pytest.mark.postgres
def test_migrations_match_models_postgres(postgres_url: str, tmp_path: Path) -> None:
    db = Database(postgres_url)
    db.migrate(tmp_path)
    db.migrate(tmp_path)  # idempotent
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.dispose()


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_seconds(n, 30, 600) for n in range(1, 8)] == [30, 60, 120, 240, 480, 600, 600]
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert next_attempt(t0, 2, 30, 600) == t0 + dt.timedelta(seconds=60)


@pytest.mark.parametrize(
    ("code", "stored", "transient"),
    [
        (status.SUCCESS, True, False),
        (0xB000, True, False),
        (0xB007, True, False),
        (status.OUT_OF_RESOURCES, False, True),
        (0xA7FF, False, True),
        (status.DATASET_DOES_NOT_MATCH_SOP_CLASS, False, False),
        (status.CANNOT_UNDERSTAND, False, False),
        (0x0122, False, False),  # SOP class not supported
    ],
)
def test_status_classification(code: int, stored: bool, transient: bool) -> None:
    assert classify_status(code) == (stored, transient)


def test_stage_durations_from_events() -> None:
    from scp_node.admin.metrics import stage_durations

    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def at(s: float) -> dt.datetime:
        return t + dt.timedelta(seconds=s)

    events = [
        (1, 0, "RECEIVING", at(0)), (1, 0, "RECEIVING", at(5)), (1, 0, "COMPLETE", at(65)),
        (1, 0, "QUEUED", at(65)), (1, 0, "ANALYZING", at(66)), (1, 0, "ENCODING", at(70)),
        (1, 0, "EXPORTING", at(71)), (1, 0, "DONE", at(73)),
        (2, 0, "RECEIVING", at(0)), (2, 0, "COMPLETE", at(60)), (2, 0, "SKIPPED", at(60)),
    ]
    d = stage_durations(events)
    assert d["received_to_complete"] == [65.0, 60.0]
    assert d["complete_to_analysed"] == [5.0]
    assert d["analysed_to_encoded"] == [1.0]
    assert d["encoded_to_stored"] == [2.0]
    assert d["total"] == [73.0]


def test_openapi_document_lists_the_contract(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from scp_node.admin.app import AdminContext, create_app
    from spinenode.core.settings import load_settings

    settings = load_settings(data_dir=tmp_path)
    db = Database(settings.database_url)
    db.migrate(tmp_path)
    app = create_app(AdminContext(settings, db, lambda *a: None, lambda: {}))
    with TestClient(app) as client:
        paths = client.get("/api/openapi.json").json()["paths"]
        assert client.get("/docs").status_code == 404  # no CDN-backed page offline
    for path in ("/api/health", "/api/studies", "/api/studies/{study_uid}", "/api/studies/{study_uid}/findings",
                 "/api/studies/{study_uid}/retry", "/api/queue"):
        assert path in paths
    db.dispose()
