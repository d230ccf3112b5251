"""The RSNA 2024 Lumbar Spine Degenerative Classification layout: constants, reader, writer.

Real RSNA data and the phantom generator (``models.phantom``) share this layout, so
training and evaluation code reads both through :func:`read_dataset`.

Layout of a dataset root (``split`` is ``"train"`` unless told otherwise)::

    train.csv                        study_id + one column per target (grade strings or empty)
    train_label_coordinates.csv      study_id,series_id,instance_number,condition,level,x,y
    train_series_descriptions.csv    study_id,series_id,series_description
    train_images/<study_id>/<series_id>/<instance_number>.dcm

Targets and vocabulary (exactly as RSNA writes them)
----------------------------------------------------
* lumbar target columns (25): ``<condition slug>_<level slug>``, e.g.
  ``spinal_canal_stenosis_l1_l2``, ``left_neural_foraminal_narrowing_l4_l5``,
  ``right_subarticular_stenosis_l5_s1``; see :data:`LUMBAR_TARGETS` (RSNA's column order:
  condition-major, level-minor).
* condition names in the coordinates file: :data:`CONDITIONS` ("Spinal Canal Stenosis", ...).
* level names: :data:`LUMBAR_LEVELS` ("L1/L2" ... "L5/S1").
* grade labels: :data:`SEVERITIES` ("Normal/Mild", "Moderate", "Severe"); an empty cell
  is a missing label (``None`` in the records).
* series descriptions: "Sagittal T1", "Sagittal T2/STIR", "Axial T2".
* ``x``/``y`` are the pixel column/row (0-based, may be fractional) on the image
  ``instance_number`` of ``series_id``.
* :func:`project_level` / :func:`rsna_level` convert "L4/L5" <-> "L4-L5" (``models.types``).

Cervical equivalent (phantom only; RSNA has none): the same files with the condition
"Spinal Canal Stenosis" at :data:`CERVICAL_LEVELS` ("C2/C3" ... "C7/T1"), target columns
``spinal_canal_stenosis_c2_c3`` ... ``spinal_canal_stenosis_c7_t1`` (:data:`CERVICAL_TARGETS`).
CT phantoms use the series descriptions "Sagittal CT" and "Axial CT".

Phantom side files (what RSNA lacks and the SEG needs; absent from real RSNA data)
-------------------------------------------------------------------------------
``masks/<study_id>/<series_id>.npz``
    ``labels``: uint8 array ``(n_slices, rows, cols)``, slice ``i`` belongs to
    ``instance_numbers[i]``; ``instance_numbers``: int32 array; ``label_values`` /
    ``label_names``: the label table (same as :data:`MASK_LABELS`). Values:
    :data:`MASK_BACKGROUND` 0, :data:`MASK_VERTEBRAL_BODY` 1 (every vertebral body and the
    sacral body), :data:`MASK_SPINAL_CANAL` 2 (the dural sac: CSF, cord, cauda equina),
    :data:`MASK_OTHER_DISC` 3 (discs outside the graded levels, e.g. T12/L1), and one value
    per graded disc level in :data:`DISC_LABELS` (L1/L2=11 ... L5/S1=15, C2/C3=21 ... C7/T1=26).
    ``herniated`` (phantoms rendered since the herniated-material SEG segment): bool, same
    shape, the disc material of a protrusion or extrusion displaced behind the vertebral
    outline (a subset of the disc labels' tissue, or of no label where a migrated fragment
    lies behind a vertebral body). Read with :func:`read_masks`.
``pfirrmann.csv``
    ``study_id,level,pfirrmann`` (1-5) for every disc level of the region.
``phantom_levels.csv``
    ``study_id,condition,level,narrowing,grade``: the continuous geometric cause
    (fraction of the normal diameter lost, 0-1) behind each grade; grades are
    ``narrowing < 1/3`` Normal/Mild, ``< 2/3`` Moderate, else Severe.
``phantom_slices.csv``
    ``study_id,series_id,instance_number,level,distance_mm``: the disc level nearest to
    every image of the axial series and its distance from that disc's mid-plane.
``phantom_herniation.csv``
    ``study_id,level,herniation,position,migration,migration_mm,hiz``: disc herniation
    (:data:`HERNIATION_TYPES`), its position (:data:`HERNIATION_POSITIONS`, empty for none
    and bulge), the migration of an extrusion (``none``/``cranial``/``caudal``, mm) and the
    high-intensity zone (0/1) of every disc level. Read with :func:`read_herniation`.
``phantom_transitional.csv``
    ``study_id,transitional``: the studies rendered with a transitional lumbosacral segment
    (``lumbarised_s1`` or ``sacralised_l5``; absent when there are none). Read with
    :func:`read_transitional`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

LUMBAR_LEVELS: tuple[str, ...] = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
CERVICAL_LEVELS: tuple[str, ...] = ("C2/C3", "C3/C4", "C4/C5", "C5/C6", "C6/C7", "C7/T1")

SPINAL_CANAL_STENOSIS = "Spinal Canal Stenosis"
LEFT_NEURAL_FORAMINAL_NARROWING = "Left Neural Foraminal Narrowing"
RIGHT_NEURAL_FORAMINAL_NARROWING = "Right Neural Foraminal Narrowing"
LEFT_SUBARTICULAR_STENOSIS = "Left Subarticular Stenosis"
RIGHT_SUBARTICULAR_STENOSIS = "Right Subarticular Stenosis"

#: Condition names as in ``train_label_coordinates.csv``, in RSNA's column order.
CONDITIONS: tuple[str, ...] = (
    SPINAL_CANAL_STENOSIS,
    LEFT_NEURAL_FORAMINAL_NARROWING,
    RIGHT_NEURAL_FORAMINAL_NARROWING,
    LEFT_SUBARTICULAR_STENOSIS,
    RIGHT_SUBARTICULAR_STENOSIS,
)
LUMBAR_CONDITIONS: tuple[str, ...] = CONDITIONS
CERVICAL_CONDITIONS: tuple[str, ...] = (SPINAL_CANAL_STENOSIS,)

NORMAL_MILD = "Normal/Mild"
MODERATE = "Moderate"
SEVERE = "Severe"
#: Grade labels in order (index = class id used by the models).
SEVERITIES: tuple[str, ...] = (NORMAL_MILD, MODERATE, SEVERE)

SAGITTAL_T1 = "Sagittal T1"
SAGITTAL_T2_STIR = "Sagittal T2/STIR"
AXIAL_T2 = "Axial T2"
SAGITTAL_CT = "Sagittal CT"
AXIAL_CT = "Axial CT"
SERIES_DESCRIPTIONS: tuple[str, ...] = (SAGITTAL_T1, SAGITTAL_T2_STIR, AXIAL_T2)

#: The series on which RSNA's readers located each condition.
CONDITION_SERIES: Mapping[str, str] = {
    SPINAL_CANAL_STENOSIS: SAGITTAL_T2_STIR,
    LEFT_NEURAL_FORAMINAL_NARROWING: SAGITTAL_T1,
    RIGHT_NEURAL_FORAMINAL_NARROWING: SAGITTAL_T1,
    LEFT_SUBARTICULAR_STENOSIS: AXIAL_T2,
    RIGHT_SUBARTICULAR_STENOSIS: AXIAL_T2,
}


def condition_slug(condition: str) -> str:
    """``"Left Neural Foraminal Narrowing"`` -> ``"left_neural_foraminal_narrowing"``."""
    return condition.strip().lower().replace(" ", "_")


def level_slug(level: str) -> str:
    """``"L4/L5"`` -> ``"l4_l5"``."""
    return level.strip().lower().replace("/", "_").replace("-", "_")


def target_column(condition: str, level: str) -> str:
    """The train.csv column of a condition at a level, e.g. ``spinal_canal_stenosis_l4_l5``."""
    return f"{condition_slug(condition)}_{level_slug(level)}"


def _targets(conditions: Sequence[str], levels: Sequence[str]) -> tuple[str, ...]:
    return tuple(target_column(c, lv) for c in conditions for lv in levels)


#: The 25 lumbar target columns of ``train.csv`` in RSNA's order.
LUMBAR_TARGETS: tuple[str, ...] = _targets(LUMBAR_CONDITIONS, LUMBAR_LEVELS)
#: The 6 cervical target columns (phantom convention).
CERVICAL_TARGETS: tuple[str, ...] = _targets(CERVICAL_CONDITIONS, CERVICAL_LEVELS)
#: column -> (condition, level) for every known target column.
TARGET_INDEX: Mapping[str, tuple[str, str]] = {
    **{target_column(c, lv): (c, lv) for c in LUMBAR_CONDITIONS for lv in LUMBAR_LEVELS},
    **{target_column(c, lv): (c, lv) for c in CERVICAL_CONDITIONS for lv in CERVICAL_LEVELS},
}


def levels_of(region: str) -> tuple[str, ...]:
    """Levels of ``"lumbar"`` or ``"cervical"``."""
    return LUMBAR_LEVELS if region == "lumbar" else CERVICAL_LEVELS


def conditions_of(region: str) -> tuple[str, ...]:
    return LUMBAR_CONDITIONS if region == "lumbar" else CERVICAL_CONDITIONS


def targets_of(region: str) -> tuple[str, ...]:
    return LUMBAR_TARGETS if region == "lumbar" else CERVICAL_TARGETS


def project_level(level: str) -> str:
    """RSNA level ``"L4/L5"`` -> the project's level name ``"L4-L5"`` (models.types)."""
    return level.strip().replace("/", "-")


def rsna_level(level: str) -> str:
    """The project's ``"L4-L5"`` -> RSNA's ``"L4/L5"``."""
    return level.strip().replace("-", "/")


def grade_of_narrowing(narrowing: float) -> str:
    """Grade from a continuous fraction of diameter lost (the phantom's thresholds)."""
    if narrowing < 1.0 / 3.0:
        return NORMAL_MILD
    if narrowing < 2.0 / 3.0:
        return MODERATE
    return SEVERE


# --------------------------------------------------------------------------------------
# Segmentation label table of the phantom side files
# --------------------------------------------------------------------------------------

MASK_BACKGROUND = 0
MASK_VERTEBRAL_BODY = 1
MASK_SPINAL_CANAL = 2
MASK_OTHER_DISC = 3
#: Disc label value per graded level.
DISC_LABELS: Mapping[str, int] = {
    **{lv: 11 + i for i, lv in enumerate(LUMBAR_LEVELS)},
    **{lv: 21 + i for i, lv in enumerate(CERVICAL_LEVELS)},
}
#: value -> name of every mask label.
MASK_LABELS: Mapping[int, str] = {
    MASK_BACKGROUND: "background",
    MASK_VERTEBRAL_BODY: "vertebral body",
    MASK_SPINAL_CANAL: "spinal canal",
    MASK_OTHER_DISC: "other disc",
    **{v: f"disc {lv}" for lv, v in DISC_LABELS.items()},
}


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StudyLabels:
    """One row of train.csv: grade label (or None when missing) per target column."""

    study_id: int
    grades: Mapping[str, str | None]

    def grade(self, condition: str, level: str) -> str | None:
        return self.grades.get(target_column(condition, level))

    def class_index(self, condition: str, level: str) -> int | None:
        """0/1/2 for Normal/Mild, Moderate, Severe; None when missing."""
        g = self.grade(condition, level)
        return None if g is None else SEVERITIES.index(g)


@dataclass(frozen=True, slots=True)
class LabelCoordinate:
    """One row of train_label_coordinates.csv (x = column, y = row, in pixels)."""

    study_id: int
    series_id: int
    instance_number: int
    condition: str
    level: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One row of train_series_descriptions.csv."""

    study_id: int
    series_id: int
    series_description: str


@dataclass(frozen=True, slots=True)
class MaskVolume:
    """A phantom label volume of one series (see the module docstring)."""

    labels: np.ndarray  # uint8 (n_slices, rows, cols)
    instance_numbers: tuple[int, ...]
    label_names: Mapping[int, str]
    #: bool (n_slices, rows, cols): herniated disc material (phantoms rendered since issue
    #: 19's SEG segment); None in older side files
    herniated: np.ndarray | None = None

    def slice_of(self, instance_number: int) -> np.ndarray:
        return self.labels[self.instance_numbers.index(instance_number)]


@dataclass(frozen=True)
class RsnaDataset:
    """A dataset root read by :func:`read_dataset`.

    ``pfirrmann`` maps ``(study_id, level)`` to the grade 1-5 and ``narrowing`` maps
    ``(study_id, condition, level)`` to the continuous cause; both are empty for real
    RSNA data.
    """

    root: Path
    split: str
    region: str
    targets: tuple[str, ...]
    labels: Mapping[int, StudyLabels]
    coordinates: tuple[LabelCoordinate, ...]
    series: tuple[SeriesInfo, ...]
    pfirrmann: Mapping[tuple[int, str], int] = field(default_factory=dict)
    narrowing: Mapping[tuple[int, str, str], float] = field(default_factory=dict)

    @property
    def study_ids(self) -> tuple[int, ...]:
        ids = set(self.labels) | {s.study_id for s in self.series}
        return tuple(sorted(ids))

    def series_of(self, study_id: int, description: str | None = None) -> tuple[SeriesInfo, ...]:
        """The series of a study, optionally only those with one description."""
        return tuple(
            s
            for s in self.series
            if s.study_id == study_id
            and (description is None or s.series_description == description)
        )

    def coordinates_of(self, study_id: int) -> tuple[LabelCoordinate, ...]:
        return tuple(c for c in self.coordinates if c.study_id == study_id)

    def series_dir(self, study_id: int, series_id: int) -> Path:
        return self.root / f"{self.split}_images" / str(study_id) / str(series_id)

    def image_path(self, study_id: int, series_id: int, instance_number: int) -> Path:
        return self.series_dir(study_id, series_id) / f"{instance_number}.dcm"

    def instance_paths(self, study_id: int, series_id: int) -> tuple[Path, ...]:
        """The series' files sorted by instance number (the file name)."""
        files = self.series_dir(study_id, series_id).glob("*.dcm")
        return tuple(sorted(files, key=lambda p: int(p.stem)))

    def masks_path(self, study_id: int, series_id: int) -> Path:
        return self.root / "masks" / str(study_id) / f"{series_id}.npz"


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _grade_cell(value: str, column: str) -> str | None:
    v = value.strip()
    if not v:
        return None
    if v not in SEVERITIES:
        raise ValueError(f"{column}: unknown grade {v!r}")
    return v


def read_dataset(root: Path | str, split: str = "train") -> RsnaDataset:
    """Read an RSNA-layout dataset (real RSNA 2024 or a phantom).

    Parameters
    ----------
    root:
        The directory holding ``<split>.csv`` and the other files.
    split:
        File prefix, ``"train"`` by default.

    Raises
    ------
    FileNotFoundError
        When ``<split>_series_descriptions.csv`` is missing (``<split>.csv`` and the
        coordinates file are optional, as for RSNA's test split).
    ValueError
        On an unknown grade, condition or level.
    """
    root = Path(root)
    series = tuple(
        SeriesInfo(int(r["study_id"]), int(r["series_id"]), r["series_description"].strip())
        for r in _rows(root / f"{split}_series_descriptions.csv")
    )
    labels: dict[int, StudyLabels] = {}
    targets: tuple[str, ...] = ()
    label_file = root / f"{split}.csv"
    if label_file.exists():
        rows = _rows(label_file)
        with label_file.open(newline="") as fh:
            header = next(csv.reader(fh))
        targets = tuple(c for c in header if c != "study_id")
        unknown = [c for c in targets if c not in TARGET_INDEX]
        if unknown:
            raise ValueError(f"{label_file.name}: unknown target columns {unknown[:3]}")
        for r in rows:
            sid = int(r["study_id"])
            labels[sid] = StudyLabels(sid, {c: _grade_cell(r.get(c, ""), c) for c in targets})
    region = "cervical" if targets and all(t in CERVICAL_TARGETS for t in targets) else "lumbar"
    coords: list[LabelCoordinate] = []
    coord_file = root / f"{split}_label_coordinates.csv"
    if coord_file.exists():
        for r in _rows(coord_file):
            cond, lv = r["condition"].strip(), r["level"].strip()
            if cond not in CONDITIONS or (lv not in LUMBAR_LEVELS and lv not in CERVICAL_LEVELS):
                raise ValueError(f"{coord_file.name}: unknown condition/level {cond!r} {lv!r}")
            coords.append(
                LabelCoordinate(
                    int(r["study_id"]), int(r["series_id"]), int(float(r["instance_number"])),
                    cond, lv, float(r["x"]), float(r["y"]),
                )
            )
    pfirrmann: dict[tuple[int, str], int] = {}
    if (root / "pfirrmann.csv").exists():
        for r in _rows(root / "pfirrmann.csv"):
            pfirrmann[(int(r["study_id"]), r["level"])] = int(r["pfirrmann"])
    narrowing: dict[tuple[int, str, str], float] = {}
    if (root / "phantom_levels.csv").exists():
        for r in _rows(root / "phantom_levels.csv"):
            narrowing[(int(r["study_id"]), r["condition"], r["level"])] = float(r["narrowing"])
    log.debug("read %d studies, %d series from %s", len(labels), len(series), root)
    return RsnaDataset(
        root=root, split=split, region=region, targets=targets, labels=labels,
        coordinates=tuple(coords), series=series, pfirrmann=pfirrmann, narrowing=narrowing,
    )


def read_masks(path: Path | str) -> MaskVolume:
    """Read one ``masks/<study>/<series>.npz`` side file."""
    with np.load(Path(path)) as z:
        names = {int(v): str(n) for v, n in zip(z["label_values"], z["label_names"])}
        return MaskVolume(
            labels=z["labels"].astype(np.uint8),
            instance_numbers=tuple(int(i) for i in z["instance_numbers"]),
            label_names=names,
            herniated=z["herniated"].astype(bool) if "herniated" in z.files else None,
        )


def read_slice_levels(root: Path | str) -> dict[tuple[int, int, int], tuple[str, float]]:
    """``phantom_slices.csv`` as ``(study, series, instance) -> (level, distance_mm)``."""
    out: dict[tuple[int, int, int], tuple[str, float]] = {}
    path = Path(root) / "phantom_slices.csv"
    if path.exists():
        for r in _rows(path):
            key = (int(r["study_id"]), int(r["series_id"]), int(r["instance_number"]))
            out[key] = (r["level"], float(r["distance_mm"]))
    return out


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def write_labels(root: Path | str, labels: Iterable[StudyLabels], region: str = "lumbar",
                 split: str = "train") -> Path:
    """Write ``<split>.csv`` with the region's target columns (None -> empty cell)."""
    targets = targets_of(region)
    path = Path(root) / f"{split}.csv"
    rows = (
        [s.study_id, *[s.grades.get(t) or "" for t in targets]]
        for s in sorted(labels, key=lambda s: s.study_id)
    )
    _write(path, ["study_id", *targets], rows)
    return path


def write_coordinates(root: Path | str, coords: Iterable[LabelCoordinate],
                      split: str = "train") -> Path:
    path = Path(root) / f"{split}_label_coordinates.csv"
    rows = (
        [c.study_id, c.series_id, c.instance_number, c.condition, c.level,
         f"{c.x:.3f}", f"{c.y:.3f}"]
        for c in coords
    )
    _write(path, ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"],
           rows)
    return path


def write_series_descriptions(root: Path | str, series: Iterable[SeriesInfo],
                              split: str = "train") -> Path:
    path = Path(root) / f"{split}_series_descriptions.csv"
    rows = ([s.study_id, s.series_id, s.series_description] for s in series)
    _write(path, ["study_id", "series_id", "series_description"], rows)
    return path


def write_pfirrmann(root: Path | str, grades: Mapping[tuple[int, str], int]) -> Path:
    path = Path(root) / "pfirrmann.csv"
    _write(path, ["study_id", "level", "pfirrmann"],
           ([s, lv, g] for (s, lv), g in sorted(grades.items())))
    return path


def write_narrowing(root: Path | str, narrowing: Mapping[tuple[int, str, str], float]) -> Path:
    path = Path(root) / "phantom_levels.csv"
    rows = (
        [s, c, lv, f"{f:.4f}", grade_of_narrowing(f)]
        for (s, c, lv), f in sorted(narrowing.items())
    )
    _write(path, ["study_id", "condition", "level", "narrowing", "grade"], rows)
    return path


def write_slice_levels(root: Path | str,
                       slices: Mapping[tuple[int, int, int], tuple[str, float]]) -> Path:
    path = Path(root) / "phantom_slices.csv"
    rows = ([s, se, i, lv, f"{d:.2f}"] for (s, se, i), (lv, d) in sorted(slices.items()))
    _write(path, ["study_id", "series_id", "instance_number", "level", "distance_mm"], rows)
    return path


def write_masks(path: Path | str, labels: np.ndarray, instance_numbers: Sequence[int],
                herniated: np.ndarray | None = None) -> Path:
    """Write one mask side file (compressed npz with the label table and, when given, the
    herniated-material mask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.array(sorted(MASK_LABELS), dtype=np.int32)
    names = np.array([MASK_LABELS[int(v)] for v in values])
    extra = {"herniated": herniated.astype(bool)} if herniated is not None else {}
    np.savez_compressed(
        path, labels=labels.astype(np.uint8),
        instance_numbers=np.asarray(instance_numbers, dtype=np.int32),
        label_values=values, label_names=names, **extra,
    )
    return path


def read_labels(path: Path | str) -> dict[int, StudyLabels]:
    """Read one ``train.csv``-style label file alone (no series or images needed), e.g. the
    output of ``spinenode labels-from-reports``; empty cells are None."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        targets = [c for c in (reader.fieldnames or []) if c != "study_id"]
        unknown = [c for c in targets if c not in TARGET_INDEX]
        if unknown:
            raise ValueError(f"{path.name}: unknown target columns {unknown[:3]}")
        return {
            int(r["study_id"]): StudyLabels(int(r["study_id"]),
                                            {c: _grade_cell(r.get(c) or "", c) for c in targets})
            for r in reader
        }


#: Disc herniation types and positions of ``phantom_herniation.csv`` (phantom side file).
HERNIATION_TYPES: tuple[str, ...] = ("none", "bulge", "protrusion", "extrusion")
HERNIATION_POSITIONS: tuple[str, ...] = ("central", "paracentral_left", "paracentral_right",
                                         "foraminal_left", "foraminal_right")


@dataclass(frozen=True, slots=True)
class HerniationLabel:
    """One row of ``phantom_herniation.csv``."""

    study_id: int
    level: str
    herniation: str
    position: str
    migration: str
    migration_mm: float
    hiz: bool


def write_herniation(root: Path | str, rows: Iterable[HerniationLabel]) -> Path:
    path = Path(root) / "phantom_herniation.csv"
    _write(path, ["study_id", "level", "herniation", "position", "migration", "migration_mm",
                  "hiz"],
           ([r.study_id, r.level, r.herniation, r.position, r.migration,
             f"{r.migration_mm:.1f}", int(r.hiz)]
            for r in sorted(rows, key=lambda r: (r.study_id, r.level))))
    return path


def read_herniation(root: Path | str) -> dict[tuple[int, str], HerniationLabel]:
    """``phantom_herniation.csv`` as ``(study_id, level) -> HerniationLabel`` (empty when the
    file is absent, e.g. real RSNA data or phantoms made before it existed)."""
    path = Path(root) / "phantom_herniation.csv"
    out: dict[tuple[int, str], HerniationLabel] = {}
    if not path.exists():
        return out
    for r in _rows(path):
        h, pos = r["herniation"].strip(), r["position"].strip()
        if h not in HERNIATION_TYPES or (pos and pos not in HERNIATION_POSITIONS):
            raise ValueError(f"{path.name}: unknown herniation/position {h!r} {pos!r}")
        lab = HerniationLabel(int(r["study_id"]), r["level"].strip(), h, pos,
                              r["migration"].strip(), float(r["migration_mm"] or 0),
                              r["hiz"].strip() == "1")
        out[(lab.study_id, lab.level)] = lab
    return out


def write_transitional(root: Path | str, rows: Mapping[int, str]) -> Path:
    """``phantom_transitional.csv``: ``study_id,transitional`` (``lumbarised_s1``,
    ``sacralised_l5``) for the studies rendered with a transitional lumbosacral segment."""
    path = Path(root) / "phantom_transitional.csv"
    _write(path, ["study_id", "transitional"], ([sid, kind] for sid, kind in sorted(rows.items())))
    return path


def read_transitional(root: Path | str) -> dict[int, str]:
    """``phantom_transitional.csv`` as ``study_id -> kind`` (empty when absent: no study has one)."""
    path = Path(root) / "phantom_transitional.csv"
    return {int(r["study_id"]): r["transitional"].strip() for r in _rows(path)} if path.exists() else {}
