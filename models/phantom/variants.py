"""Variants of a study that a hospital could send: same anatomy, different encoding.

Each variant rewrites the pixel data *and* the headers consistently, so the
patient-space content (every voxel's position in LPS millimetres) is unchanged:

* the eight in-plane orientations of the pixel grid (:data:`IN_PLANE`: the
  dihedral group of the square, i.e. flips of rows and columns and a
  transpose), with ImageOrientationPatient, ImagePositionPatient,
  PixelSpacing, Rows and Columns rewritten to match;
* ``reversed_slices``: InstanceNumber counted the other way;
* ``legacy_enhanced``: each series as one Legacy Converted Enhanced MR (or CT)
  image, the multi-frame object Siemens XA and Philips scanners send by
  default (:func:`legacy_converted`, built with highdicom's legacy conversion);
  the series keeps its Series Instance UID;
* awkward studies: ``with_localizer`` (a three-plane survey not marked as a
  localizer), ``with_repeat`` (the sagittal T2 or STIR repeated, and a short re-run),
  ``without_descriptions``, and ``partial_coverage`` (the sagittal field of
  view cut to the lower lumbar spine: a different answer by design, the levels
  seen).

The analyzer must give the same levels and grades on every variant; tests
(``tests/test_study_variants.py``) and ``spinenode evaluate --variant`` use
these functions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class InPlane:
    """An in-plane reorientation of the pixel grid: transpose first, then flips."""

    transpose: bool = False
    flip_rows: bool = False  # top row becomes the bottom row
    flip_cols: bool = False  # left column becomes the right column

    @property
    def name(self) -> str:
        parts = [p for p, on in (("transpose", self.transpose), ("flip_rows", self.flip_rows),
                                 ("flip_cols", self.flip_cols)) if on]
        return "+".join(parts) or "plain"


#: All eight in-plane orientations (the identity first).
IN_PLANE: tuple[InPlane, ...] = tuple(
    InPlane(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)
)


def _ds_str(v: float) -> str:
    """A decimal string (DS, at most 16 characters)."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def reorient_array(arr: np.ndarray, op: InPlane) -> np.ndarray:
    """A ``(..., rows, cols)`` array on the grid that :func:`reorient` gives."""
    a = np.swapaxes(arr, -1, -2) if op.transpose else arr
    if op.flip_rows:
        a = a[..., ::-1, :]
    if op.flip_cols:
        a = a[..., :, ::-1]
    return np.ascontiguousarray(a)


def reorient(ds: Any, op: InPlane) -> Any:
    """A copy of a single-frame image with its pixel grid reoriented and its header rewritten.

    The voxel at (row i, column j) keeps its patient position:
    ``IPP + j * dc * row_dir + i * dr * col_dir`` is the same before and after.
    """
    out = copy.deepcopy(ds)
    arr = np.asarray(ds.pixel_array)
    row = np.asarray([float(v) for v in ds.ImageOrientationPatient[:3]])
    col = np.asarray([float(v) for v in ds.ImageOrientationPatient[3:]])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    if op.transpose:
        row, col = col, row
        dr, dc = dc, dr
    arr = reorient_array(arr, op)
    rows, cols = arr.shape
    if op.flip_rows:
        ipp = ipp + (rows - 1) * dr * col
        col = -col
    if op.flip_cols:
        ipp = ipp + (cols - 1) * dc * row
        row = -row
    out.Rows, out.Columns = int(rows), int(cols)
    out.PixelSpacing = [_ds_str(dr), _ds_str(dc)]
    out.ImageOrientationPatient = [_ds_str(v) for v in (*row, *col)]
    out.ImagePositionPatient = [_ds_str(v) for v in ipp]
    out.PixelData = arr.astype(ds.pixel_array.dtype).tobytes()
    return out


def reverse_slices(datasets: Sequence[Any]) -> list[Any]:
    """Copies with InstanceNumber counted the other way (and the list reversed)."""
    out = [copy.deepcopy(ds) for ds in datasets]
    numbers = sorted(int(ds.get("InstanceNumber", 0) or 0) for ds in out)
    order = sorted(range(len(out)), key=lambda i: int(out[i].get("InstanceNumber", 0) or 0))
    for rank, i in enumerate(order):
        out[i].InstanceNumber = numbers[len(numbers) - 1 - rank]
    return out[::-1]


Study = Mapping[str, Sequence[Any]]


def in_plane_variant(series: Study, op: InPlane) -> dict[str, list[Any]]:
    """Every image of every series reoriented by ``op``."""
    return {uid: [reorient(ds, op) for ds in dss] for uid, dss in series.items()}


def legacy_converted(datasets: Sequence[Any]) -> Any:
    """One Legacy Converted Enhanced MR (or CT) image holding every image of a single-frame series.

    The SOP Instance UID derives from the series UID (the same series gives the same
    object); frames are in the order highdicom's dimension index gives them.
    """
    import highdicom.legacy as hl
    from pydicom.uid import generate_uid

    first = datasets[0]
    cls = hl.LegacyConvertedEnhancedCTImage if first.Modality == "CT" else hl.LegacyConvertedEnhancedMRImage
    series_uid = str(first.SeriesInstanceUID)
    return cls(
        list(datasets), series_uid, int(first.get("SeriesNumber", 1) or 1),
        generate_uid(entropy_srcs=[series_uid, "legacy-converted"]), 1,
    )


def _new_uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=list(parts))


def _role_series(series: Study, plane: str, *weightings: str) -> str:
    """The UID of the series the node would pick for (plane, one of ``weightings``)."""
    from models.series import classify_series, header_from_datasets

    for uid, dss in series.items():
        c = classify_series(header_from_datasets(list(dss)))
        if c.usable and str(c.plane) == plane and str(c.weighting) in weightings:
            return uid
    raise ValueError(f"no {plane} {' or '.join(weightings)} series in the study")


def with_localizer(series: Study) -> dict[str, list[Any]]:
    """The study plus a three-plane survey (one sagittal, one coronal, one axial image) whose
    ImageType does not say LOCALIZER and whose description says nothing."""
    sag = list(series[_role_series(series, "sagittal", "T2", "STIR")])
    first = sag[len(sag) // 2]
    series_uid = _new_uid(str(first.SeriesInstanceUID), "localizer")
    images = []
    for i, iop in enumerate(([0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1], [1, 0, 0, 0, 1, 0])):
        ds = copy.deepcopy(first)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = _new_uid(series_uid, str(i))
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.SeriesDescription = "survey"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImageOrientationPatient = [_ds_str(float(v)) for v in iop]
        ds.RepetitionTime, ds.EchoTime = 8.6, 4.0
        images.append(ds)
    out = {uid: list(dss) for uid, dss in series.items()}
    out[series_uid] = images
    return out


def with_repeat(series: Study) -> dict[str, list[Any]]:
    """The study plus a repeat of its sagittal T2 or STIR (new UIDs, a later series number, as a
    technologist's re-run after motion) and a shorter one covering only the middle slices."""
    uid = _role_series(series, "sagittal", "T2", "STIR")
    dss = list(series[uid])
    out = {u: list(d) for u, d in series.items()}
    for tag, keep in (("repeat", dss), ("short", sorted(dss, key=lambda d: int(d.InstanceNumber))[3:-3])):
        new_series = _new_uid(uid, tag)
        copies = []
        for ds in keep:
            c = copy.deepcopy(ds)
            c.SeriesInstanceUID = new_series
            c.SOPInstanceUID = _new_uid(new_series, str(ds.SOPInstanceUID))
            c.SeriesNumber = int(ds.get("SeriesNumber", 1) or 1) + (100 if tag == "repeat" else 200)
            copies.append(c)
        out[new_series] = copies
    return out


def without_descriptions(series: Study) -> dict[str, list[Any]]:
    """Every SeriesDescription meaningless: classification must come from geometry and TR/TE/TI."""
    out = {}
    for n, (uid, dss) in enumerate(series.items()):
        copies = [copy.deepcopy(ds) for ds in dss]
        for c in copies:
            c.SeriesDescription = f"series {n + 1}"
        out[uid] = copies
    return out


def partial_coverage(series: Study, keep_fraction: float = 0.55) -> dict[str, list[Any]]:
    """The sagittal series cut to the lower ``keep_fraction`` of the head-feet field of view
    (rows removed at the top, ImagePositionPatient moved to match): the upper lumbar discs
    are outside the images."""
    out = {}
    for uid, dss in series.items():
        first = dss[0]
        col = np.asarray([float(v) for v in first.ImageOrientationPatient[3:]])
        row = np.asarray([float(v) for v in first.ImageOrientationPatient[:3]])
        if abs(float(np.cross(row, col)[0])) < 0.8:  # not sagittal: kept as it is
            out[uid] = list(dss)
            continue
        copies = []
        for ds in dss:
            c = copy.deepcopy(ds)
            arr = np.asarray(ds.pixel_array)
            rows = arr.shape[0]
            head_up = float(col[2]) < 0  # rows run head -> feet: the head is at the top
            cut = int(round(rows * (1.0 - keep_fraction)))
            kept = arr[cut:] if head_up else arr[: rows - cut]
            if head_up:
                dr = float(ds.PixelSpacing[0])
                ipp = np.asarray([float(v) for v in ds.ImagePositionPatient]) + cut * dr * col
                c.ImagePositionPatient = [_ds_str(v) for v in ipp]
            c.Rows = int(kept.shape[0])
            c.PixelData = np.ascontiguousarray(kept).tobytes()
            copies.append(c)
        out[uid] = copies
    return out


def variant_names() -> tuple[str, ...]:
    """Names accepted by :func:`apply_variant`."""
    return (*(op.name for op in IN_PLANE), "reversed_slices", "legacy_enhanced", "with_localizer",
            "with_repeat", "without_descriptions", "partial_coverage")


def apply_variant(series: Study, name: str) -> dict[str, list[Any]]:
    """The study as variant ``name`` (see :func:`variant_names`)."""
    for op in IN_PLANE:
        if op.name == name:
            return in_plane_variant(series, op)
    table: dict[str, Callable[[Study], dict[str, list[Any]]]] = {
        "reversed_slices": lambda s: {uid: reverse_slices(dss) for uid, dss in s.items()},
        "legacy_enhanced": lambda s: {uid: [legacy_converted(dss)] for uid, dss in s.items()},
        "with_localizer": with_localizer,
        "with_repeat": with_repeat,
        "without_descriptions": without_descriptions,
        "partial_coverage": partial_coverage,
    }
    if name not in table:
        raise ValueError(f"unknown variant {name!r} (one of {', '.join(variant_names())})")
    return table[name](series)
