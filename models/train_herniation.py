"""``spinenode train herniation``: crops from phantoms with herniation, the training loop, calibration.

Data: every lumbar MR study of the RSNA-layout datasets that carry
``phantom_herniation.csv`` (``spinenode phantom ... --herniation realistic``). Per
level, around the ground-truth disc centre (the phantom's disc mask, as
:func:`models.train_data.disc_centers` finds it for the grader), ``copies`` sets of the
three crops (:func:`models.herniation.level_request`; the first unjittered, the others
moved by up to 2.5 mm). The crops of a dataset are cached in
``<out>/crops/<name>-<hash>.npz`` (float16) so a second run skips reading the DICOM files.

Datasets given with ``--enriched`` (phantoms made with a ``--grade-config`` that raises the
rare classes: HIZ, extrusions, foraminal positions) are trained on like the others, but
the calibration follows the label frequencies of the plain ones: the validation studies
are reweighted to those frequencies (label shift) and a bias per class is fitted beside
the temperature (:func:`fit_calibration`).

Training: weighted cross-entropy of the three heads (``position`` only on protrusions
and extrusions), online augmentation (intensity, gamma, noise, small shifts, a joint
left-right mirror that swaps the position labels, the axial crop dropped at random),
early stopping on the validation loss, then the calibration on the held-out validation
studies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models import rsna
from models.detector import normalized_pixels
from models.herniation import (
    AX_FOV_MM,
    AX_HALF_SLICES,
    CHECKPOINT_FORMAT,
    CROP_PX,
    DEFAULT_OFFSETS,
    FOCAL_TYPES,
    HEAD_CLASSES,
    HEAD_ORDER,
    HERNIATION_POSITIONS,
    HERNIATION_TYPES,
    HIZ_FOV_MM,
    HIZ_HALF_SLICES,
    HIZ_PX,
    MIRROR_POSITION,
    SAG_FOV_MM,
    SAG_HALF_SLICES,
    HerniaNet,
    HerniationCheckpoint,
    calibrated,
    empty_axial,
    level_request,
    n_parameters,
)
from models.levels import spine_axes
from models.metrics import accuracy, cohen_kappa, confusion_matrix, macro_f1
from models.registry import Registry
from models.train_config import TrainConfig, progress_bar
from models.train_data import disc_centers, is_validation, primary_series
from models.types import levels_of
from models.volume import load_volume, read_series_dir, volumes_from_datasets

logger = logging.getLogger(__name__)

HERNIATION_NAME = "spinenode-herniation"
JITTER_MM = 2.5
#: Loss weight of each head, and of the HIZ-present class (HIZ is rare: 3-15 % of discs).
HEAD_WEIGHTS = {"type": 1.0, "position": 1.0, "hiz": 1.5}
HIZ_CLASS_WEIGHTS = (1.0, 2.0)
AXIAL_DROPOUT = 0.1


@dataclass
class HerniationCrops:
    """``sag`` (N, 5, 64, 64), ``ax`` (N, 3, 64, 64) and ``hz`` (N, 3, 48, 48) float16,
    ``has_ax`` (N,) bool, ``y`` (N, 3) int (type, position or -1, hiz), ``study`` (N,),
    ``enriched`` (N,) bool (from a dataset made with enriched label frequencies)."""

    sag: np.ndarray
    ax: np.ndarray
    hz: np.ndarray
    has_ax: np.ndarray
    y: np.ndarray
    study: np.ndarray
    enriched: np.ndarray

    FIELDS = ("sag", "ax", "hz", "has_ax", "y", "study", "enriched")

    @classmethod
    def empty(cls) -> HerniationCrops:
        return cls(np.zeros((0, 2 * SAG_HALF_SLICES + 1, CROP_PX, CROP_PX), np.float16),
                   np.zeros((0, 2 * AX_HALF_SLICES + 1, CROP_PX, CROP_PX), np.float16),
                   np.zeros((0, 2 * HIZ_HALF_SLICES + 1, HIZ_PX, HIZ_PX), np.float16),
                   np.zeros(0, bool), np.zeros((0, 3), np.int64), np.zeros(0, np.int64), np.zeros(0, bool))

    @classmethod
    def concat(cls, parts: Sequence[HerniationCrops]) -> HerniationCrops:
        parts = [p for p in parts if len(p.y)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS))

    def subset(self, mask: np.ndarray) -> HerniationCrops:
        return HerniationCrops(*(getattr(self, f)[mask] for f in self.FIELDS))

    def save(self, path: Path) -> None:
        np.savez(path, **{f: getattr(self, f) for f in self.FIELDS})

    @classmethod
    def load(cls, path: Path) -> HerniationCrops:
        with np.load(path) as d:
            return cls(*(d[f] for f in cls.FIELDS))


def labels_of(h: rsna.HerniationLabel) -> tuple[int, int, int]:
    """(type, position or -1 when the type has no position, hiz) class indices."""
    pos = HERNIATION_POSITIONS.index(h.position) if h.herniation in FOCAL_TYPES and h.position else -1
    return HERNIATION_TYPES.index(h.herniation), pos, int(h.hiz)


def study_crops(ds: rsna.RsnaDataset, hern: dict[tuple[int, str], rsna.HerniationLabel], study_id: int,
                copies: int, seed: int, enriched: bool = False) -> HerniationCrops:
    """The crops of one lumbar MR study (empty when it has no sagittal T2 or no herniation truth)."""
    series = primary_series(ds, study_id)
    if series is None or series.series_description != rsna.SAGITTAL_T2_STIR:
        return HerniationCrops.empty()
    rng = np.random.default_rng(seed * 1_000_003 + study_id)
    vol = load_volume(ds.series_dir(study_id, series.series_id))
    pix = normalized_pixels(vol)
    centers = disc_centers(ds, study_id, vol, series)
    ax = ds.series_of(study_id, rsna.AXIAL_T2)
    stacks = volumes_from_datasets(read_series_dir(ds.series_dir(study_id, ax[0].series_id))) if ax else []
    stack_pix = [normalized_pixels(v) for v in stacks]
    axes = spine_axes(centers, levels_of("lumbar"))
    sags, axs, hzs, has, ys = [], [], [], [], []
    for name, c in centers.items():
        truth = hern.get((study_id, name.replace("-", "/")))
        if truth is None:
            continue
        for a in range(copies):
            cc = c if a == 0 else c + rng.uniform(-JITTER_MM, JITTER_MM, 3)
            req = level_request(vol, pix, stacks, stack_pix, cc, axes.get(name), DEFAULT_OFFSETS)
            sags.append(req.sagittal.astype(np.float16))
            hzs.append(req.hiz.astype(np.float16))
            has.append(req.axial is not None)
            axs.append((req.axial if req.axial is not None else empty_axial()).astype(np.float16))
            ys.append(labels_of(truth))
    if not ys:
        return HerniationCrops.empty()
    return HerniationCrops(np.stack(sags), np.stack(axs), np.stack(hzs), np.asarray(has), np.asarray(ys, np.int64),
                           np.full(len(ys), study_id, np.int64), np.full(len(ys), enriched))


def dataset_crops(root: Path, copies: int, seed: int, max_studies: int | None, cache_dir: Path,
                  enriched: bool = False) -> HerniationCrops:
    """The crops of one dataset, from the cache when the same (dataset, copies, seed) was read before."""
    ds = rsna.read_dataset(root)
    hern = rsna.read_herniation(root)
    if not hern:
        raise ValueError(f"{root}: no phantom_herniation.csv (make phantoms with --herniation realistic)")
    ids = [s for s in ds.study_ids if any(k[0] == s for k in hern)]
    ids = ids[:max_studies] if max_studies else ids
    geometry = (CHECKPOINT_FORMAT, DEFAULT_OFFSETS, CROP_PX, SAG_FOV_MM, SAG_HALF_SLICES, AX_FOV_MM, AX_HALF_SLICES,
                HIZ_PX, HIZ_FOV_MM, HIZ_HALF_SLICES, JITTER_MM, enriched)
    key = hashlib.sha256(f"{Path(root).resolve()}|{ids}|{copies}|{seed}|{geometry}".encode()).hexdigest()[:12]
    cache = cache_dir / f"{Path(root).name}-{key}.npz"
    if cache.exists():
        logger.info("herniation crops of %s from %s", root, cache)
        return HerniationCrops.load(cache)
    parts: list[HerniationCrops] = []
    with progress_bar() as prog:
        task = prog.add_task(f"herniation crops {Path(root).name}", total=len(ids))
        for sid in ids:
            try:
                parts.append(study_crops(ds, hern, sid, copies, seed, enriched))
            except Exception as exc:  # noqa: BLE001 - one unreadable study must not stop training
                logger.warning("study %s: herniation crops failed: %s", sid, exc)
            prog.advance(task)
    crops = HerniationCrops.concat(parts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    crops.save(cache)
    return crops


# ---------------------------------------------------------------------------- training


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Intensity scale, gamma and noise, and a small in-plane shift (up to 2 px)."""
    b = x.shape[0]
    scale = 0.85 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen)
    gamma = torch.exp(0.2 * torch.randn(b, 1, 1, 1, generator=gen))
    x = x.clamp(0, 1) ** gamma * scale
    x = x + 0.03 * torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@dataclass
class _Batch:
    sag: torch.Tensor
    ax: torch.Tensor
    has: torch.Tensor
    hz: torch.Tensor
    y: torch.Tensor

    def logits(self, net: HerniaNet) -> dict[str, torch.Tensor]:
        return net(self.sag, self.ax, self.has, self.hz)


def _batch(data: HerniationCrops, idx: np.ndarray, gen: torch.Generator | None) -> _Batch:
    sag = torch.from_numpy(data.sag[idx].astype(np.float32))
    ax = torch.from_numpy(data.ax[idx].astype(np.float32))
    hz = torch.from_numpy(data.hz[idx].astype(np.float32))
    has = torch.from_numpy(data.has_ax[idx].astype(np.float32))
    y = torch.from_numpy(data.y[idx].copy())
    if gen is not None:
        sag, ax, hz = _augment(sag, gen), _augment(ax, gen), _augment(hz, gen)
        mirror = torch.rand(len(idx), generator=gen) < 0.5  # joint left-right mirror
        sag = torch.where(mirror[:, None, None, None], sag.flip(1), sag)
        hz = torch.where(mirror[:, None, None, None], hz.flip(1), hz)
        ax = torch.where(mirror[:, None, None, None], ax.flip(3), ax)
        swapped = torch.tensor(MIRROR_POSITION)[y[:, 1].clamp(min=0)]
        y[:, 1] = torch.where(mirror & (y[:, 1] >= 0), swapped, y[:, 1])
        drop = torch.rand(len(idx), generator=gen) < AXIAL_DROPOUT
        has = torch.where(drop, torch.zeros_like(has), has)
    ax = ax * has[:, None, None, None]
    return _Batch(sag, ax, has, hz, y)


def _head_targets(y: torch.Tensor, has: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """head -> (rows that count, targets): position needs a focal herniation and an axial crop."""
    return {"type": (torch.ones(len(y), dtype=torch.bool), y[:, 0]),
            "position": ((y[:, 1] >= 0) & (has > 0), y[:, 1]),
            "hiz": (torch.ones(len(y), dtype=torch.bool), y[:, 2])}


def _loss(logits: dict[str, torch.Tensor], y: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(())
    hiz_w = torch.tensor(HIZ_CLASS_WEIGHTS)
    for h, (sel, t) in _head_targets(y, has).items():
        if sel.any():
            total = total + HEAD_WEIGHTS[h] * F.cross_entropy(logits[h][sel], t[sel],
                                                              weight=hiz_w if h == "hiz" else None)
    return total


@torch.inference_mode()
def _logits(net: HerniaNet, data: HerniationCrops, batch: int = 256) -> dict[str, np.ndarray]:
    net.eval()
    out: dict[str, list[np.ndarray]] = {h: [] for h in HEAD_ORDER}
    for s in range(0, len(data.y), batch):
        for h, v in _batch(data, np.arange(s, min(s + batch, len(data.y))), None).logits(net).items():
            out[h].append(v.numpy())
    return {h: np.concatenate(v) if v else np.zeros((0, len(HEAD_CLASSES[h]))) for h, v in out.items()}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


Calibration = tuple[dict[str, float], dict[str, tuple[float, ...]]]  # temperatures, biases per head


def _calibrated_probs(logits: np.ndarray, head: str, cal: Calibration) -> np.ndarray:
    bias = cal[1].get(head)
    z = calibrated(torch.from_numpy(logits), cal[0].get(head, 1.0), torch.tensor(bias) if bias else None)
    return F.softmax(z.double(), dim=1).numpy()


def head_report(logits: dict[str, np.ndarray], data: HerniationCrops, cal: Calibration) -> dict[str, Any]:
    y, has = torch.from_numpy(data.y), torch.from_numpy(data.has_ax.astype(np.float32))
    rep: dict[str, Any] = {}
    for h, (sel, t) in _head_targets(y, has).items():
        m = sel.numpy()
        if not m.any():
            continue
        truth = t.numpy()[m]
        pred = _calibrated_probs(logits[h][m], h, cal).argmax(1)
        n = len(HEAD_CLASSES[h])
        rep[h] = {"n": int(m.sum()), "accuracy": accuracy(truth, pred), "macro_f1": macro_f1(truth, pred, n),
                  "kappa_linear": cohen_kappa(truth, pred, n),
                  "confusion": confusion_matrix(truth, pred, n).tolist()}
    return rep


def label_priors(data: HerniationCrops) -> dict[str, np.ndarray] | None:
    """Per head, the label frequencies of the crops from datasets not enriched (the population
    the probabilities must be calibrated to); None when no dataset is enriched."""
    if not data.enriched.any() or data.enriched.all():
        return None
    ref = data.subset(~data.enriched)
    y, has = torch.from_numpy(ref.y), torch.from_numpy(ref.has_ax.astype(np.float32))
    out: dict[str, np.ndarray] = {}
    for h, (sel, t) in _head_targets(y, has).items():
        counts = np.bincount(t.numpy()[sel.numpy()], minlength=len(HEAD_CLASSES[h])).astype(float)
        out[h] = counts / max(counts.sum(), 1.0)
    return out


def prior_weights(labels: np.ndarray, prior: np.ndarray, n: int) -> np.ndarray:
    """Importance weights that give ``labels`` the class frequencies ``prior`` (label shift)."""
    have = np.bincount(labels, minlength=n).astype(float) / max(len(labels), 1)
    ratio = np.divide(prior, have, out=np.zeros(n), where=have > 0)
    return ratio[labels]


def fit_calibration(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                    with_bias: bool) -> tuple[float, tuple[float, ...] | None]:
    """Temperature (and, ``with_bias``, one bias per class) minimising the weighted NLL of
    ``softmax(logits / T + b)``: the bias moves the probabilities from the training set's
    label frequencies to those the weights stand for. L-BFGS, deterministic."""
    if len(labels) == 0 or weights.sum() <= 0:
        return 1.0, None
    lg = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    w = torch.as_tensor(weights, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(lg.shape[1], dtype=torch.float64, requires_grad=with_bias)
    params = [log_t, bias] if with_bias else [log_t]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        lp = F.log_softmax(lg / log_t.exp() + bias, dim=1)
        loss = -(w * lp[torch.arange(len(y)), y]).sum() / w.sum() + 1e-3 * (bias ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    t = float(np.clip(np.exp(float(log_t.detach())), 0.05, 20.0))
    return t, (tuple(float(v) for v in bias.detach()) if with_bias else None)


def fit(train: HerniationCrops, val: HerniationCrops, cfg: TrainConfig,
        priors: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], HerniationCheckpoint]:
    """Train, keep the epoch with the lowest validation loss, calibrate on ``val`` (reweighted
    to ``priors``, the population's label frequencies, when training saw enriched data)."""
    torch.manual_seed(cfg.seed)
    net = HerniaNet()
    batch = cfg.batch or 64
    steps = max(1, int(np.ceil(len(train.y) / batch)))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
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
            idx = order[s:s + batch]
            if len(idx) < 2:
                continue
            bt = _batch(train, idx, gen)
            loss = _loss(bt.logits(net), bt.y, bt.has)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        vl = _logits(net, val)
        yv, hv = torch.from_numpy(val.y), torch.from_numpy(val.has_ax.astype(np.float32))
        val_loss = float(_loss({h: torch.from_numpy(v) for h, v in vl.items()}, yv, hv)) if len(val.y) else float("nan")
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_loss": val_loss})
        if best is None or not val_loss >= best[0]:
            best = (val_loss, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
        logger.info("herniation epoch %d/%d: train loss %.4f, validation loss %.4f, %.0f s", epoch + 1, cfg.epochs,
                    total / max(n, 1), val_loss, time.perf_counter() - t0)
    if best is not None and len(val.y):
        net.load_state_dict(best[2])
    vl = _logits(net, val)
    temps: dict[str, float] = {}
    biases: dict[str, tuple[float, ...]] = {}
    y, has = torch.from_numpy(val.y), torch.from_numpy(val.has_ax.astype(np.float32))
    for h, (sel, t) in _head_targets(y, has).items():
        m = sel.numpy()
        labels = t.numpy()[m]
        w = (prior_weights(labels, priors[h], len(HEAD_CLASSES[h])) if priors is not None
             else np.ones(len(labels)))
        temp, bias = fit_calibration(vl[h][m], labels, w, with_bias=priors is not None)
        temps[h] = temp
        if bias is not None:
            biases[h] = bias
    cal = (temps, biases)
    reference = val.subset(~val.enriched) if priors is not None else val
    vr = _logits(net, reference)
    report = {"epochs": cfg.epochs, "seed": cfg.seed, "parameters": n_parameters(net),
              "train_seconds": round(time.perf_counter() - t0, 1),
              "best_epoch": best[1] if best is not None else cfg.epochs, "history": history,
              "temperatures": temps, "biases": biases,
              "priors": {h: [round(float(v), 4) for v in p] for h, p in priors.items()} if priors else None,
              "val_uncalibrated": head_report(vl, val, ({}, {})), "val": head_report(vl, val, cal),
              "val_population": head_report(vr, reference, cal)}
    sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    ckpt = HerniationCheckpoint(sd, net.widths, net.hidden, temps, dict(DEFAULT_OFFSETS),
                                {"epochs": cfg.epochs, "seed": cfg.seed}, net.hiz_widths, biases)
    return report, ckpt


#: Intra-op threads while training. Measured on this project's shared 2-core machine at load
#: 12: a batch of 64 took 0.10 s CPU and 1.2 s wall on one thread, 1.0 s CPU and 8 s wall on
#: two (OpenMP threads spin waiting for each other when the cores are oversubscribed).
TRAIN_THREADS = 1


def train_herniation(cfg: TrainConfig) -> dict[str, Any]:
    """Crops (cached), training, calibration; weights registered in ``<out>/weights``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train_herniation(cfg)
    finally:
        torch.set_num_threads(threads)


def _train_herniation(cfg: TrainConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    enriched = {Path(d).resolve() for d in cfg.enriched}
    crops = HerniationCrops.concat([dataset_crops(Path(d), cfg.copies, cfg.seed, cfg.max_studies, cfg.out / "crops",
                                                  Path(d).resolve() in enriched) for d in cfg.data])
    if len(crops.y) == 0:
        raise ValueError(f"no herniation training crops could be made from {[str(d) for d in cfg.data]}")
    val = np.array([is_validation(int(s), cfg.seed, cfg.val_fraction) for s in crops.study])
    if not val.any() or val.all():  # tiny sets: every fifth crop
        val = np.zeros(len(crops.y), bool)
        val[::5] = True
    # the validation split is scored on unjittered crops only (the first copy of each level)
    first = np.ones(len(crops.y), bool)
    if cfg.copies > 1:
        first[np.arange(len(crops.y)) % cfg.copies != 0] = False
    priors = label_priors(crops.subset(first))
    report, ckpt = fit(crops.subset(~val), crops.subset(val & first), cfg, priors)
    path = cfg.out / "herniation.pt"
    ckpt.save(path)
    meta = {"epochs": cfg.epochs, "seed": cfg.seed, "copies": cfg.copies, "parameters": report["parameters"],
            "data": [str(d) for d in cfg.data], "enriched": [str(d) for d in cfg.enriched],
            "train_seconds": report["train_seconds"]}
    entry = Registry(cfg.out / "weights").register(path, HERNIATION_NAME, cfg.version, "herniation",
                                                   file="herniation.pt", meta=meta)
    report.update({"kind": "herniation", "studies": len(np.unique(crops.study)),
                   "crops_train": int((~val).sum()), "crops_val": int((val & first).sum()),
                   "sha256": entry.sha256, "seconds": round(time.perf_counter() - t0, 1)})
    (cfg.out / "herniation_metrics.json").write_text(json.dumps(report, indent=2))
    return report

