"""What the analyze stage makes of what the analyzer does (issue 13 item 6).

- A bug inside the analyzer (an exception it does not raise on purpose) fails the stage:
  FAILED(analyze) with the exception's type and place, no "not analysed" SR for the
  PACS, and an admin retry through the HTTP API starts the study over.
- A study the models refuse (``AnalyzerError``) is genuinely unanalysable: the
  "not analysed" SR says why.
- A stage that works past TASK_SOFT_TIME_LIMIT is stopped and recorded as FAILED(stage).

The stage runs in-process on a real SQLite database and spool (as in
test_encode_export); the analyzer is replaced by stand-ins (our own component, not a
peer) whose behaviour is the point of each test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dicomgen
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from study_states import walk_to

from models.analyzer import AnalyzerError
from models.types import Condition, Grade
from spinenode.core.db.models import Result, Study, StudyState
from spinenode.core.db.session import Database
from scp_node.dicomio import parse_header
from scp_node.ingest import Ingestor
from spinenode.core.settings import load_settings
from spinenode.core.storage import Spool
from workers import analysis
from workers.analyze import analyze_study
from workers.encode import encode_study
from workers.stage import StageContext
from workers.spool import SpoolAccess
from workers.timelimit import soft_time_limit

TOKEN = "t" * 32


class Sent(list[tuple[str, str, int]]):
    def __call__(self, stage: str, uid: str, generation: int, countdown: float = 0.0) -> None:
        self.append((stage, uid, generation))


class Buggy:
    """An analyzer with a bug: it builds a Grade with one probability for five grades."""

    def analyze_selected(self, study_uid: str, series: Any, selection: Any, region: str | None) -> Any:
        return Grade(Condition.PFIRRMANN, (1.0,))


class Refusing:
    """An analyzer that says, on purpose, that it cannot read the study."""

    def analyze_selected(self, study_uid: str, series: Any, selection: Any, region: str | None) -> Any:
        raise AnalyzerError("the sagittal series is a single slice")


class Endless:
    """An analyzer that never finishes (in Python, so a soft limit can stop it)."""

    def analyze_selected(self, study_uid: str, series: Any, selection: Any, region: str | None) -> Any:
        while True:
            time.sleep(0.02)


def _queued(tmp_path: Path, **settings: Any) -> tuple[StageContext, str, int]:
    """A received study with a sagittal T2, QUEUED for analysis."""
    st = load_settings(data_dir=tmp_path / "data", admin_token=TOKEN, **settings)
    db = Database(st.database_url)
    db.migrate(st.data_dir)
    ctx = StageContext(st, db, SpoolAccess(st, db), Sent())  # type: ignore[arg-type]
    study = dicomgen.write_study(tmp_path / "src", seed=131, rows=64, cols=64, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"),))
    ingestor = Ingestor(db, Spool(st.data_dir))
    for p in study.paths:
        data = p.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    with db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == study.study_uid)).scalar_one()
        row.region = "lumbar"
        walk_to(s, row, StudyState.QUEUED)
        generation = row.generation
    return ctx, study.study_uid, generation


def _row(ctx: StageContext, uid: str) -> Study:
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        row.events  # noqa: B018 - loaded before the session closes
        return row


def test_an_analyzer_bug_fails_the_stage_and_the_admin_api_retries_it(
        tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from scp_node.admin.app import AdminContext, create_app

    ctx, uid, gen = _queued(tmp_path)
    ctx.analyzers = analysis.AnalyzerCache(lambda settings, weights_dir: Buggy())
    analyze_study(ctx, uid, gen)
    row = _row(ctx, uid)
    assert row.state == StudyState.FAILED and row.failed_stage == "analyze"
    detail = row.events[-1].detail or ""
    assert "AnalyzerFailedError" in detail and "ValueError at models/types.py:" in detail, detail
    assert row.findings is None and row.not_analysed_reason is None  # no "not analysed" SR to send
    assert ctx.send == []  # type: ignore[comparison-overlap]

    enqueued: list[tuple[str, str, int]] = []
    app = create_app(AdminContext(ctx.settings, ctx.db, lambda *a: enqueued.append(a), dict))
    with TestClient(app) as client:
        answer = client.post(f"/api/studies/{uid}/retry", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert _row(ctx, uid).state == StudyState.QUEUED and enqueued == [("analyze", uid, gen)]
    ctx.db.dispose()


def test_a_study_the_models_refuse_gets_the_not_analysed_sr(tmp_path: Path) -> None:
    ctx, uid, gen = _queued(tmp_path)
    ctx.analyzers = analysis.AnalyzerCache(lambda settings, weights_dir: Refusing())
    analyze_study(ctx, uid, gen)
    row = _row(ctx, uid)
    assert row.state == StudyState.ENCODING and row.not_analysed_reason == "the sagittal series is a single slice"
    assert ctx.send == [("encode", uid, gen)]  # type: ignore[comparison-overlap]
    encode_study(ctx, uid, gen)
    with ctx.db.session() as s:
        assert s.scalars(select(Result.kind)).all() == ["not-analysed-sr"]
    ctx.db.dispose()


@pytest.mark.timeout(120)  # without the limit the stand-in never returns
def test_a_stage_past_its_soft_time_limit_fails_clearly(tmp_path: Path) -> None:
    ctx, uid, gen = _queued(tmp_path, task_soft_time_limit=1)
    ctx.analyzers = analysis.AnalyzerCache(lambda settings, weights_dir: Endless())
    analyze_study(ctx, uid, gen)
    row = _row(ctx, uid)
    assert row.state == StudyState.FAILED and row.failed_stage == "analyze"
    assert (row.events[-1].detail or "").startswith(
        "SoftTimeLimitExceeded: the analyze stage worked longer than TASK_SOFT_TIME_LIMIT (1 s)")
    ctx.db.dispose()


@pytest.mark.timeout(60)
def test_the_soft_limit_is_not_swallowed_and_not_raised_late() -> None:
    """Code that catches every exception (a reader degrading one series) cannot swallow
    the limit for good; a block that ends in time is never interrupted afterwards."""
    swallowed = 0
    with pytest.raises(SoftTimeLimitExceeded), soft_time_limit(0.2):
        while True:
            try:
                time.sleep(0.01)
            except Exception:
                swallowed += 1
                if swallowed > 1:
                    raise
    assert swallowed == 2
    with soft_time_limit(0.2):
        pass
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # past the limit and a repeat: nothing arrives
        time.sleep(0.01)


def test_tasks_carry_the_limit_and_settings_take_any_requeue_after(tmp_path: Path) -> None:
    from spinenode.core.broker import TASK_ANALYZE, TASK_ENCODE, TASK_EXPORT
    from workers.celery_app import create_app
    from workers.tasks import CELERY_LIMIT_MARGIN

    settings = load_settings(data_dir=tmp_path / "data", task_soft_time_limit=120)
    app = create_app(settings, "test@host")
    for name in (TASK_ANALYZE, TASK_ENCODE, TASK_EXPORT):
        assert app.tasks[name].soft_time_limit == 120 + CELERY_LIMIT_MARGIN
    assert load_settings(data_dir=tmp_path / "data").task_soft_time_limit == 600
    # a short REQUEUE_AFTER (a test's, or an impatient site's) with the default limit: both
    # the node and its embedded worker start (the worker once refused to, in a restart loop)
    assert load_settings(data_dir=tmp_path / "data", requeue_after=6).task_soft_time_limit == 600
    assert load_settings(data_dir=tmp_path / "data", task_soft_time_limit=900, requeue_after=6).requeue_after == 6


def test_findings_stored_before_the_record_are_analysed_again_on_retry(tmp_path: Path) -> None:
    """Findings JSON stored before the analysis record existed is refused at encode
    (FAILED(encode), "analyse the study again"); an admin retry then starts the study over
    at analysis instead of encoding the same JSON again. A FAILED(encode) with a record
    is encoded again, as before."""
    from models.types import Box, Findings, Level, LevelFindings, ModelId, Region
    from scp_node.scheduler import requeue_studies
    from spinenode.core.repository import ANALYSIS_RECORD_KEY

    ctx, uid, gen = _queued(tmp_path)
    level = Level("L4-L5", "1.2.3", "1.2.3.4", 4, Box(1, 2, 3, 4), 0.9, (0.0, 0.0, 0.0))
    old_json = Findings(uid, Region.LUMBAR, ModelId("m", "1"),
                        (LevelFindings(level, (Grade(Condition.SPINAL_CANAL_STENOSIS, (0.8, 0.1, 0.1)),)),)).to_json()
    assert ANALYSIS_RECORD_KEY not in old_json
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        row.findings = old_json
        walk_to(s, row, StudyState.ENCODING, stage="analyze", detail="stored by an older version")
    encode_study(ctx, uid, gen)
    row = _row(ctx, uid)
    assert row.state == StudyState.FAILED and row.failed_stage == "encode"
    assert "analyse the study again" in (row.events[-1].detail or "")

    sent: list[tuple[str, str, int]] = []
    assert requeue_studies(ctx.db, lambda *a: sent.append(a), study_uid=uid, all_failed=False) == [uid]
    row = _row(ctx, uid)
    assert sent == [("analyze", uid, gen)] and row.state == StudyState.QUEUED
    assert "analysed again" in (row.events[-1].detail or "")

    # a FAILED(encode) whose findings hold the record is encoded again
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == uid)).scalar_one()
        row.findings = {**old_json, ANALYSIS_RECORD_KEY: {}}
        walk_to(s, row, StudyState.FAILED, stage="encode", detail="boom")
    sent.clear()
    requeue_studies(ctx.db, lambda *a: sent.append(a), study_uid=uid, all_failed=False)
    assert sent == [("encode", uid, gen)] and _row(ctx, uid).state == StudyState.ENCODING
    ctx.db.dispose()


def test_worker_resources_are_typed_and_built_once_per_process(tmp_path: Path) -> None:
    """The tasks read the worker's resources from their app (no module state): one set per
    process, a new one in a forked child (a prefork pool's), the same through every task."""
    import os

    from spinenode.core.broker import TASK_ANALYZE, TASK_EXPORT
    from workers.celery_app import create_app

    app = create_app(load_settings(data_dir=tmp_path / "data"), "test@host")
    first = app.resources
    assert app.resources is first and first.hostname == "test@host"
    assert app.tasks[TASK_ANALYZE].resources is first and app.tasks[TASK_EXPORT].resources is first
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own database engine and spool access
        os.write(w, b"new" if app.resources is not first and app.resources.db is not first.db else b"old")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 3) == b"new"
