"""A series as a sorted 3D array with its geometry; patient <-> voxel mapping.

Slices are sorted along the normal of their plane (``row x col`` of
ImageOrientationPatient), not by InstanceNumber. Patient coordinates are
DICOM LPS millimetres. Voxel indices are ``(slice k, row i, column j)``:

    P(k, i, j) = IPP_k + j * dc * row_dir + i * dr * col_dir

with ``row_dir`` / ``col_dir`` the first / last three IOP cosines and
``(dr, dc)`` = PixelSpacing (row spacing, column spacing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.multiframe import expand_series, frame_number_of
from models.types import Box, ModelsError


class VolumeError(ModelsError):
    """A series cannot be assembled into a volume."""


@dataclass(frozen=True, slots=True, eq=False)
class Volume:
    """Pixels ``(slices, rows, cols)`` float32 and per-slice geometry, sorted along the normal."""

    series_uid: str
    sop_instance_uids: tuple[str, ...]
    instance_numbers: tuple[int, ...]
    pixels: np.ndarray
    positions: np.ndarray  # (slices, 3) ImagePositionPatient
    orientation: np.ndarray  # (6,) ImageOrientationPatient of the stack
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing), mm
    #: set by :func:`canonical_volume`: how this pixel grid maps back to the source images
    grid: SourceGrid | None = None
    #: per slice, the 1-based frame of a multi-frame source image (0: a single-frame image)
    frame_numbers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = self.pixels.shape[0]
        if self.pixels.ndim != 3 or self.positions.shape != (n, 3) or len(self.sop_instance_uids) != n:
            raise VolumeError("pixels, positions and SOP instance UIDs disagree in slice count")
        if self.frame_numbers and len(self.frame_numbers) != n:
            raise VolumeError("frame numbers and slices disagree in count")

    def frame_of(self, k: int) -> int | None:
        """The 1-based source frame of slice k (None for a single-frame image)."""
        return (self.frame_numbers[k] or None) if self.frame_numbers else None

    @property
    def row_dir(self) -> np.ndarray:
        return self.orientation[:3]

    @property
    def col_dir(self) -> np.ndarray:
        return self.orientation[3:]

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.pixels.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def slice_spacing(self) -> float:
        if len(self.positions) < 2:
            return 1.0
        d = np.diff(self.positions @ self.normal)
        return float(np.median(np.abs(d))) or 1.0

    def voxel_to_patient(self, k: float, i: float, j: float) -> np.ndarray:
        """Patient position of voxel (slice k, row i, column j); k may be fractional."""
        k0 = int(np.clip(np.floor(k), 0, len(self.positions) - 1))
        k1 = min(k0 + 1, len(self.positions) - 1)
        t = float(k) - k0
        origin = (1.0 - t) * self.positions[k0] + t * self.positions[k1]
        dr, dc = self.pixel_spacing
        return origin + j * dc * self.row_dir + i * dr * self.col_dir

    def patient_to_voxel(self, p: Sequence[float] | np.ndarray) -> np.ndarray:
        """(k, i, j) as floats for a patient point (k interpolated between slice planes)."""
        p = np.asarray(p, dtype=float)
        dist = self.plane_distances(p)
        k = _fractional_index(dist)
        k0 = int(np.clip(np.floor(k), 0, len(self.positions) - 1))
        d = p - self.positions[k0]
        dr, dc = self.pixel_spacing
        return np.array([k, float(d @ self.col_dir) / dr, float(d @ self.row_dir) / dc])

    def plane_distances(self, p: Sequence[float] | np.ndarray) -> np.ndarray:
        """Signed distance (mm) of a patient point from each slice plane."""
        p = np.asarray(p, dtype=float)
        return (p[None, :] - self.positions) @ self.normal

    def nearest_slices(
        self, p: Sequence[float] | np.ndarray, count: int = 1, max_distance: float | None = None
    ) -> tuple[int, ...]:
        """Indices of the ``count`` slices whose planes lie nearest the point, nearest first.

        With ``max_distance`` (mm), slices farther than that are left out; an
        empty tuple means the point is outside the stack.
        """
        dist = np.abs(self.plane_distances(p))
        order = np.argsort(dist, kind="stable")[:count]
        if max_distance is not None:
            order = order[dist[order] <= max_distance]
        return tuple(int(k) for k in order)

    def contains_in_plane(self, p: Sequence[float] | np.ndarray, margin: float = 0.0) -> bool:
        """Whether the point's projection falls inside the image (rows/cols, with a margin in px)."""
        _, i, j = self.patient_to_voxel(p)
        rows, cols = self.shape[1], self.shape[2]
        return -margin <= i <= rows - 1 + margin and -margin <= j <= cols - 1 + margin


@dataclass(frozen=True, slots=True)
class SourceGrid:
    """How a canonical volume's in-plane pixel grid maps back onto its source images.

    The canonical grid is the source grid transposed (when ``transpose``), then
    flipped top to bottom (``flip_rows``) and left to right (``flip_cols``).
    ``shape`` is the canonical ``(rows, cols)``. Boxes are in pixel-edge
    coordinates (the top-left corner of the top-left pixel is (0, 0), as in a
    DICOM SCOORD), arrays are ``(..., rows, cols)``.
    """

    transpose: bool
    flip_rows: bool
    flip_cols: bool
    shape: tuple[int, int]

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def point_to_source(self, x: float, y: float) -> tuple[float, float]:
        """(column x, row y) on the canonical grid -> the same point on the source image."""
        rows, cols = self.shape
        x1 = cols - x if self.flip_cols else x
        y1 = rows - y if self.flip_rows else y
        return (y1, x1) if self.transpose else (x1, y1)

    def box_to_source(self, box: Box) -> Box:
        xa, ya = self.point_to_source(box.x0, box.y0)
        xb, yb = self.point_to_source(box.x1, box.y1)
        return Box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))

    def index_from_source(self, row: float, col: float) -> tuple[float, float]:
        """(row, column) pixel indices on a source image -> the same pixel's indices on the
        canonical grid (pixel-centre indices, as :meth:`Volume.voxel_to_patient` takes)."""
        i, j = (col, row) if self.transpose else (row, col)
        if self.flip_rows:
            i = self.shape[0] - 1 - i
        if self.flip_cols:
            j = self.shape[1] - 1 - j
        return i, j

    def array_from_source(self, arr: np.ndarray) -> np.ndarray:
        """An array on the source grid ``(..., rows, cols)`` laid onto the canonical grid
        (the inverse of :meth:`array_to_source`; labels drawn on the images as sent)."""
        a = np.swapaxes(arr, -1, -2) if self.transpose else arr
        if self.flip_rows:
            a = a[..., ::-1, :]
        if self.flip_cols:
            a = a[..., :, ::-1]
        return np.ascontiguousarray(a)

    def array_to_source(self, arr: np.ndarray) -> np.ndarray:
        """An array on the canonical grid ``(..., rows, cols)`` laid back onto the source grid."""
        a = arr
        if self.flip_rows:
            a = a[..., ::-1, :]
        if self.flip_cols:
            a = a[..., :, ::-1]
        if self.transpose:
            a = np.swapaxes(a, -1, -2)
        return np.ascontiguousarray(a)


#: The canonical (row, column) directions per plane, in LPS: the orientation the
#: shipped models were trained on (the phantom's, and the usual display orientation).
#: Sagittal: rows run anterior -> posterior, columns head -> feet; axial: patient
#: right -> left and anterior -> posterior; coronal: right -> left and head -> feet.
CANONICAL_DIRECTIONS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "coronal": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
}


def canonical_plane(orientation: np.ndarray) -> str:
    """``sagittal``/``coronal``/``axial`` by the dominant axis of the plane's normal."""
    n = np.cross(orientation[:3], orientation[3:])
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(n)))]


def canonical_grid(orientation: np.ndarray, rows: int, cols: int) -> SourceGrid:
    """Of the eight transposes and flips of a pixel grid, the one whose row and column
    directions come nearest the plane's :data:`CANONICAL_DIRECTIONS` (identity on ties)."""
    row_t, col_t = CANONICAL_DIRECTIONS[canonical_plane(orientation)]
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    best: tuple[float, SourceGrid] | None = None
    for transpose in (False, True):
        r0, c0 = (col, row) if transpose else (row, col)
        shape = (cols, rows) if transpose else (rows, cols)
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                r = -r0 if flip_cols else r0
                c = -c0 if flip_rows else c0
                score = float(r @ row_t + c @ col_t)
                if best is None or score > best[0] + 1e-9:
                    best = (score, SourceGrid(transpose, flip_rows, flip_cols, shape))
    assert best is not None
    return best[1]


def canonical_volume(volume: Volume) -> Volume:
    """The volume in the canonical patient-based orientation of its plane.

    The pixel grid is transposed and flipped (exact, no resampling) so that rows
    and columns run along :data:`CANONICAL_DIRECTIONS`, and the slices are sorted
    along the new normal: a study sent with rows reversed, transposed, or with
    its slices numbered the other way gives the models the same arrays as the
    plain study. ``grid`` records the mapping back to the source images (boxes
    and masks are reported on the images the scanner sent).
    """
    if volume.grid is not None:
        return volume
    _, rows, cols = volume.shape
    grid = canonical_grid(volume.orientation, rows, cols)
    row, col = volume.row_dir, volume.col_dir
    dr, dc = volume.pixel_spacing
    # source index (row, col) of the canonical grid's first pixel, per slice origin
    i1 = (grid.shape[0] - 1) if grid.flip_rows else 0
    j1 = (grid.shape[1] - 1) if grid.flip_cols else 0
    i_s, j_s = (j1, i1) if grid.transpose else (i1, j1)
    positions = volume.positions + j_s * dc * row[None, :] + i_s * dr * col[None, :]
    r0, c0 = (col, row) if grid.transpose else (row, col)
    new_row = -r0 if grid.flip_cols else r0
    new_col = -c0 if grid.flip_rows else c0
    spacing = (dc, dr) if grid.transpose else (dr, dc)
    pixels = volume.pixels
    if grid.transpose:
        pixels = np.swapaxes(pixels, 1, 2)
    if grid.flip_rows:
        pixels = pixels[:, ::-1, :]
    if grid.flip_cols:
        pixels = pixels[:, :, ::-1]
    normal = np.cross(new_row, new_col)
    order = np.argsort(positions @ normal, kind="stable")
    return Volume(
        series_uid=volume.series_uid,
        sop_instance_uids=tuple(volume.sop_instance_uids[i] for i in order),
        instance_numbers=tuple(volume.instance_numbers[i] for i in order),
        pixels=np.ascontiguousarray(pixels[order]),
        positions=positions[order],
        orientation=np.concatenate([new_row, new_col]),
        pixel_spacing=spacing,
        grid=grid,
        frame_numbers=tuple(volume.frame_numbers[i] for i in order) if volume.frame_numbers else (),
    )


def _fractional_index(dist: np.ndarray) -> float:
    """Where distance crosses zero along the (sorted) slices, as a fractional index."""
    if len(dist) == 1:
        return 0.0
    # dist decreases monotonically with k for a sorted stack (p - pos_k) . n
    for k in range(len(dist) - 1):
        a, b = dist[k], dist[k + 1]
        if (a >= 0 >= b) or (a <= 0 <= b):
            return k + (a / (a - b) if a != b else 0.0)
    return float(np.argmin(np.abs(dist)))


def _floats(value: Any, n: int) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"geometry attribute is not {n} numbers") from exc
    if arr.shape != (n,):
        raise VolumeError(f"geometry attribute has {arr.size} values, expected {n}")
    return arr


def _stacks(dss: list[Any]) -> list[tuple[np.ndarray, list[Any]]]:
    groups: list[tuple[np.ndarray, list[Any]]] = []
    for ds in dss:
        o = _floats(ds.ImageOrientationPatient, 6)
        for key, members in groups:
            if np.allclose(key, o, atol=1e-3):
                members.append(ds)
                break
        else:
            groups.append((o, [ds]))
    return groups


def volume_from_datasets(datasets: Iterable[Any]) -> Volume:
    """Assemble pydicom Datasets of one series (with pixels) into a sorted Volume.

    Slices of the largest stack (one orientation) are kept; rescale slope and
    intercept are applied. Multi-frame images are read frame by frame
    (:mod:`models.multiframe`).
    """
    dss = expand_series(datasets)
    if not dss:
        raise VolumeError("no datasets")
    orientation, stack = max(_stacks(dss), key=lambda g: len(g[1]))
    return _stack_volume(orientation, stack)


def volumes_from_datasets(datasets: Iterable[Any]) -> list[Volume]:
    """One Volume per orientation stack (angled axial blocks, one per disc, are separate)."""
    dss = expand_series(datasets)
    if not dss:
        raise VolumeError("no datasets")
    return [_stack_volume(o, stack) for o, stack in _stacks(dss)]


def nearest_in_stacks(
    volumes: Sequence[Volume], p: Sequence[float] | np.ndarray, margin: float = 0.0
) -> tuple[int, int, float] | None:
    """(stack index, slice index, |distance| mm) of the slice plane nearest a point,
    over stacks whose images contain the point's projection; None if none does."""
    best: tuple[int, int, float] | None = None
    for s, v in enumerate(volumes):
        if not v.contains_in_plane(p, margin):
            continue
        dist = np.abs(v.plane_distances(p))
        k = int(np.argmin(dist))
        if best is None or dist[k] < best[2]:
            best = (s, k, float(dist[k]))
    return best


def _stack_volume(orientation: np.ndarray, stack: list[Any]) -> Volume:
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    positions = np.stack([_floats(ds.ImagePositionPatient, 3) for ds in stack])
    order = np.argsort(positions @ normal, kind="stable")
    stack = [stack[i] for i in order]
    positions = positions[order]
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in stack}
    if len(shapes) != 1:
        raise VolumeError(f"slices differ in matrix size: {sorted(shapes)}")
    planes = []
    for ds in stack:
        arr = ds.pixel_array.astype(np.float32)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(arr * slope + intercept)
    ps = _floats(stack[0].PixelSpacing, 2)
    return Volume(
        series_uid=str(stack[0].get("SeriesInstanceUID", "")),
        sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in stack),
        instance_numbers=tuple(int(ds.get("InstanceNumber", 0) or 0) for ds in stack),
        pixels=np.stack(planes),
        positions=positions,
        orientation=orientation,
        pixel_spacing=(float(ps[0]), float(ps[1])),
        frame_numbers=tuple(frame_number_of(ds) for ds in stack),
    )


def read_series_dir(directory: Path) -> list[Any]:
    """Read every DICOM file in a directory (pixels included; multi-frame images stay whole)."""
    import pydicom

    files = sorted(p for p in Path(directory).iterdir() if p.is_file())
    if not files:
        raise VolumeError(f"no files in {directory}")
    return [pydicom.dcmread(p) for p in files]


def load_volume(directory: Path) -> Volume:
    return volume_from_datasets(read_series_dir(directory))


def normalize_image(img: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Percentile window to [0, 1] (robust to scanner scaling), float32."""
    lo, hi = np.percentile(img, [low, high])
    if hi <= lo:
        return np.zeros_like(img, dtype=np.float32)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample a 2D image at fractional (rows, cols); zero outside the image."""
    h, w = image.shape
    r0 = np.floor(rows).astype(int)
    c0 = np.floor(cols).astype(int)
    fr = rows - r0
    fc = cols - c0
    out = np.zeros(np.broadcast(rows, cols).shape, dtype=np.float32)
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            r = r0 + dr
            c = c0 + dc
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            vals = np.where(ok, image[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)], 0.0)
            out += (wr * wc * vals).astype(np.float32)
    return out


def sample_crop(
    volume: Volume,
    pixels: np.ndarray,
    center: Sequence[float] | np.ndarray,
    size_px: int,
    fov_mm: float,
    half_slices: int = 2,
) -> np.ndarray:
    """A 2.5D crop ``(2*half_slices+1, size_px, size_px)`` centred on a patient point.

    The crop covers ``fov_mm`` x ``fov_mm`` in the slice plane whatever the
    pixel spacing, on the slice nearest the point and ``half_slices`` slices
    on each side (clamped at the ends of the stack). ``pixels`` is the
    volume's (normalised) pixel array.
    """
    p = np.asarray(center, dtype=float)
    n = volume.shape[0]
    k0 = int(np.argmin(np.abs(volume.plane_distances(p))))
    ks = np.clip(np.arange(k0 - half_slices, k0 + half_slices + 1), 0, n - 1)
    dr, dc = volume.pixel_spacing
    u = np.linspace(-fov_mm / 2.0, fov_mm / 2.0, size_px)
    out = np.empty((len(ks), size_px, size_px), dtype=np.float32)
    for out_i, k in enumerate(ks):
        d = p - volume.positions[k]
        ic = float(d @ volume.col_dir) / dr
        jc = float(d @ volume.row_dir) / dc
        rows = ic + u[:, None] / dr
        cols = jc + u[None, :] / dc
        out[out_i] = bilinear(pixels[k], np.broadcast_to(rows, (size_px, size_px)),
                              np.broadcast_to(cols, (size_px, size_px)))
    return out
