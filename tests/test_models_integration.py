"""The shipped weights on a few fresh phantom studies, end to end, with a loose bar."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from models.registry import PACKAGE_WEIGHTS_DIR, Registry

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

HAVE_WEIGHTS = {e.kind for e in Registry(PACKAGE_WEIGHTS_DIR).entries()} >= {"detector", "grader"}


@pytest.fixture(scope="module")
def lumbar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.phantom.config import PhantomConfig
    from models.phantom.generate import generate_dataset

    out = tmp_path_factory.mktemp("phantom")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # seed 4242 is not among the training seeds (detector 11-13, grader 31-33) of the shipped weights
        generate_dataset(out, 2, PhantomConfig.for_region("lumbar", "MR", matrix=256), seed=4242)
    return out


def test_weights_are_shipped() -> None:
    """The package ships a detector and a grader that pass their sha256 check."""
    assert HAVE_WEIGHTS
    reg = Registry(PACKAGE_WEIGHTS_DIR)
    assert sum(reg.path_of(e).stat().st_size for e in reg.entries()) < 30_000_000


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="no shipped weights (test_weights_are_shipped fails)")
def test_shipped_weights_on_phantoms(lumbar: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from models.evaluate import evaluate

    monkeypatch.setenv("SPINENODE_YOLO_DIR", str(tmp_path / "yolo"))
    report = evaluate(lumbar, None, device="cpu", progress=False)
    assert report["studies"] == 2
    assert report["level_detection_recall"] >= 0.8
    assert report["level_naming_accuracy"] >= 0.8
    assert report["rsna_score"]["score"] < 0.8
    assert report["model"]["name"] == "spinenode-spine"
    assert report["seconds_per_study"] > 0  # measured and reported; speed itself is bench/inference.py's
    mm = report["measurements_mm"]  # against the phantom's label masks (a loose bar for 2 studies)
    for kind in ("canal_ap_diameter", "disc_height"):
        assert mm[kind]["n"] >= 8 and mm[kind]["median_abs_error"] < 2.0, mm
    area = report["measurements_mm2"]["dural_sac_area"]  # on the axial T2 slice through each disc
    assert area["n"] >= 6 and area["median_abs_error_percent"] < 30.0, area


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="no shipped weights (test_weights_are_shipped fails)")
def test_recess_views_are_averaged_into_one_grade(lumbar: Path) -> None:
    """Several shifted views of a recess give one grade per side: their mean, not duplicates."""
    from models.analyzer import RECESS_SHIFTS_MM, SpineAnalyzer, read_study_dir
    from models.types import LUMBAR_CONDITIONS, Condition

    assert len(RECESS_SHIFTS_MM) > 1 and RECESS_SHIFTS_MM[0] == (0.0, 0.0)
    study = next(p for p in sorted((lumbar / "train_images").iterdir()) if p.is_dir())
    series = read_study_dir(study)
    analyzer = SpineAnalyzer.from_registry(None, device="cpu")
    views = {}
    for shifts in (RECESS_SHIFTS_MM, RECESS_SHIFTS_MM[:1], RECESS_SHIFTS_MM[1:2]):
        analyzer.recess_shifts_mm = shifts
        findings = analyzer.analyze(study.name, series, "lumbar").findings
        assert findings.levels
        for lf in findings.levels:
            conds = [g.condition for g in lf.grades]
            assert sorted(conds) == sorted(set(conds)) and set(LUMBAR_CONDITIONS) <= set(conds)
        views[len(shifts), shifts[0]] = [lf.grade_of(Condition.LEFT_SUBARTICULAR_STENOSIS).probabilities
                                         for lf in findings.levels]
    both = views[len(RECESS_SHIFTS_MM), (0.0, 0.0)]
    centre, shifted = views[1, (0.0, 0.0)], views[1, RECESS_SHIFTS_MM[1]]
    assert centre != shifted  # a shifted view is another crop
    assert both != centre  # and the average is not just the centre view


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="no shipped weights (test_weights_are_shipped fails)")
def test_inference_bench_prints_a_table(lumbar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/inference.py runs on phantoms and prints its table (its numbers are not asserted)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_inference", Path(__file__).parents[1] / "bench" / "inference.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out_json = tmp_path / "bench.json"
    args = ["--data", str(lumbar), "--studies", "1", "--repeats", "1", "--threads", "1", "--device", "cpu"]
    assert bench.main([*args, "--recess-views", "1", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "1 lumbar studies" in text and "1 views per recess" in text
    assert "| analyzer, s per study (mean)" in text
    report = json.loads(out_json.read_text())
    assert report["recess_views"] == 1 and report["seconds_per_study_mean"] > 0
    with pytest.raises(SystemExit):
        bench.main([*args, "--recess-views", "9"])


class _FailsOnBlankImages:
    """The real detector, except that a pass with a blank image in it raises (a batched
    pass broken by one study's images)."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def detect(self, images: list[Any], batch_size: int = 32) -> list[Any]:
        if any(not img.any() for img in images):
            raise ValueError("blank image")
        return self.detector.detect(images, batch_size)


def _detections(dets: list[Any]) -> list[tuple[str, float, tuple[float, ...]]]:
    return sorted((d.class_name, round(d.confidence, 3), tuple(round(v, 1) for v in d.box.as_list())) for d in dets)


def _levels_and_masks(result: Any) -> tuple[Any, ...]:
    f = result.findings
    return (tuple((lf.level.name, lf.level.sop_instance_uid, tuple((g.condition, g.grade) for g in lf.grades))
                  for lf in f.levels),
            f.missing, tuple(m.labels.tobytes() for m in result.masks))


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="no shipped weights (test_weights_are_shipped fails)")
def test_batched_studies_match_studies_alone_and_a_bad_one_fails_alone(lumbar: Path) -> None:
    """analyze_batch over [A, broken, B]: A and B get the same levels, grades and SEG labels
    as when each is analysed alone (boxes to 1e-3 px, probabilities to 1e-5: CPU convolutions
    sum in another order at another batch size); the broken study's slot
    holds its error. Detections of an image do not depend on the shapes of the others in
    its pass. A detector pass that fails because of one study's blank images is
    rerun study by study, so only that study fails (and A and B run alone there: the
    comparison against the batch)."""
    import copy

    import numpy as np

    from models.analyzer import SpineAnalyzer, read_study_dir

    dirs = sorted(p for p in (lumbar / "train_images").iterdir() if p.is_dir())
    a, b = ((d.name, read_study_dir(d), "lumbar") for d in dirs[:2])
    broken = ("broken", {"1.2.3": [None]}, "lumbar")  # not a data set: preparation raises
    blank_series = copy.deepcopy(b[1])
    for datasets in blank_series.values():
        for ds in datasets:
            ds.PixelData = bytes(len(ds.PixelData))
    blank = ("blank", blank_series, "lumbar")
    analyzer = SpineAnalyzer.from_registry(None, device="cpu")
    # ultralytics letterboxes mixed shapes to the full square, equal shapes to the stride:
    # a narrower image (a study with another matrix) must not change this one's detections
    sag = next(v for v in a[1].values() if abs(float(v[0].ImageOrientationPatient[0])) < 0.5)
    px = np.stack([ds.pixel_array for ds in sag[len(sag) // 2 - 1:len(sag) // 2 + 2]], axis=-1).astype(float)
    square = (255.0 * px / px.max()).astype(np.uint8)
    narrow = np.ascontiguousarray(square[:, 30:-26])
    assert _detections(analyzer.detector.detect([square, narrow])[0]) == _detections(
        analyzer.detector.detect([square])[0])
    batched = analyzer.analyze_batch([a, broken, b])
    assert isinstance(batched[1], TypeError)
    analyzer.detector = _FailsOnBlankImages(analyzer.detector)  # type: ignore[assignment]
    alone = analyzer.analyze_batch([a, blank, b])
    assert isinstance(alone[1], ValueError)
    for x, y in ((batched[0], alone[0]), (batched[2], alone[2])):
        assert not isinstance(x, Exception) and not isinstance(y, Exception)
        assert x.findings.levels and x.masks
        assert _levels_and_masks(x) == _levels_and_masks(y)
        for lx, ly in zip(x.findings.levels, y.findings.levels):
            assert np.allclose(lx.level.box.as_list(), ly.level.box.as_list(), atol=1e-3)
            for gx, gy in zip(lx.grades, ly.grades):
                assert np.allclose(gx.probabilities, gy.probabilities, atol=1e-5)
