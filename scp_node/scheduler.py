"""The scheduler: completes quiet studies, routes them, enqueues after commit, recovers.

The database is the source of truth. Each sweep is a pure read of the rows
plus a few short transactions, so a lost broker message, a killed worker or a
restarted node loses nothing: work whose state has not advanced is enqueued again.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from spinenode.core.logs import log_failure
from scp_node.assembly import complete_cutoff, is_stalled
from spinenode.core.db.models import Export, ExportState, Instance, Series, Study, StudyState, WorkerHeartbeat, utcnow
from spinenode.core.db.session import Database
from spinenode.core.errors import StudyNotFoundError
from spinenode.core.repository import encodable_again
from scp_node.queue_status import WORKER_STALE_S
from scp_node.routing import EligibilityRules, StudyFacts, decide
from spinenode.core.settings import Settings
from spinenode.core.states import record_event, transition

log = logging.getLogger(__name__)

#: enqueue(stage, study_uid, generation): send the stage's task after the commit.
Enqueue = Callable[[str, str, int], None]
Clock = Callable[[], dt.datetime]

#: States a stalled study is handed back from (the worker died or the message was lost),
#: and the stage that picks it up again.
RECOVERABLE: dict[StudyState, str] = {
    StudyState.QUEUED: "analyze",
    StudyState.ANALYZING: "analyze",
    StudyState.ENCODING: "encode",
    StudyState.EXPORTING: "export",
}


@dataclass
class SweepReport:
    completed: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    enqueue_failed: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        enqueue: Enqueue,
        rules: EligibilityRules,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.enqueue = enqueue
        self.rules = rules
        self.clock = clock
        #: uid -> (stage, generation) committed but whose message could not be sent yet.
        self._unsent: dict[str, tuple[str, int]] = {}
        self._last_purge: dt.datetime | None = None

    # --- one sweep ---------------------------------------------------------------
    def sweep(self) -> SweepReport:
        report = SweepReport()
        now = self.clock()
        self._complete(now, report)
        to_send = {uid: ("analyze", g) for uid, g in self._route(now, report).items()}
        to_send.update(self._recover(now, report))
        to_send.update(self._unsent)
        self._unsent.clear()
        for uid, (stage, generation) in to_send.items():
            self._send(stage, uid, generation, report)
        if self.settings.retention_days > 0 and (self._last_purge is None or (now - self._last_purge).total_seconds() >= PURGE_EVERY_S):
            self._last_purge = now
            report.purged = purge_done_studies(self.db, self.settings.data_dir, self.settings.retention_days, now)
        return report

    def recover_on_start(self) -> list[str]:
        """After a restart every QUEUED study is sent again: the broker may have lost it."""
        with self.db.session() as s:
            rows = s.execute(
                select(Study.study_uid, Study.generation).where(Study.state == StudyState.QUEUED)
            ).all()
        report = SweepReport()
        for uid, generation in rows:
            self._send("analyze", uid, generation, report)
        return [uid for uid, _ in rows]

    def _complete(self, now: dt.datetime, report: SweepReport) -> None:
        cutoff = complete_cutoff(now, self.settings.stable_seconds)
        with self.db.session() as s:
            studies = s.scalars(
                select(Study)
                .where(Study.state == StudyState.RECEIVING, Study.last_received_at <= cutoff)
                .with_for_update(skip_locked=not self.db.is_sqlite)
            ).all()
            for study in studies:
                quiet = (now - study.last_received_at).total_seconds()
                transition(s, study, StudyState.COMPLETE, detail=f"no new instance for {quiet:.0f} s", now=now)
                report.completed.append(study.study_uid)

    def _route(self, now: dt.datetime, report: SweepReport) -> dict[str, int]:
        queued: dict[str, int] = {}
        with self.db.session() as s:
            studies = s.scalars(select(Study).where(Study.state == StudyState.COMPLETE)).all()
            for study in studies:
                series = s.execute(
                    select(Series.modality, Series.body_part, Series.description).where(
                        Series.study_id == study.id
                    )
                ).all()
                facts = StudyFacts(
                    modalities=tuple(m or "" for m, _, _ in series),
                    body_parts=tuple(b or "" for _, b, _ in series) + ((study.body_part or ""),),
                    descriptions=tuple(d or "" for _, _, d in series) + ((study.study_description or ""),),
                )
                decision = decide(facts, self.rules)
                if decision.eligible:
                    study.region = decision.region
                    study.enqueue_count += 1
                    transition(s, study, StudyState.QUEUED, detail=decision.reason, now=now)
                    queued[study.study_uid] = study.generation
                    report.queued.append(study.study_uid)
                else:
                    transition(s, study, StudyState.SKIPPED, detail=decision.reason, now=now)
                    report.skipped.append(study.study_uid)
        return queued

    def _recover(self, now: dt.datetime, report: SweepReport) -> dict[str, tuple[str, int]]:
        again: dict[str, tuple[str, int]] = {}
        timeout = self.settings.requeue_after
        with self.db.session() as s:
            studies = s.scalars(select(Study).where(Study.state.in_(list(RECOVERABLE)))).all()
            # A study a live worker is working on is slow, not lost: requeueing it would start
            # a second analysis that the first one's settle then cancels, round after round
            # whenever one analysis takes longer than REQUEUE_AFTER.
            busy = {uid for row in s.scalars(select(WorkerHeartbeat).where(
                WorkerHeartbeat.current_study.is_not(None),
                WorkerHeartbeat.last_seen > now - dt.timedelta(seconds=WORKER_STALE_S),
            )).all() for uid in row.studies()}
            for study in studies:
                state = StudyState(study.state)
                if state == StudyState.EXPORTING:
                    if self._export_due(s, study, now):
                        again[study.study_uid] = ("export", study.generation)
                        report.requeued.append(study.study_uid)
                    continue
                if not is_stalled(study.state_changed_at, now, timeout) or study.study_uid in busy:
                    continue
                study.enqueue_count += 1
                detail = f"requeued by the sweep: {state} for over {timeout:.0f} s"
                if state == StudyState.ANALYZING:
                    transition(s, study, StudyState.QUEUED, detail=detail, now=now)
                else:
                    study.state_changed_at = now
                    record_event(s, study, detail=detail, now=now)
                again[study.study_uid] = (RECOVERABLE[state], study.generation)
                report.requeued.append(study.study_uid)
        return again

    def _export_due(self, s: Session, study: Study, now: dt.datetime) -> bool:
        """An EXPORTING study whose retry message was lost: a pending export is overdue,
        or an attempt in flight has not finished within REQUEUE_AFTER."""
        grace = dt.timedelta(seconds=max(30.0, self.settings.sweep_interval * 10))
        stale = now - dt.timedelta(seconds=self.settings.requeue_after)
        s.execute(
            update(Export)
            .where(Export.study_id == study.id, Export.state == ExportState.SENDING, Export.updated_at < stale)
            .values(state=ExportState.PENDING, updated_at=now)
        )
        overdue = s.scalar(
            select(func.count()).select_from(Export).where(
                Export.study_id == study.id,
                Export.state == ExportState.PENDING,
                Export.next_attempt_at < now - grace,
            )
        )
        return bool(overdue)

    def _send(self, stage: str, uid: str, generation: int, report: SweepReport) -> None:
        try:
            self.enqueue(stage, uid, generation)
        except Exception as exc:  # broker down: keep it and try at the next sweep
            log.warning("cannot enqueue study %s: %s; will retry", uid, type(exc).__name__)
            self._unsent[uid] = (stage, generation)
            report.enqueue_failed.append(uid)

    # --- the loop ------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info(
            "scheduler running: quiet period %.1f s, sweep every %.1f s",
            self.settings.stable_seconds, self.settings.sweep_interval,
        )
        while not stop.is_set():
            swept = False
            try:
                self.sweep()
                swept = True
            except SQLAlchemyError as exc:
                log.error("sweep failed, database unavailable: %s", type(exc).__name__)
            except Exception as exc:
                log_failure(log, "sweep failed", exc=exc)
            # after a failed sweep, never sooner than SWEEP_INTERVAL (no loop of failures)
            stop.wait(self.pause() if swept else self.settings.sweep_interval)

    def pause(self) -> float:
        """Seconds until the next sweep: SWEEP_INTERVAL, or less when a receiving study's
        quiet period ends sooner, so that a study is queued when its STABLE_SECONDS are
        up rather than up to a sweep interval later (half an interval on average)."""
        interval = self.settings.sweep_interval
        try:
            with self.db.session() as s:
                oldest = s.execute(select(func.min(Study.last_received_at))
                                   .where(Study.state == StudyState.RECEIVING)).scalar_one_or_none()
        except SQLAlchemyError:
            return interval
        if oldest is None:
            return interval
        due = (oldest - self.clock()).total_seconds() + self.settings.stable_seconds
        return min(interval, max(MIN_PAUSE_S, due))


#: The shortest pause between sweeps (a study due now is swept at once, not in a busy loop).
MIN_PAUSE_S = 0.05
#: How often the sweep looks for DONE studies past the retention period.
PURGE_EVERY_S = 60.0


def purge_done_studies(db: Database, data_dir: Path, retention_days: float, now: dt.datetime) -> list[str]:
    """Delete the spooled images of studies DONE for longer than the retention period.

    The study, series, result and event rows and the (small) result files stay: they
    are the audit trail and the predecessor of a later re-analysis. The instance rows
    go with their files, so a re-sent study is received afresh."""
    cutoff = now - dt.timedelta(days=retention_days)
    purged: list[str] = []
    with db.session() as s:
        studies = s.scalars(
            select(Study).where(Study.state == StudyState.DONE, Study.state_changed_at < cutoff)
        ).all()
        for study in studies:
            n = s.scalar(select(func.count()).select_from(Instance).where(Instance.study_id == study.id))
            spool = data_dir / "incoming" / study.study_uid
            if not n and not spool.exists():
                continue
            shutil.rmtree(spool, ignore_errors=True)
            s.execute(delete(Instance).where(Instance.study_id == study.id))
            record_event(s, study, detail=f"spool purged: {n} instance(s), DONE for over {retention_days:g} day(s)",
                         now=now)
            purged.append(study.study_uid)
    for uid in purged:
        log.info("study %s: spool purged after retention", uid)
    return purged


def requeue_studies(
    db: Database, enqueue: Enqueue, *, study_uid: str | None, all_failed: bool, now: dt.datetime | None = None
) -> list[str]:
    """Send studies through the pipeline again (admin retry), from the stage that failed.

    FAILED(export): the failed exports go back to PENDING with a fresh attempt count and
    only the export stage runs; FAILED(encode): the results are encoded again, unless the
    stored findings predate the analysis record (the encode stage refuses them,
    ``repository.encodable_again``); anything else (analysis failures, SKIPPED, DONE on
    request, and those) starts over at analysis.
    """
    now = now or utcnow()
    sent: list[tuple[str, str, int]] = []
    with db.session() as s:
        query = select(Study)
        if study_uid:
            query = query.where(Study.study_uid == study_uid)
        else:
            query = query.where(Study.state == StudyState.FAILED)
        studies = s.scalars(query).all()
        if study_uid and not studies:
            raise StudyNotFoundError(f"no study {study_uid}")
        for study in studies:
            if study.state == StudyState.RECEIVING:
                continue
            previous = f"{study.state}({study.failed_stage})" if study.failed_stage else str(study.state)
            detail = f"retry requested (was {previous})"
            study.enqueue_count += 1
            if study.state == StudyState.FAILED and study.failed_stage == "export":
                s.execute(
                    update(Export)
                    .where(Export.study_id == study.id, Export.state == ExportState.FAILED)
                    .values(state=ExportState.PENDING, attempts=0, next_attempt_at=now, updated_at=now)
                )
                transition(s, study, StudyState.EXPORTING, stage="export", detail=detail, now=now)
                sent.append(("export", study.study_uid, study.generation))
            elif study.state == StudyState.FAILED and study.failed_stage == "encode" \
                    and encodable_again(study.findings):
                transition(s, study, StudyState.ENCODING, stage="encode", detail=detail, now=now)
                sent.append(("encode", study.study_uid, study.generation))
            else:
                if study.state == StudyState.FAILED and study.failed_stage == "encode":
                    detail += "; its findings were stored before the analysis record: analysed again"
                transition(s, study, StudyState.QUEUED, detail=detail, now=now)
                sent.append(("analyze", study.study_uid, study.generation))
    for stage, uid, generation in sent:
        enqueue(stage, uid, generation)
    return [uid for _, uid, _ in sent]


def requeue(settings: Settings, *, study_uid: str | None, all_failed: bool) -> list[str]:
    """CLI entry: requeue using the configured database and broker."""
    from spinenode.core.broker import TaskSender, make_celery

    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    sender = TaskSender(make_celery(settings))
    try:
        return requeue_studies(db, sender, study_uid=study_uid, all_failed=all_failed)
    finally:
        db.dispose()
