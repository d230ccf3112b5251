"""Training data from an RSNA-layout dataset: ground-truth disc centres, YOLO-seg files, grader crops.

Works on real RSNA 2024 data (point labels only) and on phantoms (which add
per-slice label masks and Pfirrmann grades, see :mod:`models.rsna`):

* disc centres come from the phantom's disc masks on the slice the detector
  reads; without masks, from the spinal canal points on the sagittal T2;
* YOLO-seg labels are mask contours; without masks, a fixed-size box around
  each level point is written as a rectangle "mask" (detection still trains);
* grader crops are cut around the same centres the analyzer uses at inference.

Every series is read as the analyzer reads it at inference: in the canonical
patient-based orientation of :func:`models.volume.canonical_volume` (exact
transposes and flips of the pixel grid, slices sorted along the normal). Labels
drawn on the images as sent (mask slices, RSNA ``x``/``y`` points) are carried
onto that grid (:func:`labels_on`, :func:`index_on`), so a study sent with rows
reversed or transposed gives the same detector images, labels and grader crops.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import rsna
from models.detector import (
    DETECTOR_CLASSES, OTHER_DISC, SPINAL_CANAL, VERTEBRAL_BODY, detector_image, middle_slice,
    normalized_pixels,
)
from models.grader import (
    CROP_FOV_MM, CROP_PX, HALF_SLICES, HEADS, KIND_INDEX, grader_pixels, plane_offset, recess_crop,
    recess_frame, sagittal_kind,
)
from models.levels import spine_axes
from models.types import levels_of
from models.volume import (
    Volume, canonical_volume, load_volume, nearest_in_stacks, read_series_dir, sample_crop, volumes_from_datasets,
)

logger = logging.getLogger(__name__)

HEAD_ORDER: tuple[str, ...] = tuple(HEADS)
#: Box around a level point when there are no masks (mm, anterior-posterior x cranio-caudal).
POINT_BOX_MM = (24.0, 10.0)
AXIAL_MAX_DISTANCE_MM = 6.0


def to_level_name(rsna_level: str) -> str:
    """``"L4/L5"`` -> ``"L4-L5"``."""
    return rsna_level.replace("/", "-")


def is_validation(study_id: int, seed: int, fraction: float) -> bool:
    """Study-grouped split: a stable hash of (seed, study) decides, so no study straddles."""
    h = hashlib.sha256(f"{seed}:{study_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def canonical_series(directory: Path) -> Volume:
    """A series' main stack in the analyzer's canonical orientation."""
    return canonical_volume(load_volume(directory))


def canonical_stacks(directory: Path) -> list[Volume]:
    """Every orientation stack of a series (angled axial blocks), each canonical."""
    return [canonical_volume(v) for v in volumes_from_datasets(read_series_dir(directory))]


def labels_on(vol: Volume, labels: np.ndarray) -> np.ndarray:
    """A label slice drawn on a source image, on the volume's pixel grid."""
    return vol.grid.array_from_source(labels) if vol.grid is not None else labels


def index_on(vol: Volume, row: float, col: float) -> tuple[float, float]:
    """A (row, column) pixel position on a source image, on the volume's pixel grid."""
    return vol.grid.index_from_source(row, col) if vol.grid is not None else (row, col)


def primary_series(ds: rsna.RsnaDataset, study_id: int) -> rsna.SeriesInfo | None:
    for desc in (rsna.SAGITTAL_T2_STIR, rsna.SAGITTAL_CT):
        found = ds.series_of(study_id, desc)
        if found:
            return found[0]
    return None


@dataclass(frozen=True)
class StudyTruth:
    """Ground truth of one study in patient space."""

    study_id: int
    primary: rsna.SeriesInfo
    disc_centers: dict[str, np.ndarray]  # level name (L4-L5) -> patient mm
    modality: str


def disc_centers(ds: rsna.RsnaDataset, study_id: int, vol: Volume,
                 series: rsna.SeriesInfo) -> dict[str, np.ndarray]:
    """Disc centres (patient mm) from masks on the detector's slice, else from canal points."""
    out: dict[str, np.ndarray] = {}
    mpath = ds.masks_path(study_id, series.series_id)
    levels = rsna.levels_of(ds.region)
    if mpath.exists():
        mv = rsna.read_masks(mpath)
        k = middle_slice(vol)
        for lv in levels:
            value = rsna.DISC_LABELS[lv]
            best_k, best_area = k, 0
            for kk in (k, *range(vol.shape[0])):
                inst = vol.instance_numbers[kk]
                if inst not in mv.instance_numbers:
                    continue
                area = int((mv.slice_of(inst) == value).sum())  # area: the same on either grid
                if area > 0:
                    best_k, best_area = kk, area
                    break
            if best_area == 0:
                continue
            m = labels_on(vol, mv.slice_of(vol.instance_numbers[best_k])) == value
            rows, cols = np.nonzero(m)
            # centre of the bounding box, as the detector's box centre
            ci = (rows.min() + rows.max()) / 2.0
            cj = (cols.min() + cols.max()) / 2.0
            out[to_level_name(lv)] = vol.voxel_to_patient(best_k, ci, cj)
        return out
    inst_index = {n: i for i, n in enumerate(vol.instance_numbers)}
    for c in ds.coordinates_of(study_id):
        if c.series_id == series.series_id and c.condition == rsna.SPINAL_CANAL_STENOSIS:
            if c.instance_number in inst_index:
                out[to_level_name(c.level)] = vol.voxel_to_patient(inst_index[c.instance_number],
                                                                   *index_on(vol, c.y, c.x))
    return out


# ---------------------------------------------------------------------------- detector data


def _contours(mask: np.ndarray, min_area: int = 6) -> list[np.ndarray]:
    import cv2

    n, comp = cv2.connectedComponents(mask.astype(np.uint8))
    polys: list[np.ndarray] = []
    for lab in range(1, n):
        part = (comp == lab).astype(np.uint8)
        if int(part.sum()) < min_area:
            continue
        cs, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not cs:
            continue
        c = max(cs, key=cv2.contourArea)
        c = cv2.approxPolyDP(c, 0.8, True).reshape(-1, 2)
        if len(c) >= 3:
            polys.append(c.astype(float))
    return polys


def yolo_lines(labels: np.ndarray | None, shape: tuple[int, int],
               points: Sequence[tuple[str, float, float]] = (), pixel_mm: float = 1.0) -> list[str]:
    """YOLO-seg label lines (class x1 y1 x2 y2 ... normalised) for one image."""
    h, w = shape
    lines: list[str] = []

    def emit(cls_name: str, poly: np.ndarray) -> None:
        k = DETECTOR_CLASSES.index(cls_name)
        xy = np.clip(poly / np.array([w, h], dtype=float), 0.0, 1.0)
        lines.append(" ".join([str(k), *(f"{v:.5f}" for v in xy.reshape(-1))]))

    if labels is not None:
        for lv, value in rsna.DISC_LABELS.items():
            for poly in _contours(labels == value):
                emit(to_level_name(lv), poly)
        for value, name in ((rsna.MASK_OTHER_DISC, OTHER_DISC),
                            (rsna.MASK_VERTEBRAL_BODY, VERTEBRAL_BODY),
                            (rsna.MASK_SPINAL_CANAL, SPINAL_CANAL)):
            for poly in _contours(labels == value, min_area=12):
                emit(name, poly)
        return lines
    bw, bh = POINT_BOX_MM[0] / pixel_mm / 2.0, POINT_BOX_MM[1] / pixel_mm / 2.0
    for name, x, y in points:
        emit(name, np.array([[x - bw, y - bh], [x + bw, y - bh], [x + bw, y + bh], [x - bw, y + bh]]))
    return lines


def write_detector_study(ds: rsna.RsnaDataset, study_id: int, out_dir: Path, split: str,
                         neighbours: int = 1) -> int:
    """Write the YOLO images and labels of one study; returns how many images."""
    import cv2

    series = primary_series(ds, study_id)
    if series is None:
        return 0
    vol = canonical_series(ds.series_dir(study_id, series.series_id))
    pix = normalized_pixels(vol)
    mpath = ds.masks_path(study_id, series.series_id)
    mv = rsna.read_masks(mpath) if mpath.exists() else None
    k_mid = middle_slice(vol)
    pts_by_inst: dict[int, list[tuple[str, float, float]]] = {}
    if mv is None:
        for c in ds.coordinates_of(study_id):
            if c.series_id == series.series_id and c.condition == rsna.SPINAL_CANAL_STENOSIS:
                i, j = index_on(vol, c.y, c.x)
                pts_by_inst.setdefault(c.instance_number, []).append((to_level_name(c.level), j, i))
    written = 0
    ks = range(max(0, k_mid - neighbours), min(vol.shape[0], k_mid + neighbours + 1))
    for k in ks:
        inst = vol.instance_numbers[k]
        if mv is not None:
            if inst not in mv.instance_numbers:
                continue
            lines = yolo_lines(labels_on(vol, mv.slice_of(inst)), vol.shape[1:])
        else:
            # points lie on their own slice; use them on the middle slice for the detector
            pts = [p for ps in pts_by_inst.values() for p in ps]
            lines = yolo_lines(None, vol.shape[1:], pts, min(vol.pixel_spacing))
        if not lines:
            continue
        name = f"{study_id}_{k}"
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_dir / "images" / split / f"{name}.png"), detector_image(pix, k))
        (out_dir / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
        written += 1
    return written


def write_dataset_yaml(out_dir: Path) -> Path:
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(DETECTOR_CLASSES))
    path = out_dir / "dataset.yaml"
    path.write_text(f"path: {out_dir.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


# ---------------------------------------------------------------------------- grader data


@dataclass
class CropSet:
    """Grader training crops: ``x`` (N, C, H, W) float16, ``kind`` (N,), ``y`` (N, heads) int (-1 missing)."""

    x: np.ndarray
    kind: np.ndarray
    y: np.ndarray
    study: np.ndarray
    heads: tuple[str, ...] = HEAD_ORDER

    @classmethod
    def empty(cls) -> CropSet:
        return cls(np.zeros((0, 2 * HALF_SLICES + 1, CROP_PX, CROP_PX), np.float16),
                   np.zeros(0, np.int64), np.zeros((0, len(HEAD_ORDER)), np.int64), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: Iterable[CropSet]) -> CropSet:
        parts = [p for p in parts if len(p.kind)]
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.x for p in parts]), np.concatenate([p.kind for p in parts]),
                   np.concatenate([p.y for p in parts]), np.concatenate([p.study for p in parts]))

    def subset(self, mask: np.ndarray) -> CropSet:
        return CropSet(self.x[mask], self.kind[mask], self.y[mask], self.study[mask])


@dataclass
class _Builder:
    xs: list[np.ndarray] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    ys: list[list[int]] = field(default_factory=list)

    def add(self, crop: np.ndarray, kind: str, labels: dict[str, int | None]) -> None:
        if all(v is None for v in labels.values()):
            return
        self.xs.append(crop.astype(np.float16))
        self.kinds.append(KIND_INDEX[kind])
        self.ys.append([-1 if labels.get(h) is None else int(labels[h]) for h in HEAD_ORDER])  # type: ignore[arg-type]

    def build(self, study_id: int) -> CropSet:
        if not self.xs:
            return CropSet.empty()
        return CropSet(np.stack(self.xs), np.asarray(self.kinds, np.int64),
                       np.asarray(self.ys, np.int64), np.full(len(self.xs), study_id, np.int64))


def crop_offsets_of_study(ds: rsna.RsnaDataset, study_id: int) -> dict[str, list[np.ndarray]]:
    """Offsets (patient mm) from each disc centre to the labelled crop targets.

    ``left``/``right``: the foramen points on the sagittal T1 (patient LPS); ``sub_left``/``sub_right``:
    the left and right subarticular points on the axial T2, in the disc plane
    (:func:`models.grader.recess_frame`, :func:`models.grader.plane_offset`); the sagittal crop kind (``sag_t2``, ``sag_c``,
    ``sag_ct``): half the way from the disc centre to the spinal canal point (patient
    LPS), so that the crop holds the disc and the whole canal behind it.
    """
    out: dict[str, list[np.ndarray]] = {"left": [], "right": [], "sub_left": [], "sub_right": []}
    series = primary_series(ds, study_id)
    if series is None:
        return out
    vol = canonical_series(ds.series_dir(study_id, series.series_id))
    centers = disc_centers(ds, study_id, vol, series)
    modality = "CT" if series.series_description == rsna.SAGITTAL_CT else "MR"
    kind = sagittal_kind(ds.region, modality)
    out[kind] = [0.5 * (p - centers[lv]) for _, lv, p, _ in
                 _label_points(ds, study_id, series.series_id, [vol], {rsna.SPINAL_CANAL_STENOSIS: kind}, centers)]
    t1 = ds.series_of(study_id, rsna.SAGITTAL_T1)
    if t1:
        t1v = canonical_series(ds.series_dir(study_id, t1[0].series_id))
        sides = {rsna.LEFT_NEURAL_FORAMINAL_NARROWING: "left", rsna.RIGHT_NEURAL_FORAMINAL_NARROWING: "right"}
        for key, lv, p, _ in _label_points(ds, study_id, t1[0].series_id, [t1v], sides, centers):
            out[key].append(p - centers[lv])
    ax = ds.series_of(study_id, rsna.AXIAL_T2)
    if ax:
        stacks = canonical_stacks(ds.series_dir(study_id, ax[0].series_id))
        sides = {rsna.LEFT_SUBARTICULAR_STENOSIS: "sub_left", rsna.RIGHT_SUBARTICULAR_STENOSIS: "sub_right"}
        axes = spine_axes(centers, levels_of(ds.region))
        for key, lv, p, v in _label_points(ds, study_id, ax[0].series_id, stacks, sides, centers):
            out[key].append(plane_offset(p, centers[lv], recess_frame(v, axes.get(lv))))
    return out


def _label_points(ds: rsna.RsnaDataset, study_id: int, series_id: int, volumes: Sequence[Volume],
                  keys: dict[str, str], centers: dict[str, np.ndarray]) -> Iterator[tuple[str, str, np.ndarray, Volume]]:
    """(key, level name, patient point, volume) of each labelled point of ``keys``' conditions
    on the series, at a level with a known disc centre."""
    where = {n: (v, i) for v in volumes for i, n in enumerate(v.instance_numbers)}
    for c in ds.coordinates_of(study_id):
        lv = to_level_name(c.level)
        if c.series_id != series_id or c.condition not in keys or c.instance_number not in where or lv not in centers:
            continue
        v, i = where[c.instance_number]
        yield keys[c.condition], lv, v.voxel_to_patient(i, *index_on(v, c.y, c.x)), v


def grader_study_crops(ds: rsna.RsnaDataset, study_id: int, crop_offsets: dict[str, np.ndarray],
                       n_aug: int = 2, jitter_mm: float = 2.5, seed: int = 0) -> CropSet:
    """All grader crops of one study (``n_aug`` jittered copies of each; the first unjittered)."""
    rng = np.random.default_rng(seed * 1_000_003 + study_id)
    series = primary_series(ds, study_id)
    labels = ds.labels.get(study_id)
    if series is None or labels is None:
        return CropSet.empty()
    b = _Builder()
    vol = canonical_series(ds.series_dir(study_id, series.series_id))
    centers = disc_centers(ds, study_id, vol, series)
    cervical = ds.region == "cervical"
    modality = "CT" if series.series_description == rsna.SAGITTAL_CT else "MR"
    pix = grader_pixels(vol, modality)
    t1 = ds.series_of(study_id, rsna.SAGITTAL_T1) if not cervical else ()
    ax = ds.series_of(study_id, rsna.AXIAL_T2) if not cervical else ()
    t1v = canonical_series(ds.series_dir(study_id, t1[0].series_id)) if t1 else None
    t1p = normalized_pixels(t1v) if t1v is not None else None
    axv = canonical_stacks(ds.series_dir(study_id, ax[0].series_id)) if ax else []
    axp = [normalized_pixels(v) for v in axv]

    def jit(c: np.ndarray, a: int) -> np.ndarray:
        return c if a == 0 else c + rng.uniform(-jitter_mm, jitter_mm, 3)

    axes = spine_axes(centers, levels_of(ds.region))
    for lv_name, c in centers.items():
        rl = lv_name.replace("-", "/")
        for a in range(n_aug):
            cc = jit(c, a)
            kind = sagittal_kind(ds.region, modality)
            sag = sample_crop(vol, pix, cc + crop_offsets.get(kind, np.zeros(3)), CROP_PX, CROP_FOV_MM[kind],
                              HALF_SLICES)
            if cervical:
                b.add(sag, kind, {"cervical_canal": labels.class_index(rsna.SPINAL_CANAL_STENOSIS, rl)})
            elif modality == "MR":
                pf = ds.pfirrmann.get((study_id, rl))
                b.add(sag, "sag_t2", {"spinal_canal": labels.class_index(rsna.SPINAL_CANAL_STENOSIS, rl),
                                      "pfirrmann": None if pf is None else pf - 1})
            if t1v is not None and t1p is not None:
                for side, cond in (("left", rsna.LEFT_NEURAL_FORAMINAL_NARROWING),
                                   ("right", rsna.RIGHT_NEURAL_FORAMINAL_NARROWING)):
                    if side in crop_offsets:
                        crop = sample_crop(t1v, t1p, cc + crop_offsets[side], CROP_PX,
                                           CROP_FOV_MM["sag_t1"], HALF_SLICES)
                        b.add(crop, "sag_t1", {"foraminal": labels.class_index(cond, rl)})
            if axv:
                hit = nearest_in_stacks(axv, cc)
                if hit is not None and hit[2] <= AXIAL_MAX_DISTANCE_MM:
                    av, ap = axv[hit[0]], axp[hit[0]]
                    frame = recess_frame(av, axes.get(lv_name))
                    for side, cond in (("left", rsna.LEFT_SUBARTICULAR_STENOSIS),
                                       ("right", rsna.RIGHT_SUBARTICULAR_STENOSIS)):
                        off = crop_offsets.get(f"sub_{side}")
                        if off is None:
                            continue
                        b.add(recess_crop(av, ap, cc, off, frame, side), "axial_t2",
                              {"subarticular": labels.class_index(cond, rl)})
    return b.build(study_id)
