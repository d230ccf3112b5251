"""Linear measurements in millimetres from the analyzer's label masks.

Per disc level, on the sagittal slice the level was found on:

- **disc height**: the disc mask's thickness along its short principal axis, measured
  through the disc's centroid (the disc mask is the disc segment together with that
  level's herniated-material segment, which the SEG shows on its own);
- **canal AP diameter at the disc**: the spinal canal mask's extent along the disc's
  long (anteroposterior) axis, on the line through the disc centroid, behind the disc.
  With the image, each end then moves to the sac's edge in the image: the half-maximum
  crossing of the signal along the line within :data:`EDGE_SEARCH_MM` of the mask's end
  (halfway between the sac's signal and the darkest signal just outside that end).
  The mask alone puts the anterior end about a pixel too far forward: the detector's
  canal and disc masks are drawn independently and the disc mask stops short of the
  disc's posterior margin, so the canal takes in the gap (+0.70 mm bias on 50 phantoms).

Each is returned with its two end points in SCOORD pixel coordinates (column, row;
the top-left corner of the top-left pixel is (0, 0), so a pixel's centre is at +0.5) of
the source image, so the SR can draw it as a two-point polyline (OHIF imports it as a
Length). Pure NumPy; nothing here reads DICOM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from models.types import CANAL_SEGMENT, DISC_SEGMENT, HERNIATED_SEGMENT, Level, SeriesMasks

CANAL_AP_DIAMETER: Final = "canal_ap_diameter"
DISC_HEIGHT: Final = "disc_height"
KINDS: Final = (CANAL_AP_DIAMETER, DISC_HEIGHT)
#: Sub-pixel steps along a measuring line.
STEP_PX: Final = 0.25
#: The canal is searched this far behind the disc's posterior edge (mm).
CANAL_SEARCH_MM: Final = 25.0
#: A canal end found on the mask moves to the image's half-maximum edge within this distance (mm).
EDGE_SEARCH_MM: Final = 3.0
#: The sac must stand out from the median signal beyond each end by this share of its
#: contrast to the darkest signal there, else the mask's ends stay (CSF is bright on T2
#: and STIR; on CT and T1 the disc and ligament are brighter than the sac).
MIN_CONTRAST: Final = 0.25
#: Sampling step (mm) of the image profile along the canal line.
PROFILE_STEP_MM: Final = 0.1


@dataclass(frozen=True, slots=True)
class LinearMeasurement:
    """One distance on one image: ``p0``/``p1`` are (column, row) SCOORD pixel coordinates
    (pixel-edge origin: the centre of the top-left pixel is (0.5, 0.5))."""

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


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    r0 = np.clip(np.floor(rows).astype(int), 0, image.shape[0] - 2)
    c0 = np.clip(np.floor(cols).astype(int), 0, image.shape[1] - 2)
    fr = np.clip(rows - r0, 0.0, 1.0)
    fc = np.clip(cols - c0, 0.0, 1.0)
    return (image[r0, c0] * (1 - fr) * (1 - fc) + image[r0 + 1, c0] * fr * (1 - fc)
            + image[r0, c0 + 1] * (1 - fr) * fc + image[r0 + 1, c0 + 1] * fr * fc)


def _crossing(ts: np.ndarray, prof: np.ndarray, threshold: float, lo: float, hi: float,
              rising: bool) -> float | None:
    """Where ``prof`` crosses ``threshold`` within [lo, hi] (linear between samples): the
    first rise into the structure, or the last fall out of it."""
    idx = np.nonzero((ts >= lo) & (ts <= hi))[0]
    above = np.nonzero(prof[idx] >= threshold)[0]
    if above.size == 0:
        return None
    i = int(idx[above[0]] if rising else idx[above[-1]])
    j = i - 1 if rising else i + 1
    if not 0 <= j < ts.size:
        return float(ts[i])
    frac = (threshold - prof[i]) / (prof[j] - prof[i]) if prof[j] != prof[i] else 0.0
    return float(ts[i] + (ts[j] - ts[i]) * frac)


def half_max_edges(image: np.ndarray, spacing: tuple[float, float], start: np.ndarray, direction: np.ndarray,
                   near: float, far: float) -> tuple[float, float]:
    """The ends of a bright structure along a line, refined on the image.

    ``near``/``far`` (mm from ``start`` along ``direction``) are the ends the mask gave.
    The structure's signal is the 90th percentile of the profile between them (the cauda
    equina's roots are darker spots inside the sac); each end's background is the darkest
    signal within :data:`EDGE_SEARCH_MM` outside it; the edge is where the profile crosses
    halfway between the two, searched within :data:`EDGE_SEARCH_MM` of the mask's end.
    An end without a crossing stays where the mask put it; so do both when the sac is not
    brighter than the median signal beyond either end (:data:`MIN_CONTRAST`). Pixel values are read at pixel
    centres (bilinear), the same convention as the mask's runs.
    """
    w = EDGE_SEARCH_MM
    ts = np.arange(near - w, far + w + PROFILE_STEP_MM / 2, PROFILE_STEP_MM)
    pts = start[None, :] + ts[:, None] * direction[None, :]
    prof = _bilinear(np.asarray(image, dtype=float), pts[:, 1] / spacing[0], pts[:, 0] / spacing[1])
    inside = (ts >= near) & (ts <= far)
    out_near, out_far = prof[ts < near], prof[ts > far]
    if not inside.any() or out_near.size == 0 or out_far.size == 0:
        return near, far
    peak = float(np.percentile(prof[inside], 90))
    low = float(min(out_near.min(), out_far.min()))
    if peak - max(float(np.median(out_near)), float(np.median(out_far))) < MIN_CONTRAST * (peak - low):
        return near, far  # not a sac brighter than what lies around it (CT, T1): the mask's ends
    a = _crossing(ts, prof, 0.5 * (peak + float(prof[ts <= near].min())), near - w, near + w, rising=True)
    b = _crossing(ts, prof, 0.5 * (peak + float(prof[ts >= far].min())), far - w, far + w, rising=False)
    a = near if a is None else a
    b = far if b is None else b
    return (a, b) if b > a else (near, far)


def _to_px(p: np.ndarray, spacing: tuple[float, float]) -> tuple[float, float]:
    """mm (from the centre of pixel (0, 0)) -> SCOORD pixel coordinates, whose origin is the
    top-left corner of the top-left pixel: the centre of pixel (0, 0) is (0.5, 0.5)."""
    return (float(p[0] / spacing[1]) + 0.5, float(p[1] / spacing[0]) + 0.5)


def measure_level(level: Level, disc: np.ndarray, canal: np.ndarray | None,
                  spacing: tuple[float, float], image: np.ndarray | None = None) -> list[LinearMeasurement]:
    """Disc height and canal AP diameter of one level on one slice.

    ``disc`` and ``canal`` are binary masks of the slice; ``spacing`` is the
    (row, column) pixel spacing in mm. The posterior direction is the one of the
    disc's long axis that points towards the canal; without a canal mask only the
    disc height is measured. With ``image`` (the slice's pixels, same grid as the
    masks) the canal's ends are refined to the sac's edges in the image
    (:func:`half_max_edges`).
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
                near, far = hit if image is None else half_max_edges(image, spacing, start, posterior, *hit)
                a = start + near * posterior
                b = start + far * posterior
                out.insert(0, LinearMeasurement(CANAL_AP_DIAMETER, level.name, float(np.linalg.norm(b - a)),
                                                level.sop_instance_uid, _to_px(a, spacing), _to_px(b, spacing),
                                                level.frame_number))
    return out


def measure_levels(levels: Sequence[Level], masks: SeriesMasks, spacing: tuple[float, float],
                   images: Mapping[tuple[str, int | None], np.ndarray] | None = None) -> dict[str, list[LinearMeasurement]]:
    """Measurements per level name, from the masks of the series the levels were found on.

    ``images``: the pixels of a level's slice by (SOP Instance UID, frame number or None),
    to refine the canal's ends; a level without one is measured on
    the masks alone. A level whose disc segment is missing from ``masks`` gets no entry.
    """
    by_label = {label: n for n, label in masks.segments.items()}
    canal_n = by_label.get(CANAL_SEGMENT)
    frames: Sequence[int | None] = masks.frame_numbers or (None,) * len(masks.sop_instance_uids)
    index = {(uid, f): i for i, (uid, f) in enumerate(zip(masks.sop_instance_uids, frames))}
    out: dict[str, list[LinearMeasurement]] = {}
    for lv in levels:
        n = by_label.get(DISC_SEGMENT + lv.name)
        k = index.get((lv.sop_instance_uid, lv.frame_number if masks.frame_numbers else None))
        if n is None or k is None:
            continue
        # the herniated material the SEG shows as its own segment is still this disc's
        disc = np.isin(masks.labels[k], [n, by_label.get(HERNIATED_SEGMENT + lv.name, -1)])
        canal = masks.labels[k] == canal_n if canal_n is not None else None
        image = images.get((lv.sop_instance_uid, lv.frame_number)) if images is not None else None
        if image is not None and image.shape != disc.shape:
            image = None
        found = measure_level(lv, disc, canal, spacing, image)
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
    """One predicted measurement beside the same measurement on the true masks (mm; mm²
    for an area, :mod:`models.sac_area`)."""

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
