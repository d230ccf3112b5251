"""Linear measurements in millimetres from the analyzer's label masks.

Per disc level, on the sagittal slice the level was found on:

- **disc height**: the disc mask's thickness along its short principal axis, measured
  through the disc's centroid;
- **canal AP diameter at the disc**: the spinal canal mask's extent along the disc's
  long (anteroposterior) axis, on the line through the disc centroid, behind the disc.

Each is returned with its two end points in pixel coordinates (column, row) of the
source image, so the SR can draw it as a two-point polyline (OHIF imports it as a
Length). Pure NumPy; nothing here reads DICOM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from models.types import Level, SeriesMasks

CANAL_AP_DIAMETER: Final = "canal_ap_diameter"
DISC_HEIGHT: Final = "disc_height"
KINDS: Final = (CANAL_AP_DIAMETER, DISC_HEIGHT)
#: Sub-pixel steps along a measuring line.
STEP_PX: Final = 0.25
#: The canal is searched this far behind the disc's posterior edge (mm).
CANAL_SEARCH_MM: Final = 25.0


@dataclass(frozen=True, slots=True)
class LinearMeasurement:
    """One distance on one image: ``p0``/``p1`` are (column, row) pixel coordinates."""

    kind: str
    level: str
    value_mm: float
    sop_instance_uid: str
    p0: tuple[float, float]
    p1: tuple[float, float]
    #: 1-based frame of a multi-frame source image; None for a single-frame image
    frame_number: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "level": self.level, "mm": round(self.value_mm, 2),
                "sop_instance_uid": self.sop_instance_uid,
                "points": [[round(v, 2) for v in self.p0], [round(v, 2) for v in self.p1]]}


def _axes(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Centroid (col, row) and the long and short principal axes (unit vectors in mm space,
    expressed per pixel direction) of a binary mask."""
    rows, cols = np.nonzero(mask)
    if rows.size < 6:
        return None
    dr, dc = spacing
    pts = np.stack([cols * dc, rows * dr], axis=1).astype(float)
    centre = pts.mean(axis=0)
    cov = np.cov((pts - centre).T)
    evals, evecs = np.linalg.eigh(cov)
    long_ax = evecs[:, int(np.argmax(evals))]
    short_ax = evecs[:, int(np.argmin(evals))]
    return centre, long_ax, short_ax


def _run(mask: np.ndarray, spacing: tuple[float, float], start: np.ndarray, direction: np.ndarray,
         reach_mm: float) -> tuple[float, float] | None:
    """First and last distance (mm) from ``start`` along ``direction`` at which ``mask`` is set,
    for the first contiguous run within ``reach_mm``."""
    dr, dc = spacing
    step = STEP_PX * min(dr, dc)
    ts = np.arange(0.0, reach_mm, step)
    pts = start[None, :] + ts[:, None] * direction[None, :]
    cols = np.round(pts[:, 0] / dc).astype(int)
    rows = np.round(pts[:, 1] / dr).astype(int)
    ok = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    inside = np.zeros(ts.shape, dtype=bool)
    inside[ok] = mask[rows[ok], cols[ok]]
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        return None
    first = int(idx[0])
    last = first
    while last + 1 < inside.size and inside[last + 1]:
        last += 1
    # pixel-centre sampling: extend half a step on each side
    return float(ts[first] - step / 2), float(ts[last] + step / 2)


def _to_px(p: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    return (float(p[0] / spacing[1]), float(p[1] / spacing[0]))


def measure_level(level: Level, disc: np.ndarray, canal: np.ndarray | None,
                  spacing: tuple[float, float]) -> list[LinearMeasurement]:
    """Disc height and canal AP diameter of one level on one slice.

    ``disc`` and ``canal`` are binary masks of the slice; ``spacing`` is the
    (row, column) pixel spacing in mm. The posterior direction is the one of the
    disc's long axis that points towards the canal; without a canal mask only the
    disc height is measured.
    """
    axes = _axes(disc, spacing)
    if axes is None:
        return []
    centre, long_ax, short_ax = axes
    out: list[LinearMeasurement] = []
    extent = max(disc.shape[0] * spacing[0], disc.shape[1] * spacing[1])
    up = _run(disc, spacing, centre, short_ax, extent)
    down = _run(disc, spacing, centre, -short_ax, extent)
    if up is not None and down is not None:
        a = centre + up[1] * short_ax
        b = centre - down[1] * short_ax
        out.append(LinearMeasurement(DISC_HEIGHT, level.name, float(np.linalg.norm(a - b)),
                                     level.sop_instance_uid, _to_px(b, spacing), _to_px(a, spacing),
                                     level.frame_number))
    if canal is not None and canal.any():
        rows, cols = np.nonzero(canal)
        canal_c = np.array([cols.mean() * spacing[1], rows.mean() * spacing[0]])
        posterior = long_ax if float(np.dot(canal_c - centre, long_ax)) >= 0 else -long_ax
        edge = _run(disc, spacing, centre, posterior, extent)
        if edge is not None:
            start = centre + edge[1] * posterior
            hit = _run(canal, spacing, start, posterior, CANAL_SEARCH_MM)
            if hit is not None:
                a = start + hit[0] * posterior
                b = start + hit[1] * posterior
                out.insert(0, LinearMeasurement(CANAL_AP_DIAMETER, level.name, float(np.linalg.norm(b - a)),
                                                level.sop_instance_uid, _to_px(a, spacing), _to_px(b, spacing),
                                                level.frame_number))
    return out


def measure_levels(levels: Sequence[Level], masks: SeriesMasks,
                   spacing: tuple[float, float]) -> dict[str, list[LinearMeasurement]]:
    """Measurements per level name, from the masks of the series the levels were found on.

    A level whose disc segment is missing from ``masks`` gets no entry.
    """
    by_label = {label: n for n, label in masks.segments.items()}
    canal_n = by_label.get("spinal canal")
    frames: Sequence[int | None] = masks.frame_numbers or (None,) * len(masks.sop_instance_uids)
    index = {(uid, f): i for i, (uid, f) in enumerate(zip(masks.sop_instance_uids, frames))}
    out: dict[str, list[LinearMeasurement]] = {}
    for lv in levels:
        n = by_label.get(f"disc {lv.name}")
        k = index.get((lv.sop_instance_uid, lv.frame_number if masks.frame_numbers else None))
        if n is None or k is None:
            continue
        disc = masks.labels[k] == n
        canal = masks.labels[k] == canal_n if canal_n is not None else None
        found = measure_level(lv, disc, canal, spacing)
        if found:
            out[lv.name] = found
    return out


def mean_thickness_mm(mask: np.ndarray, spacing: tuple[float, float]) -> float | None:
    """A disc mask's mean thickness (mm): its area over its extent along its long principal
    axis. Unlike a line through the centroid it also measures a thin or curved disc whose
    centroid lies outside it."""
    rows, cols = np.nonzero(mask)
    if rows.size < 6:
        return None
    pts = np.stack([cols * spacing[1], rows * spacing[0]], axis=1).astype(float)
    evals, evecs = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    along = pts @ evecs[:, int(np.argmax(evals))]
    length = float(along.max() - along.min()) + min(spacing)
    return float(rows.size * spacing[0] * spacing[1]) / length


def by_kind(measurements: Mapping[str, Sequence[LinearMeasurement]], kind: str) -> dict[str, float]:
    """``{level: mm}`` of one kind."""
    return {lv: m.value_mm for lv, ms in measurements.items() for m in ms if m.kind == kind}


@dataclass(frozen=True, slots=True)
class MeasurementError:
    """One predicted measurement beside the same measurement on the true masks."""

    kind: str
    level: str
    predicted_mm: float
    true_mm: float

    @property
    def error_mm(self) -> float:
        return self.predicted_mm - self.true_mm


def compare_to_truth(levels: Sequence[Level], predicted: Mapping[str, Sequence[LinearMeasurement]],
                     truth_discs: Mapping[str, np.ndarray], truth_canal: np.ndarray | None,
                     spacing: tuple[float, float]) -> list[MeasurementError]:
    """Predicted measurements against the same measurement made on the phantom's exact
    label masks of the same slice (``truth_discs``: level name -> disc mask there).

    The truth is the rendered geometry, rasterised on the image grid, so the error is
    what the segmentation adds; a level without a true disc on that slice is skipped.
    """
    out: list[MeasurementError] = []
    for lv in levels:
        disc = truth_discs.get(lv.name)
        if disc is None or not disc.any():
            continue
        true = {m.kind: m.value_mm for m in measure_level(lv, disc, truth_canal, spacing)}
        for m in predicted.get(lv.name, ()):
            if m.kind in true:
                out.append(MeasurementError(m.kind, lv.name, m.value_mm, true[m.kind]))
    return out
