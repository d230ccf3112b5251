"""``SpineAnalyzer``: a study's DICOM series -> Findings (+ masks for the SEG object).

Pipeline per study (batched across studies by :meth:`SpineAnalyzer.analyze_batch`, which
keeps each study's failure to itself):

1. classify every series from its header and select the inputs by geometry
   and sequence (:mod:`models.series`); what is missing is reported (a caller
   that classified already hands its selection to :meth:`SpineAnalyzer.analyze_selected`);
2. detect discs, vertebral bodies and the canal on the middle sagittal slice
   and the slices beside it (one detector pass for every study of a batch;
   :mod:`models.detector`, :mod:`models.masks3d`), name the discs by counting along the spine
   (:mod:`models.levels`) and place each disc centre in patient space;
3. cut 2.5D crops around each level: sagittal T2/STIR or CT (canal,
   Pfirrmann; CT in a soft-tissue window), sagittal T1 at the learned foramen
   offsets (left, right), and on the axial T2 stack through the disc (found by
   3D geometry) one crop per subarticular recess (left, right), placed in the
   disc plane (:func:`models.grader.recess_frame`: the spine axis from the
   disc centres tells the disc's tilt against an unangled block);
4. grade all crops in one batched pass (:mod:`models.grader`);
5. when the weights directory lists a herniation model (:mod:`models.herniation`), read
   each lumbar MR level's sagittal T2 and axial crops with it in one more batch: disc
   herniation type, HIZ and, for a protrusion or extrusion seen on an axial slice, its
   position (three more conditions; the others stay exactly as without it);
6. when it also lists a herniated-material segmenter (:mod:`models.herniated_material`),
   segment the herniated disc material of every level called a protrusion or extrusion on
   the sagittal slices around it: one more SEG segment per such level.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.detector import (
    OTHER_DISC, SPINAL_CANAL, VERTEBRAL_BODY, Detector, SegDetection, detector_image, merge_discs,
    middle_slice, normalized_pixels,
)
from models.grader import (
    CROP_FOV_MM, CROP_PX, HALF_SLICES, SIDE_CONDITION, CropRequest, Grader, grade_from, grader_pixels,
    recess_crop, recess_frame, sagittal_kind,
)
from models.herniated_material import HerniatedMaterialModel, level_crops
from models.herniation import FOCAL_TYPES, HerniationModel, HerniationRequest, level_request
from models.multiframe import expand_study
from models.levels import DiscCandidate, NamedDisc, name_levels, spine_axes, transitional_signs, typical_spacing
from models.masks3d import spread_labels, spread_slices
from models.measure import mean_thickness_mm
from models.registry import Registry, UnknownWeightsError
from models.series import SeriesSelection, classify_series, header_from_datasets, select_series
from models.types import (
    BODIES_SEGMENT, CANAL_SEGMENT, DISC_SEGMENT, HERNIATED_SEGMENT, AnalysisResult, Condition, Findings, Grade, Level,
    LevelFindings, ModelId, ModelsError, Region, SeriesMasks, levels_of,
)
from models.volume import (
    Volume, VolumeError, canonical_volume, nearest_in_stacks, sample_crop, volume_from_datasets, volumes_from_datasets,
)

logger = logging.getLogger(__name__)

ALGORITHM_NAME = "spinenode-spine"
#: The detector runs at a low threshold; discs are kept by their merged score (detector.merge_discs),
#: vertebral bodies and the canal by their own confidence.
PREDICT_CONF = 0.01
DISC_SCORE = 0.04
MASK_CONF = 0.25
#: Views of each subarticular recess averaged at inference (lateral, posterior shift in mm,
#: in the disc plane): the recess is placed by a fixed offset and moves by about 2 mm
#: (standard deviation) from study to study; training saw such shifts as augmentation.
#: Chosen on a development set of 100 fresh lumbar phantoms (seed 5301; subarticular log
#: loss 0.278 with one view, 0.264 with these five, 0.269 with 2.5 mm shifts), not on the
#: held-out sets of the model card.
RECESS_SHIFTS_MM: tuple[tuple[float, float], ...] = ((0.0, 0.0), (1.5, 0.0), (-1.5, 0.0), (0.0, 1.5), (0.0, -1.5))
#: An axial slice farther than this from a disc centre (mm) does not pass through the disc.
AXIAL_MAX_DISTANCE_MM = 6.0


class AnalyzerError(ModelsError):
    """A study cannot be analysed at all (no usable sagittal series)."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AnalyzerError("device cuda requested but no GPU is visible")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise AnalyzerError(f"unknown device {device!r} (auto, cpu, cuda)")
    return device


@dataclass
class _Prepared:
    study_uid: str
    region: Region
    selection: SeriesSelection
    missing: list[str]
    primary: Volume | None = None
    primary_role: str = ""
    primary_pixels: np.ndarray | None = None
    grade_pixels: np.ndarray | None = None  # primary pixels as the grader reads them (CT window)
    primary_k: int = 0
    sag_t1: Volume | None = None
    sag_t1_pixels: np.ndarray | None = None
    axial: list[Volume] = field(default_factory=list)
    axial_pixels: list[np.ndarray] = field(default_factory=list)
    modality: str = "MR"
    flags: list[str] = field(default_factory=list)


def read_study_dir(path: Path) -> dict[str, list[Any]]:
    """All DICOM files under ``path`` grouped by SeriesInstanceUID."""
    import pydicom

    series: dict[str, list[Any]] = defaultdict(list)
    for f in sorted(Path(path).rglob("*")):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - a non-DICOM file in the folder is skipped
            logger.debug("skipping non-DICOM file %s", f.name)
            continue
        if "PixelData" in ds:
            series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    return dict(series)


#: What each role's series serves, in the words of a "not assessed" line.
ROLE_SERVES: Mapping[str, str] = {
    "sagittal_t2": "spinal canal stenosis and Pfirrmann grade",
    "sagittal_t1": "neural foraminal narrowing",
    "axial_t2": "subarticular stenosis",
    "ct_sagittal": "spinal canal stenosis",
}
ROLE_TITLE: Mapping[str, str] = {
    "sagittal_t2": "sagittal T2/STIR", "sagittal_t1": "sagittal T1", "axial_t2": "axial T2",
    "ct_sagittal": "sagittal CT",
}


def _read_role(datasets: Sequence[Any], role: str, missing: list[str], stacks: bool = False) -> list[Volume] | None:
    """The selected series of a role as canonical volumes, or None with a "not assessed" line.

    A series the models cannot read (pixels absent or undecodable, geometry that does
    not make a volume) costs only the conditions it serves (:data:`ROLE_SERVES`).
    """
    try:
        if any("PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds
               for ds in datasets):
            raise VolumeError("pixel data not available")
        vols = volumes_from_datasets(datasets) if stacks else [volume_from_datasets(datasets)]
        return [canonical_volume(v) for v in vols]
    except Exception as exc:  # noqa: BLE001 - any decoder or geometry failure degrades this role only
        why = str(exc) if isinstance(exc, VolumeError) else type(exc).__name__
        logger.warning("series %s (%s) could not be read: %s", datasets[0].get("SeriesInstanceUID", "") if datasets
                       else "", role, why)
        missing.append(f"{ROLE_TITLE[role]} series could not be read ({why}): {ROLE_SERVES[role]} not assessed")
        return None


def _lost_levels(vol: Volume, k: int, levels: Sequence[Level], order: Sequence[str]) -> list[str]:
    """"Not assessed" lines for the region's levels that were not found: outside the sagittal
    field of view (partial coverage: their place, extrapolated from the levels found, lies
    beyond the image or within half a disc spacing of its edge), or within it but not found."""
    found = {lv.name: float(lv.center_patient[2]) for lv in levels}
    lost = [n for n in order if n not in found]
    if not lost:
        return []
    rows, cols = vol.shape[1], vol.shape[2]
    corners = [vol.voxel_to_patient(k, i, j)[2] for i in (0, rows - 1) for j in (0, cols - 1)]
    z_lo, z_hi = min(corners), max(corners)
    outside: list[str] = []
    if len(found) >= 2:
        idx = np.array([order.index(n) for n in found], dtype=float)
        slope, icpt = np.polyfit(idx, np.array(list(found.values())), 1)
        margin = 0.5 * abs(slope)  # a disc within half a disc spacing of the edge is cut by it
        for n in lost:
            z = slope * order.index(n) + icpt
            if not z_lo + margin <= z <= z_hi - margin:
                outside.append(n)
    unseen = [n for n in lost if n not in outside]
    out = []
    if outside:
        out.append(f"levels at or beyond the edge of the sagittal field of view: {', '.join(outside)} not assessed")
    if unseen:
        out.append(f"levels not found on the sagittal series: {', '.join(unseen)}")
    return out


def _transitional_flag(region: Region, cands: Sequence[DiscCandidate], named: Sequence[NamedDisc],
                       masks: Sequence[np.ndarray | None], vol: Volume) -> str | None:
    """The transitional-segment caveat (:func:`models.levels.transitional_signs`) from the
    named discs' mean thickness on the detector's slice and the discs found below L5-S1."""
    heights: dict[str, float] = {}
    for n, m in zip(named, masks):
        h = mean_thickness_mm(m, vol.pixel_spacing) if m is not None else None
        if h is not None:
            heights[n.name] = h
    lowest = next((n for n in named if n.name == "L5-S1"), None)
    below = 0
    if lowest is not None:
        spacing = typical_spacing([n.axis_mm for n in named])
        below = sum(1 for c in cands if c.key not in {n.key for n in named}
                    and c.axis_mm < lowest.axis_mm - 0.5 * spacing)
    return transitional_signs(heights, below, region)


def _region_from_headers(series: Mapping[str, Sequence[Any]]) -> Region | None:
    for dss in series.values():
        part = str(dss[0].get("BodyPartExamined", "")).upper()
        if "CSPINE" in part or "CERV" in part or "NECK" in part:
            return Region.CERVICAL
        if "LSPINE" in part or "LUMB" in part:
            return Region.LUMBAR
    return None


class SpineAnalyzer:
    """Study -> Findings. Loads the detector and grader once; see the module docstring."""

    def __init__(self, detector: Detector, grader: Grader, model_id: ModelId,
                 batch_size: int = 64, disc_score: float = DISC_SCORE,
                 herniation: HerniationModel | None = None,
                 herniated_material: HerniatedMaterialModel | None = None) -> None:
        self.detector = detector
        #: disc herniation, its position and HIZ per lumbar MR level; None: not reported
        self.herniation = herniation
        #: the SEG's herniated-material segments (only with ``herniation``); None: not drawn
        self.herniated_material = herniated_material if herniation is not None else None
        self.disc_score = disc_score
        self.grader = grader
        self.model_id = model_id
        self.batch_size = batch_size
        self.offsets = {k: np.asarray(v, dtype=float)
                                for k, v in grader.checkpoint.crop_offsets.items()}
        #: in-plane shifts (lateral, posterior; mm) of the recess crop whose grades are averaged
        self.recess_shifts_mm: tuple[tuple[float, float], ...] = RECESS_SHIFTS_MM

    @classmethod
    def from_registry(cls, weights_dir: Path | str | None = None, device: str = "auto",
                      batch_size: int = 64, herniation: bool = True) -> SpineAnalyzer:
        """Load the newest detector and grader of a weights directory (sha256-checked), and the
        herniation model when the directory lists one and ``herniation`` is true (its version is
        then part of the analyzer's)."""
        dev = resolve_device(device)
        reg = Registry(weights_dir)
        det_e = reg.entry_of_kind("detector")
        gr_e = reg.entry_of_kind("grader")
        det = Detector(reg.path_of(det_e), det_e.model_id, device=dev,
                       imgsz=int(det_e.meta.get("imgsz", 384)), conf=PREDICT_CONF)
        gr = Grader.from_file(reg.path_of(gr_e), gr_e.model_id, device=dev)
        version = f"det-{det_e.version}+grd-{gr_e.version}"
        hern: HerniationModel | None = None
        try:
            hn_e = reg.entry_of_kind("herniation") if herniation else None
        except UnknownWeightsError:
            hn_e = None
        seg: HerniatedMaterialModel | None = None
        if hn_e is not None:
            hern = HerniationModel.from_file(reg.path_of(hn_e), hn_e.model_id, device=dev)
            version += f"+hrn-{hn_e.version}"
            try:
                hm_e = reg.entry_of_kind("herniated_material")
            except UnknownWeightsError:
                hm_e = None
            if hm_e is not None:
                seg = HerniatedMaterialModel.from_file(reg.path_of(hm_e), hm_e.model_id, device=dev)
                version += f"+hms-{hm_e.version}"
        return cls(det, gr, ModelId(ALGORITHM_NAME, version), batch_size,
                   float(det_e.meta.get("disc_score", DISC_SCORE)), hern, seg)

    # ------------------------------------------------------------------ entry points
    def analyze_dir(self, path: Path, region: Region | str | None = None,
                    study_uid: str | None = None) -> AnalysisResult:
        series = read_study_dir(path)
        if not series:
            raise AnalyzerError(f"no DICOM images under {path}")
        uid = study_uid or str(next(iter(series.values()))[0].get("StudyInstanceUID", ""))
        return self.analyze_many([(uid, series, region)])[0]

    def analyze(self, study_uid: str, series: Mapping[str, Sequence[Any]],
                region: Region | str | None = None) -> AnalysisResult:
        return self.analyze_many([(study_uid, series, region)])[0]

    def analyze_many(
        self, studies: Sequence[tuple[str, Mapping[str, Sequence[Any]], Region | str | None]]
    ) -> list[AnalysisResult]:
        """Analyse several studies in batched passes (:meth:`analyze_batch`); raises the
        first study's error, if any."""
        out: list[AnalysisResult] = []
        for result in self.analyze_batch(studies):
            if isinstance(result, Exception):
                raise result
            out.append(result)
        return out

    def analyze_selected(self, study_uid: str, series: Mapping[str, Sequence[Any]], selection: SeriesSelection,
                         region: Region | str | None = None) -> AnalysisResult:
        """:meth:`analyze` with the series already classified and selected by the caller
        (:func:`models.series.select_series`, as the node's analyze stage does): the
        selection is used as it is, the series are not classified again. Only the
        selected series need their pixel data."""
        result = self.analyze_batch([(study_uid, series, region)], [selection])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def analyze_batch(
        self, studies: Sequence[tuple[str, Mapping[str, Sequence[Any]], Region | str | None]],
        selections: Sequence[SeriesSelection | None] | None = None,
    ) -> list[AnalysisResult | Exception]:
        """One outcome per study, in order: its result, or the exception it raised.

        The detector reads the middle sagittal slice and the slices beside it (3D SEG) of
        every study in one pass (per image shape), the grader every crop of every study in
        one pass. A study that cannot be read, or breaks a step of its own, gets its
        exception in its slot and costs the others nothing; if a batched pass itself fails,
        each study is run alone, so the failure lands on the study that caused it. A
        study's findings do not depend on the studies batched with it. ``selections``:
        each study's, when the caller classified and selected its series already.
        """
        t0 = (time.perf_counter(), time.process_time())
        slots: list[_Prepared | Exception] = []
        chosen = list(selections) if selections is not None else [None] * len(studies)
        for (uid, series, region), selection in zip(studies, chosen, strict=True):
            try:
                slots.append(self._prepare(uid, series, region, selection))
            except Exception as exc:  # noqa: BLE001 - this study's own failure, kept in its slot
                logger.warning("study %s could not be prepared for analysis: %s", uid, type(exc).__name__)
                slots.append(exc)
        ready = [p for p in slots if isinstance(p, _Prepared)]
        inferred = iter(self._infer_isolated(ready, t0, max(1, len(studies))))
        return [slot if isinstance(slot, Exception) else next(inferred) for slot in slots]

    def _infer_isolated(self, ready: list[_Prepared], t0: tuple[float, float], n: int) -> list[AnalysisResult | Exception]:
        if not ready:
            return []
        try:
            return self._infer(ready, t0, n)
        except Exception as exc:  # noqa: BLE001 - a batched pass failed: find the study that broke it
            if len(ready) == 1:
                return [exc]
            logger.warning("a batched pass over %d studies failed (%s): each study runs alone", len(ready),
                           type(exc).__name__)
            return [self._infer_isolated([p], t0, n)[0] for p in ready]

    def _infer(self, ready: list[_Prepared], t0: tuple[float, float], n: int) -> list[AnalysisResult | Exception]:
        """Detection and grading of prepared studies; per-study steps keep their errors in
        the study's slot, a failing batched pass raises."""
        failed: dict[int, Exception] = {}
        images: list[np.ndarray] = []
        spans: dict[int, tuple[int, int]] = {}
        for si, p in enumerate(ready):
            if p.primary is None or p.primary_pixels is None:
                continue
            try:
                around = spread_slices(p.primary_pixels.shape[0], p.primary_k, p.primary.slice_spacing)
                mine = [detector_image(p.primary_pixels, k) for k in (p.primary_k, *around)]
            except Exception as exc:  # noqa: BLE001
                failed[si] = exc
                continue
            spans[si] = (len(images), len(images) + len(mine))
            images += mine
        dets = self.detector.detect(images, self.batch_size) if images else []
        per_study: dict[int, tuple[list[Level], SeriesMasks | None]] = {}
        for si, p in enumerate(ready):
            if si in failed:
                continue
            if si not in spans:
                per_study[si] = ([], None)
                continue
            a, b = spans[si]
            try:
                per_study[si] = self._levels(p, dets[a], dets[a + 1:b])
            except Exception as exc:  # noqa: BLE001
                failed[si] = exc
        requests: list[CropRequest] = []
        owners: list[tuple[int, int, str | None]] = []  # (study, level index, side)
        extra: dict[int, list[str]] = defaultdict(list)  # "not assessed" lines found while cropping
        for si, p in enumerate(ready):
            if si in failed:
                continue
            levels = per_study[si][0]
            try:
                axes = spine_axes({lv.name: np.asarray(lv.center_patient) for lv in levels}, levels_of(p.region))
                mine_crops = [(req, (si, li, side)) for li, lv in enumerate(levels)
                              for req, side in self._crops(p, lv, axes.get(lv.name), extra[si])]
            except Exception as exc:  # noqa: BLE001
                failed[si] = exc
                continue
            requests += [req for req, _ in mine_crops]
            owners += [owner for _, owner in mine_crops]
        probs = self.grader.probabilities(requests, self.batch_size) if requests else []
        # several views of one (level, side, head) (shifted recess crops) are averaged
        views: dict[tuple[int, int, str | None, str], list[np.ndarray]] = defaultdict(list)
        for (si, li, side), pr in zip(owners, probs):
            for head, vec in pr.items():
                views[(si, li, side, head)].append(vec)
        grades: dict[tuple[int, int], list[Grade]] = defaultdict(list)
        for (si, li, side, head), vecs in views.items():
            cond = SIDE_CONDITION.get((head, side)) if side else None
            grades[(si, li)].append(grade_from(head, np.mean(vecs, axis=0), cond))
        for key, more in self._herniation(ready, per_study, failed).items():
            grades[key].extend(more)
        seconds, cpu = (time.perf_counter() - t0[0]) / n, (time.process_time() - t0[1]) / n
        out: list[AnalysisResult | Exception] = []
        for si, p in enumerate(ready):
            if si in failed:
                out.append(failed[si])
                continue
            levels, masks = per_study[si]
            try:
                masks = self._on_source(p, self._herniated(p, levels, masks, [grades[(si, li)] for li in range(len(levels))]))
                lfs = tuple(
                    LevelFindings(lv, tuple(sorted(grades[(si, li)], key=lambda g: list(Condition).index(g.condition))))
                    for li, lv in enumerate(levels)
                )
                missing = [*p.missing, *extra[si]]
                if p.primary is not None:
                    missing.extend(_lost_levels(p.primary, p.primary_k, levels, levels_of(p.region)))
                findings = Findings(p.study_uid, p.region, self.model_id, lfs, tuple(missing), tuple(p.flags))
                out.append(AnalysisResult(findings, (masks,) if masks is not None else (), seconds, cpu, n))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out

    def _herniation(self, ready: Sequence[_Prepared], per_study: Mapping[int, tuple[list[Level], SeriesMasks | None]],
                    failed: dict[int, Exception]) -> dict[tuple[int, int], list[Grade]]:
        """Herniation type, HIZ and (for a protrusion or extrusion seen on an axial slice) its
        position, per lumbar MR level with a sagittal T2/STIR, in one batch (:mod:`models.herniation`);
        a study whose crops cannot be cut keeps its error in ``failed``."""
        if self.herniation is None:
            return {}
        requests: list[HerniationRequest] = []
        owners: list[tuple[int, int]] = []
        for si, p in enumerate(ready):
            if si in failed or si not in per_study or p.region is not Region.LUMBAR or p.modality != "MR" \
                    or p.primary_role != "sagittal_t2" or p.primary is None or p.primary_pixels is None:
                continue
            levels = per_study[si][0]
            try:
                axes = spine_axes({lv.name: np.asarray(lv.center_patient) for lv in levels}, levels_of(p.region))
                mine: list[HerniationRequest] = [
                    level_request(p.primary, p.primary_pixels, p.axial, p.axial_pixels,
                                  np.asarray(lv.center_patient), axes.get(lv.name), self.herniation.offsets)
                    for lv in levels]
            except Exception as exc:  # noqa: BLE001 - this study's own failure, kept in its slot
                failed[si] = exc
                continue
            requests += mine
            owners += [(si, li) for li in range(len(levels))]
        out: dict[tuple[int, int], list[Grade]] = defaultdict(list)
        if not requests:
            return out
        for key, probs in zip(owners, self.herniation.probabilities(requests, self.batch_size)):
            kind = Grade(Condition.DISC_HERNIATION, tuple(float(v) for v in probs["type"] / probs["type"].sum()))
            out[key].append(kind)
            if "position" in probs and kind.grade in FOCAL_TYPES:
                pos = probs["position"] / probs["position"].sum()
                out[key].append(Grade(Condition.HERNIATION_POSITION, tuple(float(v) for v in pos)))
            out[key].append(Grade(Condition.HIGH_INTENSITY_ZONE, tuple(float(v) for v in probs["hiz"] / probs["hiz"].sum())))
        return out

    def _herniated(self, p: _Prepared, levels: Sequence[Level], masks: SeriesMasks | None,
                   grades: Sequence[Sequence[Grade]]) -> SeriesMasks | None:
        """``masks`` with one more segment per level called a protrusion or extrusion: its
        herniated material (:mod:`models.herniated_material`), taken from the background, the
        disc segments and the canal (the bodies keep theirs; an earlier level keeps pixels
        two levels' crops both claim). Unchanged without the segmenter or such a level."""
        if self.herniated_material is None or masks is None or p.primary is None or p.primary_pixels is None:
            return masks
        called = [li for li, gs in enumerate(grades)
                  if any(g.condition is Condition.DISC_HERNIATION and g.grade in FOCAL_TYPES for g in gs)]
        if not called:
            return masks
        axes = spine_axes({lv.name: np.asarray(lv.center_patient) for lv in levels}, levels_of(p.region))
        labels, segments = masks.labels.copy(), dict(masks.segments)
        # painted over background, discs and the canal (the detector's canal mask takes in
        # bright herniated material: 329 of 376 missed pixels of a migrated fragment were
        # canal); the vertebral bodies keep theirs
        free = np.isin(labels, [0, *(v for v, t in segments.items() if t.startswith(DISC_SEGMENT) or t == CANAL_SEGMENT)])
        crops = [level_crops(p.primary, p.primary_pixels, np.asarray(levels[li].center_patient),
                             axes.get(levels[li].name)) for li in called]
        for li, mask in zip(called, self.herniated_material.segment(p.primary, crops, self.batch_size)):
            found = mask & free
            if found.any():
                value = len(segments) + 1
                segments[value] = HERNIATED_SEGMENT + levels[li].name
                labels[found] = value
                free &= ~found
        return replace(masks, labels=labels, segments=segments)

    @staticmethod
    def _on_source(p: _Prepared, masks: SeriesMasks | None) -> SeriesMasks | None:
        """The SEG lies on the images as sent: canonical labels laid back onto the source grid."""
        if masks is None or p.primary is None or p.primary.grid is None:
            return masks
        return replace(masks, labels=p.primary.grid.array_to_source(masks.labels))

    # ------------------------------------------------------------------ stages
    def _prepare(self, uid: str, series: Mapping[str, Sequence[Any]],
                 region: Region | str | None, selection: SeriesSelection | None = None) -> _Prepared:
        series = expand_study(series)  # multi-frame images frame by frame (models.multiframe)
        sel = selection if selection is not None else select_series(
            [classify_series(header_from_datasets(list(dss))) for dss in series.values()])
        reg = Region(region) if region else (_region_from_headers(series) or Region.LUMBAR)
        missing = list(sel.missing)
        p = _Prepared(uid, reg, sel, missing)
        # The first readable of these locates the levels; a series that cannot be read
        # removes only the conditions it serves (ROLE_CONDITIONS), never the whole study.
        for role in ("sagittal_t2", "ct_sagittal", "sagittal_t1"):
            role_uid = getattr(sel, role)
            if role_uid is None:
                continue
            vols = _read_role(series[role_uid], role, missing)
            if vols is None:
                continue
            p.primary, p.primary_role = vols[0], role
            break
        if p.primary is None:
            missing.append("no usable sagittal series: no level could be located")
            return p
        p.modality = str(series[p.primary.series_uid][0].get("Modality", "MR"))
        p.primary_pixels = normalized_pixels(p.primary)
        p.grade_pixels = grader_pixels(p.primary, p.modality, mr_pixels=p.primary_pixels)
        p.primary_k = middle_slice(p.primary)
        if reg is Region.LUMBAR and p.modality == "MR":
            if p.primary_role == "sagittal_t1":
                p.sag_t1, p.sag_t1_pixels = p.primary, p.primary_pixels
            elif sel.sagittal_t1:
                t1 = _read_role(series[sel.sagittal_t1], "sagittal_t1", missing)
                if t1 is not None:
                    p.sag_t1 = t1[0]
                    p.sag_t1_pixels = normalized_pixels(p.sag_t1)
            if sel.axial_t2:
                axial = _read_role(series[sel.axial_t2], "axial_t2", missing, stacks=True)
                if axial is not None:
                    p.axial = axial
                    p.axial_pixels = [normalized_pixels(v) for v in p.axial]
        return p

    def _levels(self, p: _Prepared, dets: list[SegDetection], around: list[list[SegDetection]],
                ) -> tuple[list[Level], SeriesMasks | None]:
        """Levels on the middle slice (``dets``) and the SEG labels, spread over the slices
        beside it (``around``: the detections of :func:`~models.masks3d.spread_slices`), on
        the canonical grid (:meth:`_on_source` lays them onto the images as sent)."""
        vol = p.primary
        assert vol is not None
        k = p.primary_k
        clusters = merge_discs(dets, self.disc_score)
        discs = [cl.best for cl in clusters]
        cands: list[DiscCandidate] = []
        centers: list[np.ndarray] = []
        region_levels = levels_of(p.region)
        for i, cl in enumerate(clusters):
            cx, cy = cl.best.box.center
            c = vol.voxel_to_patient(k, cy, cx)
            centers.append(c)
            votes = {n: min(1.0, v) for n, v in cl.votes.items() if n in region_levels or n == OTHER_DISC}
            cands.append(DiscCandidate(i, float(c[2]), cl.score, votes))
        named = name_levels(cands, p.region)
        grid = vol.grid
        levels = [
            Level(n.name, vol.series_uid, vol.sop_instance_uids[k], k,
                  grid.box_to_source(discs[n.key].box) if grid is not None else discs[n.key].box,
                  clusters[n.key].score, tuple(float(x) for x in centers[n.key]),  # type: ignore[arg-type]
                  vol.frame_of(k))
            for n in named
        ]
        levels.sort(key=lambda lv: levels_of(p.region).index(lv.name))
        flag = _transitional_flag(p.region, cands, named, [discs[n.key].mask for n in named], vol)
        if flag:
            p.flags.append(flag)
        labels = np.zeros(vol.shape, dtype=np.uint8)
        segments: dict[int, str] = {}
        for n in named:
            m = discs[n.key].mask
            if m is not None and m.shape == labels.shape[1:]:
                value = len(segments) + 1
                segments[value] = DISC_SEGMENT + n.name
                labels[k][m & (labels[k] == 0)] = value
        for cls_name, title in ((VERTEBRAL_BODY, BODIES_SEGMENT), (SPINAL_CANAL, CANAL_SEGMENT)):
            parts = [d.mask for d in dets
                     if d.class_name == cls_name and d.mask is not None and d.confidence >= MASK_CONF]
            if parts:
                value = len(segments) + 1
                segments[value] = title
                union = np.logical_or.reduce(parts)
                labels[k][union & (labels[k] == 0)] = value
        if segments and p.primary_pixels is not None:  # every sagittal slice a structure lies on (3D SEG)
            def detected(imgs: list[np.ndarray]) -> list[list[SegDetection]]:
                assert len(imgs) == len(around), "spread_slices and spread_labels disagree"
                return around

            labels = spread_labels(labels, segments, {n.name: discs[n.key].box for n in named}, p.primary_pixels, k,
                                   vol.slice_spacing, detected)
        masks = SeriesMasks(vol.series_uid, vol.sop_instance_uids, labels, segments, self.model_id,
                            vol.frame_numbers if any(vol.frame_numbers) else ()) if segments else None
        return levels, masks

    def _crops(self, p: _Prepared, lv: Level, spine_axis: np.ndarray | None,
               missing: list[str]) -> list[tuple[CropRequest, str | None]]:
        out: list[tuple[CropRequest, str | None]] = []
        c = np.asarray(lv.center_patient)
        assert p.primary is not None and p.grade_pixels is not None
        kind = sagittal_kind(p.region.value, p.modality)
        if p.region is Region.CERVICAL:
            heads: tuple[str, ...] = ("cervical_canal",)
        elif p.modality == "MR" and p.primary_role == "sagittal_t2":
            heads = ("spinal_canal", "pfirrmann")
        else:
            heads = ()
        if heads:
            centre = c + self.offsets.get(kind, np.zeros(3))
            crop = sample_crop(p.primary, p.grade_pixels, centre, CROP_PX, CROP_FOV_MM[kind], HALF_SLICES)
            out.append((CropRequest(kind, crop, heads), None))
        if p.sag_t1 is not None and p.sag_t1_pixels is not None:
            for side in ("left", "right"):
                off = self.offsets.get(side)
                if off is None:
                    continue
                crop = sample_crop(p.sag_t1, p.sag_t1_pixels, c + off, CROP_PX, CROP_FOV_MM["sag_t1"], HALF_SLICES)
                out.append((CropRequest("sag_t1", crop, ("foraminal",)), side))
        if p.axial:
            hit = nearest_in_stacks(p.axial, c, margin=0.0)
            if hit is not None and hit[2] <= AXIAL_MAX_DISTANCE_MM:
                v, pix = p.axial[hit[0]], p.axial_pixels[hit[0]]
                frame = recess_frame(v, spine_axis)
                for side in ("left", "right"):
                    off = self.offsets.get(f"sub_{side}")
                    if off is None:
                        continue
                    for du, dv in self.recess_shifts_mm:
                        crop = recess_crop(v, pix, c, off + (du, dv, 0.0), frame, side)
                        out.append((CropRequest("axial_t2", crop, ("subarticular",)), side))
            else:
                missing.append(f"axial T2 does not pass through {lv.name}: subarticular not assessed")
        return out
