"""Series classification and selection from DICOM geometry and sequence parameters.

Pure functions on small frozen records, so the node (which stores the result),
the analyzer (which picks its inputs) and the tests share one rule set.
Description strings are only a tie-breaker: the plane comes from
ImageOrientationPatient and the weighting from TR/TE/TI and the scanning
sequence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from models.multiframe import expand_series, frame_number_of

#: |normal component| above which a plane is called by its dominant axis (cos 35 deg).
PLANE_COSINE = 0.82
#: Minimum slices for a usable sagittal (foramen to foramen) or axial series.
MIN_SAGITTAL_SLICES = 7
MIN_AXIAL_SLICES = 5


class Plane(StrEnum):
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"
    OBLIQUE = "oblique"
    UNKNOWN = "unknown"


class Weighting(StrEnum):
    T1 = "T1"
    T2 = "T2"
    STIR = "STIR"
    PD = "PD"
    CT = "CT"
    OTHER = "other"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SliceGeometry:
    """Where one image lies in patient space."""

    sop_instance_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class SeriesHeader:
    """The header fields of one series needed to classify it (no pixels)."""

    series_uid: str
    modality: str
    description: str = ""
    scanning_sequence: str = ""
    sequence_variant: str = ""
    repetition_time: float | None = None
    echo_time: float | None = None
    inversion_time: float | None = None
    slice_thickness: float | None = None
    image_type: str = ""
    sop_class_uid: str = ""
    slices: tuple[SliceGeometry, ...] = ()
    series_number: int | None = None


@dataclass(frozen=True, slots=True)
class SeriesClass:
    """The classification of one series, stored by the node and read by the analyzer."""

    series_uid: str
    modality: str
    plane: Plane
    weighting: Weighting
    n_slices: int
    n_stacks: int
    slice_spacing_mm: float | None
    coverage_mm: float | None
    pixel_spacing_mm: float | None
    usable: bool
    reason: str = ""
    series_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid,
            "modality": self.modality,
            "plane": str(self.plane),
            "weighting": str(self.weighting),
            "n_slices": self.n_slices,
            "n_stacks": self.n_stacks,
            "slice_spacing_mm": self.slice_spacing_mm,
            "coverage_mm": self.coverage_mm,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "usable": self.usable,
            "reason": self.reason,
            "series_number": self.series_number,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeriesClass:
        return cls(
            series_uid=d["series_uid"],
            modality=d.get("modality", ""),
            plane=Plane(d["plane"]),
            weighting=Weighting(d["weighting"]),
            n_slices=int(d["n_slices"]),
            n_stacks=int(d.get("n_stacks", 1)),
            slice_spacing_mm=d.get("slice_spacing_mm"),
            coverage_mm=d.get("coverage_mm"),
            pixel_spacing_mm=d.get("pixel_spacing_mm"),
            usable=bool(d["usable"]),
            reason=d.get("reason", ""),
            series_number=d.get("series_number"),
        )


#: What each selected role serves (design.md, clinical vocabulary).
ROLE_CONDITIONS: dict[str, tuple[str, ...]] = {
    "sagittal_t2": ("spinal_canal_stenosis", "pfirrmann"),
    "sagittal_t1": ("neural_foraminal_narrowing",),
    "axial_t2": ("subarticular_stenosis",),
    "ct_sagittal": ("spinal_canal_stenosis",),
}


@dataclass(frozen=True, slots=True)
class SeriesSelection:
    """Series chosen for each role; ``missing`` says what could not be found and why."""

    sagittal_t2: str | None = None
    sagittal_t1: str | None = None
    axial_t2: str | None = None
    ct_sagittal: str | None = None
    missing: tuple[str, ...] = field(default=())

    def series_uids(self) -> set[str]:
        """The series chosen for any role."""
        return {uid for role in ROLE_CONDITIONS if (uid := getattr(self, role))}

    def role_of(self, series_uid: str) -> str | None:
        for role in ROLE_CONDITIONS:
            if getattr(self, role) == series_uid:
                return role
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sagittal_t2": self.sagittal_t2,
            "sagittal_t1": self.sagittal_t1,
            "axial_t2": self.axial_t2,
            "ct_sagittal": self.ct_sagittal,
            "missing": list(self.missing),
        }


def plane_of(orientation: Sequence[float] | None) -> Plane:
    """Plane of an image from ImageOrientationPatient (row and column direction cosines)."""
    if orientation is None or len(orientation) != 6:
        return Plane.UNKNOWN
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return Plane.UNKNOWN
    normal = np.abs(normal / norm)
    axis = int(np.argmax(normal))
    if normal[axis] < PLANE_COSINE:
        return Plane.OBLIQUE
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[axis]


def weighting_of(h: SeriesHeader) -> Weighting:
    """MR weighting from TR/TE/TI and the scanning sequence; CT is CT.

    Thresholds follow common 1.5/3 T spine protocols: T1 TR < 1000 ms and
    TE < 30 ms; T2 TR >= 1500 ms and TE >= 60 ms; STIR an inversion recovery
    with TI 100-300 ms. The description decides only when the numbers are absent.
    """
    if h.modality == "CT":
        return Weighting.CT
    if h.modality != "MR":
        return Weighting.OTHER
    desc = h.description.upper()
    ti = h.inversion_time
    if ti is not None and 80.0 <= ti <= 300.0 and ("IR" in h.scanning_sequence.upper() or ti > 0):
        return Weighting.STIR
    tr, te = h.repetition_time, h.echo_time
    if tr is not None and te is not None and tr > 0:
        if tr < 1000.0 and te < 30.0:
            return Weighting.T1
        if tr >= 1500.0 and te >= 60.0:
            return Weighting.T2
        if tr >= 1500.0 and te < 40.0:
            # PD, or a T1 FLAIR (long TR with a long TI): the description disambiguates.
            return Weighting.T1 if "T1" in desc else Weighting.PD
    if "STIR" in desc or "TIRM" in desc:
        return Weighting.STIR
    if "T2" in desc:
        return Weighting.T2
    if "T1" in desc:
        return Weighting.T1
    return Weighting.UNKNOWN


def _stacks(slices: Sequence[SliceGeometry]) -> list[list[SliceGeometry]]:
    """Group slices of one series by orientation (angled axial blocks are separate stacks)."""
    stacks: list[tuple[np.ndarray, list[SliceGeometry]]] = []
    for s in slices:
        if s.orientation is None:
            continue
        o = np.asarray(s.orientation, dtype=float)
        for key, members in stacks:
            if np.allclose(key, o, atol=1e-3):
                members.append(s)
                break
        else:
            stacks.append((o, [s]))
    return [members for _, members in stacks]


def _spacing_and_coverage(stack: Sequence[SliceGeometry]) -> tuple[float | None, float | None]:
    pos = [s.position for s in stack if s.position is not None]
    if not pos or stack[0].orientation is None:
        return None, None
    o = np.asarray(stack[0].orientation, dtype=float)
    normal = np.cross(o[:3], o[3:])
    proj = np.sort(np.asarray(pos, dtype=float) @ normal)
    if len(proj) < 2:
        return None, None
    diffs = np.diff(proj)
    diffs = diffs[diffs > 1e-3]
    if diffs.size == 0:
        return None, None
    spacing = float(np.median(diffs))
    return round(spacing, 3), round(float(proj[-1] - proj[0]) + spacing, 2)


def _main_stack(stacks: list[list[SliceGeometry]]) -> tuple[Plane, list[SliceGeometry]]:
    """The series' plane and its main stack, whatever order the slices came in.

    The plane is the one most slices lie in, summed over stacks (axial blocks
    angled along each disc are one axial series even when the L5-S1 block is
    tilted past 35 degrees); the main stack is the largest stack in that plane,
    ties broken by orientation, so the node (files in arrival order) and the
    analyzer (files in instance order) always agree.
    """
    counts: dict[Plane, int] = defaultdict(int)
    for st in stacks:
        counts[plane_of(st[0].orientation)] += len(st)
    rank = list(Plane)
    plane = min(counts, key=lambda p: (-counts[p], rank.index(p)))
    in_plane = [st for st in stacks if plane_of(st[0].orientation) == plane]
    main = min(in_plane, key=lambda st: (-len(st), tuple(round(v, 3) for v in st[0].orientation or ())))
    return plane, main


def classify_series(h: SeriesHeader) -> SeriesClass:
    """Classify one series by geometry and sequence (independent of the slices' order)."""
    stacks = _stacks(h.slices)
    if not stacks:
        return SeriesClass(
            h.series_uid, h.modality, Plane.UNKNOWN, weighting_of(h), len(h.slices), 0,
            None, None, None, False, "no ImageOrientationPatient", h.series_number,
        )
    plane, main = _main_stack(stacks)
    spacing, coverage = _spacing_and_coverage(main)
    ps = main[0].pixel_spacing
    pixel_mm = round(float(min(ps)), 4) if ps else None
    weighting = weighting_of(h)
    usable, reason = True, ""
    n = len(h.slices)
    if h.modality not in ("MR", "CT"):
        usable, reason = False, f"modality {h.modality or 'missing'} is not MR or CT"
    elif "LOCALIZER" in h.image_type.upper() or "SCOUT" in h.description.upper():
        usable, reason = False, "localizer"
    elif len(planes := _main_planes(stacks)) > 1:
        usable, reason = False, f"localizer: slices in {len(planes)} planes ({', '.join(sorted(planes))})"
    elif plane == Plane.SAGITTAL and len(main) < MIN_SAGITTAL_SLICES:
        usable, reason = False, f"{len(main)} sagittal slices < {MIN_SAGITTAL_SLICES}"
    elif plane == Plane.AXIAL and n < MIN_AXIAL_SLICES:
        usable, reason = False, f"{n} axial slices < {MIN_AXIAL_SLICES}"
    elif plane in (Plane.UNKNOWN, Plane.OBLIQUE, Plane.CORONAL):
        usable, reason = False, f"{plane} plane is not used"
    elif pixel_mm is None:
        usable, reason = False, "no PixelSpacing"
    return SeriesClass(
        h.series_uid, h.modality, plane, weighting, n, len(stacks),
        spacing, coverage, pixel_mm, usable, reason, h.series_number,
    )


def _main_planes(stacks: Sequence[Sequence[SliceGeometry]]) -> set[str]:
    """The sagittal/coronal/axial planes a series' stacks lie in (oblique blocks not counted)."""
    main = {Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL}
    return {str(p) for st in stacks if (p := plane_of(st[0].orientation)) in main}


def _best(cands: list[SeriesClass]) -> str | None:
    """The series to use of several candidates for one role, whatever order they come in.

    More coverage first, then finer pixels, then more slices; of series equal in all
    that (a repeat), the later series number (the technologist's re-run, usually
    after motion), then the series UID.
    """
    if not cands:
        return None
    cands.sort(key=lambda c: (-(c.coverage_mm or 0.0), c.pixel_spacing_mm or 99.0, -c.n_slices,
                              -(c.series_number if c.series_number is not None else -1), c.series_uid))
    return cands[0].series_uid


def select_series(classes: Iterable[SeriesClass]) -> SeriesSelection:
    """Pick the series each condition needs; report what is missing.

    MR: sagittal T2 (STIR if no T2) for canal stenosis and Pfirrmann, sagittal
    T1 for the foramina, axial T2 for the subarticular zones. CT: the sagittal
    series (reformat) for canal stenosis.
    """
    usable = [c for c in classes if c.usable]
    mr = [c for c in usable if c.modality == "MR"]
    ct = [c for c in usable if c.modality == "CT"]
    sag = [c for c in mr if c.plane == Plane.SAGITTAL]
    sag_t2 = _best([c for c in sag if c.weighting == Weighting.T2]) or _best(
        [c for c in sag if c.weighting == Weighting.STIR]
    )
    sag_t1 = _best([c for c in sag if c.weighting == Weighting.T1])
    ax_t2 = _best([c for c in mr if c.plane == Plane.AXIAL and c.weighting == Weighting.T2])
    ct_sag = _best([c for c in ct if c.plane == Plane.SAGITTAL])
    missing: list[str] = []
    if mr or not ct:
        if sag_t2 is None:
            missing.append("no usable sagittal T2/STIR series: canal stenosis and Pfirrmann not assessed")
        if sag_t1 is None:
            missing.append("no usable sagittal T1 series: foraminal narrowing not assessed")
        if ax_t2 is None:
            missing.append("no usable axial T2 series: subarticular stenosis not assessed")
    if ct and not mr and ct_sag is None:
        missing.append("no usable sagittal CT reformat: canal stenosis not assessed")
    return SeriesSelection(sag_t2, sag_t1, ax_t2, ct_sag, tuple(missing))


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def slice_geometry(ds: Any) -> SliceGeometry:
    """SliceGeometry from a pydicom Dataset (header only; pixels are not touched)."""
    inst = ds.get("InstanceNumber")
    return SliceGeometry(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        instance_number=int(inst) if inst not in (None, "") else None,
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),  # type: ignore[arg-type]
        rows=int(ds.get("Rows", 0) or 0),
        cols=int(ds.get("Columns", 0) or 0),
    )


def header_from_datasets(datasets: Sequence[Any]) -> SeriesHeader:
    """SeriesHeader from the pydicom Datasets of one series (read with stop_before_pixels).

    Multi-frame images count frame by frame (:func:`models.multiframe.expand_series`:
    geometry and TR/TE/TI from the functional groups). The datasets are put in
    instance order first (then SOP Instance UID, frame), so the series-level fields
    come from the same image whatever order the files were read in.
    """
    if not datasets:
        raise ValueError("a series needs at least one dataset")
    datasets = sorted(expand_series(datasets), key=_instance_key)
    first = datasets[0]
    return SeriesHeader(
        series_uid=str(first.get("SeriesInstanceUID", "")),
        modality=str(first.get("Modality", "")),
        description=str(first.get("SeriesDescription", "")),
        scanning_sequence="\\".join(_strs(first.get("ScanningSequence"))),
        sequence_variant="\\".join(_strs(first.get("SequenceVariant"))),
        repetition_time=_float(first.get("RepetitionTime")),
        echo_time=_float(first.get("EchoTime")),
        inversion_time=_float(first.get("InversionTime")),
        slice_thickness=_float(first.get("SliceThickness")),
        image_type="\\".join(_strs(first.get("ImageType"))),
        sop_class_uid=str(first.get("SOPClassUID", "")),
        slices=tuple(slice_geometry(ds) for ds in datasets),
        series_number=_int(first.get("SeriesNumber")),
    )


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _instance_key(ds: Any) -> tuple[int, str, int]:
    try:
        number = int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    return number, str(ds.get("SOPInstanceUID", "")), frame_number_of(ds)


def _strs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]
