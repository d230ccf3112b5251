"""Masks on every sagittal slice a structure lies on, for a 3D SEG.

The analyzer finds and names the disc levels on the middle sagittal slice. Here the
detector also reads the slices beside it, walking outwards slice by slice: a disc
detection on slice ``j`` is that level's disc when its box overlaps the level's box on
the middle slice (IoU at least :data:`MIN_IOU`) and the level was present on the slice
before (closer to the middle). Vertebral bodies and the canal continue while they are
detected. A structure stops at the first slice it is missing from, so a level never
jumps to a stray detection further out. The analyzer calls this in the grid it reads
(canonical orientation), before the labels are mapped back onto the images as sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import numpy as np

from models.detector import SPINAL_CANAL, VERTEBRAL_BODY, SegDetection, detector_image
from models.types import BODIES_SEGMENT, CANAL_SEGMENT, DISC_SEGMENT, Box

#: At most this far from the middle slice (mm): beyond the lumbar and cervical discs.
MAX_LATERAL_MM: Final = 30.0
MIN_IOU: Final = 0.3
MASK_CONF: Final = 0.25


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def _paint(labels: np.ndarray, mask: np.ndarray, value: int) -> None:
    labels[mask & (labels == 0)] = value


def _slice_structures(dets: Sequence[SegDetection], level_boxes: Mapping[str, Box], shape: tuple[int, int],
                      ) -> dict[str, np.ndarray]:
    """Structure label -> mask on one slice (discs by level, vertebral bodies, canal)."""
    out: dict[str, np.ndarray] = {}
    best: dict[str, tuple[float, np.ndarray]] = {}
    for d in dets:
        if d.mask is None or d.mask.shape != shape or d.confidence < MASK_CONF:
            continue
        if d.is_disc:
            scored = [(_iou(d.box, box), name) for name, box in level_boxes.items()]
            iou, name = max(scored, default=(0.0, ""))
            if iou >= MIN_IOU and d.confidence > best.get(name, (-1.0, d.mask))[0]:
                best[name] = (d.confidence, d.mask)
        elif d.class_name in (VERTEBRAL_BODY, SPINAL_CANAL):
            title = BODIES_SEGMENT if d.class_name == VERTEBRAL_BODY else CANAL_SEGMENT
            out[title] = out[title] | d.mask if title in out else d.mask.copy()
    for name, (_, mask) in best.items():
        out[DISC_SEGMENT + name] = mask
    return out


def spread_sides(n: int, middle: int, slice_spacing_mm: float) -> list[list[int]]:
    """The slices :func:`spread_labels` reads on each side of ``middle`` (outwards), of ``n``."""
    reach = int(MAX_LATERAL_MM // max(slice_spacing_mm, 0.1))
    return [list(range(middle - 1, max(-1, middle - reach - 1), -1)), list(range(middle + 1, min(n, middle + reach + 1)))]


def spread_slices(n: int, middle: int, slice_spacing_mm: float) -> list[int]:
    """Every slice :func:`spread_labels` reads, in the order it passes them to ``detect``."""
    return [j for side in spread_sides(n, middle, slice_spacing_mm) for j in side]


def spread_labels(
    labels: np.ndarray,
    segments: Mapping[int, str],
    level_boxes: Mapping[str, Box],
    pixels: np.ndarray,
    middle: int,
    slice_spacing_mm: float,
    detect: Callable[[list[np.ndarray]], list[list[SegDetection]]],
) -> np.ndarray:
    """``labels`` (structures on the middle slice; value ``k`` is ``segments[k]``) extended to
    the neighbouring slices, in the grid the detector reads.

    ``level_boxes`` are the levels' boxes on the middle slice (level name -> box),
    ``pixels`` the normalised series the detector reads, ``detect`` runs the detector on a
    list of images (one batch). Returns a new array; segment values are kept.
    """
    sides = spread_sides(pixels.shape[0], middle, slice_spacing_mm)
    todo = [j for side in sides for j in side]
    if not todo or not segments:
        return labels
    found = detect([detector_image(pixels, j) for j in todo])
    per_slice = {j: _slice_structures(d, level_boxes, labels.shape[1:]) for j, d in zip(todo, found)}
    out = labels.copy()
    by_title = {title: value for value, title in segments.items()}
    for side in sides:
        alive = set(by_title)
        for j in side:
            here = per_slice[j]
            alive &= set(here)
            if not alive:
                break
            # discs first, then bodies, then canal (the order of the middle slice)
            for title in sorted(alive, key=lambda t: by_title[t]):
                _paint(out[j], here[title], by_title[title])
    return out
