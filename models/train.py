"""``spinenode train detector|grader``: training from RSNA-layout data (real RSNA 2024 or phantom).

Both trainers split by study (:func:`models.train_data.is_validation`), save a
``metrics.json``, a confusion-matrix PNG and training curves with the run,
and register the resulting weights in ``<out>/weights`` (a registry directory
whose files can be copied to ``models/weights``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from models import rsna
from models.registry import Registry
from models.train_config import TrainConfig, progress_bar
from models.train_data import (
    HEAD_ORDER, CropSet, crop_offsets_of_study, grader_study_crops, is_validation,
    write_dataset_yaml, write_detector_study,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

DETECTOR_NAME = "spinenode-detector"
GRADER_NAME = "spinenode-grader"
#: Minimum merged disc score written with the weights (see detector.merge_discs).
DISC_SCORE = 0.04


#: ``models.evaluate`` shows its progress with the same bar.
_progress = progress_bar


def _map(fn: Callable[..., T], args: Sequence[tuple[Any, ...]], workers: int, label: str) -> list[T]:
    """Run ``fn(*a)`` for every ``a`` with a rich progress bar, in processes when workers > 1."""
    out: list[T] = []
    with progress_bar() as prog:
        task = prog.add_task(label, total=len(args))
        if workers <= 1:
            for a in args:
                out.append(fn(*a))
                prog.advance(task)
        else:
            with ProcessPoolExecutor(workers) as ex:
                for r in ex.map(fn, *zip(*args), chunksize=4):
                    out.append(r)
                    prog.advance(task)
    return out


def _studies(ds: rsna.RsnaDataset, limit: int | None) -> list[int]:
    ids = [s for s in ds.study_ids if s in ds.labels] or list(ds.study_ids)
    return ids[:limit] if limit else ids


# ---------------------------------------------------------------------------- detector


def _det_job(root: str, sid: int, out: str, split: str) -> int:
    ds = _dataset_cache(root)
    return write_detector_study(ds, sid, Path(out), split)


_CACHE: dict[str, rsna.RsnaDataset] = {}


def _dataset_cache(root: str) -> rsna.RsnaDataset:
    if root not in _CACHE:
        _CACHE[root] = rsna.read_dataset(root)
    return _CACHE[root]


def train_detector(cfg: TrainConfig) -> dict[str, Any]:
    """Build the YOLO-seg dataset from the sagittal series and train yolov8n-seg from scratch."""
    from models.offline import load_ultralytics

    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    ydir = cfg.out / "yolo_data"
    if ydir.exists():
        shutil.rmtree(ydir)
    args: list[tuple[str, int, str, str]] = []
    studies: list[int] = []
    for root in cfg.data:
        ds = rsna.read_dataset(root)
        ids = _studies(ds, cfg.max_studies)
        studies += ids
        args += [(str(root), s, str(ydir), "val" if is_validation(s, cfg.seed, cfg.val_fraction) else "train")
                 for s in ids]
    counts = _map(_det_job, args, cfg.workers, "detector images")
    n_val = sum(c for a, c in zip(args, counts) if a[3] == "val")
    if not (ydir / "images" / "val").exists():  # tiny sets: validate on train
        shutil.copytree(ydir / "images" / "train", ydir / "images" / "val")
        shutil.copytree(ydir / "labels" / "train", ydir / "labels" / "val")
    yaml_path = write_dataset_yaml(ydir)
    ul = load_ultralytics()
    model = ul.YOLO("yolov8n-seg.yaml", task="segment")
    device = 0 if cfg.device.startswith("cuda") else "cpu"
    results = model.train(
        data=str(yaml_path), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch or 16,
        device=device, amp=False, seed=cfg.seed, deterministic=True, workers=min(cfg.workers, 8),
        project=str(cfg.out.resolve()), name="detector_run", exist_ok=True, plots=True,
        fliplr=0.0, flipud=0.0, mosaic=0.5, degrees=5.0, scale=0.3, translate=0.1,
        hsv_h=0.0, hsv_s=0.0, hsv_v=0.3, verbose=False, patience=0, close_mosaic=3,
        **({"time": cfg.max_hours} if cfg.max_hours else {}),
    )
    run = cfg.out / "detector_run"
    best = run / "weights" / "best.pt"
    if not best.exists():
        best = run / "weights" / "last.pt"
    metrics = {k: float(v) for k, v in getattr(results, "results_dict", {}).items()}
    reg = Registry(cfg.out / "weights")
    entry = reg.register(best, DETECTOR_NAME, cfg.version, "detector", file="detector.pt",
                         meta={"imgsz": cfg.imgsz, "disc_score": DISC_SCORE, "epochs": cfg.epochs, "seed": cfg.seed,
                               "data": [str(d) for d in cfg.data], "studies": len(studies)})
    report = {"kind": "detector", "studies": len(studies), "images": int(sum(counts)),
              "val_images": int(n_val), "epochs": cfg.epochs, "seed": cfg.seed, "imgsz": cfg.imgsz,
              "metrics": metrics, "sha256": entry.sha256, "seconds": round(time.perf_counter() - t0, 1),
              "plots": sorted(p.name for p in run.glob("*.png"))}
    (cfg.out / "detector_metrics.json").write_text(json.dumps(report, indent=2))
    return report


# ---------------------------------------------------------------------------- grader


def _offset_job(root: str, sid: int) -> dict[str, list[list[float]]]:
    ds = _dataset_cache(root)
    try:
        off = crop_offsets_of_study(ds, sid)
    except Exception as exc:  # noqa: BLE001 - one bad study must not stop training
        logger.warning("study %s: crop offsets failed: %s", sid, exc)
        return {}
    return {k: [list(map(float, v)) for v in vs] for k, vs in off.items()}


def _crop_job(root: str, sid: int, offsets: dict[str, list[float]], n_aug: int, seed: int) -> CropSet:
    ds = _dataset_cache(root)
    try:
        return grader_study_crops(ds, sid, {k: np.asarray(v) for k, v in offsets.items()}, n_aug, seed=seed)
    except Exception as exc:  # noqa: BLE001 - one bad study must not stop training
        logger.warning("study %s: crops failed: %s", sid, exc)
        return CropSet.empty()


def build_crops(cfg: TrainConfig, n_aug: int | None = None) -> tuple[CropSet, dict[str, list[float]], list[int]]:
    """Crops of every dataset; crop offsets are medians over (up to 60) training studies of each."""
    datasets = [(root, rsna.read_dataset(root)) for root in cfg.data]
    offsets: dict[str, list[float]] = {}
    parts: list[dict[str, list[list[float]]]] = []
    for root, ds in datasets:
        sample = [s for s in _studies(ds, cfg.max_studies)
                  if not is_validation(s, cfg.seed, cfg.val_fraction)][:60]
        parts += _map(_offset_job, [(str(root), s) for s in sample], cfg.workers, "crop offsets")
    for key in sorted({k for p in parts for k in p}):
        vals = [v for p in parts for v in p.get(key, [])]
        if vals:
            offsets[key] = [float(x) for x in np.median(np.asarray(vals), axis=0)]
    jobs: list[tuple[str, int, dict[str, list[float]], int, int]] = []
    studies: list[int] = []
    for root, ds in datasets:
        ids = _studies(ds, cfg.max_studies)
        studies += ids
        jobs += [(str(root), s, offsets, n_aug or cfg.copies, cfg.seed) for s in ids]
    sets = _map(_crop_job, jobs, cfg.workers, "grader crops")
    return CropSet.concat(sets), offsets, studies


def train_grader(cfg: TrainConfig, crops: CropSet | None = None,
                 offsets: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Train the grading network on crops, calibrate per head, save weights and reports."""
    from models.train_grader import fit_grader

    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    if crops is None or offsets is None:
        crops, offsets, _ = build_crops(cfg)
    if len(crops.kind) == 0:
        raise ValueError(f"no grader training crops could be made from {[str(d) for d in cfg.data]}")
    val = np.array([is_validation(int(s), cfg.seed, cfg.val_fraction) for s in crops.study])
    if not val.any() or val.all():
        val = np.zeros(len(crops.kind), bool)
        val[::5] = True
    report, ckpt = fit_grader(crops.subset(~val), crops.subset(val), cfg, offsets)
    path = cfg.out / "grader.pt"
    ckpt.save(path)
    reg = Registry(cfg.out / "weights")
    entry = reg.register(path, GRADER_NAME, cfg.version, "grader", file="grader.pt",
                         meta={"epochs": cfg.epochs, "seed": cfg.seed, "data": [str(d) for d in cfg.data]})
    report.update({"kind": "grader", "copies": cfg.copies, "crops_train": int((~val).sum()), "crops_val": int(val.sum()),
                   "crop_offsets_mm": offsets, "sha256": entry.sha256, "heads": list(HEAD_ORDER),
                   "seconds": round(time.perf_counter() - t0, 1)})
    (cfg.out / "grader_metrics.json").write_text(json.dumps(report, indent=2))
    return report


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))
