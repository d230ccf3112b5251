"""The herniation model: disc herniation type, its position and high-intensity zones per lumbar level.

A separate small network beside the grader (the grader's and detector's weights are
untouched). Per level it reads two crops cut with the same machinery as the grader's
(:func:`models.volume.sample_crop`, :func:`models.grader.recess_frame`):

=========  ===========================================  ===================================
crop       where                                        mostly tells
=========  ===========================================  ===================================
sagittal   lumbar sagittal T2/STIR, 5 slices around     HIZ in the posterior annulus,
           the disc, :data:`SAG_FOV_MM` wide, centred   extruded fragments and their
           between the disc centre and the canal        migration, the disc's margins
axial      axial T2 through the disc (nearest slice     bulge (all round), protrusion,
           within 6 mm, 3 slices), :data:`AX_FOV_MM`    extrusion and their position
           wide, in the disc plane, patient left on     (central, paracentral, foraminal)
           the right of the crop (:func:`axial_crop`)
=========  ===========================================  ===================================

Two small convolutional branches (one per crop, about 0.15 M parameters together)
feed three heads: ``type`` (none, bulge, protrusion, extrusion), ``position``
(central, paracentral left/right, foraminal left/right; trained on protrusions and
extrusions only, so it is the position *given* a focal herniation) and ``hiz``
(absent, present). A level without an axial crop is read from the sagittal crop alone
(the axial branch sees zeros and a flag; training drops the axial crop at random);
its position is then not reported. Probabilities are calibrated by one temperature per
head fitted on a held-out split (:func:`models.grader.fit_temperature`).
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

from models.grader import in_plane, recess_frame
from models.types import ModelId, ModelsError
from models.volume import Volume, nearest_in_stacks, sample_crop

logger = logging.getLogger(__name__)

HERNIATION_TYPES: tuple[str, ...] = ("none", "bulge", "protrusion", "extrusion")
HERNIATION_POSITIONS: tuple[str, ...] = ("central", "paracentral_left", "paracentral_right",
                                         "foraminal_left", "foraminal_right")
HIZ_GRADES: tuple[str, ...] = ("absent", "present")
#: head -> its classes, in the order of every probability vector
HEAD_CLASSES: Mapping[str, tuple[str, ...]] = {
    "type": HERNIATION_TYPES, "position": HERNIATION_POSITIONS, "hiz": HIZ_GRADES,
}
HEAD_ORDER: tuple[str, ...] = tuple(HEAD_CLASSES)
#: Types that have a position (a focal herniation).
FOCAL_TYPES: tuple[str, ...] = ("protrusion", "extrusion")

CROP_PX = 64
SAG_FOV_MM = 40.0
SAG_HALF_SLICES = 2
AX_FOV_MM = 48.0
AX_HALF_SLICES = 1
#: An axial slice farther than this from the disc centre (mm) does not pass through the disc.
AXIAL_MAX_DISTANCE_MM = 6.0
#: Default crop centres from the disc centre (mm), when a checkpoint has none: sagittal in
#: patient LPS (posterior, cranial), axial in the disc plane (lateral, posterior, 0).
DEFAULT_OFFSETS: Mapping[str, tuple[float, float, float]] = {
    "sag": (0.0, 10.0, 2.0), "ax": (0.0, 16.0, 0.0),
}


# ---------------------------------------------------------------------------- crops


def sagittal_crop(volume: Volume, pixels: np.ndarray, center: np.ndarray | Sequence[float],
                  offset: np.ndarray | Sequence[float]) -> np.ndarray:
    """The sagittal crop of a level: ``(5, 64, 64)`` float32 around ``center + offset`` (patient mm)."""
    p = np.asarray(center, dtype=float) + np.asarray(offset, dtype=float)
    return sample_crop(volume, pixels, p, CROP_PX, SAG_FOV_MM, SAG_HALF_SLICES)


def axial_crop(stacks: Sequence[Volume], pixels: Sequence[np.ndarray], center: np.ndarray | Sequence[float],
               offset: np.ndarray | Sequence[float], spine_axis: np.ndarray | None) -> np.ndarray | None:
    """The axial crop through a disc, or None when no axial slice lies within
    :data:`AXIAL_MAX_DISTANCE_MM` of the disc centre.

    Cut in the disc plane (:func:`models.grader.recess_frame`), ``offset`` (lateral,
    posterior, 0) from the centre, and mirrored when needed so that the patient's left
    is on the right of the crop whatever the stack's row direction (as a radiologist
    reads an axial image): a left paracentral herniation always lies right of the midline.
    """
    c = np.asarray(center, dtype=float)
    hit = nearest_in_stacks(stacks, c, margin=0.0)
    if hit is None or hit[2] > AXIAL_MAX_DISTANCE_MM:
        return None
    vol, pix = stacks[hit[0]], pixels[hit[0]]
    frame = recess_frame(vol, spine_axis)
    crop = sample_crop(vol, pix, c + in_plane(offset, frame), CROP_PX, AX_FOV_MM, AX_HALF_SLICES)
    if float(vol.row_dir[0]) < 0.0:  # columns run towards the patient's right: mirror
        crop = np.ascontiguousarray(crop[:, :, ::-1])
    return crop


def empty_axial() -> np.ndarray:
    return np.zeros((2 * AX_HALF_SLICES + 1, CROP_PX, CROP_PX), np.float32)


# ---------------------------------------------------------------------------- network


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Branch(nn.Module):
    """64 px -> four stride-2 convolutions -> a 4 x 4 map flattened (the layout is kept, so
    left and right differ). The input max-pooled to 32 px joins the first convolution's
    output, so a spot of two pixels (a HIZ) is not averaged away. Only strided
    convolutions: a CPU trains it in minutes."""

    def __init__(self, cin: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.first = _conv(cin, widths[0], 2)
        layers: list[nn.Module] = []
        c = widths[0] + cin
        for w in widths[1:]:
            layers.append(_conv(c, w, 2))
            c = w
        layers += [nn.Conv2d(c, c // 2, 1), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_features = (c // 2) * (CROP_PX // 2 ** len(widths)) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.first(x), F.max_pool2d(x, 2)], dim=1)).flatten(1)


class HerniaNet(nn.Module):
    """Two branches (sagittal, axial) -> shared features -> the three heads."""

    def __init__(self, widths: Sequence[int] = (16, 32, 48, 64), hidden: int = 96,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.hidden = hidden
        self.sag = _Branch(2 * SAG_HALF_SLICES + 1, widths)
        self.ax = _Branch(2 * AX_HALF_SLICES + 1, widths)
        self.fuse = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.sag.out_features + self.ax.out_features + 1,
                                                                 hidden), nn.ReLU(), nn.Dropout(dropout))
        # "type" is a Module method: the head modules are stored as "<head>_head"
        self.heads = nn.ModuleDict({f"{h}_head": nn.Linear(hidden, len(c)) for h, c in HEAD_CLASSES.items()})

    def forward(self, sag: torch.Tensor, ax: torch.Tensor, has_ax: torch.Tensor) -> dict[str, torch.Tensor]:
        fa = self.ax(ax) * has_ax[:, None]
        f = self.fuse(torch.cat([self.sag(sag), fa, has_ax[:, None]], dim=1))
        return {h: self.heads[f"{h}_head"](f) for h in HEAD_CLASSES}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class HerniationCheckpoint:
    """What ``herniation.pt`` holds (loaded with ``weights_only=True``)."""

    state_dict: Mapping[str, torch.Tensor]
    widths: tuple[int, ...]
    hidden: int
    temperatures: Mapping[str, float]
    #: crop centres from the disc centre (mm): "sag" patient LPS, "ax" in the disc plane
    crop_offsets: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in self.state_dict.items()}
        torch.save({"state_dict": sd, "widths": list(self.widths), "hidden": self.hidden,
                    "temperatures": dict(self.temperatures),
                    "crop_offsets": {k: list(v) for k, v in self.crop_offsets.items()},
                    "meta": dict(self.meta)}, path)

    @classmethod
    def load(cls, path: Path) -> HerniationCheckpoint:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            state_dict={k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()},
            widths=tuple(int(w) for w in d["widths"]), hidden=int(d["hidden"]),
            temperatures={k: float(v) for k, v in d["temperatures"].items()},
            crop_offsets={k: tuple(float(x) for x in v) for k, v in d.get("crop_offsets", {}).items()},  # type: ignore[misc]
            meta=dict(d.get("meta", {})),
        )


# ---------------------------------------------------------------------------- inference


class HerniationError(ModelsError):
    """The herniation model cannot run."""


@dataclass(frozen=True, slots=True)
class HerniationRequest:
    """The crops of one level: sagittal ``(5, 64, 64)``, axial ``(3, 64, 64)`` or None."""

    sagittal: np.ndarray
    axial: np.ndarray | None


class HerniationModel:
    """The loaded network; :meth:`probabilities` takes numpy crops and returns numpy vectors."""

    def __init__(self, checkpoint: HerniationCheckpoint, model_id: ModelId, device: str = "cpu") -> None:
        self.model_id = model_id
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.net = HerniaNet(checkpoint.widths, checkpoint.hidden)
        self.net.load_state_dict(dict(checkpoint.state_dict))
        self.net.to(self.device).eval()
        self.temperatures = dict(checkpoint.temperatures)
        self.offsets = {k: np.asarray(checkpoint.crop_offsets.get(k, v), dtype=float)
                        for k, v in DEFAULT_OFFSETS.items()}

    @classmethod
    def from_file(cls, path: Path, model_id: ModelId, device: str = "cpu") -> HerniationModel:
        return cls(HerniationCheckpoint.load(path), model_id, device)

    @torch.inference_mode()
    def probabilities(self, requests: Sequence[HerniationRequest], batch_size: int = 64) -> list[dict[str, np.ndarray]]:
        """Calibrated probabilities per request and head; ``position`` only where an axial crop exists.

        Each level is also read mirrored (slice order reversed, axial columns mirrored,
        left and right positions swapped back), the augmentation training used, and the
        two readings averaged.
        """
        out: list[dict[str, np.ndarray]] = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start:start + batch_size]
            sag = torch.from_numpy(np.stack([r.sagittal for r in chunk]).astype(np.float32)).to(self.device)
            ax = torch.from_numpy(np.stack([r.axial if r.axial is not None else empty_axial()
                                            for r in chunk]).astype(np.float32)).to(self.device)
            has = torch.tensor([float(r.axial is not None) for r in chunk], device=self.device)
            probs = self._probs(sag, ax, has)
            mirrored = self._probs(sag.flip(1), ax.flip(3), has)
            mirrored["position"] = mirrored["position"][:, list(MIRROR_POSITION)]
            for i, r in enumerate(chunk):
                item = {h: ((probs[h][i] + mirrored[h][i]) / 2.0).astype(np.float64) for h in HEAD_ORDER}
                if r.axial is None:
                    del item["position"]
                out.append(item)
        return out

    def _probs(self, sag: torch.Tensor, ax: torch.Tensor, has: torch.Tensor) -> dict[str, np.ndarray]:
        logits = self.net(sag, ax, has)
        return {h: F.softmax(lg / self.temperatures.get(h, 1.0), dim=1).cpu().numpy() for h, lg in logits.items()}


#: position index -> the index of its mirror image (left <-> right)
MIRROR_POSITION: tuple[int, ...] = tuple(
    HERNIATION_POSITIONS.index(p.replace("left", "#").replace("right", "left").replace("#", "right"))
    for p in HERNIATION_POSITIONS
)
