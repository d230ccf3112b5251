"""The herniation model: disc herniation type, its position and high-intensity zones per lumbar level.

A separate small network beside the grader (the grader's and detector's weights are
untouched). Per level it reads three crops (:func:`level_request`, the same for training
and the analyzer):

=========  ===========================================  ===================================
crop       where                                        mostly tells
=========  ===========================================  ===================================
sagittal   lumbar sagittal T2/STIR, 5 slices around     extruded fragments and their
           the disc, :data:`SAG_FOV_MM` wide, in the    migration, the disc's margins
           disc's own frame (:func:`disc_frame`: end
           plates level, the canal on the right)
axial      axial T2 through the disc (nearest slice     bulge (all round), protrusion,
           within 6 mm, 3 slices), :data:`AX_FOV_MM`    extrusion and their position
           wide, in the disc plane, patient left on     (central, paracentral, foraminal)
           the right of the crop (:func:`axial_crop`)
HIZ        the posterior annulus on the 3 sagittal      a high-intensity zone (a 2 x 5 mm
           slices nearest the disc, 0.5 mm a pixel      spot a few mm inside the margin)
           (:data:`HIZ_FOV_MM`, disc frame)
=========  ===========================================  ===================================

Three small convolutional branches feed three heads: ``type`` (none, bulge, protrusion,
extrusion), ``position`` (central, paracentral left/right, foraminal left/right; trained
on protrusions and extrusions only, so it is the position *given* a focal herniation) and
``hiz`` (absent, present; it also reads the HIZ branch directly). A level without an
axial crop is read from the sagittal crops alone (the axial branch sees zeros and a flag;
training drops the axial crop at random); its position is then not reported.
Probabilities are calibrated by a temperature and a bias per head fitted on held-out
studies (reweighted to the population's label frequencies when training used enriched
phantoms, :mod:`models.train_herniation`).
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
from models.volume import Volume, bilinear, nearest_in_stacks, sample_crop

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
#: The HIZ crop: the posterior annulus on the three sagittal slices nearest the disc centre,
#: :data:`HIZ_PX` px over :data:`HIZ_FOV_MM` (0.5 mm a pixel, finer than the images), so a
#: 2 x 5 mm spot a few mm inside the disc margin is several pixels and not averaged away.
HIZ_PX = 48
HIZ_FOV_MM = 24.0
HIZ_HALF_SLICES = 1
#: An axial slice farther than this from the disc centre (mm) does not pass through the disc.
AXIAL_MAX_DISTANCE_MM = 6.0
#: Default crop centres from the disc centre (mm), when a checkpoint has none: sagittal and
#: HIZ in the disc's sagittal frame (:func:`disc_frame`: posterior, cranial, 0), axial in the
#: disc plane (lateral, posterior, 0).
DEFAULT_OFFSETS: Mapping[str, tuple[float, float, float]] = {
    "sag": (10.0, 2.0, 0.0), "ax": (0.0, 16.0, 0.0), "hiz": (16.0, 0.0, 0.0),
}


# ---------------------------------------------------------------------------- crops


def disc_frame(volume: Volume, spine_axis: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(posterior, caudal) unit vectors of a disc laid into a sagittal stack's slice plane.

    Posterior is the patient's posterior across the spine axis (:func:`models.levels.spine_axes`,
    towards the head), caudal along it, both projected into the slice plane: a crop cut in
    this frame shows every disc level, however tilted (L5/S1 by 30 degrees and more), with
    its end plates horizontal, the disc's back towards the crop's right and the head up.
    Without an axis, the stack's own row (the posterior side) and column (caudal) directions.
    """
    row, col = np.asarray(volume.row_dir, float), np.asarray(volume.col_dir, float)
    if row[1] < 0:
        row = -row
    if col[2] > 0:
        col = -col
    if spine_axis is None:
        return row, col
    normal = np.cross(row, col)
    normal /= float(np.linalg.norm(normal))
    axis = np.asarray(spine_axis, float)
    axis = axis - float(axis @ normal) * normal
    if float(np.linalg.norm(axis)) < 1e-6:
        return row, col
    caudal = -axis / float(np.linalg.norm(axis))
    post = np.cross(normal, caudal)
    if float(post[1]) < 0.0:
        post = -post
    return post, caudal


def frame_crop(volume: Volume, pixels: np.ndarray, point: np.ndarray, frame: tuple[np.ndarray, np.ndarray],
               size_px: int, fov_mm: float, half_slices: int) -> np.ndarray:
    """A 2.5D crop ``(2*half_slices+1, size_px, size_px)`` around ``point``: columns run along
    ``frame[0]``, rows along ``frame[1]`` (both in the slice plane), on the slice nearest the
    point and ``half_slices`` on each side (clamped at the ends of the stack)."""
    n = volume.shape[0]
    k0 = int(np.argmin(np.abs(volume.plane_distances(point))))
    ks = np.clip(np.arange(k0 - half_slices, k0 + half_slices + 1), 0, n - 1)
    dr, dc = volume.pixel_spacing
    row, col = np.asarray(volume.row_dir, float), np.asarray(volume.col_dir, float)
    u = np.linspace(-fov_mm / 2.0, fov_mm / 2.0, size_px)
    # patient offsets of the grid (rows along frame[1], columns along frame[0])
    grid = u[None, :, None] * frame[0][None, None, :] + u[:, None, None] * frame[1][None, None, :]
    gr, gc = grid @ col / dr, grid @ row / dc
    out = np.empty((len(ks), size_px, size_px), dtype=np.float32)
    for out_i, k in enumerate(ks):
        d = point - volume.positions[k]
        out[out_i] = bilinear(pixels[k], float(d @ col) / dr + gr, float(d @ row) / dc + gc)
    return out


def sagittal_crop(volume: Volume, pixels: np.ndarray, center: np.ndarray | Sequence[float],
                  offset: np.ndarray | Sequence[float], spine_axis: np.ndarray | None) -> np.ndarray:
    """The sagittal crop of a level: ``(5, 64, 64)`` float32 around the disc centre moved by
    ``offset`` (posterior, cranial, 0 mm) in its :func:`disc_frame`."""
    frame = disc_frame(volume, spine_axis)
    o = np.asarray(offset, dtype=float)
    p = np.asarray(center, dtype=float) + o[0] * frame[0] - o[1] * frame[1]
    return frame_crop(volume, pixels, p, frame, CROP_PX, SAG_FOV_MM, SAG_HALF_SLICES)


def hiz_crop(volume: Volume, pixels: np.ndarray, center: np.ndarray | Sequence[float],
             offset: np.ndarray | Sequence[float], spine_axis: np.ndarray | None) -> np.ndarray:
    """The HIZ crop of a level: ``(3, 48, 48)`` float32, 0.5 mm a pixel, on the posterior
    annulus (``offset`` posterior, cranial, 0 mm from the disc centre in its :func:`disc_frame`)."""
    frame = disc_frame(volume, spine_axis)
    o = np.asarray(offset, dtype=float)
    p = np.asarray(center, dtype=float) + o[0] * frame[0] - o[1] * frame[1]
    return frame_crop(volume, pixels, p, frame, HIZ_PX, HIZ_FOV_MM, HIZ_HALF_SLICES)


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


def level_request(sagittal: Volume, sagittal_pixels: np.ndarray, axial: Sequence[Volume],
                  axial_pixels: Sequence[np.ndarray], center: np.ndarray | Sequence[float],
                  spine_axis: np.ndarray | None, offsets: Mapping[str, Sequence[float]]) -> HerniationRequest:
    """The three crops of one level, as training (:mod:`models.train_herniation`) and the
    analyzer cut them alike."""
    c = np.asarray(center, dtype=float)
    return HerniationRequest(
        sagittal_crop(sagittal, sagittal_pixels, c, offsets["sag"], spine_axis),
        axial_crop(axial, axial_pixels, c, offsets["ax"], spine_axis) if axial else None,
        hiz_crop(sagittal, sagittal_pixels, c, offsets["hiz"], spine_axis),
    )


# ---------------------------------------------------------------------------- network


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Branch(nn.Module):
    """``size`` px -> stride-2 convolutions -> a small map flattened (the layout is kept, so
    left and right differ). The input max-pooled to half size joins the first convolution's
    output, so a spot of two pixels (a HIZ) is not averaged away. Only strided
    convolutions: a CPU trains it in minutes."""

    def __init__(self, cin: int, widths: Sequence[int], size: int = CROP_PX) -> None:
        super().__init__()
        self.first = _conv(cin, widths[0], 2)
        layers: list[nn.Module] = []
        c = widths[0] + cin
        for w in widths[1:]:
            layers.append(_conv(c, w, 2))
            c = w
        layers += [nn.Conv2d(c, c // 2, 1), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_features = (c // 2) * (size // 2 ** len(widths)) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.first(x), F.max_pool2d(x, 2)], dim=1)).flatten(1)


class HerniaNet(nn.Module):
    """Three branches (sagittal, axial, HIZ) -> shared features -> the three heads; the HIZ
    head also reads the HIZ branch directly."""

    def __init__(self, widths: Sequence[int] = (16, 32, 48, 64), hidden: int = 96,
                 dropout: float = 0.3, hiz_widths: Sequence[int] = (16, 32, 48)) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.hiz_widths = tuple(hiz_widths)
        self.hidden = hidden
        self.sag = _Branch(2 * SAG_HALF_SLICES + 1, widths)
        self.ax = _Branch(2 * AX_HALF_SLICES + 1, widths)
        self.hz = _Branch(2 * HIZ_HALF_SLICES + 1, hiz_widths, HIZ_PX)
        n_in = self.sag.out_features + self.ax.out_features + self.hz.out_features + 1
        self.fuse = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.hz_fuse = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.hz.out_features, hidden // 2), nn.ReLU())
        # "type" is a Module method: the head modules are stored as "<head>_head"
        self.heads = nn.ModuleDict({f"{h}_head": nn.Linear(hidden + (hidden // 2 if h == "hiz" else 0), len(c))
                                    for h, c in HEAD_CLASSES.items()})

    def forward(self, sag: torch.Tensor, ax: torch.Tensor, has_ax: torch.Tensor,
                hz: torch.Tensor) -> dict[str, torch.Tensor]:
        fa = self.ax(ax) * has_ax[:, None]
        fh = self.hz(hz)
        f = self.fuse(torch.cat([self.sag(sag), fa, fh, has_ax[:, None]], dim=1))
        g = torch.cat([f, self.hz_fuse(fh)], dim=1)
        return {h: self.heads[f"{h}_head"](g if h == "hiz" else f) for h in HEAD_CLASSES}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- checkpoint

#: The checkpoint layout this code reads (0.1.0's two-branch files are not read).
CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class HerniationCheckpoint:
    """What ``herniation.pt`` holds (loaded with ``weights_only=True``)."""

    state_dict: Mapping[str, torch.Tensor]
    widths: tuple[int, ...]
    hidden: int
    temperatures: Mapping[str, float]
    #: crop centres from the disc centre (mm): "sag" and "hiz" in the disc's sagittal
    #: frame (posterior, cranial, 0), "ax" in the disc plane (lateral, posterior, 0)
    crop_offsets: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    hiz_widths: tuple[int, ...] = (16, 32, 48)
    #: per head, a bias added to the logits divided by the temperature (calibration to the
    #: population's label frequencies when training saw enriched phantoms)
    biases: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in self.state_dict.items()}
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": sd, "widths": list(self.widths),
                    "hiz_widths": list(self.hiz_widths), "hidden": self.hidden,
                    "temperatures": dict(self.temperatures),
                    "biases": {k: list(v) for k, v in self.biases.items()},
                    "crop_offsets": {k: list(v) for k, v in self.crop_offsets.items()},
                    "meta": dict(self.meta)}, path)

    @classmethod
    def load(cls, path: Path) -> HerniationCheckpoint:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if int(d.get("format", 1)) != CHECKPOINT_FORMAT:
            raise HerniationError(f"{path.name}: herniation checkpoint format {d.get('format', 1)}, "
                                  f"this code reads {CHECKPOINT_FORMAT} (retrain or ship matching weights)")
        return cls(
            state_dict={k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()},
            widths=tuple(int(w) for w in d["widths"]), hidden=int(d["hidden"]),
            temperatures={k: float(v) for k, v in d["temperatures"].items()},
            crop_offsets={k: tuple(float(x) for x in v) for k, v in d.get("crop_offsets", {}).items()},  # type: ignore[misc]
            meta=dict(d.get("meta", {})),
            hiz_widths=tuple(int(w) for w in d["hiz_widths"]),
            biases={k: tuple(float(x) for x in v) for k, v in d.get("biases", {}).items()},
        )


# ---------------------------------------------------------------------------- inference


class HerniationError(ModelsError):
    """The herniation model cannot run."""


@dataclass(frozen=True, slots=True)
class HerniationRequest:
    """The crops of one level: sagittal ``(5, 64, 64)``, axial ``(3, 64, 64)`` or None, HIZ ``(3, 48, 48)``."""

    sagittal: np.ndarray
    axial: np.ndarray | None
    hiz: np.ndarray


class HerniationModel:
    """The loaded network; :meth:`probabilities` takes numpy crops and returns numpy vectors."""

    def __init__(self, checkpoint: HerniationCheckpoint, model_id: ModelId, device: str = "cpu") -> None:
        self.model_id = model_id
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.net = HerniaNet(checkpoint.widths, checkpoint.hidden, hiz_widths=checkpoint.hiz_widths)
        self.net.load_state_dict(dict(checkpoint.state_dict))
        self.net.to(self.device).eval()
        self.temperatures = dict(checkpoint.temperatures)
        self.biases = {h: torch.tensor(v, dtype=torch.float32, device=self.device)
                       for h, v in checkpoint.biases.items()}
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
            hz = torch.from_numpy(np.stack([r.hiz for r in chunk]).astype(np.float32)).to(self.device)
            has = torch.tensor([float(r.axial is not None) for r in chunk], device=self.device)
            probs = self._probs(sag, ax, has, hz)
            mirrored = self._probs(sag.flip(1), ax.flip(3), has, hz.flip(1))
            mirrored["position"] = mirrored["position"][:, list(MIRROR_POSITION)]
            for i, r in enumerate(chunk):
                item = {h: ((probs[h][i] + mirrored[h][i]) / 2.0).astype(np.float64) for h in HEAD_ORDER}
                if r.axial is None:
                    del item["position"]
                out.append(item)
        return out

    def _probs(self, sag: torch.Tensor, ax: torch.Tensor, has: torch.Tensor,
               hz: torch.Tensor) -> dict[str, np.ndarray]:
        logits = self.net(sag, ax, has, hz)
        return {h: F.softmax(calibrated(lg, self.temperatures.get(h, 1.0), self.biases.get(h)), dim=1).cpu().numpy()
                for h, lg in logits.items()}


def calibrated(logits: torch.Tensor, temperature: float, bias: torch.Tensor | None) -> torch.Tensor:
    """Logits divided by the head's temperature, plus its bias (when it has one)."""
    z = logits / temperature
    return z + bias if bias is not None else z


#: position index -> the index of its mirror image (left <-> right)
MIRROR_POSITION: tuple[int, ...] = tuple(
    HERNIATION_POSITIONS.index(p.replace("left", "#").replace("right", "left").replace("#", "right"))
    for p in HERNIATION_POSITIONS
)
