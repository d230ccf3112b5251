"""The grader's training loop: weighted cross-entropy per head (1/2/4), calibration, reports."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.grader import HEADS, GradeNet, GraderCheckpoint, class_weights, fit_temperature, n_parameters
from models.metrics import accuracy, cohen_kappa, confusion_matrix, macro_f1, weighted_log_loss
from models.train_config import TrainConfig, progress_bar
from models.train_data import HEAD_ORDER, CropSet

logger = logging.getLogger(__name__)

#: Online geometric augmentation: rotation (degrees), scale, shift (fraction of the field of view).
AUG_ROTATE_DEG = 8.0
AUG_SCALE = 0.08
AUG_SHIFT = 0.04


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small in-plane rotation/scale/shift, intensity, gamma, noise and slice-order augmentation.

    No mirroring: axial crops are in one canonical orientation (lateral to the
    right, :func:`models.grader.canonical_side`) and a mirror would break it.
    """
    b = x.shape[0]
    dev = x.device

    def uniform(scale: float) -> torch.Tensor:
        return (2.0 * torch.rand(b, generator=gen, device=dev) - 1.0) * scale

    angle = torch.deg2rad(uniform(AUG_ROTATE_DEG))
    zoom = 1.0 + uniform(AUG_SCALE)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = torch.cos(angle) * zoom
    theta[:, 0, 1] = -torch.sin(angle) * zoom
    theta[:, 1, 0] = torch.sin(angle) * zoom
    theta[:, 1, 1] = torch.cos(angle) * zoom
    theta[:, 0, 2] = uniform(2.0 * AUG_SHIFT)
    theta[:, 1, 2] = uniform(2.0 * AUG_SHIFT)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    scale = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen, device=dev)
    gamma = torch.exp(0.25 * torch.randn(b, 1, 1, 1, generator=gen, device=dev))
    x = x.clamp(0, 1) ** gamma * scale
    x = x + 0.03 * torch.randn(x.shape, generator=gen, device=dev) * torch.rand(b, 1, 1, 1, generator=gen, device=dev)
    flip_slices = torch.rand(b, generator=gen, device=dev) < 0.5
    return torch.where(flip_slices[:, None, None, None], x.flip(1), x)


def _loss(logits: dict[str, torch.Tensor], y: torch.Tensor, cw: dict[str, torch.Tensor]) -> torch.Tensor:
    total = torch.zeros((), device=y.device)
    for hi, h in enumerate(HEAD_ORDER):
        sel = y[:, hi] >= 0
        if sel.any():
            total = total + F.cross_entropy(logits[h][sel], y[sel, hi], weight=cw[h])
    return total


@torch.inference_mode()
def _logits(net: GradeNet, data: CropSet, device: torch.device, batch: int = 512) -> dict[str, np.ndarray]:
    net.eval()
    out: dict[str, list[np.ndarray]] = {h: [] for h in HEAD_ORDER}
    for s in range(0, len(data.kind), batch):
        x = torch.from_numpy(data.x[s:s + batch].astype(np.float32)).to(device)
        k = torch.from_numpy(data.kind[s:s + batch]).to(device)
        lg = net(x, k)
        for h in HEAD_ORDER:
            out[h].append(lg[h].float().cpu().numpy())
    return {h: (np.concatenate(v) if v else np.zeros((0, HEADS[h]))) for h, v in out.items()}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def head_report(logits: dict[str, np.ndarray], y: np.ndarray, temps: dict[str, float]) -> dict[str, Any]:
    rep: dict[str, Any] = {}
    for hi, h in enumerate(HEAD_ORDER):
        sel = y[:, hi] >= 0
        if not sel.any():
            continue
        t = y[sel, hi]
        p = _softmax(logits[h][sel] / temps.get(h, 1.0))
        pred = p.argmax(1)
        w = np.asarray(class_weights(h))[t]
        rep[h] = {"n": int(sel.sum()), "accuracy": accuracy(t, pred),
                  "kappa_linear": cohen_kappa(t, pred, HEADS[h]), "macro_f1": macro_f1(t, pred, HEADS[h]),
                  "weighted_log_loss": weighted_log_loss(t, p, w),
                  "confusion": confusion_matrix(t, pred, HEADS[h]).tolist()}
    return rep


def fit_grader(train: CropSet, val: CropSet, cfg: TrainConfig,
               offsets: dict[str, list[float]]) -> tuple[dict[str, Any], GraderCheckpoint]:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = torch.device("cuda" if cfg.device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    net = GradeNet().to(device)
    cw = {h: torch.tensor(class_weights(h), dtype=torch.float32, device=device) for h in HEAD_ORDER}
    batch = cfg.batch or 128
    steps_per_epoch = max(1, int(np.ceil(len(train.kind) / batch)))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x_all = torch.from_numpy(train.x).to(device)  # float16 on the device
    k_all = torch.from_numpy(train.kind).to(device)
    y_all = torch.from_numpy(train.y).to(device)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # early stopping on val loss
    t0 = time.perf_counter()
    with progress_bar() as prog:
        task = prog.add_task("grader epochs", total=cfg.epochs)
        for epoch in range(cfg.epochs):
            net.train()
            order = torch.from_numpy(rng.permutation(len(train.kind))).to(device)
            total, n = 0.0, 0
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                x = _augment(x_all[idx].float(), gen)
                loss = _loss(net(x, k_all[idx]), y_all[idx], cw)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
                n += len(idx)
            vl = _logits(net, val, device)
            vy = torch.from_numpy(val.y)
            with torch.no_grad():
                val_loss = float(_loss({h: torch.from_numpy(v) for h, v in vl.items()}, vy,
                                       {h: c.cpu() for h, c in cw.items()})) if len(val.kind) else float("nan")
            history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_loss": val_loss})
            if best is None or not val_loss >= best[0]:
                best = (val_loss, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
            prog.update(task, advance=1, description=f"grader epochs (val loss {val_loss:.3f})")
            # rich draws nothing until the end when stdout is not a terminal: a log line per epoch
            logger.info("grader epoch %d/%d: train loss %.4f, validation loss %.4f, %.0f s", epoch + 1,
                        cfg.epochs, total / max(n, 1), val_loss, time.perf_counter() - t0)
    if best is not None and len(val.kind):
        net.load_state_dict(best[2])
    vl = _logits(net, val, device)
    temps: dict[str, float] = {}
    for hi, h in enumerate(HEAD_ORDER):
        sel = val.y[:, hi] >= 0
        t = val.y[sel, hi]
        temps[h] = fit_temperature(vl[h][sel], t, np.asarray(class_weights(h))[t]) if sel.any() else 1.0
    report = {"epochs": cfg.epochs, "seed": cfg.seed, "parameters": n_parameters(net),
              "device": str(device), "train_seconds": round(time.perf_counter() - t0, 1),
              "best_epoch": best[1] if best is not None else cfg.epochs,
              "history": history, "temperatures": temps,
              "val_uncalibrated": head_report(vl, val.y, {}), "val": head_report(vl, val.y, temps)}
    sd = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    ckpt = GraderCheckpoint(sd, net.widths, temps,
                            {k: tuple(v) for k, v in offsets.items()},  # type: ignore[misc]
                            {"epochs": cfg.epochs, "seed": cfg.seed})
    _plots(cfg.out, history, report["val"])
    return report, ckpt


def _plots(out: Path, history: list[dict[str, float]], val: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], label="train")
    ax.plot([h["epoch"] for h in history], [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted cross-entropy (sum of heads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "grader_curves.png", dpi=100)
    plt.close(fig)
    heads = [h for h in HEAD_ORDER if h in val]
    if not heads:
        return
    fig, axes = plt.subplots(1, len(heads), figsize=(3.2 * len(heads), 3.2))
    axes = np.atleast_1d(axes)
    for ax, h in zip(axes, heads):
        m = np.asarray(val[h]["confusion"])
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_title(f"{h}\nκ={val[h]['kappa_linear']:.2f}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out / "grader_confusion.png", dpi=100)
    plt.close(fig)
