"""Herniation metrics of ``spinenode evaluate`` on phantoms with ``phantom_herniation.csv``.

* **type** (none, bulge, protrusion, extrusion) at every true level the analyzer
  reported: accuracy, per-class and macro F1, linearly weighted kappa (the classes are
  ordered by how far disc material reaches) with a study-level bootstrap interval,
  expected calibration error;
* **position** of the true protrusions and extrusions that the analyzer also called
  focal (a position is reported only then): accuracy with a bootstrap interval,
  per-class F1; ``reported`` is the share of true focal herniations given a position;
* **HIZ**: precision, recall and F1 of "present", with a bootstrap interval of F1,
  expected calibration error.

* **herniated material** (the SEG segments of :mod:`models.herniated_material`) against the
  phantom's ``herniated`` mask on the sagittal T2 series: pixel Dice, precision and recall
  pooled over the studies, with a study-level bootstrap interval of the Dice
  (:func:`herniated_material_metrics`).

A level the analyzer did not report (not found, no sagittal T2) is counted in
``missing`` and left out of the metrics; the level metrics of ``evaluate`` already count
missed levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models import rsna
from models.metrics import (
    accuracy,
    cohen_kappa,
    cohen_kappa_resampled,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    percentile_interval,
)
from models.types import (
    HERNIATION_GRADES,
    HERNIATION_POSITION_GRADES,
    HIZ_GRADES,
    AnalysisResult,
    Condition,
)


def per_class_f1(t: Sequence[int], p: Sequence[int], names: Sequence[str]) -> dict[str, float | None]:
    """F1 of each class (None for a class absent from truth and prediction)."""
    m = confusion_matrix(t, p, len(names))
    out: dict[str, float | None] = {}
    for k, name in enumerate(names):
        tp, fp, fn = float(m[k, k]), float(m[:, k].sum() - m[k, k]), float(m[k, :].sum() - m[k, k])
        out[name] = None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return out


def _resampled(stat: Any, rows: np.ndarray, counts: np.ndarray | None) -> list[float] | None:
    """The 95 % interval of ``stat(weights)`` over study resamples (``rows``: study index per row)."""
    if counts is None or len(rows) == 0:
        return None
    values = [stat(c[rows]) for c in counts]
    values = [v for v in values if not np.isnan(v)]  # drop NaN resamples
    return list(percentile_interval(values)) if values else None


def _binary_f1(t: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    tp = float((w * ((t == 1) & (p == 1))).sum())
    fp = float((w * ((t == 0) & (p == 1))).sum())
    fn = float((w * ((t == 1) & (p == 0))).sum())
    return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def herniation_metrics(truth: Mapping[tuple[int, str], rsna.HerniationLabel],
                       outcomes: Sequence[tuple[int, AnalysisResult]],
                       counts: np.ndarray | None) -> dict[str, Any] | None:
    """The metrics of the module docstring; None when no outcome carries herniation findings.

    ``outcomes`` are ``(study_id, result)`` in the order of the bootstrap ``counts`` rows'
    columns (``counts[b, s]``: how often study ``s`` is drawn in resample ``b``).
    """
    ty_t, ty_p, ty_s, ty_pr = [], [], [], []
    po_t, po_p, po_s = [], [], []
    hz_t, hz_p, hz_s, hz_pr = [], [], [], []
    missing = focal_true = 0
    seen = False
    for si, (sid, res) in enumerate(outcomes):
        for lv in rsna.LUMBAR_LEVELS:
            h = truth.get((sid, lv))
            if h is None:
                continue
            lf = res.findings.level(lv.replace("/", "-"))
            kind = lf.grade_of(Condition.DISC_HERNIATION) if lf is not None else None
            hiz = lf.grade_of(Condition.HIGH_INTENSITY_ZONE) if lf is not None else None
            if kind is None or hiz is None:
                missing += 1
                continue
            seen = True
            ty_t.append(HERNIATION_GRADES.index(h.herniation))
            ty_p.append(HERNIATION_GRADES.index(kind.grade))
            ty_pr.append(kind.probabilities)
            ty_s.append(si)
            hz_t.append(int(h.hiz))
            hz_p.append(HIZ_GRADES.index(hiz.grade))
            hz_pr.append(hiz.probabilities)
            hz_s.append(si)
            if h.herniation in ("protrusion", "extrusion") and h.position:
                focal_true += 1
                pos = lf.grade_of(Condition.HERNIATION_POSITION) if lf is not None else None
                if pos is not None:
                    po_t.append(HERNIATION_POSITION_GRADES.index(h.position))
                    po_p.append(HERNIATION_POSITION_GRADES.index(pos.grade))
                    po_s.append(si)
    if not seen:
        return None
    ps = np.asarray(po_s)
    out: dict[str, Any] = {
        "type": {
            "n": len(ty_t), "accuracy": accuracy(ty_t, ty_p), "macro_f1": macro_f1(ty_t, ty_p, 4),
            "f1": per_class_f1(ty_t, ty_p, HERNIATION_GRADES),
            "kappa_linear": cohen_kappa(ty_t, ty_p, 4),
            "kappa_linear_ci95": (list(percentile_interval(cohen_kappa_resampled(ty_t, ty_p, 4, counts[:, ty_s])))
                                  if counts is not None else None),
            "ece": expected_calibration_error(np.asarray(ty_t), np.asarray(ty_pr)),
            "confusion": confusion_matrix(ty_t, ty_p, 4).tolist(), "classes": list(HERNIATION_GRADES),
        },
        "position": {
            "n": len(po_t), "true_focal": focal_true, "reported": len(po_t) / focal_true if focal_true else None,
            "accuracy": accuracy(po_t, po_p) if po_t else None,
            "accuracy_ci95": _resampled(
                lambda w: float((w * (np.asarray(po_t) == np.asarray(po_p))).sum() / w.sum()) if w.sum() else float("nan"),
                ps, counts),
            "f1": per_class_f1(po_t, po_p, HERNIATION_POSITION_GRADES),
            "confusion": confusion_matrix(po_t, po_p, 5).tolist() if po_t else None,
            "classes": list(HERNIATION_POSITION_GRADES),
        },
    }
    t, p = np.asarray(hz_t), np.asarray(hz_p)
    tp, fp, fn = int(((t == 1) & (p == 1)).sum()), int(((t == 0) & (p == 1)).sum()), int(((t == 1) & (p == 0)).sum())
    out["hiz"] = {
        "n": len(hz_t), "positives": int(t.sum()), "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None, "f1": _binary_f1(t, p, np.ones(len(t))),
        "f1_ci95": _resampled(lambda w: _binary_f1(t, p, w), np.asarray(hz_s), counts),
        "ece": expected_calibration_error(t, np.asarray(hz_pr)),
    }
    out["missing"] = missing
    return out


def herniated_material_metrics(overlaps: Sequence[tuple[int, int, int] | None],
                               counts: np.ndarray | None) -> dict[str, Any] | None:
    """Pooled pixel Dice, precision and recall of the herniated-material segments.

    ``overlaps[i]`` is study ``i``'s (true positive, false positive, false negative) pixel
    counts on its sagittal series (None: not measured); ``counts`` the bootstrap's
    (resamples, studies) multiplicities.
    """
    rows = [(i, o) for i, o in enumerate(overlaps) if o is not None]
    if not rows:
        return None
    idx = np.array([i for i, _ in rows])
    m = np.array([o for _, o in rows], dtype=float)  # (studies, 3)

    def dice(tp: float, fp: float, fn: float) -> float:
        return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else float("nan")

    tp, fp, fn = m.sum(axis=0)
    out: dict[str, Any] = {
        "studies": len(rows), "studies_with_truth": int((m[:, 0] + m[:, 2] > 0).sum()),
        "studies_with_prediction": int((m[:, 0] + m[:, 1] > 0).sum()),
        "pixels_true": int(tp + fn), "pixels_predicted": int(tp + fp),
        "dice": dice(tp, fp, fn), "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }
    if counts is not None:
        sums = counts[:, idx].astype(float) @ m  # (resamples, 3)
        values = [v for v in (dice(*r) for r in sums) if not np.isnan(v)]
        out["dice_ci95"] = list(percentile_interval(values)) if values else None
    return out
