"""``spinenode train herniated-material``: crops and truth masks from phantoms, the training loop.

Data: every lumbar MR study with a sagittal T2/STIR whose mask side file carries the
``herniated`` array (phantoms made with ``--herniation realistic`` by this version). Per
level, around the ground-truth disc centre (:func:`models.train_data.disc_centers`, as for
the grader and the herniation model), the crops of :func:`models.herniated_material.level_crops`
on every slice within reach and the truth mask cut the same way; ``copies`` sets (the first
unjittered, the others moved by up to :data:`JITTER_MM`). Crops without a truth pixel are
kept with probability :data:`KEEP_EMPTY` (most slices of most levels hold no herniation).

Training: binary cross-entropy plus soft Dice, online intensity augmentation and a
slice-order flip; the epoch with the best validation Dice (pixels pooled over the
validation studies' crops) is kept. The end-to-end measure (detected levels, the herniation
model's call, pixels pasted back onto the images) is ``spinenode evaluate``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models import rsna
from models.detector import normalized_pixels
from models.herniated_material import CROP_PX, SegCheckpoint, SegNet, level_crops, truth_crop
from models.levels import spine_axes
from models.registry import Registry
from models.train_config import TrainConfig, progress_bar
from models.train_data import disc_centers, is_validation, labels_on, primary_series
from models.types import levels_of
from models.volume import load_volume

logger = logging.getLogger(__name__)

NAME = "spinenode-herniated-material"
JITTER_MM = 2.0
KEEP_EMPTY = 0.25
TRAIN_THREADS = 1


@dataclass(frozen=True)
class SegCrops:
    x: np.ndarray  # float16 (n, 3, 64, 64)
    y: np.ndarray  # bool (n, 64, 64)
    study: np.ndarray  # int64 (n,)
    first: np.ndarray  # bool (n,): the unjittered copy

    @classmethod
    def concat(cls, parts: list[SegCrops]) -> SegCrops:
        parts = [p for p in parts if len(p.y)]
        if not parts:
            return cls(np.zeros((0, 3, CROP_PX, CROP_PX), np.float16), np.zeros((0, CROP_PX, CROP_PX), bool),
                       np.zeros(0, np.int64), np.zeros(0, bool))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "study", "first")))

    def subset(self, m: np.ndarray) -> SegCrops:
        return SegCrops(self.x[m], self.y[m], self.study[m], self.first[m])


def study_crops(ds: rsna.RsnaDataset, study_id: int, copies: int, seed: int) -> SegCrops:
    """The crops of one lumbar MR study (empty without a sagittal T2 or a truth mask)."""
    series = primary_series(ds, study_id)
    if series is None or series.series_description != rsna.SAGITTAL_T2_STIR:
        return SegCrops.concat([])
    mpath = ds.masks_path(study_id, series.series_id)
    mv = rsna.read_masks(mpath) if mpath.exists() else None
    if mv is None or mv.herniated is None:
        return SegCrops.concat([])
    vol = load_volume(ds.series_dir(study_id, series.series_id))
    pix = normalized_pixels(vol)
    truth = np.stack([labels_on(vol, mv.herniated[mv.instance_numbers.index(n)].astype(np.uint8))
                      for n in vol.instance_numbers]).astype(bool)
    centers = disc_centers(ds, study_id, vol, series)
    axes = spine_axes(centers, levels_of("lumbar"))
    rng = np.random.default_rng(seed * 1_000_003 + study_id)
    xs, ys, first = [], [], []
    for name, c in centers.items():
        for a in range(copies):
            cc = c if a == 0 else c + rng.uniform(-JITTER_MM, JITTER_MM, 3)
            for crop in level_crops(vol, pix, cc, axes.get(name)):
                y = truth_crop(vol, truth, crop)
                if not y.any() and rng.random() > KEEP_EMPTY:
                    continue
                xs.append(crop.image.astype(np.float16))
                ys.append(y)
                first.append(a == 0)
    if not ys:
        return SegCrops.concat([])
    return SegCrops(np.stack(xs), np.stack(ys), np.full(len(ys), study_id, np.int64), np.asarray(first))


def dataset_crops(root: Path, copies: int, seed: int, max_studies: int | None) -> SegCrops:
    ds = rsna.read_dataset(root)
    ids = list(ds.study_ids)[:max_studies] if max_studies else list(ds.study_ids)
    parts: list[SegCrops] = []
    with progress_bar() as prog:
        task = prog.add_task(f"herniated-material crops {Path(root).name}", total=len(ids))
        for sid in ids:
            try:
                parts.append(study_crops(ds, sid, copies, seed))
            except Exception as exc:  # noqa: BLE001 - one unreadable study must not stop training
                logger.warning("study %s: herniated-material crops failed: %s", sid, exc)
            prog.advance(task)
    return SegCrops.concat(parts)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    scale = 1.0 + 0.15 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    shift = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    x = x * scale + shift + 0.03 * torch.randn(x.shape, generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5  # slice order (left-right) is arbitrary
    x[flip] = x[flip].flip(1)
    return x


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, y)
    p = torch.sigmoid(logits)
    dice = 1.0 - (2.0 * (p * y).sum() + 1.0) / (p.sum() + y.sum() + 1.0)
    return bce + dice


@torch.inference_mode()
def dice_of(net: SegNet, data: SegCrops, threshold: float = 0.5, batch: int = 256) -> dict[str, float]:
    """Pooled pixel Dice, precision and recall of ``net`` on ``data``."""
    net.eval()
    tp = fp = fn = 0
    for s in range(0, len(data.y), batch):
        p = torch.sigmoid(net(torch.from_numpy(data.x[s:s + batch].astype(np.float32)))).numpy() >= threshold
        y = data.y[s:s + batch]
        tp += int((p & y).sum())
        fp += int((p & ~y).sum())
        fn += int((~p & y).sum())
    return {"dice": 2 * tp / max(2 * tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "pixels_true": tp + fn}


def fit(train: SegCrops, val: SegCrops, cfg: TrainConfig) -> tuple[dict[str, Any], SegCheckpoint]:
    torch.manual_seed(cfg.seed)
    net = SegNet()
    batch = cfg.batch or 64
    steps = max(1, int(np.ceil(len(train.y) / batch)))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=cfg.epochs * steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        order = rng.permutation(len(train.y))
        total, n = 0.0, 0
        for s in range(0, len(order), batch):
            idx = np.sort(order[s:s + batch])
            if len(idx) < 2:
                continue
            x = _augment(torch.from_numpy(train.x[idx].astype(np.float32)), gen)
            loss = _loss(net(x), torch.from_numpy(train.y[idx].astype(np.float32)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        vd = dice_of(net, val)
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), **vd})
        if best is None or vd["dice"] > best[0]:
            best = (vd["dice"], epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
        logger.info("herniated-material epoch %d/%d: train loss %.4f, validation Dice %.3f, %.0f s", epoch + 1,
                    cfg.epochs, total / max(n, 1), vd["dice"], time.perf_counter() - t0)
    assert best is not None
    net.load_state_dict(best[2])
    report = {"epochs": cfg.epochs, "seed": cfg.seed, "best_epoch": best[1],
              "parameters": sum(p.numel() for p in net.parameters()),
              "train_seconds": round(time.perf_counter() - t0, 1), "history": history, "val": dice_of(net, val)}
    sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return report, SegCheckpoint(sd, net.widths, meta={"epochs": cfg.epochs, "seed": cfg.seed})


def train_herniated_material(cfg: TrainConfig) -> dict[str, Any]:
    """Crops, training; weights registered in ``<out>/weights``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        t0 = time.perf_counter()
        cfg.out.mkdir(parents=True, exist_ok=True)
        crops = SegCrops.concat([dataset_crops(Path(d), cfg.copies, cfg.seed, cfg.max_studies) for d in cfg.data])
        if not crops.y.any():
            raise ValueError(f"no herniated-material truth in {[str(d) for d in cfg.data]} "
                             "(make phantoms with --herniation realistic)")
        val = np.array([is_validation(int(s), cfg.seed, cfg.val_fraction) for s in crops.study])
        if not val.any() or val.all():
            val = np.zeros(len(crops.y), bool)
            val[::5] = True
        report, ckpt = fit(crops.subset(~val), crops.subset(val & crops.first), cfg)
        path = cfg.out / "herniated_material.pt"
        ckpt.save(path)
        meta = {"epochs": cfg.epochs, "seed": cfg.seed, "copies": cfg.copies, "parameters": report["parameters"],
                "data": [str(d) for d in cfg.data], "train_seconds": report["train_seconds"]}
        entry = Registry(cfg.out / "weights").register(path, NAME, cfg.version, "herniated_material",
                                                       file="herniated_material.pt", meta=meta)
        report.update({"kind": "herniated_material", "studies": len(np.unique(crops.study)),
                       "crops_train": int((~val).sum()), "crops_val": int((val & crops.first).sum()),
                       "sha256": entry.sha256, "seconds": round(time.perf_counter() - t0, 1)})
        (cfg.out / "herniated_material_metrics.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        torch.set_num_threads(threads)
