"""The grading network: a compact residual CNN on 2.5D crops with one head per task.

One backbone (about 1.6 M parameters, a narrower cousin of the seed paper's
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
``axial_t2``      axial T2, one crop per  ``subarticular`` (3), left and right alike
                  side (on the recess)
================  ======================  ==========================================

Axial crops are put in one canonical orientation before grading
(:func:`canonical_side`): the lateral side of the recess on the right of the
crop, so a left and a right recess look alike and one head grades both.
CT crops are read in a fixed soft-tissue window (:data:`CT_WINDOW_HU`): a
percentile window over the whole CT volume (air to cortical bone) leaves the
dural sac, disc and ligaments within a few per cent of each other.

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
from models.detector import normalized_pixels
from models.volume import Volume, sample_crop

logger = logging.getLogger(__name__)

HALF_SLICES = 2
CROP_PX = 64
#: Field of view of each crop kind, mm.
CROP_FOV_MM: Mapping[str, float] = {
    "sag_t2": 64.0,  # lumbar sagittal T2/STIR, centred on the disc
    "sag_t1": 48.0,  # lumbar sagittal T1, centred on a foramen
    "axial_t2": 24.0,  # lumbar axial T2, centred on one subarticular recess
    "sag_c": 40.0,  # cervical sagittal T2 (MR), centred on the disc
    "sag_ct": 40.0,  # cervical sagittal CT reformat, centred on the disc
}

#: head -> number of classes
HEADS: Mapping[str, int] = {
    "spinal_canal": 3, "pfirrmann": 5, "cervical_canal": 3,
    "foraminal": 3, "subarticular": 3,
}
#: head -> the crop kind it reads
HEAD_KIND: Mapping[str, str] = {
    "spinal_canal": "sag_t2", "pfirrmann": "sag_t2", "cervical_canal": "sag_c|sag_ct",
    "foraminal": "sag_t1", "subarticular": "axial_t2",
}
#: Soft-tissue window (HU) of CT crops: CSF about 0.36, ligament 0.54, annulus 0.63, fat 0, bone 1.
CT_WINDOW_HU = (-100.0, 200.0)
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
                 widths: Sequence[int] = (24, 48, 96, 192), dropout: float = 0.3) -> None:
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


def grader_pixels(volume: Volume, modality: str, mr_pixels: np.ndarray | None = None) -> np.ndarray:
    """The pixel array crops are cut from: CT in :data:`CT_WINDOW_HU`, MR percentile-normalised.

    ``mr_pixels`` (an already normalised MR array) is returned as is, to avoid a second pass.
    """
    if modality.upper() == "CT":
        lo, hi = CT_WINDOW_HU
        return np.clip((volume.pixels - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return mr_pixels if mr_pixels is not None else normalized_pixels(volume)


#: An axial stack whose normal is within this angle (degrees) of the spine axis is
#: angled along the disc; its own plane is the disc plane.
ANGLED_STACK_MAX_DEG = 12.0


def recess_frame(volume: Volume, spine_axis: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(lateral, posterior) unit vectors of the disc plane at a level, seen from an axial stack.

    The subarticular recess lies in the disc plane, lateral and posterior of the
    disc centre. A stack angled along the disc (its normal within
    :data:`ANGLED_STACK_MAX_DEG` of the spine axis, or no axis known) gives its own
    row and column directions. Across an unangled block the disc plane is the plane
    across the spine axis (:func:`models.levels.spine_axes`): lateral is the row
    direction laid into it, posterior the direction in it on the column's side. Added
    to the disc centre, an offset in this frame lands on the recess whatever the tilt
    of the disc against the stack, and :func:`~models.volume.sample_crop` then takes the
    slice nearest the recess, not the disc centre's (on a block cutting a disc tilted by
    30 degrees, the recess 20 mm behind the centre is two slices away).
    """
    row, col = np.asarray(volume.row_dir, float), np.asarray(volume.col_dir, float)
    if spine_axis is None:
        return row, col
    axis = np.asarray(spine_axis, float) / float(np.linalg.norm(spine_axis))
    normal = np.cross(row, col)
    if abs(float(normal @ axis)) >= np.cos(np.radians(ANGLED_STACK_MAX_DEG)):
        return row, col
    lateral = row - float(row @ axis) * axis
    lateral /= float(np.linalg.norm(lateral))
    posterior = np.cross(axis, lateral)
    if float(posterior @ col) < 0.0:
        posterior = -posterior
    return lateral, posterior


def in_plane(offset: np.ndarray | Sequence[float], frame: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A stored recess offset ``(u, v, 0)`` as a patient-space vector in a :func:`recess_frame`.

    Stored in the disc's own frame, the recess offset does not depend on how the
    disc is tilted (an offset in patient coordinates would move to another slice
    when the disc is tilted more or less than the training average).
    """
    o = np.asarray(offset, dtype=float)
    return o[0] * frame[0] + o[1] * frame[1]


def plane_offset(point: np.ndarray, center: np.ndarray, frame: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The inverse of :func:`in_plane`: ``(u, v, 0)`` of ``point - center`` in ``frame``."""
    d = np.asarray(point, dtype=float) - np.asarray(center, dtype=float)
    return np.array([float(d @ frame[0]), float(d @ frame[1]), 0.0])


def recess_crop(volume: Volume, pixels: np.ndarray, center: np.ndarray | Sequence[float],
                offset: np.ndarray | Sequence[float], frame: tuple[np.ndarray, np.ndarray], side: str) -> np.ndarray:
    """The crop of one subarticular recess, ``offset`` (u, v, 0) from the disc centre in a
    :func:`recess_frame`, in the :func:`canonical_side` orientation (training and inference alike)."""
    point = np.asarray(center, dtype=float) + in_plane(offset, frame)
    crop = sample_crop(volume, pixels, point, CROP_PX, CROP_FOV_MM["axial_t2"], HALF_SLICES)
    return canonical_side(crop, side, volume.row_dir)


def canonical_side(crop: np.ndarray, side: str, row_dir: np.ndarray) -> np.ndarray:
    """An axial crop of the ``side`` recess with the patient's lateral direction to the right.

    Columns run along the image row direction; patient left is +x (LPS). The
    left recess is lateral towards +x, so its crop is mirrored when the row
    direction points to -x; the right recess the other way round.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, not {side!r}")
    towards_left = float(row_dir[0]) >= 0.0
    mirror = towards_left if side == "right" else not towards_left
    return np.ascontiguousarray(crop[:, :, ::-1]) if mirror else crop


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
    #: learned offsets (mm) from the disc centre to the crop centres: "left"/"right" foramen
    #: (sagittal T1; patient LPS), "sub_left"/"sub_right" subarticular recess (axial T2; in the
    #: disc plane: lateral, posterior, 0; see :func:`recess_frame` and :func:`in_plane`),
    #: "sag_t2"/"sag_c"/"sag_ct" sagittal canal crop (patient LPS, half way to the canal; absent: 0)
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


#: head -> the Condition it reports (foraminal and subarticular are reported per side by the analyzer)
HEAD_CONDITION: Mapping[str, Condition] = {
    "spinal_canal": Condition.SPINAL_CANAL_STENOSIS,
    "cervical_canal": Condition.SPINAL_CANAL_STENOSIS,
    "pfirrmann": Condition.PFIRRMANN,
}
#: (head, side) -> Condition of the per-side heads
SIDE_CONDITION: Mapping[tuple[str, str], Condition] = {
    ("foraminal", "left"): Condition.LEFT_NEURAL_FORAMINAL_NARROWING,
    ("foraminal", "right"): Condition.RIGHT_NEURAL_FORAMINAL_NARROWING,
    ("subarticular", "left"): Condition.LEFT_SUBARTICULAR_STENOSIS,
    ("subarticular", "right"): Condition.RIGHT_SUBARTICULAR_STENOSIS,
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
                # the view seen in training augmentation: slice order reversed
                pf = self._probs(x.flip(1), kind)
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
