"""Read-only queries behind the dashboard pages; plain dataclasses out, no HTML.

Patient ID and accession number are read for the search and for display only;
nothing here logs them.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select

from scp_node.admin.metrics import STAGES, stage_durations
from spinenode.core.db.models import Event, Export, Instance, Result, Series, Study, StudyState, WorkerHeartbeat
from spinenode.core.db.session import Database
from scp_node.queue_status import WORKER_STALE_S, state_counts

#: Hours shown in the per-hour statistics and charts.
WINDOW_HOURS = 24

#: Human names of the stages measured by :func:`scp_node.admin.metrics.stage_durations`.
STAGE_LABELS: dict[str, str] = {
    "received_to_complete": "received → complete (quiet period)",
    "complete_to_analysed": "complete → analysed (queue + AI)",
    "analysed_to_encoded": "analysed → encoded (SR, SEG)",
    "encoded_to_stored": "encoded → stored (export)",
    "total": "total: first instance → done",
}


@dataclass(frozen=True, slots=True)
class WorkerRow:
    hostname: str
    queues: list[str]
    device: str | None
    #: every study it is working on (an analysis batch takes several), the first one first
    current_studies: list[str]
    last_seen: dt.datetime
    age_s: float
    online: bool


@dataclass(frozen=True, slots=True)
class HourBin:
    start: dt.datetime
    received: int = 0
    done: int = 0
    failed: int = 0
    #: Median first-instance-to-DONE seconds of the studies done in this hour.
    median_total_s: float | None = None


@dataclass(frozen=True, slots=True)
class StageStat:
    name: str
    label: str
    n: int
    p50: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Overview:
    states: dict[str, int]
    queues: dict[str, int | None]
    workers: list[WorkerRow]
    hours: list[HourBin]
    stages: list[StageStat]

    @property
    def received_24h(self) -> int:
        return sum(h.received for h in self.hours)

    @property
    def done_24h(self) -> int:
        return sum(h.done for h in self.hours)

    @property
    def failed_24h(self) -> int:
        return sum(h.failed for h in self.hours)

    @property
    def workers_online(self) -> int:
        return sum(w.online for w in self.workers)


@dataclass(frozen=True, slots=True)
class StudyRow:
    study_uid: str
    state: str
    region: str | None
    modality: str | None
    failed_stage: str | None
    reason: str | None
    accession_number: str | None
    series_count: int
    instance_count: int
    last_received_at: dt.datetime
    state_changed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StudyPage:
    rows: list[StudyRow]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class EventRow:
    at: dt.datetime
    state: str
    stage: str | None
    generation: int
    detail: str | None
    #: Seconds since the previous event of the study.
    delta_s: float | None


@dataclass(frozen=True, slots=True)
class SeriesRow:
    series_uid: str
    series_number: int | None
    modality: str | None
    description: str | None
    instance_count: int
    classification: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ResultRow:
    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    generation: int
    model: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ExportRow:
    destination: str
    kind: str
    sop_instance_uid: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: dt.datetime | None
    updated_at: dt.datetime | None
    sent_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class StudyDetail:
    study: StudyRow
    patient_id: str | None
    study_description: str | None
    body_part: str | None
    generation: int
    enqueue_count: int
    first_received_at: dt.datetime
    not_analysed_reason: str | None
    selection: dict[str, Any] | None
    findings: dict[str, Any] | None
    events: list[EventRow]
    series: list[SeriesRow]
    results: list[ResultRow]
    exports: list[ExportRow]
    missing: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def hour_floor(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _workers(db: Database, now: dt.datetime) -> list[WorkerRow]:
    with db.session() as s:
        rows = s.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.hostname)).all()
        out = []
        for w in rows:
            age = max(0.0, (now - w.last_seen).total_seconds())
            out.append(WorkerRow(w.hostname, [q for q in w.queues.split(",") if q], w.device, w.studies(),
                                 w.last_seen, age, age < WORKER_STALE_S))
    return out


def _hours(db: Database, now: dt.datetime) -> list[HourBin]:
    """Studies received, done and failed per hour, and the median total time of the done ones."""
    first_hour = hour_floor(now) - dt.timedelta(hours=WINDOW_HOURS - 1)
    with db.session() as s:
        rows = s.execute(
            select(Event.study_id, Event.generation, Event.state, Event.at)
            .where(Event.at >= first_hour, Event.state.in_(["RECEIVING", "DONE", "FAILED"]))
            .order_by(Event.at, Event.id)
        ).all()
        done_keys = {(sid, gen) for sid, gen, state, _ in rows if state == "DONE"}
        starts: dict[tuple[int, int], dt.datetime] = {}
        if done_keys:
            for sid, gen, at in s.execute(
                select(Event.study_id, Event.generation, func.min(Event.at))
                .where(Event.state == "RECEIVING", Event.study_id.in_(sorted({k[0] for k in done_keys})))
                .group_by(Event.study_id, Event.generation)
            ).all():
                starts[(sid, gen)] = at
    received: dict[int, set[int]] = defaultdict(set)
    counts: dict[str, dict[int, set[tuple[int, int]]]] = {"DONE": defaultdict(set), "FAILED": defaultdict(set)}
    totals: dict[int, list[float]] = defaultdict(list)
    seen_done: set[tuple[int, int]] = set()
    for sid, gen, state, at in rows:
        idx = int((at - first_hour).total_seconds() // 3600)
        if not 0 <= idx < WINDOW_HOURS:
            continue
        if state == "RECEIVING":
            received[idx].add(sid)
            continue
        counts[state][idx].add((sid, gen))
        if state == "DONE" and (sid, gen) not in seen_done:
            seen_done.add((sid, gen))
            start = starts.get((sid, gen))
            if start is not None and start <= at:
                totals[idx].append((at - start).total_seconds())
    return [
        HourBin(
            start=first_hour + dt.timedelta(hours=i),
            received=len(received[i]),
            done=len(counts["DONE"][i]),
            failed=len(counts["FAILED"][i]),
            median_total_s=statistics.median(totals[i]) if totals[i] else None,
        )
        for i in range(WINDOW_HOURS)
    ]


def _stages(db: Database, now: dt.datetime) -> list[StageStat]:
    since = now - dt.timedelta(hours=WINDOW_HOURS)
    with db.session() as s:
        events = s.execute(
            select(Event.study_id, Event.generation, Event.state, Event.at)
            .where(Event.at >= since)
            .order_by(Event.at, Event.id)
        ).all()
    durations = stage_durations([(int(a), int(b), str(c), d) for a, b, c, d in events])
    return [
        StageStat(name, STAGE_LABELS.get(name, name), len(v), percentile(v, 50), percentile(v, 95),
                  max(v) if v else None)
        for name, v in ((name, durations[name]) for name, _, _ in STAGES)
    ]


def overview(db: Database, depths: dict[str, int | None], now: dt.datetime) -> Overview:
    return Overview(state_counts(db), depths, _workers(db, now), _hours(db, now), _stages(db, now))


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _study_rows_query() -> Select[Any]:
    n_series = select(Series.study_id, func.count().label("n")).group_by(Series.study_id).subquery()
    n_inst = select(Instance.study_id, func.count().label("n")).group_by(Instance.study_id).subquery()
    return (
        select(Study, n_series.c.n, n_inst.c.n)
        .outerjoin(n_series, n_series.c.study_id == Study.id)
        .outerjoin(n_inst, n_inst.c.study_id == Study.id)
    )


def _row(st: Study, n_series: int | None, n_inst: int | None) -> StudyRow:
    return StudyRow(st.study_uid, st.state, st.region, st.modality, st.failed_stage, st.reason,
                    st.accession_number, int(n_series or 0), int(n_inst or 0), st.last_received_at,
                    st.state_changed_at)


def list_studies(db: Database, *, state: StudyState | None, q: str, offset: int, limit: int) -> StudyPage:
    """Studies, newest first, filtered by state and by a prefix of the accession number,
    patient ID or study UID."""
    conditions = []
    if state is not None:
        conditions.append(Study.state == state)
    if q:
        pattern = _like_prefix(q)
        conditions.append(or_(
            Study.accession_number.like(pattern, escape="\\"),
            Study.patient_id.like(pattern, escape="\\"),
            Study.study_uid.like(pattern, escape="\\"),
        ))
    with db.session() as s:
        total = int(s.scalar(select(func.count()).select_from(Study).where(*conditions)) or 0)
        rows = s.execute(
            _study_rows_query().where(*conditions)
            .order_by(Study.last_received_at.desc(), Study.id.desc()).offset(offset).limit(limit)
        ).all()
        return StudyPage([_row(st, a, b) for st, a, b in rows], total, offset, limit)


def studies_in_state(db: Database, state: StudyState, limit: int) -> list[StudyRow]:
    """Studies in ``state``, the most recently changed first."""
    with db.session() as s:
        rows = s.execute(
            _study_rows_query().where(Study.state == state)
            .order_by(Study.state_changed_at.desc(), Study.id.desc()).limit(limit)
        ).all()
        return [_row(st, a, b) for st, a, b in rows]


def study_detail(db: Database, study_uid: str) -> StudyDetail | None:
    with db.session() as s:
        st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
        if st is None:
            return None
        counts = dict(s.execute(
            select(Instance.series_id, func.count()).where(Instance.study_id == st.id).group_by(Instance.series_id)
        ).all())
        series = [SeriesRow(se.series_uid, se.series_number, se.modality, se.description,
                            int(counts.get(se.id, 0)), se.classification) for se in st.series]
        events: list[EventRow] = []
        previous: dt.datetime | None = None
        for e in st.events:
            delta = (e.at - previous).total_seconds() if previous is not None else None
            events.append(EventRow(e.at, e.state, e.stage, e.generation, e.detail, delta))
            previous = e.at
        results = s.scalars(select(Result).where(Result.study_id == st.id).order_by(Result.id)).all()
        # each export with its result in one statement (two reads can straddle an encode's commit)
        exports = s.execute(
            select(Export, Result).join(Result, Result.id == Export.result_id)
            .where(Export.study_id == st.id).order_by(Export.destination, Export.id)
        ).all()
        missing = list((st.selection or {}).get("missing") or [])
        missing += [m for m in (st.findings or {}).get("missing") or [] if m not in missing]
        return StudyDetail(
            study=_row(st, len(series), sum(x.instance_count for x in series)),
            patient_id=st.patient_id,
            study_description=st.study_description,
            body_part=st.body_part,
            generation=st.generation,
            enqueue_count=st.enqueue_count,
            first_received_at=st.first_received_at,
            not_analysed_reason=st.not_analysed_reason,
            selection=st.selection,
            findings=st.findings,
            events=events,
            series=series,
            results=[ResultRow(r.kind, r.sop_class_uid, r.sop_instance_uid, r.series_instance_uid, r.generation,
                               f"{r.model_name} {r.model_version}", r.created_at) for r in results],
            exports=[ExportRow(e.destination, r.kind, r.sop_instance_uid,
                               e.state, e.attempts, e.last_status, e.last_error, e.next_attempt_at,
                               e.updated_at, e.sent_at) for e, r in exports],
            missing=missing,
        )
