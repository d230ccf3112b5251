"""Disc, vertebral body and canal detection with an ultralytics YOLO segmentation model.

The model sees one sagittal slice with its two neighbours as the three colour
channels and returns boxes and masks for every disc level (one class per
level name, plus ``other_disc`` for discs outside the graded levels), the
vertebral bodies and the spinal canal. ``Results`` are turned into
:class:`SegDetection` at once; the rest of the package never sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.offline import load_ultralytics
from models.types import ALL_LEVELS, Box, ModelId
from models.volume import Volume, normalize_image

logger = logging.getLogger(__name__)

OTHER_DISC = "other_disc"
VERTEBRAL_BODY = "vertebral_body"
SPINAL_CANAL = "spinal_canal"
#: Class names in class-index order (the dataset YAML writes the same list).
DETECTOR_CLASSES: tuple[str, ...] = (*ALL_LEVELS, OTHER_DISC, VERTEBRAL_BODY, SPINAL_CANAL)
DISC_CLASSES: frozenset[str] = frozenset((*ALL_LEVELS, OTHER_DISC))
DEFAULT_IMGSZ = 384


@dataclass(frozen=True, slots=True, eq=False)
class SegDetection:
    """One instance found on one image: class, confidence, box and a boolean mask (image size)."""

    class_name: str
    confidence: float
    box: Box
    mask: np.ndarray | None

    @property
    def is_disc(self) -> bool:
        return self.class_name in DISC_CLASSES


def detector_image(pixels: np.ndarray, k: int) -> np.ndarray:
    """uint8 ``(rows, cols, 3)``: slices k-1, k, k+1 of a normalised [0, 1] volume (clamped)."""
    n = pixels.shape[0]
    chans = [pixels[int(np.clip(i, 0, n - 1))] for i in (k - 1, k, k + 1)]
    return (np.stack(chans, axis=-1) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def middle_slice(volume: Volume) -> int:
    """The slice the detector reads: the middle of the sagittal stack."""
    return volume.shape[0] // 2


def normalized_pixels(volume: Volume) -> np.ndarray:
    return normalize_image(volume.pixels, 1.0, 99.5)


def _polygon_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    if polygon is not None and len(polygon) >= 3:
        cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def results_to_detections(result: object, names: Sequence[str], shape: tuple[int, int]) -> list[SegDetection]:
    """Convert one ultralytics ``Results`` into project detections (boundary conversion)."""
    boxes = getattr(result, "boxes", None)
    if boxes is None or len(boxes) == 0:
        return []
    xyxy = boxes.xyxy.cpu().numpy().astype(float)
    conf = boxes.conf.cpu().numpy().astype(float)
    cls = boxes.cls.cpu().numpy().astype(int)
    masks = getattr(result, "masks", None)
    polys = list(masks.xy) if masks is not None else [None] * len(xyxy)
    out: list[SegDetection] = []
    for b, c, k, poly in zip(xyxy, conf, cls, polys):
        if not 0 <= k < len(names):
            continue
        x0, y0, x1, y1 = (float(v) for v in b)
        mask = _polygon_mask(poly, shape) if poly is not None else None
        out.append(SegDetection(names[k], float(c), Box(x0, y0, max(x0, x1), max(y0, y1)), mask))
    return out


@dataclass(frozen=True, slots=True, eq=False)
class DiscCluster:
    """Disc boxes of any level class that cover the same disc, merged.

    The detector often splits its confidence for one disc over two neighbouring
    level classes; the disc is there if the summed confidence is high enough,
    and the split is a vote for the naming step.
    """

    best: SegDetection
    score: float
    votes: dict[str, float]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def same_disc(a: Box, b: Box, min_iou: float = 0.3) -> bool:
    """Boxes overlapping enough, or with centres within half a box of each other."""
    if iou(a, b) >= min_iou:
        return True
    (ax, ay), (bx, by) = a.center, b.center
    h = ((a.y1 - a.y0) + (b.y1 - b.y0)) / 2.0
    w = ((a.x1 - a.x0) + (b.x1 - b.x0)) / 2.0
    return abs(ay - by) < 0.5 * h and abs(ax - bx) < 0.5 * w


def merge_discs(dets: Sequence[SegDetection], min_score: float) -> list[DiscCluster]:
    """Class-agnostic clusters of disc detections (:func:`same_disc` as the cluster's best
    box), kept when their summed confidence (capped at 1) reaches ``min_score``."""
    clusters: list[tuple[SegDetection, list[SegDetection]]] = []
    for d in sorted((d for d in dets if d.is_disc), key=lambda d: -d.confidence):
        for best, members in clusters:
            if same_disc(best.box, d.box):
                members.append(d)
                break
        else:
            clusters.append((d, [d]))
    out: list[DiscCluster] = []
    for best, members in clusters:
        score = min(1.0, sum(m.confidence for m in members))
        if score < min_score:
            continue
        votes: dict[str, float] = {}
        for m in members:
            votes[m.class_name] = votes.get(m.class_name, 0.0) + m.confidence
        out.append(DiscCluster(best, score, votes))
    return out


class Detector:
    """A loaded YOLO-seg model; one instance per thread."""

    def __init__(self, weights: Path, model_id: ModelId, device: str = "cpu",
                 imgsz: int = DEFAULT_IMGSZ, conf: float = 0.01) -> None:
        ul = load_ultralytics()
        self.model = ul.YOLO(str(Path(weights).resolve()), task="segment")
        self.model_id = model_id
        self.device = device
        self.imgsz = imgsz
        self.conf = conf
        names = self.model.names
        self.names: tuple[str, ...] = tuple(names[i] for i in sorted(names))
        unknown = set(self.names) - set(DETECTOR_CLASSES)
        if unknown:
            logger.warning("detector has classes this package does not know: %s", sorted(unknown))

    def detect(self, images: Sequence[np.ndarray], batch_size: int = 32) -> list[list[SegDetection]]:
        """Detections for each image (uint8 HxWx3), batched by image shape.

        ultralytics letterboxes a batch of equal shapes to the smallest stride multiple
        but a batch of mixed shapes to the full square, which moves boxes and scores: so
        each ``predict`` gets images of one shape only, and an image's detections do not
        depend on which other images (other slices, other studies) share its batch.
        """
        out: list[list[SegDetection] | None] = [None] * len(images)
        for idx in same_shape_batches([img.shape for img in images], batch_size):
            chunk = [images[i] for i in idx]
            results = self.model.predict(
                chunk, imgsz=self.imgsz, conf=self.conf, device=self.device, verbose=False,
                retina_masks=False, iou=0.5, max_det=60,
            )
            for i, img, r in zip(idx, chunk, results):
                out[i] = results_to_detections(r, self.names, img.shape[:2])
        return [d if d is not None else [] for d in out]


def same_shape_batches(shapes: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices of ``shapes`` in batches of at most ``batch_size`` whose shapes are equal
    (first-seen shape first, input order within a shape)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    size = max(1, batch_size)
    return [idx[k:k + size] for idx in groups.values() for k in range(0, len(idx), size)]
