"""The grading network: a compact residual CNN on 2.5D crops with one head per task.

One backbone (about 2.8 M parameters, in the spirit of the seed paper's
DeepScoreNet) reads a crop of ``2 * HALF_SLICES + 1`` neighbouring slices
around a level; each crop kind feeds its own heads:

================  ======================  ==========================================
crop kind         series                  heads
================  ======================  ==========================================
``sag_t2``        lumbar sagittal T2/STIR ``spinal_canal`` (3), ``pfirrmann`` (5)
``sag_c``,        cervical sagittal T2,   ``cervical_canal`` (3)
``sag_ct``        cervical sagittal CT
``sag_t1``        sagittal T1, one crop   ``foraminal`` (3), left and right alike
                  per side (parasagittal)
``axial_t2``      axial T2                ``left_subarticular`` (3), ``right_subarticular`` (3)
================  ======================  ==========================================

Probabilities are calibrated by one temperature per head, fitted on the
validation split after training (:func:`fit_temperature`). Tensors stay in
this module: :class:`Grader` takes numpy crops and returns :class:`~models.types.Grade`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.types import Condition, Grade, ModelId, ModelsError

logger = logging.getLogger(__name__)

HALF_SLICES = 2
CROP_PX = 64
#: Field of view of each crop kind, mm.
CROP_FOV_MM: Mapping[str, float] = {
    "sag_t2": 64.0,  # lumbar sagittal T2/STIR, centred on the disc
    "sag_t1": 48.0,  # lumbar sagittal T1, centred on a foramen
    "axial_t2": 40.0,  # lumbar axial T2, centred between the subarticular recesses
    "sag_c": 40.0,  # cervical sagittal T2 (MR), centred on the disc
    "sag_ct": 40.0,  # cervical sagittal CT reformat, centred on the disc
}

#: head -> number of classes
HEADS: Mapping[str, int] = {
    "spinal_canal": 3, "pfirrmann": 5, "cervical_canal": 3,
    "foraminal": 3, "left_subarticular": 3, "right_subarticular": 3,
}
#: head -> the crop kind it reads
HEAD_KIND: Mapping[str, str] = {
    "spinal_canal": "sag_t2", "pfirrmann": "sag_t2", "cervical_canal": "sag_c|sag_ct",
    "foraminal": "sag_t1", "left_subarticular": "axial_t2", "right_subarticular": "axial_t2",
}
#: Loss weight per true class of the severity heads (the RSNA metric's 1/2/4).
SEVERITY_CLASS_WEIGHTS = (1.0, 2.0, 4.0)


def class_weights(head: str) -> tuple[float, ...]:
    return SEVERITY_CLASS_WEIGHTS if HEADS[head] == 3 else (1.0,) * HEADS[head]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x))


class GradeNet(nn.Module):
    """Residual CNN backbone + a linear head per task (see the module docstring)."""

    def __init__(self, in_channels: int = 2 * HALF_SLICES + 1,
                 widths: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.widths = tuple(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            layers += [_Block(cin, w, 1 if i == 0 else 2), _Block(w, w, 1)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.kind_embed = nn.Embedding(len(CROP_FOV_MM), cin)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({h: nn.Linear(cin, n) for h, n in HEADS.items()})

    def features(self, x: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        f = F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1)
        return self.dropout(f + self.kind_embed(kind))

    def forward(self, x: torch.Tensor, kind: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x, kind)
        return {h: head(f) for h, head in self.heads.items()}


KIND_INDEX: Mapping[str, int] = {k: i for i, k in enumerate(CROP_FOV_MM)}


def sagittal_kind(region: str, modality: str) -> str:
    """Crop kind of the sagittal canal crop: ``sag_t2`` (lumbar MR), ``sag_c`` (cervical MR), ``sag_ct``."""
    if modality == "CT":
        return "sag_ct"
    return "sag_c" if region == "cervical" else "sag_t2"


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Temperature T minimising the (weighted) NLL of ``softmax(logits / T)``.

    A 1-D search over log T (golden section on [0.05, 20]); deterministic and
    needs no gradient. Returns 1.0 for empty input.
    """
    if len(labels) == 0:
        return 1.0
    lg = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    w = torch.ones(len(y), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def nll(log_t: float) -> float:
        lp = F.log_softmax(lg / float(np.exp(log_t)), dim=1)
        return float(-(w * lp[torch.arange(len(y)), y]).sum() / w.sum())

    a, b = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2))


@dataclass(frozen=True)
class GraderCheckpoint:
    """What a grader weights file holds (loaded with ``weights_only=True``)."""

    state_dict: Mapping[str, torch.Tensor]
    widths: tuple[int, ...]
    temperatures: Mapping[str, float]
    #: learned offsets (mm, patient LPS) from the disc centre to the crop centres:
    #: "left"/"right" foramen (sagittal T1), "recess" (axial, midway between the subarticular zones)
    crop_offsets: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def save(self, path: Path, half: bool = True) -> None:
        sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.state_dict.items()}
        torch.save(
            {"state_dict": sd, "widths": list(self.widths), "temperatures": dict(self.temperatures),
             "crop_offsets": {k: list(v) for k, v in self.crop_offsets.items()},
             "meta": dict(self.meta)},
            path,
        )

    @classmethod
    def load(cls, path: Path) -> GraderCheckpoint:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            state_dict={k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()},
            widths=tuple(int(w) for w in d["widths"]),
            temperatures={k: float(v) for k, v in d["temperatures"].items()},
            crop_offsets={k: tuple(float(x) for x in v) for k, v in d.get("crop_offsets", {}).items()},  # type: ignore[misc]
            meta=dict(d.get("meta", {})),
        )


#: head -> the Condition it reports (foraminal is reported per side by the analyzer)
HEAD_CONDITION: Mapping[str, Condition] = {
    "spinal_canal": Condition.SPINAL_CANAL_STENOSIS,
    "cervical_canal": Condition.SPINAL_CANAL_STENOSIS,
    "pfirrmann": Condition.PFIRRMANN,
    "left_subarticular": Condition.LEFT_SUBARTICULAR_STENOSIS,
    "right_subarticular": Condition.RIGHT_SUBARTICULAR_STENOSIS,
}


@dataclass(frozen=True, slots=True)
class CropRequest:
    """One crop to grade with some heads."""

    kind: str
    crop: np.ndarray  # (C, H, W) float32
    heads: tuple[str, ...]


class GraderError(ModelsError):
    """The grader cannot run."""


class Grader:
    """Loaded grading network; one instance per process (or per thread)."""

    def __init__(self, checkpoint: GraderCheckpoint, model_id: ModelId, device: str = "cpu",
                 tta: bool = True) -> None:
        self.model_id = model_id
        self.tta = tta
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.net = GradeNet(widths=checkpoint.widths)
        self.net.load_state_dict(dict(checkpoint.state_dict))
        self.net.to(self.device).eval()
        self.temperatures = dict(checkpoint.temperatures)

    @classmethod
    def from_file(cls, path: Path, model_id: ModelId, device: str = "cpu", tta: bool = True) -> Grader:
        return cls(GraderCheckpoint.load(path), model_id, device, tta)

    @torch.inference_mode()
    def probabilities(self, requests: Sequence[CropRequest], batch_size: int = 64) -> list[dict[str, np.ndarray]]:
        """Calibrated probabilities per request and head, in one batched pass per chunk."""
        out: list[dict[str, np.ndarray]] = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start:start + batch_size]
            if not chunk:
                continue
            x = torch.from_numpy(np.stack([r.crop for r in chunk]).astype(np.float32)).to(self.device)
            kind = torch.tensor([KIND_INDEX[r.kind] for r in chunk], device=self.device)
            probs = self._probs(x, kind)
            if self.tta:
                # the view seen in training augmentation: slice order reversed, and axial
                # crops mirrored left-right with the left/right heads swapped back
                axial = kind == KIND_INDEX["axial_t2"]
                xf = x.flip(1)
                xf = torch.where(axial[:, None, None, None], xf.flip(3), xf)
                pf = self._probs(xf, kind)
                ax = axial.cpu().numpy()[:, None]
                pl, pr = pf["left_subarticular"], pf["right_subarticular"]
                pf["left_subarticular"] = np.where(ax, pr, pl)
                pf["right_subarticular"] = np.where(ax, pl, pr)
                probs = {h: (probs[h] + pf[h]) / 2.0 for h in probs}
            for i, r in enumerate(chunk):
                out.append({h: probs[h][i].astype(np.float64) for h in r.heads})
        return out

    def _probs(self, x: torch.Tensor, kind: torch.Tensor) -> dict[str, np.ndarray]:
        logits = self.net(x, kind)
        return {h: F.softmax(lg / self.temperatures.get(h, 1.0), dim=1).cpu().numpy()
                for h, lg in logits.items()}


def grade_from(head: str, probs: np.ndarray, condition: Condition | None = None) -> Grade:
    """A Grade for a head's probability vector (``condition`` overrides, for the foramina)."""
    cond = condition or HEAD_CONDITION[head]
    p = np.clip(probs.astype(np.float64), 0.0, 1.0)
    p = p / p.sum()
    return Grade(cond, tuple(float(v) for v in p))
