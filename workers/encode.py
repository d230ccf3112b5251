"""The encode stage (queue cpu): ENCODING -> EXPORTING (or DONE without destinations).

The analysis record is read back (the masks checked against it), the source headers are
read once, every builder of ``workers/results/builders.py`` makes its object (or none),
or a study not analysed gets the "not analysed" SR; the objects are written where the
node keeps them, settled through the study repository (a ``results`` row per object, an
``exports`` row per destination), and ``spinenode.export`` is sent.
"""

from __future__ import annotations

import hashlib
import logging
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from spinenode.core import repository
from spinenode.core.enums import Stage, StudyState
from spinenode.core.repository import NewResult, StageStudy
from workers.analysis import model_identity
from workers.record import AnalysisRecord, AnalysisRecordError
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.stage import StageContext, guarded

log = logging.getLogger(__name__)


def encode_study(ctx: StageContext, study_uid: str, generation: int) -> None:
    """ENCODING -> EXPORTING (or DONE without destinations): write SR, SEG and key images."""
    study = repository.fetch(ctx.db, study_uid)
    if study is None or not study.is_at(StudyState.ENCODING, generation):
        log.info("study %s generation %d: not ENCODING, delivery dropped", study_uid, generation)
        return
    encoded = guarded(ctx, study_uid, generation, Stage.ENCODE, lambda: _encode_objects(ctx, study, generation))
    if encoded is None:
        return
    results, digest = encoded
    destinations = ctx.settings.destinations
    if repository.settle_encode(ctx.db, study_uid, generation, results, digest, destinations) and destinations:
        ctx.send("export", study_uid, generation)


def _evidence(ctx: StageContext, study_uid: str) -> list[Dataset]:
    """The headers of every source instance, each read once (fetched from the node into
    memory when this host does not have them)."""
    headers = ctx.spool.headers(study_uid)
    return [headers[str(Path(rel))] for rels in repository.series_files(ctx.db, study_uid).values() for rel in rels]


def _predecessor(ctx: StageContext, study: StageStudy, sop_uid: str) -> Dataset | None:
    prev = repository.previous_sr(ctx.db, study.id, sop_uid)
    if prev is None:
        return None
    return dcmread(ctx.spool.result_path(study.study_uid, prev.series_instance_uid, prev.path))


def _write(ctx: StageContext, study_uid: str, ds: Dataset, identity: ResultIdentity, model: Any) -> NewResult:
    """Write a result object where the node (and so export, on any host) will find it."""
    rel = Path("results") / study_uid / f"{identity.sop_instance_uid}.dcm"
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    ctx.spool.publish_result(study_uid, rel, buf.getvalue())
    return NewResult(identity.kind, str(ds.SOPClassUID), identity.sop_instance_uid, identity.series_uid, str(rel),
                     model.name, model.version)


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
    if hashlib.sha256(path.read_bytes()).hexdigest() != ref.sha256:
        raise AnalysisRecordError(f"the masks file of study {study_uid} is not the one the analysis recorded "
                                  "(written again since): analyse the study again")
    loaded = load_masks(path)
    if len(loaded) != len(ref.sets) or not all(m.matches(x) for m, x in zip(ref.sets, loaded)):
        raise AnalysisRecordError(f"the masks of study {study_uid} do not lie where the analysis recorded")
    return loaded


def _encode_objects(ctx: StageContext, study: StageStudy, generation: int) -> tuple[list[NewResult], str]:
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
    images: dict[tuple[str, str], Dataset] = {}
    asked: dict[str, int] = {}

    def source_image(series_uid: str, sop: str) -> Dataset:
        """A source image with its pixels, read once per encode (the key image and the
        measurements ask for the same slices). From the second image of a series on, a
        worker that fetches from the node gets the rest of that series in one WADO-RS
        request, not one request per image (the dural sac area reads a whole axial series)."""
        if (series_uid, sop) not in images:
            asked[series_uid] = asked.get(series_uid, 0) + 1
            if asked[series_uid] == 2 and ctx.spool.remote:
                ctx.spool.require_series(study_uid, [series_uid])
            images[series_uid, sop] = dcmread(ctx.spool.instance_path(study_uid, series_uid, sop))
        return images[series_uid, sop]

    inputs = EncodeInputs(
        record, evidence, _masks(ctx, study_uid, generation, record), digest,
        source_image=source_image,
        predecessor=lambda identity: _predecessor(ctx, study, identity.sop_instance_uid),
    )
    encoded = []
    for builder in BUILDERS:
        identity = inputs.identity(builder.kind)
        ds = builder.build(inputs, identity)
        if ds is not None:
            encoded.append(_write(ctx, study_uid, ds, identity, record.findings.model))
    return encoded, digest
