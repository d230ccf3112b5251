"""Dural sac cross-sectional area (mm²) on the axial slice through a disc.

The sagittal canal measurement (:mod:`models.measure`) gives a point inside the sac at
the disc (the middle of its AP line). On the axial image whose plane lies nearest that
point, rays go out from it every 5°; each ends at the sac's edge: where the signal
first falls below halfway between the sac's (bright CSF on T2) and the darkest signal
in the next :data:`OUTSIDE_MM` (the half-maximum, for partial volume), and stays below
for :data:`PERSIST_MM` (so dark nerve roots inside the sac do not end a ray).

Limits: bright tissue right beside the sac with darker tissue within
:data:`OUTSIDE_MM` beyond it (epidural fat before a ligament, on T2) lowers the
threshold below the fat's signal, and the ray runs on into the fat; a cluster of roots
wider than :data:`PERSIST_MM` ends a ray early. On the phantom the two nearly cancel
(docs/models.md); a real sac has not been measured. The ray ends, median-filtered over
neighbouring rays, outline the sac; the area is the outline's (shoelace). Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from models.measure import LinearMeasurement, _bilinear
from models.volume import Volume, nearest_in_stacks, volumes_from_datasets

DURAL_SAC_AREA: Final = "dural_sac_area"
RAYS: Final = 72
#: Rays end at most this far from the seed (mm).
MAX_RADIUS_MM: Final = 20.0
#: The background of an edge is the darkest signal this far beyond it (mm).
OUTSIDE_MM: Final = 6.0
#: The signal must stay below the edge threshold this far (mm) for the edge to count.
PERSIST_MM: Final = 5.0
#: The axial plane must lie this close to the seed point (mm).
MAX_PLANE_DISTANCE_MM: Final = 4.0
#: Rays that must find an edge for an area to be reported.
MIN_RAYS_FOUND: Final = 0.9
STEP_MM: Final = 0.1
#: Ray ends are median-filtered over this many neighbouring rays (a spike at a root goes).
MEDIAN_RAYS: Final = 9


@dataclass(frozen=True, slots=True)
class AreaMeasurement:
    """An area on one image; ``outline`` is a closed polygon in SCOORD pixel coordinates
    (column, row; the top-left corner of the top-left pixel is (0, 0))."""

    kind: str
    level: str
    value_mm2: float
    series_uid: str
    sop_instance_uid: str
    outline: tuple[tuple[float, float], ...]
    frame_number: int | None = None
    #: the slice index in the volume it was measured on (for comparing with masks)
    slice_index: int = 0

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "level": self.level, "mm2": round(self.value_mm2, 1),
                "sop_instance_uid": self.sop_instance_uid}


def _edge(prof: np.ndarray, peak: float) -> float | None:
    """Distance (mm) along a ray profile (sampled every STEP_MM from the seed) of the sac's
    edge: the first fall below halfway between the sac's signal and the darkest signal in
    the next :data:`OUTSIDE_MM` that stays below for :data:`PERSIST_MM`."""
    ahead = round(OUTSIDE_MM / STEP_MM)
    hold = round(PERSIST_MM / STEP_MM)
    for i in range(1, prof.size - hold):
        thr = 0.5 * (peak + float(prof[i:i + ahead].min()))
        if prof[i] < thr <= prof[i - 1] and float(prof[i:i + hold].max()) < thr:
            frac = (prof[i - 1] - thr) / (prof[i - 1] - prof[i])
            return (i - 1 + float(frac)) * STEP_MM
    return None


def sac_outline(image: np.ndarray, spacing: tuple[float, float], seed: tuple[float, float]
                ) -> tuple[float, np.ndarray] | None:
    """Area (mm²) and outline ((RAYS, 2) column/row pixel-centre indices) of the bright
    region around ``seed`` (column, row pixel-centre indices); None when too few rays end."""
    img = np.asarray(image, dtype=float)
    dr, dc = spacing
    near = np.mgrid[-3:4, -3:4].reshape(2, -1).T * 0.5
    around = _bilinear(img, seed[1] + near[:, 0] * 2.0 / dr, seed[0] + near[:, 1] * 2.0 / dc)
    peak = float(np.percentile(around, 90))
    ts = np.arange(0.0, MAX_RADIUS_MM + OUTSIDE_MM, STEP_MM)
    radii = np.full(RAYS, np.nan)
    angles = np.linspace(0.0, 2 * np.pi, RAYS, endpoint=False)
    for r, th in enumerate(angles):
        cols = seed[0] + ts * np.cos(th) / dc
        rows = seed[1] + ts * np.sin(th) / dr
        inside = (rows >= 0) & (rows <= img.shape[0] - 1) & (cols >= 0) & (cols <= img.shape[1] - 1)
        if not inside.all():
            continue
        e = _edge(_bilinear(img, rows, cols), peak)
        if e is not None and e <= MAX_RADIUS_MM:
            radii[r] = e
    if np.mean(np.isfinite(radii)) < MIN_RAYS_FOUND:
        return None
    filled = np.where(np.isfinite(radii), radii, np.nanmedian(radii))
    h = MEDIAN_RAYS // 2
    padded = np.concatenate([filled[-h:], filled, filled[:h]])
    smooth = np.median(np.stack([padded[i:i + RAYS] for i in range(MEDIAN_RAYS)]), axis=0)
    x = smooth * np.cos(angles)
    y = smooth * np.sin(angles)
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    outline = np.stack([seed[0] + x / dc, seed[1] + y / dr], axis=1)
    return area, outline


def image_point_to_patient(position: Sequence[float], row_dir: Sequence[float], col_dir: Sequence[float],
                           spacing: tuple[float, float], point: tuple[float, float]) -> np.ndarray:
    """Patient position (mm) of a SCOORD pixel point (column, row; pixel-edge origin) on an
    image with ImagePositionPatient ``position`` (the centre of its top-left pixel)."""
    col, row = point
    return (np.asarray(position, dtype=float) + (col - 0.5) * spacing[1] * np.asarray(row_dir, dtype=float)
            + (row - 0.5) * spacing[0] * np.asarray(col_dir, dtype=float))


def canal_seed(canal_line: LinearMeasurement, position: Sequence[float], row_dir: Sequence[float],
               col_dir: Sequence[float], spacing: tuple[float, float]) -> np.ndarray:
    """The middle of the sagittal canal AP line, in patient mm: a point inside the sac at the disc."""
    mid = (0.5 * (canal_line.p0[0] + canal_line.p1[0]), 0.5 * (canal_line.p0[1] + canal_line.p1[1]))
    return image_point_to_patient(position, row_dir, col_dir, spacing, mid)


def measure_sac_area(level: str, seed_patient: Sequence[float] | np.ndarray, axial: Sequence[Volume]
                     ) -> AreaMeasurement | None:
    """The dural sac's area on the axial slice nearest ``seed_patient`` (a point inside the
    sac at the disc, patient mm), over the axial stacks given; None without a slice within
    :data:`MAX_PLANE_DISTANCE_MM` or without a closed outline."""
    found = nearest_in_stacks(axial, seed_patient)
    if found is None or found[2] > MAX_PLANE_DISTANCE_MM:
        return None
    s, k, _ = found
    vol = axial[s]
    _, i, j = vol.patient_to_voxel(seed_patient)
    got = sac_outline(vol.pixels[k], vol.pixel_spacing, (float(j), float(i)))
    if got is None:
        return None
    area, outline = got
    closed = [(float(c) + 0.5, float(r) + 0.5) for c, r in outline]
    closed.append(closed[0])
    return AreaMeasurement(DURAL_SAC_AREA, level, area, vol.series_uid, vol.sop_instance_uids[k], tuple(closed),
                           vol.frame_of(k), k)


def sac_areas(canal_lines: Mapping[str, LinearMeasurement], sagittal: Mapping[str, Any],
              axial: Sequence[Any]) -> dict[str, AreaMeasurement]:
    """The dural sac area per level from DICOM datasets: ``canal_lines`` the canal AP line
    per level name, ``sagittal`` the headers of the images those lines lie on by SOP
    Instance UID (single-frame: ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing), ``axial`` the full datasets of the axial T2 series. A level whose
    image lacks that geometry (a multi-frame source) or that no axial slice crosses
    gets no area."""
    if not axial or not canal_lines:
        return {}
    volumes = volumes_from_datasets(axial)
    out: dict[str, AreaMeasurement] = {}
    for level, line in canal_lines.items():
        ds = sagittal.get(line.sop_instance_uid)
        if ds is None or not all(k in ds for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")):
            continue
        iop = [float(v) for v in ds.ImageOrientationPatient]
        seed = canal_seed(line, [float(v) for v in ds.ImagePositionPatient], iop[:3], iop[3:],
                          (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])))
        area = measure_sac_area(level, seed, volumes)
        if area is not None:
            out[level] = area
    return out
