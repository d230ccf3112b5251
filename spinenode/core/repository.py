"""The study repository: every read and write the stages make on the index database.

The stages (``workers/analyze.py``, ``encode.py``, ``export_stage.py``) hold no SQL; they
fetch what they need here, claim their study, and settle their outcome, each in one
small function with one session.

A stage claims its study with one atomic ``UPDATE ... WHERE state = ... AND generation = ...``,
so a second delivery of the same task, or a study reopened by new instances, loses the race
instead of running the stage twice. Every settle checks the study is still in the stage's
state for the same generation, and does nothing otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from spinenode.core.db.models import (
    Event,
    Export,
    ExportState,
    Instance,
    Result,
    ResultKind,
    Series,
    Stage,
    Study,
    StudyState,
    utcnow,
)
from spinenode.core.db.session import Database
from spinenode.core.states import record_event, require_legal, transition

log = logging.getLogger(__name__)

#: The additive key of the stored Findings JSON that holds the rest of the analysis record
#: (workers/record.py). Findings JSON without it was stored before the record existed.
ANALYSIS_RECORD_KEY: Final = "analysis"
#: The words an event of a stage left to the sweep carries (counted by :func:`leave_for_sweep`).
LEFT_FOR_SWEEP: Final = "left for the sweep to retry"


@dataclass(frozen=True, slots=True)
class StageStudy:
    """What a stage reads of its study row."""

    id: int
    study_uid: str
    generation: int
    state: StudyState
    region: str | None
    findings: dict[str, Any] | None
    not_analysed_reason: str | None

    def is_at(self, state: StudyState, generation: int) -> bool:
        return self.state == state and self.generation == generation


def _row(s: Session, study_uid: str) -> Study | None:
    return s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()


def _current(s: Session, study_uid: str, generation: int, state: StudyState | None = None) -> Study | None:
    """The study's row if it is still at ``generation`` (and in ``state``), else None."""
    row = _row(s, study_uid)
    if row is None or row.generation != generation or (state is not None and row.state != state):
        return None
    return row


# --- claim and fetch -----------------------------------------------------------------
def claim(db: Database, study_uid: str, generation: int, *, from_state: StudyState, to_state: StudyState,
          stage: str, now: dt.datetime | None = None) -> bool:
    """Atomically move a study from ``from_state`` to ``to_state`` for this generation.

    Returns False when another delivery already took it or new instances reopened it.
    Raises IllegalTransitionError for a move the state machine does not allow.
    """
    require_legal(study_uid, from_state, to_state)
    now = now or utcnow()
    with db.session() as s:
        claimed = s.execute(
            update(Study)
            .where(Study.study_uid == study_uid, Study.state == from_state, Study.generation == generation)
            .values(state=to_state, state_changed_at=now, reason=None)
            .returning(Study.id)
        ).scalar_one_or_none()
        if claimed is None:
            return False
        study = s.get(Study, claimed)
        assert study is not None
        record_event(s, study, state=to_state, stage=stage, now=now)
    log.info("study %s: %s -> %s (%s)", study_uid, from_state, to_state, stage)
    return True


def fetch(db: Database, study_uid: str) -> StageStudy | None:
    """The study as a stage sees it, or None when there is no such study."""
    with db.session() as s:
        row = _row(s, study_uid)
        if row is None:
            return None
        return StageStudy(row.id, row.study_uid, row.generation, row.state, row.region, row.findings,
                          row.not_analysed_reason)


def series_files(db: Database, study_uid: str) -> dict[str, list[str]]:
    """Series UID -> the paths (relative to DATA_DIR) of its instances, in instance order."""
    files: dict[str, list[str]] = defaultdict(list)
    for series_uid, _, rel in instances(db, study_uid):
        files[series_uid].append(rel)
    return dict(files)


def instances(db: Database, study_uid: str) -> list[tuple[str, str, str]]:
    """(series UID, SOP instance UID, path relative to DATA_DIR) of every instance, in instance order."""
    with db.session() as s:
        rows = s.execute(
            select(Series.series_uid, Instance.sop_instance_uid, Instance.path)
            .join(Instance, Instance.series_id == Series.id)
            .join(Study, Study.id == Series.study_id)
            .where(Study.study_uid == study_uid)
            .order_by(Instance.instance_number)
        ).all()
    return [(series_uid, sop, rel) for series_uid, sop, rel in rows]


# --- failures --------------------------------------------------------------------------
def fail(db: Database, study_uid: str, generation: int, stage: Stage | str, detail: str) -> None:
    """FAILED(stage, error) unless the study moved on (reopened) meanwhile."""
    with db.session() as s:
        row = _current(s, study_uid, generation)
        if row is not None:
            transition(s, row, StudyState.FAILED, stage=stage, detail=detail)


def leave_for_sweep(db: Database, study_uid: str, generation: int, stage: Stage | str, message: str, *,
                    failure: str, limit: int, requeue_after: float) -> None:
    """The node did not answer: the study waits for the sweep, which sends it again after
    ``requeue_after``; an analysis goes back to QUEUED, an encode stays ENCODING (an event
    saying ``message``). Its reason (admin API) says it waits for the node. After ``limit``
    such times for one stage and generation (counted in the events table), FAILED(stage)
    with ``failure``."""
    with db.session() as s:
        row = _current(s, study_uid, generation)
        if row is None:
            return
        earlier = s.scalar(select(func.count()).select_from(Event).where(
            Event.study_id == row.id, Event.generation == generation, Event.stage == stage,
            Event.detail.contains(LEFT_FOR_SWEEP))) or 0
        if earlier >= limit:
            transition(s, row, StudyState.FAILED, stage=stage, detail=f"{failure} (attempt {earlier + 1})")
            return
        detail = f"{message}; {LEFT_FOR_SWEEP} after {requeue_after:.0f} s (attempt {earlier + 1} of {limit + 1})"
        if row.state == StudyState.ANALYZING:
            transition(s, row, StudyState.QUEUED, stage=stage, detail=detail)
        else:
            record_event(s, row, stage=stage, detail=detail)
        row.reason = f"waiting for the node: {message}"


# --- analyze ---------------------------------------------------------------------------
def claim_waiting(db: Database, taken: str, limit: int) -> list[tuple[str, int]]:
    """Up to ``limit`` QUEUED studies other than ``taken``, oldest first, claimed
    (QUEUED -> ANALYZING) for one analysis batch: (study UID, generation) of each. A study
    waiting out an unreachable node (it has a reason) is left to its own retry."""
    if limit <= 0:
        return []
    with db.session() as s:
        rows = s.execute(
            select(Study.study_uid, Study.generation)
            .where(Study.state == StudyState.QUEUED, Study.reason.is_(None), Study.study_uid != taken)
            .order_by(Study.state_changed_at, Study.id).limit(limit)
        ).all()
    return [(uid, gen) for uid, gen in rows
            if claim(db, uid, gen, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage=Stage.ANALYZE)]


def record_classification(db: Database, study_uid: str, classifications: Mapping[str, dict[str, Any]],
                          selection: dict[str, Any], detail: str) -> None:
    """Store each series' classification (series UID -> its JSON) and the study's selection."""
    now = utcnow()
    with db.session() as s:
        for series_uid, classification in classifications.items():
            series = s.execute(select(Series).where(Series.series_uid == series_uid)).scalar_one()
            series.classification = classification
            series.classified_at = now
        row = _row(s, study_uid)
        assert row is not None
        row.selection = selection
        record_event(s, row, stage=Stage.ANALYZE, detail=detail)


def settle_analysis(db: Database, study_uid: str, generation: int, *, findings: dict[str, Any] | None,
                    not_analysed_reason: str | None, detail: str) -> bool:
    """ANALYZING -> ENCODING with the findings (or the reason it was not analysed).
    False when the study moved on meanwhile (nothing is written)."""
    with db.session() as s:
        row = _current(s, study_uid, generation, StudyState.ANALYZING)
        if row is None:
            return False
        row.findings = findings
        row.not_analysed_reason = not_analysed_reason
        transition(s, row, StudyState.ENCODING, stage=Stage.ANALYZE, detail=detail)
    return True


# --- encode ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredResult:
    """Where a result object of the study lies (``path`` relative to DATA_DIR)."""

    path: str
    series_instance_uid: str


@dataclass(frozen=True, slots=True)
class NewResult:
    """A result object the encode stage wrote."""

    kind: ResultKind
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    path: str
    model_name: str
    model_version: str


def previous_sr(db: Database, study_id: int, other_than: str) -> StoredResult | None:
    """The study's newest SR (findings or "not analysed") other than SOP instance ``other_than``."""
    with db.session() as s:
        prev = s.execute(
            select(Result.path, Result.series_instance_uid)
            .where(Result.study_id == study_id, Result.kind.in_([ResultKind.SR, ResultKind.NOT_ANALYSED_SR]),
                   Result.sop_instance_uid != other_than)
            .order_by(Result.id.desc())
            .limit(1)
        ).one_or_none()
    return None if prev is None else StoredResult(prev.path, prev.series_instance_uid)


def settle_encode(db: Database, study_uid: str, generation: int, results: Sequence[NewResult], inputs_digest: str,
                  destinations: Sequence[str]) -> bool:
    """A ``results`` row per object (kept when it exists), an ``exports`` row per object and
    destination, then ENCODING -> EXPORTING (DONE without destinations). False when the
    study moved on meanwhile (nothing is written)."""
    with db.session() as s:
        row = _current(s, study_uid, generation, StudyState.ENCODING)
        if row is None:
            return False
        now = utcnow()
        for new in results:
            result = s.execute(
                select(Result).where(Result.sop_instance_uid == new.sop_instance_uid)
            ).scalar_one_or_none()
            if result is None:
                result = Result(
                    study_id=row.id, generation=generation, kind=str(new.kind), sop_class_uid=new.sop_class_uid,
                    sop_instance_uid=new.sop_instance_uid, series_instance_uid=new.series_instance_uid,
                    path=new.path, model_name=new.model_name, model_version=new.model_version,
                    inputs_digest=inputs_digest,
                )
                s.add(result)
                s.flush()
            for dest in destinations:
                exists = s.execute(
                    select(Export.id).where(Export.result_id == result.id, Export.destination == dest)
                ).scalar_one_or_none()
                if exists is None:
                    s.add(Export(result_id=result.id, study_id=row.id, destination=dest, state=ExportState.PENDING,
                                 attempts=0, next_attempt_at=now, updated_at=now))
        kinds = ", ".join(str(r.kind) for r in results)
        if destinations:
            transition(s, row, StudyState.EXPORTING, stage=Stage.ENCODE, detail=f"written: {kinds}")
        else:
            transition(s, row, StudyState.DONE, stage=Stage.ENCODE,
                       detail=f"written: {kinds}; no DESTINATIONS configured, nothing to export")
    return True


def encodable_again(findings: Mapping[str, Any] | None) -> bool:
    """Can an admin retry of FAILED(encode) encode the stored analysis again? Not when its
    Findings JSON was stored before the analysis record existed (the encode stage refuses
    it): such a study is analysed again."""
    return findings is None or ANALYSIS_RECORD_KEY in findings


# --- export ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DueExport:
    """An export row due now, with the result object it sends."""

    export_id: int
    destination: str
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


class ExportOutcome(Protocol):
    """How one send went (workers.exporters.base.SendOutcome)."""

    @property
    def export_id(self) -> int: ...
    @property
    def ok(self) -> bool: ...
    @property
    def transient(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def context_refused(self) -> bool: ...


def due_exports(db: Database, study_id: int, now: dt.datetime) -> list[DueExport]:
    """The study's PENDING exports whose next attempt is due."""
    with db.session() as s:
        rows = s.execute(
            select(Export.id, Export.destination, Result.path, Result.sop_class_uid, Result.sop_instance_uid,
                   Result.series_instance_uid)
            .join(Result, Result.id == Export.result_id)
            .where(Export.study_id == study_id, Export.state == ExportState.PENDING, Export.next_attempt_at <= now)
        ).all()
    return [DueExport(*r) for r in rows]


def claim_export(db: Database, export_id: int, now: dt.datetime) -> bool:
    """PENDING -> SENDING for one export row; False when another task took it."""
    with db.session() as s:
        got = s.execute(
            update(Export).where(Export.id == export_id, Export.state == ExportState.PENDING)
            .values(state=ExportState.SENDING, updated_at=now).returning(Export.id)
        ).scalar_one_or_none()
    return got is not None


def fail_exports(db: Database, export_ids: Iterable[int], error: str) -> None:
    """The claimed exports still SENDING fail (a retry of FAILED(export) sends them again)."""
    with db.session() as s:
        s.execute(update(Export).where(Export.id.in_(list(export_ids)), Export.state == ExportState.SENDING)
                  .values(state=ExportState.FAILED, last_error=error, updated_at=utcnow()))


def record_export_outcomes(db: Database, outcomes: Iterable[ExportOutcome], *, max_attempts: int,
                           retry_at: Callable[[dt.datetime, int], dt.datetime]) -> None:
    """Settle each sent export: SENT, FALLBACK (key images stand in for a refused SR/SEG),
    PENDING again at ``retry_at(now, attempts)`` while transient and under ``max_attempts``,
    else FAILED."""
    now = utcnow()
    with db.session() as s:
        for out in outcomes:
            row = s.get(Export, out.export_id)
            assert row is not None
            row.attempts += 1
            row.last_status = out.status
            row.last_error = out.error
            row.updated_at = now
            if out.ok:
                row.state = ExportState.SENT
                row.sent_at = now
            elif out.context_refused and _has_key_images(s, row):
                row.state = ExportState.FALLBACK
                row.last_error = f"{out.error}; the key images stand in for it"
            elif out.transient and row.attempts < max_attempts:
                row.state = ExportState.PENDING
                row.next_attempt_at = retry_at(now, row.attempts)
            else:
                row.state = ExportState.FAILED


def _has_key_images(s: Session, export: Export) -> bool:
    """Is there a key-images object for the same study and destination to fall back on?"""
    kind = s.execute(select(Result.kind).where(Result.id == export.result_id)).scalar_one()
    if kind not in (ResultKind.SR, ResultKind.SEG):
        return False
    return s.execute(
        select(Export.id).join(Result, Result.id == Export.result_id).where(
            Export.study_id == export.study_id, Export.destination == export.destination,
            Result.kind == ResultKind.KEY_IMAGES,
        )
    ).first() is not None


def settle_exports(db: Database, study_uid: str, generation: int) -> float | None:
    """DONE, FAILED(export), or still EXPORTING: then the seconds until the next retry is
    due (None when there is nothing to send again, or the study moved on)."""
    with db.session() as s:
        row = _current(s, study_uid, generation, StudyState.EXPORTING)
        if row is None:
            return None
        exports = s.scalars(select(Export).where(Export.study_id == row.id)).all()
        failed = [e for e in exports if e.state == ExportState.FAILED]
        pending = [e for e in exports if e.state in (ExportState.PENDING, ExportState.SENDING)]
        fallbacks = [e for e in exports if e.state == ExportState.FALLBACK]
        if failed:
            detail = "; ".join(f"{e.destination}: {e.last_error} after {e.attempts} attempt(s)" for e in failed)
            transition(s, row, StudyState.FAILED, stage=Stage.EXPORT, detail=detail)
            return None
        if not pending:
            note = (f"; {len(fallbacks)} refused by the destination, key images sent instead"
                    if fallbacks else "")
            transition(s, row, StudyState.DONE, stage=Stage.EXPORT,
                       detail=f"{len(exports) - len(fallbacks)} object(s) confirmed by every destination{note}")
            return None
        waiting = [e.next_attempt_at for e in pending if e.state == ExportState.PENDING]
        if not waiting:
            return None
        retry_in = max(0.0, (min(waiting) - utcnow()).total_seconds())
        record_event(s, row, stage=Stage.EXPORT,
                     detail=f"{len(pending)} export(s) pending; next attempt in {retry_in:.0f} s")
    return retry_in
