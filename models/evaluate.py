"""``spinenode evaluate``: run the whole analyzer on RSNA-layout data and score it.

Reports the RSNA 2024 score (:func:`models.metrics.rsna_score`), per-condition
accuracy, macro-F1, linearly weighted kappa and calibration (top-label expected
calibration error, and the mean predicted probability of each grade beside its
observed frequency), level detection recall (a
predicted disc centre within 5 mm of the true one) and naming accuracy (of the
detected levels, the share given the true name), Pfirrmann accuracy and kappa,
and seconds per study; on phantoms with herniation, the herniation model's metrics
(:mod:`models.evaluate_herniation`). The RSNA score and every kappa carry a 95 % interval from a
study-level bootstrap (:func:`models.metrics.study_resample_counts`, fixed seed, so
the same data give the same interval).

A condition the analyzer could not grade at a level (level not found, series
missing) is scored with the training prior ``MISSING_PROBS`` and counted in
``missing_predictions``, so a model cannot improve its score by staying silent.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import rsna
from models.evaluate_herniation import herniated_material_metrics, herniation_metrics
from models.measure import KINDS as MEASUREMENT_KINDS
from models.measure import CANAL_AP_DIAMETER, LinearMeasurement, MeasurementError, compare_to_truth, measure_levels
from models.sac_area import DURAL_SAC_AREA, canal_seed, measure_sac_area
from models.metrics import (
    BOOTSTRAP_RESAMPLES, absolute_error_summary, ScoreRow, accuracy, cohen_kappa, cohen_kappa_resampled, expected_calibration_error,
    macro_f1, percentile_interval, rsna_score, rsna_score_resampled, study_resample_counts,
)
from models.train_data import disc_centers, primary_series, to_level_name
from models.types import HERNIATED_SEGMENT, AnalysisResult, Condition, Level, Region, SeriesMasks
from models.volume import Volume, load_volume, read_series_dir, volumes_from_datasets

logger = logging.getLogger(__name__)

MISSING_PROBS = (0.70, 0.20, 0.10)
DETECTION_RADIUS_MM = 5.0
BOOTSTRAP_SEED = 0

_COND: dict[str, Condition] = {
    rsna.SPINAL_CANAL_STENOSIS: Condition.SPINAL_CANAL_STENOSIS,
    rsna.LEFT_NEURAL_FORAMINAL_NARROWING: Condition.LEFT_NEURAL_FORAMINAL_NARROWING,
    rsna.RIGHT_NEURAL_FORAMINAL_NARROWING: Condition.RIGHT_NEURAL_FORAMINAL_NARROWING,
    rsna.LEFT_SUBARTICULAR_STENOSIS: Condition.LEFT_SUBARTICULAR_STENOSIS,
    rsna.RIGHT_SUBARTICULAR_STENOSIS: Condition.RIGHT_SUBARTICULAR_STENOSIS,
}


@dataclass(frozen=True)
class StudyOutcome:
    study_id: int
    truth_centers: dict[str, np.ndarray]
    result: AnalysisResult
    #: predicted linear measurements beside the same measurement on the phantom's masks
    measurement_errors: tuple[MeasurementError, ...] = ()
    #: herniated-material pixels (true positive, false positive, false negative) on the
    #: sagittal series against the phantom's mask; None where not measured
    herniated_overlap: tuple[int, int, int] | None = None


def transitional_flags(outcomes: Sequence[StudyOutcome], truth: Mapping[int, str]) -> dict[str, dict[str, int]]:
    """Studies and studies flagged "transitional lumbosacral segment suspected", per ground truth
    (``phantom_transitional.csv``: ``lumbarised_s1``, ``sacralised_l5``; every other study ``none``)."""
    from models.levels import TRANSITIONAL_FLAG

    out: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = out.setdefault(truth.get(o.study_id, "none"), {"studies": 0, "flagged": 0})
        row["studies"] += 1
        row["flagged"] += any(f.startswith(TRANSITIONAL_FLAG) for f in o.result.findings.flags)
    return out


def level_matches(truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray],
                  radius: float = DETECTION_RADIUS_MM) -> tuple[int, int, int]:
    """(true levels, detected within radius, detected and correctly named).

    Each true disc is matched to the nearest predicted disc centre (any name).
    """
    found = named = 0
    for name, c in truth.items():
        if not predicted:
            continue
        best = min(predicted.items(), key=lambda kv: float(np.linalg.norm(kv[1] - c)))
        if float(np.linalg.norm(best[1] - c)) <= radius:
            found += 1
            named += int(best[0] == name)
    return len(truth), found, named


def score_outcomes(ds: rsna.RsnaDataset, outcomes: Sequence[StudyOutcome],
                   resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """All metrics from analyzer outcomes and the dataset's labels (``resamples=0``: no intervals)."""
    rows: list[ScoreRow] = []
    per_cond: dict[str, tuple[list[int], list[int], list[int], list[tuple[float, ...]]]] = defaultdict(
        lambda: ([], [], [], []))
    pf_t: list[int] = []
    pf_p: list[int] = []
    pf_s: list[int] = []
    n_true = n_found = n_named = 0
    missing_preds = 0
    seconds: list[float] = []
    region = Region(ds.region)
    for si, o in enumerate(outcomes):
        seconds.append(o.result.seconds)
        pred_centers = {lf.level.name: np.asarray(lf.level.center_patient) for lf in o.result.findings.levels}
        t, f, nm = level_matches(o.truth_centers, pred_centers)
        n_true, n_found, n_named = n_true + t, n_found + f, n_named + nm
        labels = ds.labels.get(o.study_id)
        if labels is None:
            continue
        for cond_name in rsna.conditions_of(ds.region):
            cond = _COND[cond_name]
            for lv in rsna.levels_of(ds.region):
                true = labels.class_index(cond_name, lv)
                if true is None:
                    continue
                lf = o.result.findings.level(to_level_name(lv))
                g = lf.grade_of(cond) if lf is not None else None
                if g is None:
                    probs = MISSING_PROBS
                    missing_preds += 1
                else:
                    probs = tuple(g.probabilities)  # type: ignore[assignment]
                group = cond.rsna_group
                assert group is not None
                rows.append(ScoreRow(str(o.study_id), group, lv, true, probs))  # type: ignore[arg-type]
                per_cond[cond.value][0].append(true)
                per_cond[cond.value][1].append(int(np.argmax(probs)))
                per_cond[cond.value][2].append(si)
                per_cond[cond.value][3].append(probs)
        if region is Region.LUMBAR:
            for lv in rsna.LUMBAR_LEVELS:
                truth_pf = ds.pfirrmann.get((o.study_id, lv))
                lf = o.result.findings.level(to_level_name(lv))
                g = lf.grade_of(Condition.PFIRRMANN) if lf is not None else None
                if truth_pf is not None and g is not None:
                    pf_t.append(truth_pf - 1)
                    pf_p.append(int(np.argmax(g.probabilities)))
                    pf_s.append(si)
    out: dict[str, Any] = {"studies": len(outcomes), "region": ds.region}
    counts = study_resample_counts(len(outcomes), resamples, BOOTSTRAP_SEED) if resamples and outcomes else None

    def kappa_ci(t: list[int], p: list[int], studies: list[int], n_classes: int) -> list[float] | None:
        if counts is None:
            return None
        return list(percentile_interval(cohen_kappa_resampled(t, p, n_classes, counts[:, studies])))

    if rows:
        out["rsna_score"] = rsna_score(rows).as_dict()
        if counts is not None:
            ids = [str(o.study_id) for o in outcomes]
            out["rsna_score"]["score_ci95"] = list(percentile_interval(rsna_score_resampled(rows, ids, counts)))
    out["conditions"] = {
        c: {"n": len(t), "accuracy": accuracy(t, p), "macro_f1": macro_f1(t, p, 3),
            "kappa_linear": cohen_kappa(t, p, 3), "kappa_linear_ci95": kappa_ci(t, p, st, 3),
            **_calibration(t, pr)}
        for c, (t, p, st, pr) in per_cond.items() if t
    }
    out["missing_predictions"] = missing_preds
    out["level_detection_recall"] = n_found / n_true if n_true else None
    out["level_naming_accuracy"] = n_named / n_found if n_found else None
    out["levels_true"] = n_true
    if pf_t:
        out["pfirrmann"] = {"n": len(pf_t), "accuracy": accuracy(pf_t, pf_p),
                            "kappa_linear": cohen_kappa(pf_t, pf_p, 5),
                            "kappa_linear_ci95": kappa_ci(pf_t, pf_p, pf_s, 5)}
    if counts is not None:
        out["bootstrap"] = {"unit": "study", "resamples": resamples, "seed": BOOTSTRAP_SEED, "level": 0.95}
    if seconds:
        out["seconds_per_study"] = float(np.mean(seconds))
    hern = rsna.read_herniation(ds.root)
    if hern:
        hm = herniation_metrics(hern, [(o.study_id, o.result) for o in outcomes], counts)
        if hm is not None:
            out["herniation"] = hm
    hmm = herniated_material_metrics([o.herniated_overlap for o in outcomes], counts)
    if hmm is not None:
        out["herniated_material"] = hmm
    errors = [e for o in outcomes for e in o.measurement_errors]
    if errors:
        out["measurements_mm"] = {kind: absolute_error_summary([e.error_mm for e in errors if e.kind == kind])
                                  for kind in MEASUREMENT_KINDS}
        areas = [e for e in errors if e.kind == DURAL_SAC_AREA]
        if areas:
            rel = absolute_error_summary([100.0 * e.error_mm / e.true_mm for e in areas])
            out["measurements_mm2"] = {DURAL_SAC_AREA: {
                **absolute_error_summary([e.error_mm for e in areas]),
                "median_abs_error_percent": rel["median_abs_error"], "bias_percent": rel["bias"]}}
    return out


def _calibration(labels: list[int], probs: list[tuple[float, ...]]) -> dict[str, Any]:
    """Expected calibration error, and mean predicted probability against observed frequency per grade."""
    p = np.asarray(probs, dtype=float)
    p = p / p.sum(axis=1, keepdims=True)
    t = np.asarray(labels, dtype=int)
    return {"ece": expected_calibration_error(t, p),
            "mean_probability": [float(v) for v in p.mean(axis=0)],
            "observed_frequency": [float(np.mean(t == k)) for k in range(p.shape[1])]}


def evaluate(data: Path, weights: Path | None = None, device: str = "auto", batch_studies: int = 1,
             max_studies: int | None = None, progress: bool = True,
             variant: str | None = None) -> dict[str, Any]:
    """Run the analyzer over every study of an RSNA-layout dataset and score it.

    ``variant`` re-encodes each study before the analyzer reads it
    (:func:`models.phantom.variants.apply_variant`); the ground truth stays in patient space.
    """
    from models.analyzer import SpineAnalyzer, read_study_dir
    from models.phantom.variants import apply_variant

    ds = rsna.read_dataset(data)
    analyzer = SpineAnalyzer.from_registry(weights, device=device)
    studies = list(ds.study_ids)[:max_studies] if max_studies else list(ds.study_ids)
    outcomes: list[StudyOutcome] = []
    t0 = time.perf_counter()
    prog_cm: Any
    if progress:
        from models.train import _progress

        prog_cm = _progress()
    else:
        import contextlib

        prog_cm = contextlib.nullcontext()
    with prog_cm as prog:
        task = prog.add_task("evaluate", total=len(studies)) if progress else None
        for start in range(0, len(studies), batch_studies):
            chunk = studies[start:start + batch_studies]
            inputs = []
            truths = []
            for sid in chunk:
                series = read_study_dir(ds.root / f"{ds.split}_images" / str(sid))
                if variant is not None:
                    series = apply_variant(series, variant)
                inputs.append((str(sid), series, ds.region))
                truths.append(_truth_centers(ds, sid))
            for sid, truth, res in zip(chunk, truths, analyzer.analyze_many(inputs)):
                prim = _primary(ds, sid, res)
                outcomes.append(StudyOutcome(sid, truth, res, tuple(_measurement_errors(ds, sid, res, prim)),
                                             _herniated_overlap(res, prim) if variant is None else None))
            if prog is not None and task is not None:
                prog.advance(task, len(chunk))
    report = score_outcomes(ds, outcomes)
    report["transitional_flags"] = transitional_flags(outcomes, rsna.read_transitional(ds.root))
    report["wall_seconds"] = round(time.perf_counter() - t0, 2)
    report["seconds_per_study_with_io"] = report["wall_seconds"] / max(1, len(studies))
    report["model"] = analyzer.model_id.to_json()
    report["device"] = str(analyzer.grader.device)
    if variant is not None:
        report["variant"] = variant
    return report


@dataclass(frozen=True)
class _Primary:
    """The sagittal series the analyzer read, with the phantom's masks of it (read once per study)."""

    series: rsna.SeriesInfo
    volume: Volume
    truth: rsna.MaskVolume
    masks: SeriesMasks


def _primary(ds: rsna.RsnaDataset, sid: int, res: AnalysisResult) -> _Primary | None:
    """None on real RSNA data (no ``masks/`` side files) or when the analyzer drew no masks
    on the series the dataset names primary."""
    series = primary_series(ds, sid)
    if series is None or not res.masks or not ds.masks_path(sid, series.series_id).exists():
        return None
    masks = next((m for m in res.masks if m.series_uid), None)
    vol = load_volume(ds.series_dir(sid, series.series_id))
    if masks is None or masks.series_uid != vol.series_uid:
        return None
    return _Primary(series, vol, rsna.read_masks(ds.masks_path(sid, series.series_id)), masks)


def _measurement_errors(ds: rsna.RsnaDataset, sid: int, res: AnalysisResult,
                        prim: _Primary | None) -> list[MeasurementError]:
    """Disc height and canal AP diameter from the predicted masks against the same
    measurements on the phantom's label masks (``masks/`` side files; none on real RSNA data)."""
    if prim is None:
        return []
    vol, truth, masks = prim.volume, prim.truth, prim.masks
    slice_of = {uid: truth.instance_numbers.index(n)
                for uid, n in zip(vol.sop_instance_uids, vol.instance_numbers) if n in truth.instance_numbers}
    levels = [lf.level for lf in res.findings.levels]
    images = {(uid, vol.frame_of(k)): vol.pixels[k] for k, uid in enumerate(vol.sop_instance_uids)}
    predicted = measure_levels(levels, masks, vol.pixel_spacing, images)
    out: list[MeasurementError] = []
    for lv in levels:
        k = slice_of.get(lv.sop_instance_uid)
        value = rsna.DISC_LABELS.get(lv.name.replace("-", "/"))
        if k is None or value is None:
            continue
        labels = truth.labels[k]
        out += compare_to_truth([lv], predicted, {lv.name: labels == value}, labels == rsna.MASK_SPINAL_CANAL,
                                vol.pixel_spacing)
    return out + _area_errors(ds, sid, vol, levels, predicted)


def _herniated_overlap(res: AnalysisResult, prim: _Primary | None) -> tuple[int, int, int] | None:
    """Herniated-material pixels of the SEG segments against the phantom's ``herniated`` mask on
    the sagittal series (both on the images as sent); None without the truth (older
    phantoms, real data), without the segmenter or when the analyzer read another series."""
    if prim is None or prim.series.series_description != rsna.SAGITTAL_T2_STIR or prim.truth.herniated is None \
            or "+hms-" not in res.findings.model.version:
        return None
    truth, masks = prim.truth, prim.masks
    assert truth.herniated is not None
    number = dict(zip(prim.volume.sop_instance_uids, prim.volume.instance_numbers))
    values = [v for v, title in masks.segments.items() if title.startswith(HERNIATED_SEGMENT)]
    tp = fp = fn = 0
    for i, uid in enumerate(masks.sop_instance_uids):
        n = number.get(uid)
        if n is None or n not in truth.instance_numbers:
            continue
        t = truth.herniated[truth.instance_numbers.index(n)]
        p = np.isin(masks.labels[i], values)
        if p.shape != t.shape:
            return None
        tp, fp, fn = tp + int((p & t).sum()), fp + int((p & ~t).sum()), fn + int((~p & t).sum())
    return tp, fp, fn


def _area_errors(ds: rsna.RsnaDataset, sid: int, sag: Volume, levels: Sequence[Level],
                 predicted: dict[str, list[LinearMeasurement]]) -> list[MeasurementError]:
    """Dural sac area on the axial T2 slice through each disc (seeded by the predicted canal
    line) against the phantom's canal label on that slice (pixels x pixel area)."""
    axial_info = next((s for s in ds.series_of(sid) if s.series_description == rsna.AXIAL_T2
                       and ds.masks_path(sid, s.series_id).exists()), None)
    if axial_info is None:
        return []
    axial = volumes_from_datasets(read_series_dir(ds.series_dir(sid, axial_info.series_id)))
    truth = rsna.read_masks(ds.masks_path(sid, axial_info.series_id))
    out: list[MeasurementError] = []
    for lv in levels:
        line = next((m for m in predicted.get(lv.name, ()) if m.kind == CANAL_AP_DIAMETER), None)
        if line is None or lv.sop_instance_uid not in sag.sop_instance_uids:
            continue
        k = sag.sop_instance_uids.index(lv.sop_instance_uid)
        seed = canal_seed(line, sag.positions[k], sag.row_dir, sag.col_dir, sag.pixel_spacing)
        area = measure_sac_area(lv.name, seed, axial)
        if area is None:
            continue
        vol = next(v for v in axial if area.sop_instance_uid in v.sop_instance_uids)
        n = vol.instance_numbers[area.slice_index]
        if n not in truth.instance_numbers:
            continue
        canal = truth.labels[truth.instance_numbers.index(n)] == rsna.MASK_SPINAL_CANAL
        true_mm2 = float(canal.sum()) * vol.pixel_spacing[0] * vol.pixel_spacing[1]
        if true_mm2 > 0:
            out.append(MeasurementError(DURAL_SAC_AREA, lv.name, area.value_mm2, true_mm2))
    return out


def _truth_centers(ds: rsna.RsnaDataset, sid: int) -> dict[str, np.ndarray]:
    series = primary_series(ds, sid)
    if series is None:
        return {}
    vol = load_volume(ds.series_dir(sid, series.series_id))
    return disc_centers(ds, sid, vol, series)
