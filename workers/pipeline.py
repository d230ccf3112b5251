"""The stages a worker runs for a study; each refetches state and is idempotent."""

from __future__ import annotations

import logging

from sqlalchemy import select

from scp_node.db.models import Study, StudyState
from scp_node.db.session import Database
from scp_node.errors import AnalyzerUnavailableError, SpinenodeError
from scp_node.scheduler import claim
from scp_node.settings import Settings
from scp_node.states import record_event, transition
from scp_node.storage import Spool
from workers.series import classify_study

log = logging.getLogger(__name__)


def _current(db: Database, study_uid: str, generation: int, state: StudyState) -> Study | None:
    with db.session() as s:
        study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
        if study is None or study.generation != generation or study.state != state:
            return None
        return study


def fail(db: Database, study_uid: str, generation: int, stage: str, exc: BaseException) -> None:
    """FAILED(stage, error) unless the study moved on (reopened) meanwhile."""
    with db.session() as s:
        study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
        if study is None or study.generation != generation:
            return
        transition(s, study, StudyState.FAILED, stage=stage, detail=f"{type(exc).__name__}: {exc}")


def analyze_study(db: Database, spool: Spool, settings: Settings, study_uid: str, generation: int) -> None:
    """QUEUED -> ANALYZING: classify and select series, then run the analyzer."""
    if not claim(db, study_uid, generation, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING,
                 stage="analyze"):
        log.info("study %s generation %d: not QUEUED any more, delivery dropped", study_uid, generation)
        return
    try:
        classes, selection = classify_study(db, spool, study_uid)
        with db.session() as s:
            study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
            if study.generation != generation:
                return
            study.selection = selection.as_dict()
            usable = sum(c.usable for c in classes)
            record_event(
                s, study, stage="analyze",
                detail=f"{len(classes)} series classified, {usable} usable; "
                + ("; ".join(selection.missing) if selection.missing else "all inputs found"),
            )
        run_analyzer(settings, study_uid)
    except SpinenodeError as exc:
        log.warning("study %s: analysis failed: %s", study_uid, exc)
        fail(db, study_uid, generation, "analyze", exc)
    except Exception as exc:
        log.exception("study %s: analysis failed unexpectedly", study_uid)
        fail(db, study_uid, generation, "analyze", exc)


def run_analyzer(settings: Settings, study_uid: str) -> None:
    """Run detection and grading (issue 4). Until weights are installed, say so plainly."""
    raise AnalyzerUnavailableError(
        "no analyzer installed in this worker: detection and grading weights are not available"
    )
