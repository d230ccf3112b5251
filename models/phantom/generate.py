"""Generate phantom studies and their ground truth in the RSNA 2024 layout.

:func:`generate_study` renders one study (DICOM files, mask side files) and returns its
ground-truth records; :func:`generate_dataset` runs it for N studies and writes the CSV
files (see :mod:`models.rsna` for the layout). Everything is a function of
``(seed, study index, config)``: the truth from its own random stream
(:func:`models.phantom.pathology.sample_truth`), the anatomy and images from others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import rsna
from models.phantom.anatomy import Spine, sample_spine
from models.phantom.config import PhantomConfig
from models.phantom.dicom import (
    SeriesWriter, fill_slice, make_identity, series_spec, series_template,
)
from models.phantom.imaging import (
    SliceStack, label_stack, plan_axial, plan_sagittal, signal, thickness_labels,
    upsample_labels,
)
from models.phantom.pathology import StudyTruth, sample_truth
from models.phantom.render import mask_of

log = logging.getLogger(__name__)

#: RSNA series description per internal series key.
RSNA_DESCRIPTION = {
    "sag_T1": rsna.SAGITTAL_T1, "sag_T2": rsna.SAGITTAL_T2_STIR, "sag_STIR": rsna.SAGITTAL_T2_STIR,
    "ax_T2": rsna.AXIAL_T2, "sag_CT": rsna.SAGITTAL_CT, "ax_CT": rsna.AXIAL_CT,
}


@dataclass(frozen=True)
class StudyResult:
    """Ground-truth records of one generated study."""

    study_id: int
    truth: StudyTruth
    labels: rsna.StudyLabels
    series: tuple[rsna.SeriesInfo, ...]
    coordinates: tuple[rsna.LabelCoordinate, ...]
    slice_levels: dict[tuple[int, int, int], tuple[str, float]]
    n_images: int
    seconds: float


#: Study id offset per (region, modality), so phantoms of different kinds never collide.
_KIND_OFFSET = {("lumbar", "MR"): 0, ("cervical", "MR"): 1, ("lumbar", "CT"): 2,
                ("cervical", "CT"): 3}


def study_id_for(seed: int, index: int, region: str = "lumbar", modality: str = "MR") -> int:
    """RSNA-style integer study id, unique per (region, modality, seed mod 10000,
    index < 100000); lumbar MR ids are ``10_000_000 + (seed % 10000) * 100_000 + index``."""
    kind = _KIND_OFFSET[(region, modality)]
    return 10_000_000 + kind * 1_000_000_000 + (seed % 10_000) * 100_000 + index


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _canal_point(sp: Spine, level: str) -> np.ndarray:
    i = sp.segment_index(level)
    return sp.level_point(level, 0.0, sp.canal_center_v(i), 0.0)


def _foramen_point(sp: Spine, level: str, left: bool) -> np.ndarray:
    i = sp.segment_index(level)
    segs = sp.segments
    lo = -(0.5 * segs[i].height + 0.08 * segs[i - 1].height)
    hi = 0.5 * segs[i].height + 0.32 * segs[i + 1].height
    k = sp.pedicle_w / (4.5 if sp.region == "lumbar" else 2.8)
    v = segs[i].half_depth + (5.5 if sp.region == "lumbar" else 3.5) * k
    w = sp.sac_rw + 2.0 + sp.pedicle_w
    return sp.level_point(level, 0.5 * (lo + hi), v, w if left else -w)


def _recess_point(sp: Spine, level: str, left: bool) -> np.ndarray:
    i = sp.segment_index(level)
    sh = sp.shapes[level]
    depth = sh.recess_depth[0 if left else 1]
    v = sp.segments[i].half_depth * 0.93 + sh.recess_bulge[0 if left else 1] + 0.5 * depth
    w = sp.sac_rw - 1.5
    return sp.level_point(level, 0.0, v, w if left else -w)


def _plan(config: PhantomConfig, sp: Spine, rng: np.random.Generator
          ) -> list[tuple[str, SliceStack]]:
    if config.modality == "CT":
        return [("sag_CT", plan_sagittal(sp, rng, "CT", config.matrix, ct=True)),
                ("ax_CT", plan_axial(sp, rng, "CT", config.matrix, block=True, ct=True))]
    sag_kind = "STIR" if rng.random() < 0.2 else "T2"
    sag = plan_sagittal(sp, rng, sag_kind, config.matrix)
    t1 = SliceStack("T1", sag.plane, sag.rows, sag.cols, sag.spacing, sag.row_dirs,
                    sag.col_dirs, sag.positions, sag.thickness, sag.gap)
    block = rng.random() < config.axial_block_probability
    ax = plan_axial(sp, rng, "T2", config.matrix, block=block)
    return [(f"sag_{sag_kind}", sag), ("sag_T1", t1), ("ax_T2", ax)]


def _coordinates(sp: Spine, study_id: int, region: str,
                 series: dict[str, tuple[int, SliceStack]]) -> list[rsna.LabelCoordinate]:
    out: list[rsna.LabelCoordinate] = []
    canal_key = next(k for k in series if k in ("sag_T2", "sag_STIR", "sag_CT"))
    for lv in rsna.levels_of(region):
        sid, st = series[canal_key]
        i, x, y, _ = st.project(_canal_point(sp, lv))
        out.append(rsna.LabelCoordinate(study_id, sid, i + 1, rsna.SPINAL_CANAL_STENOSIS,
                                        lv, x, y))
    if region != "lumbar" or "sag_T1" not in series:
        return out
    for cond, left in ((rsna.LEFT_NEURAL_FORAMINAL_NARROWING, True),
                       (rsna.RIGHT_NEURAL_FORAMINAL_NARROWING, False)):
        sid, st = series["sag_T1"]
        for lv in rsna.levels_of(region):
            i, x, y, _ = st.project(_foramen_point(sp, lv, left))
            out.append(rsna.LabelCoordinate(study_id, sid, i + 1, cond, lv, x, y))
    for cond, left in ((rsna.LEFT_SUBARTICULAR_STENOSIS, True),
                       (rsna.RIGHT_SUBARTICULAR_STENOSIS, False)):
        sid, st = series["ax_T2"]
        for lv in rsna.levels_of(region):
            cands = [j for j, name in enumerate(st.levels) if name == lv]
            i, x, y, _ = st.project(_recess_point(sp, lv, left), cands or None)
            out.append(rsna.LabelCoordinate(study_id, sid, i + 1, cond, lv, x, y))
    return out


def _to_stored(img: np.ndarray, ct: bool, rng: np.random.Generator) -> np.ndarray:
    if ct:
        return np.clip(np.rint(img + 1024.0), 0, 4095).astype(np.uint16)
    scale = rng.uniform(1400.0, 2600.0)
    return np.clip(np.rint(img * scale), 0, 4095).astype(np.uint16)


def generate_study(out: Path | str, seed: int, index: int, config: PhantomConfig,
                   *, write_masks: bool = True) -> StudyResult:
    """Render study ``index`` of run ``seed`` under ``out`` and return its ground truth.

    Writes ``train_images/<study_id>/<series_id>/<instance>.dcm`` and, with
    ``write_masks``, ``masks/<study_id>/<series_id>.npz``; the CSV files are written by
    :func:`generate_dataset` (or by the caller with :mod:`models.rsna` writers).
    """
    t0 = time.perf_counter()
    out = Path(out)
    truth = sample_truth(seed, index, config)
    sp = sample_spine(_rng(seed, index, 2), truth)
    rng = _rng(seed, index, 3)
    study_id = study_id_for(seed, index, config.region, config.modality)
    ident = make_identity(seed, index, study_id, config.region, config.modality, rng)
    plan = _plan(config, sp, rng)
    numbers = list(rng.permutation(len(plan)) + 2)
    series: dict[str, tuple[int, SliceStack]] = {}
    infos: list[rsna.SeriesInfo] = []
    slice_levels: dict[tuple[int, int, int], tuple[str, float]] = {}
    n_images = 0
    labels_cache: dict[int, tuple[list, list | None]] = {}
    for (key, stack), number in zip(plan, numbers):
        series_id = study_id * 10 + int(number)
        spec = series_spec(key, series_id, int(number), config.region, rng)
        series[key] = (series_id, stack)
        infos.append(rsna.SeriesInfo(study_id, series_id, RSNA_DESCRIPTION[key]))
        geo = id(stack.positions)
        if geo not in labels_cache:
            thick = thickness_labels(sp, stack) if config.thickness_blur else None
            labels_cache[geo] = (label_stack(sp, stack), thick)
        labels, thick = labels_cache[geo]
        img = signal(sp, stack, labels, rng, config.noise, thick)
        stored = _to_stored(img, config.modality == "CT", rng)
        sdir = out / "train_images" / str(study_id) / str(series_id)
        template = series_template(ident, spec, stack)
        writer = SeriesWriter(template)
        for i in range(len(stack)):
            writer.write(fill_slice(template, ident, spec, stack, i, stored[i]),
                         sdir / f"{i + 1}.dcm")
        n_images += len(stack)
        if stack.plane == "axial":
            for i, (lv, d) in enumerate(zip(stack.levels, stack.distances)):
                slice_levels[(study_id, series_id, i + 1)] = (lv, d)
        if write_masks and key != "sag_T1":
            vol = np.stack([upsample_labels(mask_of(sp, lab), stack.rows, stack.cols)
                            for lab in labels])
            hern = np.stack([upsample_labels(lab.herniated, stack.rows, stack.cols)
                             if lab.herniated is not None else np.zeros((stack.rows, stack.cols), bool)
                             for lab in labels])
            rsna.write_masks(out / "masks" / str(study_id) / f"{series_id}.npz", vol,
                             list(range(1, len(stack) + 1)), hern)
    coords = _coordinates(sp, study_id, config.region, series)
    labels_row = rsna.StudyLabels(study_id, truth.grades())
    dt = time.perf_counter() - t0
    log.debug("phantom study %d: %d images in %.2f s", study_id, n_images, dt)
    return StudyResult(study_id, truth, labels_row, tuple(infos), tuple(coords), slice_levels,
                       n_images, dt)


def write_ground_truth(out: Path | str, results: list[StudyResult], region: str) -> None:
    """Write the RSNA CSV files and the phantom side files for ``results``."""
    out = Path(out)
    rsna.write_labels(out, [r.labels for r in results], region=region)
    rsna.write_coordinates(out, [c for r in results for c in r.coordinates])
    rsna.write_series_descriptions(out, [s for r in results for s in r.series])
    rsna.write_pfirrmann(out, {(r.study_id, lv): g for r in results
                               for lv, g in r.truth.pfirrmann.items()})
    rsna.write_narrowing(out, {(r.study_id, c, lv): f for r in results
                               for (c, lv), f in r.truth.narrowing.items()})
    rsna.write_herniation(out, [
        rsna.HerniationLabel(r.study_id, lv, h.kind, h.position, h.migration, h.migration_mm,
                             h.hiz)
        for r in results for lv, h in r.truth.herniation.items()])
    sl: dict[tuple[int, int, int], tuple[str, float]] = {}
    for r in results:
        sl.update(r.slice_levels)
    rsna.write_slice_levels(out, sl)
    transitional = {r.study_id: r.truth.transitional for r in results if r.truth.transitional != "none"}
    if transitional:
        rsna.write_transitional(out, transitional)


def generate_dataset(out: Path | str, n_studies: int, config: PhantomConfig, seed: int = 0,
                     *, start: int = 0, write_masks: bool = True,
                     progress: Callable[[StudyResult], None] | None = None
                     ) -> list[StudyResult]:
    """Generate studies ``start .. start + n_studies - 1`` and write all ground truth."""
    results = []
    for index in range(start, start + n_studies):
        r = generate_study(out, seed, index, config, write_masks=write_masks)
        results.append(r)
        if progress is not None:
            progress(r)
    write_ground_truth(out, results, config.region)
    return results
