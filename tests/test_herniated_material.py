"""The herniated-material segmenter (issue 19, item 3: the herniated material as its own SEG
segment): crop and paste geometry, training end to end, the shipped weights in the
analyzer (segments only where the SR calls a protrusion or extrusion, taken only from
background, discs and canal) and ``spinenode evaluate``'s Dice against the phantom's truth."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from models_cli import invoke_models_cli

from models import rsna
from models.herniated_material import (
    HerniatedMaterialError,
    SegCheckpoint,
    level_crops,
    paste,
    truth_crop,
)
from models.registry import PACKAGE_WEIGHTS_DIR, Registry
from models.types import Condition

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
LEVELS = rsna.LUMBAR_LEVELS


@pytest.fixture(scope="module")
def herniated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two lumbar MR phantoms (seed 4247, used by no training run) at a clinical matrix,
    every level a protrusion or extrusion, with the ``herniated`` truth mask."""
    from models.phantom.config import HerniationFrequencies, PhantomConfig
    from models.phantom.generate import generate_dataset

    base = HerniationFrequencies.realistic("lumbar")
    cfg = replace(PhantomConfig.for_region("lumbar", "MR"), herniation=base.with_overrides({
        "types": {lv: [0.0, 0.0, 0.5, 0.5] for lv in LEVELS}}))
    out = tmp_path_factory.mktemp("herniated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_dataset(out, 2, cfg, seed=4247)
    return out


def _sagittal(root: Path, sid: int) -> tuple[object, np.ndarray, dict[str, np.ndarray]]:
    from models.train_data import disc_centers, labels_on, primary_series
    from models.volume import load_volume

    ds = rsna.read_dataset(root)
    series = primary_series(ds, sid)
    assert series is not None
    vol = load_volume(ds.series_dir(sid, series.series_id))
    mv = rsna.read_masks(ds.masks_path(sid, series.series_id))
    assert mv.herniated is not None
    truth = np.stack([labels_on(vol, mv.herniated[mv.instance_numbers.index(n)].astype(np.uint8))
                      for n in vol.instance_numbers]).astype(bool)
    return vol, truth, disc_centers(ds, sid, vol, series)


def test_crop_and_paste_are_inverse(herniated: Path) -> None:
    """The truth mask cut as a crop and pasted back lies where it was on the slice: paste
    inverts the crop's rotation and scale (a swapped axis or sign would move it)."""
    from models.detector import normalized_pixels

    vol, truth, centers = _sagittal(herniated, rsna.read_dataset(herniated).study_ids[0])
    pixels = normalized_pixels(vol)  # type: ignore[arg-type]
    checked = 0
    for name, c in centers.items():
        for crop in level_crops(vol, pixels, c, None):  # type: ignore[arg-type]
            cut = truth_crop(vol, truth, crop)  # type: ignore[arg-type]
            if cut.sum() < 20:
                continue
            back = paste(vol, crop, cut.astype(np.float32)) >= 0.5  # type: ignore[arg-type]
            inside = paste(vol, crop, np.ones_like(cut, np.float32)) > 0.99  # type: ignore[arg-type]
            want = truth[crop.k] & inside
            iou = (back & want).sum() / max((back | want).sum(), 1)
            assert iou > 0.7, (name, crop.k, iou)
            checked += 1
    assert checked >= 3


def test_training_runs_end_to_end(herniated: Path, tmp_path: Path) -> None:
    res = invoke_models_cli(["train", "herniated-material", "--data", str(herniated), "--out", str(tmp_path),
                             "--epochs", "1", "--device", "cpu", "--copies", "1", "--batch", "8"])
    assert res.exit_code == 0, res.output
    entry, path = Registry(tmp_path / "weights").resolve("spinenode-herniated-material")
    assert entry.kind == "herniated_material" and 50_000 < path.stat().st_size < 2_000_000
    report = json.loads((tmp_path / "herniated_material_metrics.json").read_text())
    assert report["studies"] == 2 and report["crops_train"] > 0 and report["crops_val"] > 0
    assert 0.0 <= report["val"]["dice"] <= 1.0 and report["val"]["pixels_true"] > 0
    ckpt = SegCheckpoint.load(path)
    # weights for other crops than this code cuts are refused, not misread
    raw = torch.load(path, weights_only=True)
    raw["geometry"][1] = 30.0
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(HerniatedMaterialError):
        SegCheckpoint.load(tmp_path / "other.pt")
    assert ckpt.widths


def test_shipped_segmenter_draws_what_the_sr_calls(herniated: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped weights load by default. A herniated-material segment exists only at a
    level the herniation model calls a protrusion or extrusion, never takes the vertebral
    bodies' pixels (the SEG without the segmenter is otherwise unchanged),
    and lies on the phantom's herniated material (a loose bar: the held-out Dice is in the
    model card)."""
    from models.analyzer import SpineAnalyzer, read_study_dir

    monkeypatch.setenv("SPINENODE_YOLO_DIR", str(tmp_path / "yolo"))
    entry = Registry(PACKAGE_WEIGHTS_DIR).entry_of_kind("herniated_material")
    analyzer = SpineAnalyzer.from_registry(None, device="cpu")
    assert analyzer.herniated_material is not None
    assert analyzer.model_id.version.endswith(f"+hms-{entry.version}")
    segmenter, analyzer.herniated_material = analyzer.herniated_material, None
    ds = rsna.read_dataset(herniated)
    inputs = [(str(s), read_study_dir(herniated / "train_images" / str(s)), "lumbar") for s in ds.study_ids]
    plain = analyzer.analyze_many(inputs)
    analyzer.herniated_material = segmenter
    drawn = analyzer.analyze_many(inputs)
    tp = fp = fn = segments = 0
    for sid, a, b in zip(ds.study_ids, plain, drawn):
        assert not isinstance(a, Exception) and not isinstance(b, Exception)
        focal = {lf.level.name for lf in b.findings.levels
                 if (g := lf.grade_of(Condition.DISC_HERNIATION)) is not None and g.grade in ("protrusion", "extrusion")}
        old, new = a.masks[0], b.masks[0]
        extra = {v: t for v, t in new.segments.items() if v not in old.segments}
        assert {v: t for v, t in new.segments.items() if v in old.segments} == dict(old.segments)
        assert all(t.startswith("herniated material ") and t.removeprefix("herniated material ") in focal
                   for t in extra.values()), (extra, focal)
        changed = old.labels != new.labels
        assert np.isin(new.labels[changed], list(extra)).all()
        bodies = [v for v, t in old.segments.items() if t == "vertebral bodies"]
        assert not np.isin(old.labels[changed], bodies).any()  # never the vertebral bodies
        segments += len(extra)
        series = next(s for s in ds.series_of(sid) if s.series_description == rsna.SAGITTAL_T2_STIR)
        truth = rsna.read_masks(ds.masks_path(sid, series.series_id))
        assert truth.herniated is not None
        from models.volume import load_volume

        vol = load_volume(ds.series_dir(sid, series.series_id))
        number = dict(zip(vol.sop_instance_uids, vol.instance_numbers))
        for i, uid in enumerate(new.sop_instance_uids):
            t = truth.herniated[truth.instance_numbers.index(number[uid])]
            p = np.isin(new.labels[i], list(extra))
            tp, fp, fn = tp + int((p & t).sum()), fp + int((p & ~t).sum()), fn + int((~p & t).sum())
    assert segments >= 3
    dice = 2 * tp / max(2 * tp + fp + fn, 1)
    assert dice >= 0.4, (tp, fp, fn)


def test_evaluate_reports_the_segment_dice(herniated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.evaluate import evaluate

    monkeypatch.setenv("SPINENODE_YOLO_DIR", str(tmp_path / "yolo"))
    report = evaluate(herniated, None, "cpu", progress=False)
    hm = report["herniated_material"]
    assert hm["studies"] == 2 and hm["studies_with_truth"] == 2 and hm["pixels_true"] > 0
    assert 0.4 <= hm["dice"] <= 1.0 and hm["dice_ci95"] is not None
    assert hm["dice_ci95"][0] <= hm["dice"] <= hm["dice_ci95"][1]
