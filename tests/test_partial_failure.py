"""Partial failure degrades, never erases: a series that cannot be read costs only the
conditions it serves; the rest of the study is reported (issue 15, phantom seed 8).

Through the worker's run_analysis with the shipped weights (the same call the analyze
stage makes), on a phantom study whose axial T2 is five angled blocks.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from pydicom import dcmread

from models.registry import PACKAGE_WEIGHTS_DIR, Registry
from models.series import classify_series, header_from_datasets, select_series
from models.types import Condition

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

HAVE_WEIGHTS = {e.kind for e in Registry(PACKAGE_WEIGHTS_DIR).entries()} >= {"detector", "grader"}
pytestmark = pytest.mark.skipif(not HAVE_WEIGHTS, reason="no shipped weights (test_models_integration fails)")

SAGITTAL = {Condition.SPINAL_CANAL_STENOSIS, Condition.PFIRRMANN}
FORAMINAL = {Condition.LEFT_NEURAL_FORAMINAL_NARROWING, Condition.RIGHT_NEURAL_FORAMINAL_NARROWING}
SUBARTICULAR = {Condition.LEFT_SUBARTICULAR_STENOSIS, Condition.RIGHT_SUBARTICULAR_STENOSIS}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.phantom.config import PhantomConfig
    from models.phantom.generate import generate_dataset

    out = tmp_path_factory.mktemp("seed8")
    os.environ.setdefault("SPINENODE_YOLO_DIR", str(tmp_path_factory.mktemp("yolo")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_dataset(out, 1, PhantomConfig.for_region("lumbar", "MR"), seed=8)
    return next(p for p in (out / "train_images").iterdir() if p.is_dir())


def _files(root: Path) -> tuple[dict[str, list[Path]], Any]:
    files: dict[str, list[Path]] = defaultdict(list)
    headers: dict[str, list[Any]] = defaultdict(list)
    for f in sorted(root.rglob("*.dcm")):
        ds = dcmread(f, stop_before_pixels=True)
        files[str(ds.SeriesInstanceUID)].append(f)
        headers[str(ds.SeriesInstanceUID)].append(ds)
    selection = select_series([classify_series(header_from_datasets(h)) for h in headers.values()])
    return dict(files), selection


def _run(files: dict[str, list[Path]], selected: set[str] | None) -> Any:
    from workers.analysis import run_analysis

    return run_analysis(_analyzer(), "1.2.3", files, "lumbar", selected)


@functools.cache
def _analyzer() -> Any:
    """The shipped analyzer on the CPU, loaded once for the module's tests."""
    from workers.analysis import load_analyzer

    return load_analyzer(SimpleNamespace(device="cpu", herniation_model=False))  # type: ignore[arg-type]


def _conditions(result: Any) -> set[Condition]:
    return {g.condition for lf in result.findings.levels for g in lf.grades}


def _assert_record_reads_back(result: Any, files: dict[str, list[Path]], sel: Any, tmp_path: Path) -> None:
    """The analysis record of a real analyzer output reads back equal from its JSON, and
    holds the analyzer's values (at the stored precision), no stand-ins (issue 13)."""
    import json

    from workers.record import AnalysisRecord, MaskSet, MasksRef, SeriesUse
    from workers.results.seg import save_masks

    used = [SeriesUse(role, uid, len(files[uid])) for role, uid in sel.as_dict().items()
            if role != "missing" and uid]
    masks = None
    if result.masks:
        sha256 = save_masks(result.masks, tmp_path / "masks.npz")
        masks = MasksRef("results/x/masks-g1.npz", sha256, tuple(MaskSet.of(m) for m in result.masks))
    record = AnalysisRecord.of(result.findings, used, masks, result.seconds)
    back = AnalysisRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert back == record
    for got, lf in zip(back.findings.levels, result.findings.levels, strict=True):
        assert (got.level.slice_index, got.level.frame_number) == (lf.level.slice_index, lf.level.frame_number)
        assert max(abs(a - b) for a, b in zip(got.level.center_patient, lf.level.center_patient)) <= 0.005
        assert max(abs(a - b) for a, b in zip(got.level.box.as_list(), lf.level.box.as_list())) == 0
        assert [g.grade for g in got.grades] == [g.grade for g in lf.grades]
    assert back.findings.missing == result.findings.missing


def _truncate_pixels(files: list[Path]) -> None:
    for f in files:
        ds = dcmread(f)
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
        ds.save_as(f)


def test_a_series_read_as_headers_only_costs_its_conditions_only(study: Path) -> None:
    """The bug: the node's classification left the axial out, the analyzer selected it, read
    pixels from a header-only read (AttributeError) and the whole study became "not analysed"."""
    from models.types import AnalysisResult

    files, sel = _files(study)
    assert sel.axial_t2 and sel.sagittal_t2 and sel.sagittal_t1
    res = _run(files, {sel.sagittal_t2, sel.sagittal_t1})  # the axial's pixels are not read
    assert isinstance(res, AnalysisResult), res
    assert len(res.findings.levels) >= 4
    assert _conditions(res) == SAGITTAL | FORAMINAL
    assert any("axial T2 series could not be read" in m and "subarticular stenosis not assessed" in m
               for m in res.findings.missing), res.findings.missing


def test_undecodable_series_cost_only_their_conditions(study: Path, tmp_path: Path) -> None:
    from models.types import AnalysisResult

    files, sel = _files(study)
    full = _run(files, None)
    assert _conditions(full) == SAGITTAL | FORAMINAL | SUBARTICULAR and not full.findings.missing
    assert full.masks
    _assert_record_reads_back(full, files, sel, tmp_path)
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    files, sel = _files(copy)
    _truncate_pixels(files[sel.sagittal_t1])
    res = _run(files, sel.series_uids())
    assert isinstance(res, AnalysisResult), res
    assert [lf.level.name for lf in res.findings.levels] == [lf.level.name for lf in full.findings.levels]
    assert _conditions(res) == SAGITTAL | SUBARTICULAR
    assert [m for m in res.findings.missing if "not assessed" in m] == [
        m for m in res.findings.missing if m.startswith("sagittal T1 series could not be read")]
    assert any("neural foraminal narrowing not assessed" in m for m in res.findings.missing)
    _assert_record_reads_back(res, files, sel, tmp_path)  # a partial failure reads back whole too
    # the axial unreadable as well: the sagittal T2's conditions are still reported
    _truncate_pixels(files[sel.axial_t2])
    res = _run(files, sel.series_uids())
    assert isinstance(res, AnalysisResult) and _conditions(res) == SAGITTAL
    assert sum("could not be read" in m for m in res.findings.missing) == 2


def test_an_unreadable_sagittal_t2_leaves_the_levels_to_the_t1(study: Path, tmp_path: Path) -> None:
    from models.types import AnalysisResult

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    files, sel = _files(copy)
    _truncate_pixels(files[sel.sagittal_t2])
    res = _run(files, sel.series_uids())
    assert isinstance(res, AnalysisResult), res
    assert any("sagittal T2/STIR series could not be read" in m
               and "spinal canal stenosis and Pfirrmann grade not assessed" in m for m in res.findings.missing)
    assert res.findings.levels and all(lf.level.series_uid == sel.sagittal_t1 for lf in res.findings.levels)
    assert _conditions(res) == FORAMINAL | SUBARTICULAR


def test_each_stage_reads_a_file_once_and_the_series_are_classified_once(
        study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 item 2, through the analyze and encode stages on a real SQLite database and
    spool: the analyze stage reads every file of the study once (headers and, for the
    selected series, pixels: one read) and classifies every series once, handing its
    selection to the analyzer; the encode stage reads every source header once, and one
    source image (the key image's) with its pixels."""
    from collections import Counter

    import pydicom.filereader
    from sqlalchemy import select
    from study_states import walk_to

    import models.analyzer
    import workers.series
    from scp_node.dicomio import parse_header
    from scp_node.ingest import Ingestor
    from spinenode.core.db.models import Result, Study, StudyState
    from spinenode.core.db.session import Database
    from spinenode.core.settings import load_settings
    from spinenode.core.storage import Spool
    from workers.analyze import analyze_study
    from workers.encode import encode_study
    from workers.record import AnalysisRecord
    from workers.spool import SpoolAccess
    from workers.stage import StageContext

    settings = load_settings(data_dir=tmp_path / "data", device="cpu")
    db = Database(settings.database_url)
    db.migrate(settings.data_dir)
    sent: list[tuple[Any, ...]] = []
    ctx = StageContext(settings, db, SpoolAccess(settings, db), lambda *a: sent.append(a))  # type: ignore[arg-type]
    ingestor = Ingestor(db, Spool(settings.data_dir))
    for f in sorted(study.rglob("*.dcm")):
        data = f.read_bytes()
        ingestor.store(parse_header(data), data, "TEST")
    with db.session() as s:
        row = s.execute(select(Study)).scalar_one()
        row.region = "lumbar"
        walk_to(s, row, StudyState.QUEUED)
        uid, gen = row.study_uid, row.generation
    sources = {str(p) for p in (settings.data_dir / "incoming").rglob("*.dcm")}
    series_uids = {p.parent.name for p in map(Path, sources)}
    assert len(sources) > 30 and len(series_uids) == 3

    reads: Counter[str] = Counter()
    read_partial = pydicom.filereader.read_partial

    def counting_read(fileobj: Any, *args: Any, **kwargs: Any) -> Any:
        reads[str(getattr(fileobj, "name", ""))] += 1
        return read_partial(fileobj, *args, **kwargs)

    classified: Counter[str] = Counter()

    def counting_classifier(header: Any) -> Any:
        classified[header.series_uid] += 1
        return classify_series(header)

    monkeypatch.setattr(pydicom.filereader, "read_partial", counting_read)
    monkeypatch.setattr(workers.series, "classify_series", counting_classifier)
    monkeypatch.setattr(models.analyzer, "classify_series", counting_classifier)

    analyze_study(ctx, uid, gen)
    with db.session() as s:
        row = s.execute(select(Study)).scalar_one()
        assert row.state == StudyState.ENCODING, [e.detail for e in row.events]
        assert row.findings is not None and len(row.findings["levels"]) >= 4
        record = AnalysisRecord.from_json(row.findings)
    assert sent == [("encode", uid, gen)]
    assert classified == Counter({u: 1 for u in series_uids})
    assert {p: n for p, n in reads.items() if p in sources} == {p: 1 for p in sources}

    reads.clear()
    encode_study(ctx, uid, gen)
    with db.session() as s:
        assert s.execute(select(Study)).scalar_one().state == StudyState.DONE
        key_image = s.execute(select(Result).where(Result.kind == "key-images")).scalar_one_or_none()
    assert key_image is not None
    source_reads = {p: n for p, n in reads.items() if p in sources}
    assert set(source_reads) == sources
    # each header once; a second read, with pixels, only for what the builders draw or
    # measure on: the levels' slice (key image, canal ends) and the axial T2 series the
    # analysis used (dural sac area), each once
    again = {p for p, n in source_reads.items() if n == 2}
    assert set(source_reads.values()) == {1, 2}
    axial = {u.series_uid for u in record.series if u.role == "axial_t2"}
    level_slices = {lf.level.sop_instance_uid for lf in record.findings.levels}
    assert again and all(Path(p).parent.name in axial or Path(p).stem in level_slices for p in again), again
    db.dispose()
