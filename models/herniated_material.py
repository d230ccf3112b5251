"""The herniated-material segmenter: which pixels of a sagittal slice are herniated disc material.

The herniation model (:mod:`models.herniation`) classifies a level; it draws no pixels. This
small fully convolutional network does: per lumbar level and per sagittal slice within
:data:`MAX_LATERAL_MM` of the disc centre it reads a crop in the disc's own frame
(:func:`models.herniation.disc_frame`: end plates level, the canal on the right), centred
:data:`OFFSET_MM` behind the disc centre so that the posterior disc margin, the canal in
front of it and up to 20 mm above and below (migrated fragments) are in view, on the slice
and one either side, and returns the probability that each crop pixel is herniated disc
material. :func:`paste` lays the probabilities back onto the slice's pixel grid.

What "herniated material" means is the phantom's ground truth (:mod:`models.phantom.render`,
``Labels.herniated``): disc material of a protrusion or extrusion displaced behind the
vertebral outline, including an extruded fragment that migrated behind a vertebral body,
as the combined task force's nomenclature defines a herniation (displacement beyond the
limits of the disc space). The analyzer keeps the pixels only at levels the herniation model
calls a protrusion or an extrusion, so the SEG never shows material the SR does not report.
Trained by :mod:`models.train_herniated_material`; measured (Dice against the phantom's
truth) by ``spinenode evaluate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.herniation import disc_frame, frame_crop
from models.types import ModelId, ModelsError
from models.volume import Volume, bilinear

CROP_PX: Final = 64
FOV_MM: Final = 40.0
HALF_SLICES: Final = 1
#: Crop centre from the disc centre (mm, in the disc frame): posterior, cranial.
OFFSET_MM: Final = (16.0, 0.0)
#: Slices farther than this from the disc centre (mm) are not read: a foraminal herniation
#: lies about 20 mm from the midline.
MAX_LATERAL_MM: Final = 28.0
THRESHOLD: Final = 0.5
#: A level owns the material within this distance of its disc centre, cranially and
#: caudally (mm): a migrated fragment reaches about 19 mm, the next disc's herniation
#: begins about 35 mm away and would otherwise show at the crop's top or bottom edge.
BAND_MM: Final = 18.0
CHECKPOINT_FORMAT: Final = 1


class HerniatedMaterialError(ModelsError):
    """The herniated-material segmenter cannot run."""


@dataclass(frozen=True, slots=True)
class SliceCrop:
    """One crop: slice ``k`` of the volume, the crop centre on that slice (patient mm),
    the disc frame (posterior, caudal) and the image ``(3, 64, 64)``."""

    k: int
    center: np.ndarray
    frame: tuple[np.ndarray, np.ndarray]
    image: np.ndarray


def level_crops(volume: Volume, pixels: np.ndarray, disc_center: np.ndarray | Sequence[float],
                spine_axis: np.ndarray | None) -> list[SliceCrop]:
    """The crops of one level on every slice within :data:`MAX_LATERAL_MM` of its centre."""
    frame = disc_frame(volume, spine_axis)
    c = np.asarray(disc_center, dtype=float) + OFFSET_MM[0] * frame[0] - OFFSET_MM[1] * frame[1]
    dist = volume.plane_distances(c)  # (c - position_k) . normal
    normal = np.asarray(volume.normal, dtype=float)
    out = []
    for k in np.nonzero(np.abs(dist) <= MAX_LATERAL_MM)[0]:
        ck = c - float(dist[k]) * normal  # the crop centre moved onto slice k
        out.append(SliceCrop(int(k), ck, frame, frame_crop(volume, pixels, ck, frame, CROP_PX, FOV_MM, HALF_SLICES)))
    return out


def band() -> np.ndarray:
    """The crop rows a level owns (``(64, 1)`` bool, :data:`BAND_MM`)."""
    v = np.linspace(-FOV_MM / 2.0, FOV_MM / 2.0, CROP_PX) + OFFSET_MM[1]
    return (np.abs(v) <= BAND_MM)[:, None]


def truth_crop(volume: Volume, mask: np.ndarray, crop: SliceCrop) -> np.ndarray:
    """A bool mask on the volume's grid ``(n, rows, cols)`` cut as ``crop`` (slice ``crop.k``),
    within the level's :func:`band`."""
    one = frame_crop(volume, mask.astype(np.float32), crop.center, crop.frame, CROP_PX, FOV_MM, 0)[0]
    return (one >= 0.5) & band()


def paste(volume: Volume, crop: SliceCrop, prob: np.ndarray) -> np.ndarray:
    """The crop's probabilities ``(64, 64)`` laid onto slice ``crop.k``'s pixel grid
    ``(rows, cols)`` (zero outside the crop)."""
    rows, cols = volume.shape[1:]
    dr, dc = volume.pixel_spacing
    row_dir, col_dir = np.asarray(volume.row_dir, float), np.asarray(volume.col_dir, float)
    origin = np.asarray(volume.positions[crop.k], float)
    # the crop's footprint on the slice: the pixels within its four corners
    h = FOV_MM / 2.0
    corners = np.array([crop.center + a * h * crop.frame[0] + b * h * crop.frame[1]
                        for a in (-1, 1) for b in (-1, 1)]) - origin
    ci_, cj_ = corners @ col_dir / dr, corners @ row_dir / dc
    i0, i1 = max(int(np.floor(ci_.min())), 0), min(int(np.ceil(ci_.max())) + 1, rows)
    j0, j1 = max(int(np.floor(cj_.min())), 0), min(int(np.ceil(cj_.max())) + 1, cols)
    out = np.zeros((rows, cols), np.float32)
    if i0 >= i1 or j0 >= j1:
        return out
    ii, jj = np.mgrid[i0:i1, j0:j1].astype(np.float64)
    d0 = origin - crop.center
    # patient offset of pixel (i, j) from the crop centre, along the frame's two axes
    pu = (d0 @ crop.frame[0]) + ii * dr * (col_dir @ crop.frame[0]) + jj * dc * (row_dir @ crop.frame[0])
    pv = (d0 @ crop.frame[1]) + ii * dr * (col_dir @ crop.frame[1]) + jj * dc * (row_dir @ crop.frame[1])
    scale = (CROP_PX - 1) / FOV_MM
    ci, cj = (pv + h) * scale, (pu + h) * scale
    inside = (ci >= 0) & (ci <= CROP_PX - 1) & (cj >= 0) & (cj <= CROP_PX - 1)
    if inside.any():
        sub = np.zeros(ii.shape, np.float32)
        sub[inside] = bilinear(prob.astype(np.float32), ci[inside], cj[inside])
        out[i0:i1, j0:j1] = sub
    return out


# ---------------------------------------------------------------------------- network


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SegNet(nn.Module):
    """A small U-Net: three scales, ``widths`` channels, one logit per pixel."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        self.widths = tuple(widths)
        a, b, c = self.widths
        self.e1, self.e2, self.e3 = _block(2 * HALF_SLICES + 1, a), _block(a, b), _block(b, c)
        self.d2, self.d1 = _block(c + b, b), _block(b + a, a)
        self.head = nn.Conv2d(a, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.e1(x)
        f2 = self.e2(F.max_pool2d(f1, 2))
        f3 = self.e3(F.max_pool2d(f2, 2))
        u2 = self.d2(torch.cat([F.interpolate(f3, scale_factor=2.0), f2], 1))
        u1 = self.d1(torch.cat([F.interpolate(u2, scale_factor=2.0), f1], 1))
        return self.head(u1)[:, 0]


@dataclass(frozen=True)
class SegCheckpoint:
    """What ``herniated_material.pt`` holds (loaded with ``weights_only=True``)."""

    state_dict: Mapping[str, torch.Tensor]
    widths: tuple[int, ...]
    threshold: float = THRESHOLD
    meta: Mapping[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in self.state_dict.items()}
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": sd, "widths": list(self.widths),
                    "threshold": self.threshold, "meta": dict(self.meta),
                    "geometry": [CROP_PX, FOV_MM, HALF_SLICES, *OFFSET_MM]}, path)

    @classmethod
    def load(cls, path: Path) -> SegCheckpoint:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if int(d.get("format", 0)) != CHECKPOINT_FORMAT:
            raise HerniatedMaterialError(f"{path.name}: checkpoint format {d.get('format')}, this code reads "
                                         f"{CHECKPOINT_FORMAT}")
        if [float(x) for x in d.get("geometry", [])] != [float(x) for x in (CROP_PX, FOV_MM, HALF_SLICES, *OFFSET_MM)]:
            raise HerniatedMaterialError(f"{path.name}: trained on other crops than this code cuts")
        return cls({k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()},
                   tuple(int(w) for w in d["widths"]), float(d.get("threshold", THRESHOLD)), dict(d.get("meta", {})))


class HerniatedMaterialModel:
    """The loaded segmenter; :meth:`probabilities` takes crops and returns ``(64, 64)`` maps."""

    def __init__(self, checkpoint: SegCheckpoint, model_id: ModelId, device: str = "cpu") -> None:
        self.model_id = model_id
        self.device = torch.device(device)
        self.threshold = checkpoint.threshold
        self.net = SegNet(checkpoint.widths)
        self.net.load_state_dict(dict(checkpoint.state_dict))
        self.net.to(self.device).eval()

    @classmethod
    def from_file(cls, path: Path, model_id: ModelId, device: str = "cpu") -> HerniatedMaterialModel:
        return cls(SegCheckpoint.load(path), model_id, device)

    @torch.inference_mode()
    def probabilities(self, crops: Sequence[SliceCrop], batch_size: int = 64) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.stack([c.image for c in crops[start:start + batch_size]]).astype(np.float32))
            out += list(torch.sigmoid(self.net(x.to(self.device))).cpu().numpy() * band())
        return out

    def segment(self, volume: Volume, levels: Sequence[Sequence[SliceCrop]], batch_size: int = 64) -> list[np.ndarray]:
        """Per level (its crops), a bool mask ``volume.shape`` of the herniated material they
        show; the crops of every level go through the network together."""
        flat = [c for crops in levels for c in crops]
        probs = iter(self.probabilities(flat, batch_size))
        out = []
        for crops in levels:
            mask = np.zeros(volume.shape, bool)
            for crop, prob in zip(crops, probs):
                if float(prob.max()) >= self.threshold:
                    mask[crop.k] |= paste(volume, crop, prob) >= self.threshold
            out.append(mask)
        return out
