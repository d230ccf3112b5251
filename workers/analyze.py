"""The analyze stage (queue gpu): QUEUED -> ANALYZING -> ENCODING.

Every file of the study is read once (``workers/series.py``), its series classified once
and selected; the selection goes to the analyzer with the selected series' pixels
(``workers/analysis.py`` -> ``models/analyzer.py``, which does not classify again). The
analysis record, or the reason the study cannot be analysed, is settled through the
study repository, and ``spinenode.encode`` is sent.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from pydicom.dataset import Dataset

from models.series import SeriesSelection
from spinenode.core import repository
from spinenode.core.enums import Stage, StudyState
from spinenode.core.errors import NodeUnreachableError, SpinenodeError
from spinenode.core.logs import log_failure
from workers.analysis import NotAnalysed, analyse_many
from workers.record import AnalysisRecord, MaskSet, MasksRef, SeriesUse
from workers.series import StudyRead, classify, for_analysis, read_study
from workers.stage import StageContext, over_time, wait_for_node
from workers.timelimit import soft_time_limit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Analysed:
    """A study's analysis as the stage stores it, and what its pass cost."""

    record: AnalysisRecord
    cpu_seconds: float
    batch: int


@dataclass(frozen=True)
class _Inputs:
    """A study read and classified, ready for the analyzer."""

    series: dict[str, list[Dataset]]
    unreadable: dict[str, int]
    region: str | None
    selection: SeriesSelection


def analyze_study(ctx: StageContext, study_uid: str, generation: int) -> None:
    """QUEUED -> ANALYZING -> ENCODING: classify and select series, run the analyzer.

    The study the message names is claimed, then up to ANALYZE_BATCH - 1 other QUEUED
    studies already waiting (``repository.claim_waiting``; none is waited for), and all go
    through one batched analyzer pass. Each study is claimed, fails and is settled on its
    own: a study whose files cannot be had, or that breaks the analyzer, ends alone
    (FAILED(analyze), back to QUEUED for an unreachable node, or a "not analysed"
    outcome) and the others go on. The messages of the studies taken along find them no
    longer QUEUED and are dropped, as a duplicate delivery is.
    """
    if not repository.claim(ctx.db, study_uid, generation, from_state=StudyState.QUEUED,
                            to_state=StudyState.ANALYZING, stage=Stage.ANALYZE):
        log.info("study %s generation %d: not QUEUED any more, delivery dropped", study_uid, generation)
        return
    batch = [(study_uid, generation), *repository.claim_waiting(ctx.db, study_uid, ctx.settings.analyze_batch - 1)]
    if len(batch) > 1:
        ctx.working_on([uid for uid, _ in batch])
        log.info("study %s: analysed in one batch with %d waiting stud%s: %s", study_uid, len(batch) - 1,
                 "y" if len(batch) == 2 else "ies", ", ".join(uid for uid, _ in batch[1:]))
    try:
        with ExitStack() as stack:
            for uid, _ in batch:
                stack.enter_context(ctx.spool.study(uid))
            stack.enter_context(soft_time_limit(ctx.settings.task_soft_time_limit))
            outcomes = _analyze_batch(ctx, batch)
    except SoftTimeLimitExceeded:
        detail = over_time(ctx, Stage.ANALYZE)
        for uid, gen in batch:
            repository.fail(ctx.db, uid, gen, Stage.ANALYZE, detail)
        return
    for (uid, gen), outcome in zip(batch, outcomes):
        if isinstance(outcome, Exception):
            _analysis_failed(ctx, uid, gen, outcome)
        else:
            _settle(ctx, uid, gen, outcome)


def _analyze_batch(ctx: StageContext, batch: list[tuple[str, int]]) -> list[Any]:
    """Per study, in order: _Analysed, NotAnalysed, or the exception that ends it (recorded
    by the caller). Only the stage's time limit ends the whole batch."""
    out: dict[int, Any] = {}
    ready: list[tuple[int, _Inputs]] = []
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
        results = analyse_many(ctx.analyzers.get(ctx.settings), [(batch[i][0], inp.series, inp.region) for i, inp in ready],
                               [inp.selection for _, inp in ready])
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
        wait_for_node(ctx, study_uid, generation, Stage.ANALYZE, exc)
    elif isinstance(exc, SpinenodeError):
        log.warning("study %s: analysis failed: %s", study_uid, exc)
        repository.fail(ctx.db, study_uid, generation, Stage.ANALYZE, f"{type(exc).__name__}: {exc}")
    else:
        log_failure(log, "study %s: analysis failed unexpectedly", study_uid, exc=exc)
        repository.fail(ctx.db, study_uid, generation, Stage.ANALYZE,
                        f"unexpected {type(exc).__name__} (details in the worker log)")


def _settle(ctx: StageContext, study_uid: str, generation: int, outcome: _Analysed | NotAnalysed) -> None:
    """ANALYZING -> ENCODING with the findings (or the reason it was not analysed), then encode."""
    if isinstance(outcome, NotAnalysed):
        settled = repository.settle_analysis(ctx.db, study_uid, generation, findings=None,
                                             not_analysed_reason=outcome.reason,
                                             detail=f"not analysed: {outcome.reason}")
    else:
        record = outcome.record
        detail = (f"{len(record.findings.levels)} levels graded in {record.seconds:.1f} s "
                  f"({outcome.cpu_seconds:.2f} s CPU; batch of {outcome.batch})")
        if record.masks is not None:
            detail += "; masks saved for the SEG"
        settled = repository.settle_analysis(ctx.db, study_uid, generation, findings=record.to_json(),
                                             not_analysed_reason=None, detail=detail)
    if settled:
        ctx.send("encode", study_uid, generation)


def _on_host(ctx: StageContext, files: dict[str, list[str]]) -> dict[str, list[Path]]:
    """The study's files as this host reads them now (series UID -> paths, instance order)."""
    return {uid: [ctx.spool.absolute(rel) for rel in rels] for uid, rels in files.items()}


def _inputs(ctx: StageContext, study_uid: str) -> _Inputs | NotAnalysed:
    """Read every file once, classify and select once, then give the selected series their pixels.

    Every instance's header must be readable here (or fetched from the node): a file
    that cannot be had raises InstanceUnavailableError, never a silent "not analysed".
    """
    study = repository.fetch(ctx.db, study_uid)
    assert study is not None
    files = repository.series_files(ctx.db, study_uid)
    read = _read_fetched(ctx, study_uid, files)
    if read is None:
        ctx.spool.require_headers(study_uid)
        read = read_study(_on_host(ctx, files))
    classes, selection = classify(read)
    usable = sum(c.usable for c in classes)
    repository.record_classification(
        ctx.db, study_uid, {c.series_uid: {**c.as_dict(), "role": selection.role_of(c.series_uid)} for c in classes},
        selection.as_dict(),
        f"{len(classes)} series classified, {usable} usable; "
        + ("; ".join(selection.missing) if selection.missing else "all inputs found"),
    )
    if not (selection.sagittal_t2 or selection.sagittal_t1 or selection.ct_sagittal):
        return NotAnalysed("no usable sagittal MR or CT series in the study")
    ctx.spool.require_series(study_uid, selection.series_uids())
    series, unreadable = for_analysis(read, selection, _on_host(ctx, files))
    return _Inputs(series, unreadable, study.region, selection)


def _read_fetched(ctx: StageContext, study_uid: str, files: dict[str, list[str]]) -> StudyRead | None:
    """The study read from the node's header-only files, in memory, when this host has none
    of its files (a worker without shared storage): as ``read_study`` reads it, without
    writing the headers as files and reading them back (about 0.15 CPU s per study).
    The paths it records are not where the selected series' full files will be, so
    ``for_analysis`` reads those from the files fetched after selection. None when this
    host has some of the files (they are read from disk, as before)."""
    if not ctx.spool.remote or any(ctx.spool.absolute(rel).exists() for rels in files.values() for rel in rels):
        return None
    headers = ctx.spool.headers(study_uid)
    return StudyRead({uid: [ctx.spool.cache / "headers" / rel for rel in rels] for uid, rels in files.items()},
                     {uid: [headers[str(Path(rel))] for rel in rels] for uid, rels in files.items()}, {})


def _finish(ctx: StageContext, study_uid: str, generation: int, inputs: _Inputs,
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
    selection = inputs.selection
    used = tuple(SeriesUse(role, uid, len(inputs.series.get(uid, ())), inputs.unreadable.get(uid, 0))
                 for role in ROLE_CONDITIONS if (uid := getattr(selection, role)))
    masks: MasksRef | None = None
    if outcome.masks:
        from workers.results.seg import save_masks

        path = masks_path(ctx, study_uid, generation)
        sha256 = save_masks(outcome.masks, path)
        ctx.spool.publish_masks(study_uid, generation, path)
        masks = MasksRef(ctx.spool.masks_rel(study_uid, generation).as_posix(), sha256,
                         tuple(MaskSet.of(m) for m in outcome.masks))
    record = AnalysisRecord.of(outcome.findings, used, masks, outcome.seconds)
    return _Analysed(record, outcome.cpu_seconds, outcome.batch)


def masks_path(ctx: StageContext, study_uid: str, generation: int) -> Path:
    """Where the analyze stage writes the masks on this host (sent on to the node when remote)."""
    root = ctx.spool.cache / "full" if ctx.spool.remote else ctx.settings.data_dir
    return root / ctx.spool.masks_rel(study_uid, generation)
