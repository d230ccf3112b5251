"""The stages a worker runs for a study: analyze (gpu), encode (cpu), export (export).

Each stage takes (study_uid, generation), refetches the study, acts only if the
study is still in the stage's state for that generation, commits, and then
enqueues the next stage. Running a stage twice is harmless: result UIDs are
deterministic and exports are claimed row by row.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import func, select, update

from spinenode.core.logs import log_failure
from spinenode.core.broker import TaskSender
from spinenode.core.db.models import Event, Export, ExportState, Instance, Result, Series, Study, StudyState, utcnow
from spinenode.core.db.session import Database
from spinenode.core.errors import NodeUnreachableError, SpinenodeError
from spinenode.core.repository import claim
from spinenode.core.settings import Settings
from spinenode.core.states import record_event, transition
from workers.analysis import NotAnalysed, analyse_many, model_identity, read_series
from workers.export import ObjectToSend, SendOutcome, exporter_for, next_attempt
from workers.record import AnalysisRecord, AnalysisRecordError, MaskSet, MasksRef, SeriesUse
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.series import classify_study
from workers.spool import SpoolAccess
from workers.timelimit import soft_time_limit

log = logging.getLogger(__name__)

ModelIdLike = Any  # models.types.ModelId (imported lazily: models pulls in numpy/torch)


@dataclass
class StageContext:
    settings: Settings
    db: Database
    #: The node's files as this host can read them (DATA_DIR, or fetched from NODE_URL).
    spool: SpoolAccess
    send: TaskSender


def _study(ctx: StageContext, study_uid: str) -> Study | None:
    with ctx.db.session() as s:
        return s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()


def fail(db: Database, study_uid: str, generation: int, stage: str, detail: str) -> None:
    """FAILED(stage, error) unless the study moved on (reopened) meanwhile."""
    with db.session() as s:
        study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
        if study is None or study.generation != generation:
            return
        transition(s, study, StudyState.FAILED, stage=stage, detail=detail)


def _series_files(ctx: StageContext, study_uid: str) -> dict[str, list[Path]]:
    with ctx.db.session() as s:
        rows = s.execute(
            select(Series.series_uid, Instance.path)
            .join(Instance, Instance.series_id == Series.id)
            .join(Study, Study.id == Series.study_id)
            .where(Study.study_uid == study_uid)
            .order_by(Instance.instance_number)
        ).all()
    files: dict[str, list[Path]] = defaultdict(list)
    for series_uid, rel in rows:
        files[series_uid].append(ctx.spool.absolute(rel))
    return files


#: Times a stage of one generation may find the node unreachable and leave the study to
#: the sweep; the next time the stage fails.
NODE_UNREACHABLE_LIMIT = 5
_LEFT_FOR_SWEEP = "left for the sweep to retry"


def _wait_for_node(ctx: StageContext, study_uid: str, generation: int, stage: str,
                   exc: NodeUnreachableError) -> None:
    """The node did not answer (restarting, network): the study waits for the sweep, which
    sends it again after REQUEUE_AFTER; an analysis goes back to QUEUED, an encode stays
    ENCODING. Its reason (admin API) names the worker's host and the node it could not
    reach. After NODE_UNREACHABLE_LIMIT such times for one stage and generation (counted
    in the events table), FAILED(stage)."""
    log.warning("study %s: %s stage could not reach the node: %s", study_uid, stage, exc)
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
        if row is None or row.generation != generation:
            return
        earlier = s.scalar(select(func.count()).select_from(Event).where(
            Event.study_id == row.id, Event.generation == generation, Event.stage == stage,
            Event.detail.contains(_LEFT_FOR_SWEEP))) or 0
        if earlier >= NODE_UNREACHABLE_LIMIT:
            transition(s, row, StudyState.FAILED, stage=stage,
                       detail=f"{type(exc).__name__}: {exc} (attempt {earlier + 1})")
            return
        detail = (f"{exc}; {_LEFT_FOR_SWEEP} after {ctx.settings.requeue_after:.0f} s "
                  f"(attempt {earlier + 1} of {NODE_UNREACHABLE_LIMIT + 1})")
        if row.state == StudyState.ANALYZING:
            transition(s, row, StudyState.QUEUED, stage=stage, detail=detail)
        else:
            record_event(s, row, stage=stage, detail=detail)
        row.reason = f"waiting for the node: {exc}"


def _over_time(ctx: StageContext, stage: str) -> str:
    """The failure detail of a stage stopped by its soft time limit."""
    log.warning("%s stage stopped: soft time limit of %g s exceeded", stage, ctx.settings.task_soft_time_limit)
    return (f"SoftTimeLimitExceeded: the {stage} stage worked longer than TASK_SOFT_TIME_LIMIT "
            f"({ctx.settings.task_soft_time_limit:g} s) and was stopped")


# --- analyze -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Analysed:
    """A study's analysis as the stage stores it, and what its pass cost."""

    record: AnalysisRecord
    cpu_seconds: float
    batch: int


def analyze_study(ctx: StageContext, study_uid: str, generation: int) -> None:
    """QUEUED -> ANALYZING -> ENCODING: classify and select series, run the analyzer.

    The study the message names is claimed, then up to ANALYZE_BATCH - 1 other QUEUED
    studies already waiting (:func:`_claim_waiting`; none is waited for), and all go
    through one batched analyzer pass. Each study is claimed, fails and is settled on its
    own: a study whose files cannot be had, or that breaks the analyzer, ends alone
    (FAILED(analyze), back to QUEUED for an unreachable node, or a "not analysed"
    outcome) and the others go on. The messages of the studies taken along find them no
    longer QUEUED and are dropped, as a duplicate delivery is.
    """
    if not claim(ctx.db, study_uid, generation, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING,
                 stage="analyze"):
        log.info("study %s generation %d: not QUEUED any more, delivery dropped", study_uid, generation)
        return
    batch = [(study_uid, generation), *_claim_waiting(ctx, study_uid, ctx.settings.analyze_batch - 1)]
    if len(batch) > 1:
        log.info("study %s: analysed in one batch with %d waiting stud%s: %s", study_uid, len(batch) - 1,
                 "y" if len(batch) == 2 else "ies", ", ".join(uid for uid, _ in batch[1:]))
    try:
        with ExitStack() as stack:
            for uid, _ in batch:
                stack.enter_context(ctx.spool.study(uid))
            stack.enter_context(soft_time_limit(ctx.settings.task_soft_time_limit))
            outcomes = _analyze_batch(ctx, batch)
    except SoftTimeLimitExceeded:
        detail = _over_time(ctx, "analyze")
        for uid, gen in batch:
            fail(ctx.db, uid, gen, "analyze", detail)
        return
    for (uid, gen), outcome in zip(batch, outcomes):
        if isinstance(outcome, Exception):
            _analysis_failed(ctx, uid, gen, outcome)
        else:
            _settle_analysis(ctx, uid, gen, outcome)


def _claim_waiting(ctx: StageContext, taken: str, limit: int) -> list[tuple[str, int]]:
    """Up to ``limit`` other QUEUED studies, oldest first, claimed for this batch. A study
    waiting out an unreachable node (it has a reason) is left to its own retry."""
    if limit <= 0:
        return []
    with ctx.db.session() as s:
        rows = s.execute(
            select(Study.study_uid, Study.generation)
            .where(Study.state == StudyState.QUEUED, Study.reason.is_(None), Study.study_uid != taken)
            .order_by(Study.state_changed_at, Study.id).limit(limit)
        ).all()
    return [(uid, gen) for uid, gen in rows
            if claim(ctx.db, uid, gen, from_state=StudyState.QUEUED, to_state=StudyState.ANALYZING, stage="analyze")]


def _analyze_batch(ctx: StageContext, batch: list[tuple[str, int]]) -> list[Any]:
    """Per study, in order: _Analysed, NotAnalysed, or the exception that ends it (recorded
    by the caller). Only the stage's time limit ends the whole batch."""
    out: dict[int, Any] = {}
    ready: list[tuple[int, Any]] = []
    for i, (uid, _) in enumerate(batch):
        try:
            got = _inputs(ctx, uid)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - this study's failure, recorded for it alone
            out[i] = exc
            continue
        if isinstance(got, NotAnalysed):
            out[i] = got
        else:
            ready.append((i, got))
    try:
        results = analyse_many(ctx.settings, [(batch[i][0], inp[0].datasets, inp[1]) for i, inp in ready])
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - the analyzer itself (weights, install): every study of the batch
        results = [exc] * len(ready)
    for (i, inp), result in zip(ready, results):
        try:
            out[i] = _finish(ctx, *batch[i], inp, result)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # noqa: BLE001
            out[i] = exc
    return [out[i] for i in range(len(batch))]


def _analysis_failed(ctx: StageContext, study_uid: str, generation: int, exc: Exception) -> None:
    """An unreachable node is waited out; anything else is FAILED(analyze), for this study alone."""
    if isinstance(exc, NodeUnreachableError):
        _wait_for_node(ctx, study_uid, generation, "analyze", exc)
    elif isinstance(exc, SpinenodeError):
        log.warning("study %s: analysis failed: %s", study_uid, exc)
        fail(ctx.db, study_uid, generation, "analyze", f"{type(exc).__name__}: {exc}")
    else:
        log_failure(log, "study %s: analysis failed unexpectedly", study_uid, exc=exc)
        fail(ctx.db, study_uid, generation, "analyze", f"unexpected {type(exc).__name__} (details in the worker log)")


def _settle_analysis(ctx: StageContext, study_uid: str, generation: int, outcome: _Analysed | NotAnalysed) -> None:
    """ANALYZING -> ENCODING with the findings (or the reason it was not analysed), then encode."""
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        if row.generation != generation or row.state != StudyState.ANALYZING:
            return
        if isinstance(outcome, NotAnalysed):
            row.findings = None
            row.not_analysed_reason = outcome.reason
            detail = f"not analysed: {outcome.reason}"
        else:
            record = outcome.record
            row.findings = record.to_json()
            row.not_analysed_reason = None
            detail = (f"{len(record.findings.levels)} levels graded in {record.seconds:.1f} s "
                      f"({outcome.cpu_seconds:.2f} s CPU; batch of {outcome.batch})")
            if record.masks is not None:
                detail += "; masks saved for the SEG"
        transition(s, row, StudyState.ENCODING, stage="analyze", detail=detail)
    ctx.send("encode", study_uid, generation)


def _inputs(ctx: StageContext, study_uid: str) -> tuple[Any, str | None, Any] | NotAnalysed:
    """Classify and select, then read the selected series: (SeriesRead, region, selection).

    Every instance's header must be readable here (or fetched from the node): a file
    that cannot be had raises InstanceUnavailableError, never a silent "not analysed".
    """
    ctx.spool.require_headers(study_uid)
    classes, selection = classify_study(ctx.db, ctx.spool, study_uid)  # type: ignore[arg-type]
    study = _study(ctx, study_uid)
    assert study is not None
    with ctx.db.session() as s:
        row = s.get(Study, study.id)
        assert row is not None
        row.selection = selection.as_dict()
        usable = sum(c.usable for c in classes)
        record_event(
            s, row, stage="analyze",
            detail=f"{len(classes)} series classified, {usable} usable; "
            + ("; ".join(selection.missing) if selection.missing else "all inputs found"),
        )
    if not (selection.sagittal_t2 or selection.sagittal_t1 or selection.ct_sagittal):
        return NotAnalysed("no usable sagittal MR or CT series in the study")
    ctx.spool.require_series(study_uid, selection.series_uids())
    return read_series(_series_files(ctx, study_uid), selection.series_uids()), study.region, selection


def _finish(ctx: StageContext, study_uid: str, generation: int, inputs: tuple[Any, str | None, Any],
            outcome: Any) -> _Analysed | NotAnalysed:
    """One study's analyzer outcome as the stage stores it; the masks (if any) are on the
    node when this returns."""
    from models.series import ROLE_CONDITIONS

    if isinstance(outcome, Exception):
        raise outcome
    if isinstance(outcome, NotAnalysed):
        return outcome
    if not outcome.findings.levels:
        why = "; ".join(outcome.findings.missing) or "no disc level was found on the sagittal series"
        return NotAnalysed(f"no disc level could be located ({why})")
    read, _, selection = inputs
    used = tuple(SeriesUse(role, uid, len(read.datasets.get(uid, ())), read.unreadable.get(uid, 0))
                 for role in ROLE_CONDITIONS if (uid := getattr(selection, role)))
    masks: MasksRef | None = None
    if outcome.masks:
        from workers.results.seg import save_masks

        path = _masks_path(ctx, study_uid, generation)
        sha256 = save_masks(outcome.masks, path)
        ctx.spool.publish_masks(study_uid, generation, path)
        masks = MasksRef(ctx.spool.masks_rel(study_uid, generation).as_posix(), sha256,
                         tuple(MaskSet.of(m) for m in outcome.masks))
    record = AnalysisRecord.of(outcome.findings, used, masks, outcome.seconds)
    return _Analysed(record, outcome.cpu_seconds, outcome.batch)


# --- encode --------------------------------------------------------------------------
def _masks_path(ctx: StageContext, study_uid: str, generation: int) -> Path:
    """Where the analyze stage writes the masks on this host (sent on to the node when remote)."""
    root = ctx.spool.cache / "full" if ctx.spool.remote else ctx.settings.data_dir
    return root / ctx.spool.masks_rel(study_uid, generation)


@dataclass
class _Encoded:
    identity: ResultIdentity
    sop_class_uid: str
    rel: Path
    model: ModelIdLike



def _evidence(ctx: StageContext, study_uid: str) -> list[Dataset]:
    ctx.spool.require_headers(study_uid)
    return [dcmread(p, stop_before_pixels=True) for files in _series_files(ctx, study_uid).values() for p in files]


def _predecessor(ctx: StageContext, study: Study, sop_uid: str) -> Dataset | None:
    with ctx.db.session() as s:
        prev = s.execute(
            select(Result.path, Result.series_instance_uid)
            .where(Result.study_id == study.id, Result.kind.in_([ResultKind.SR, ResultKind.NOT_ANALYSED_SR]),
                   Result.sop_instance_uid != sop_uid)
            .order_by(Result.id.desc())
            .limit(1)
        ).one_or_none()
    if prev is None:
        return None
    return dcmread(ctx.spool.result_path(study.study_uid, prev.series_instance_uid, prev.path))


def _write(ctx: StageContext, study_uid: str, ds: Dataset, identity: ResultIdentity, model: ModelIdLike) -> _Encoded:
    """Write a result object where the node (and so export, on any host) will find it."""
    from io import BytesIO

    rel = Path("results") / study_uid / f"{identity.sop_instance_uid}.dcm"
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    ctx.spool.publish_result(study_uid, rel, buf.getvalue())
    return _Encoded(identity, str(ds.SOPClassUID), rel, model)


def _masks(ctx: StageContext, study_uid: str, generation: int, record: AnalysisRecord) -> list[Any]:
    """The masks the record references, checked against it (none when it has none)."""
    from workers.results.seg import load_masks

    ref = record.masks
    if ref is None:
        return []
    path = ctx.spool.masks_path(study_uid, generation)
    if path is None:
        # written on another host that shares neither DATA_DIR nor NODE_URL with this one:
        # fail rather than send findings without their SEG
        raise ctx.spool.unavailable(f"the masks of study {study_uid} (generation {generation}) for the SEG")
    if _sha256(path) != ref.sha256:
        raise AnalysisRecordError(f"the masks file of study {study_uid} is not the one the analysis recorded "
                                  "(written again since): analyse the study again")
    loaded = load_masks(path)
    if len(loaded) != len(ref.sets) or not all(m.matches(x) for m, x in zip(ref.sets, loaded)):
        raise AnalysisRecordError(f"the masks of study {study_uid} do not lie where the analysis recorded")
    return loaded


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encode_objects(ctx: StageContext, study: Study, generation: int) -> tuple[list[_Encoded], str]:
    """Build and write the study's result objects; returns them and the inputs digest.

    An analysed study gets one object from each builder of ``BUILDERS`` that has
    something to show; a study that was not analysed gets the "not analysed" SR."""
    from models.types import FindingsJsonError, ModelId
    from workers.results.builder import EncodeInputs
    from workers.results.builders import BUILDERS
    from workers.results.sr import build_not_analysed_sr

    study_uid = study.study_uid
    evidence = _evidence(ctx, study_uid)
    digest = inputs_digest(str(ds.SOPInstanceUID) for ds in evidence)
    if study.findings is None:
        model = ModelId(*model_identity())
        identity = ResultIdentity(study_uid, ResultKind.NOT_ANALYSED_SR, model.name, model.version, digest)
        sr = build_not_analysed_sr(study.not_analysed_reason or "not analysed", evidence, identity, model,
                                   _predecessor(ctx, study, identity.sop_instance_uid))
        return [_write(ctx, study_uid, sr, identity, model)], digest
    try:
        record = AnalysisRecord.from_json(study.findings)
    except FindingsJsonError as exc:
        raise AnalysisRecordError(f"the stored analysis cannot be read ({exc})") from exc
    inputs = EncodeInputs(
        record, evidence, _masks(ctx, study_uid, generation, record), digest,
        source_image=lambda series_uid, sop: dcmread(ctx.spool.instance_path(study_uid, series_uid, sop)),
        predecessor=lambda identity: _predecessor(ctx, study, identity.sop_instance_uid),
    )
    encoded = []
    for builder in BUILDERS:
        identity = inputs.identity(builder.kind)
        ds = builder.build(inputs, identity)
        if ds is not None:
            encoded.append(_write(ctx, study_uid, ds, identity, record.findings.model))
    return encoded, digest


def encode_study(ctx: StageContext, study_uid: str, generation: int) -> None:
    """ENCODING -> EXPORTING (or DONE without destinations): write SR, SEG and key images."""
    study = _study(ctx, study_uid)
    if study is None or study.generation != generation or study.state != StudyState.ENCODING:
        log.info("study %s generation %d: not ENCODING, delivery dropped", study_uid, generation)
        return
    try:
        with ctx.spool.study(study_uid), soft_time_limit(ctx.settings.task_soft_time_limit):
            encoded, digest = _encode_objects(ctx, study, generation)
    except SoftTimeLimitExceeded:
        fail(ctx.db, study_uid, generation, "encode", _over_time(ctx, "encode"))
        return
    except NodeUnreachableError as exc:
        _wait_for_node(ctx, study_uid, generation, "encode", exc)
        return
    except SpinenodeError as exc:
        fail(ctx.db, study_uid, generation, "encode", f"{type(exc).__name__}: {exc}")
        return
    except Exception as exc:
        log_failure(log, "study %s: encoding failed", study_uid, exc=exc)
        fail(ctx.db, study_uid, generation, "encode", f"unexpected {type(exc).__name__} (details in the worker log)")
        return
    destinations = ctx.settings.destinations
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        if row.generation != generation or row.state != StudyState.ENCODING:
            return
        now = utcnow()
        for enc in encoded:
            result = s.execute(
                select(Result).where(Result.sop_instance_uid == enc.identity.sop_instance_uid)
            ).scalar_one_or_none()
            if result is None:
                result = Result(
                    study_id=row.id, generation=generation, kind=str(enc.identity.kind),
                    sop_class_uid=enc.sop_class_uid, sop_instance_uid=enc.identity.sop_instance_uid,
                    series_instance_uid=enc.identity.series_uid, path=str(enc.rel),
                    model_name=enc.model.name, model_version=enc.model.version, inputs_digest=digest,
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
        kinds = ", ".join(str(e.identity.kind) for e in encoded)
        if destinations:
            transition(s, row, StudyState.EXPORTING, stage="encode", detail=f"written: {kinds}")
        else:
            transition(s, row, StudyState.DONE, stage="encode",
                       detail=f"written: {kinds}; no DESTINATIONS configured, nothing to export")
    if destinations:
        ctx.send("export", study_uid, generation)


# --- export --------------------------------------------------------------------------
def export_study(ctx: StageContext, study_uid: str, generation: int, calling_ae: str | None = None) -> None:
    """Send every due export of the study; DONE when all are confirmed."""
    study = _study(ctx, study_uid)
    if study is None or study.generation != generation or study.state != StudyState.EXPORTING:
        log.info("study %s generation %d: not EXPORTING, delivery dropped", study_uid, generation)
        return
    now = utcnow()
    with ctx.db.session() as s:
        due = s.execute(
            select(Export.id, Export.destination, Result.path, Result.sop_class_uid, Result.sop_instance_uid,
                   Result.series_instance_uid)
            .join(Result, Result.id == Export.result_id)
            .where(Export.study_id == study.id, Export.state == ExportState.PENDING, Export.next_attempt_at <= now)
        ).all()
    claimed: dict[str, list[ObjectToSend]] = defaultdict(list)
    unavailable: list[SendOutcome] = []
    taken: list[int] = []
    try:
        with ctx.spool.study(study_uid), soft_time_limit(ctx.settings.task_soft_time_limit):
            for export_id, dest, rel, sop_class, sop_uid, series_uid in due:
                with ctx.db.session() as s:
                    got = s.execute(
                        update(Export).where(Export.id == export_id, Export.state == ExportState.PENDING)
                        .values(state=ExportState.SENDING, updated_at=now).returning(Export.id)
                    ).scalar_one_or_none()
                if got is None:
                    continue
                taken.append(export_id)
                try:
                    path = ctx.spool.result_path(study_uid, series_uid, rel)
                except SpinenodeError as exc:  # gone for good, or the node is unreachable (transient)
                    unavailable.append(SendOutcome(export_id, False, exc.transient, None, str(exc)))
                    continue
                claimed[dest].append(ObjectToSend(export_id, path, sop_class, sop_uid))
            _record_outcomes(ctx, unavailable)
            for dest, objects in claimed.items():
                outcomes = exporter_for(dest).send(dest, objects, ctx.settings, calling_ae or ctx.settings.ae_title)
                _record_outcomes(ctx, outcomes)
    except SoftTimeLimitExceeded:
        # what this task claimed and did not settle fails; a retry of FAILED(export) sends it again
        with ctx.db.session() as s:
            s.execute(update(Export).where(Export.id.in_(taken), Export.state == ExportState.SENDING)
                      .values(state=ExportState.FAILED, last_error=_over_time(ctx, "export"), updated_at=utcnow()))
    _settle(ctx, study_uid, generation)


def _record_outcomes(ctx: StageContext, outcomes: list[SendOutcome]) -> None:
    st = ctx.settings
    now = utcnow()
    with ctx.db.session() as s:
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
            elif out.transient and row.attempts < st.export_max_attempts:
                row.state = ExportState.PENDING
                row.next_attempt_at = next_attempt(now, row.attempts, st.export_retry_base, st.export_retry_max)
            else:
                row.state = ExportState.FAILED


def _has_key_images(s: Any, export: Export) -> bool:
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


def _settle(ctx: StageContext, study_uid: str, generation: int) -> None:
    """DONE, FAILED(export), or another export task when the next retry is due."""
    retry_in: float | None = None
    with ctx.db.session() as s:
        row = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        if row.generation != generation or row.state != StudyState.EXPORTING:
            return
        exports = s.scalars(select(Export).where(Export.study_id == row.id)).all()
        failed = [e for e in exports if e.state == ExportState.FAILED]
        pending = [e for e in exports if e.state in (ExportState.PENDING, ExportState.SENDING)]
        fallbacks = [e for e in exports if e.state == ExportState.FALLBACK]
        if failed:
            detail = "; ".join(f"{e.destination}: {e.last_error} after {e.attempts} attempt(s)" for e in failed)
            transition(s, row, StudyState.FAILED, stage="export", detail=detail)
        elif not pending:
            note = (f"; {len(fallbacks)} refused by the destination, key images sent instead"
                    if fallbacks else "")
            transition(s, row, StudyState.DONE, stage="export",
                       detail=f"{len(exports) - len(fallbacks)} object(s) confirmed by every destination{note}")
        else:
            waiting = [e.next_attempt_at for e in pending if e.state == ExportState.PENDING]
            if waiting:
                retry_in = max(0.0, (min(waiting) - utcnow()).total_seconds())
                record_event(s, row, stage="export",
                             detail=f"{len(pending)} export(s) pending; next attempt in {retry_in:.0f} s")
    if retry_in is not None:
        ctx.send("export", study_uid, generation, retry_in)


