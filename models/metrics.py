"""Metrics: the RSNA 2024 score, weighted Cohen's kappa, macro-F1, accuracy, calibration
error, and study-level bootstrap intervals of the score and of kappa.

The RSNA 2024 Lumbar Spine Degenerative Classification score, as the Kaggle
metric computes it:

* every (study, condition, level) row has a sample weight from its true grade:
  normal/mild 1, moderate 2, severe 4;
* a sample-weighted log loss (``sum(w * -log p_true) / sum(w)``, probabilities
  clipped to ``[eps, 1 - eps]`` and each row renormalised, as
  ``sklearn.metrics.log_loss`` does) for each condition group: spinal canal,
  neural foraminal (left and right together), subarticular (left and right);
* an "any severe spinal" binary term per study: prediction = the largest
  severe probability over the study's spinal rows, label = whether any of its
  spinal rows is severe, weight = the largest sample weight of its spinal rows;
* the score is the mean of the four terms (``any_severe_scalar`` = 1).

Groups without rows (a cervical study has only spinal rows) are left out of
the mean; with complete lumbar data this is exactly the Kaggle metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Sample weight per true grade index (normal/mild, moderate, severe).
SAMPLE_WEIGHTS: tuple[float, float, float] = (1.0, 2.0, 4.0)
RSNA_GROUPS: tuple[str, ...] = ("spinal", "foraminal", "subarticular")
DEFAULT_EPS = 1e-15


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One scored row: a study, a condition group, a level, the true grade and the prediction."""

    study_id: str
    group: str
    level: str
    label: int
    probs: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.group not in RSNA_GROUPS:
            raise ValueError(f"unknown condition group {self.group!r}")
        if self.label not in (0, 1, 2):
            raise ValueError(f"label must be 0, 1 or 2, got {self.label}")
        if len(self.probs) != 3:
            raise ValueError("probs must have three entries")


@dataclass(frozen=True, slots=True)
class RsnaScore:
    """The four terms and their mean; a term is None when it had no rows."""

    spinal: float | None
    foraminal: float | None
    subarticular: float | None
    any_severe_spinal: float | None
    score: float

    def as_dict(self) -> dict[str, float | None]:
        return {
            "spinal": self.spinal,
            "foraminal": self.foraminal,
            "subarticular": self.subarticular,
            "any_severe_spinal": self.any_severe_spinal,
            "score": self.score,
        }


def weighted_log_loss(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    eps: float = DEFAULT_EPS,
) -> float:
    """Sample-weighted multi-class log loss, as ``sklearn.metrics.log_loss``.

    ``probs`` has one row per sample; rows are clipped to ``[eps, 1 - eps]``
    and renormalised to sum to one before the log is taken.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError("probs must be (n_samples, n_classes) with one row per label")
    if y.size == 0:
        raise ValueError("no samples")
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    return float(np.sum(w * row_log_losses(y, p, eps)) / np.sum(w))


def row_log_losses(labels: np.ndarray, probs: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """``-log p_true`` of each row, rows clipped to ``[eps, 1 - eps]`` and renormalised."""
    p = np.clip(np.asarray(probs, dtype=float), eps, 1.0 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(len(labels)), np.asarray(labels, dtype=int)])


def binary_log_loss(
    labels: Sequence[int] | np.ndarray,
    p_positive: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    eps: float = DEFAULT_EPS,
) -> float:
    """Weighted binary log loss of the probability of the positive class."""
    p = np.asarray(p_positive, dtype=float)
    return weighted_log_loss(labels, np.stack([1.0 - p, p], axis=1), weights, eps)


def rsna_score(
    rows: Iterable[ScoreRow], any_severe_scalar: float = 1.0, eps: float = DEFAULT_EPS
) -> RsnaScore:
    """The RSNA 2024 score of a set of rows (see the module docstring)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to score")
    ids = sorted({r.study_id for r in rows})
    terms = _score_terms(rows, ids, any_severe_scalar, eps)
    once = np.ones((1, len(ids)))
    value = {t.name: float(t.values(once)[0]) for t in terms}
    return RsnaScore(value.get("spinal"), value.get("foraminal"), value.get("subarticular"),
                     value.get("any_severe_spinal"), float(_mean_of_terms(terms, once)[0]))


@dataclass(frozen=True, slots=True)
class _Term:
    """One term of the score: a weighted mean of ``loss`` over items (rows, or studies for
    any-severe), each item belonging to study ``study[i]`` and counted as often as it is drawn."""

    name: str
    study: np.ndarray
    weight: np.ndarray
    loss: np.ndarray
    scalar: float = 1.0  # the term's weight in the mean

    def values(self, counts: np.ndarray) -> np.ndarray:
        m = counts[:, self.study] * self.weight
        return _ratio(m @ self.loss, m.sum(axis=1))


def _mean_of_terms(terms: Sequence[_Term], counts: np.ndarray) -> np.ndarray:
    """The score of each row of ``counts``: the weighted mean of the terms that have items."""
    t = np.stack([term.values(counts) for term in terms], axis=1)
    w = np.where(np.isnan(t), 0.0, np.array([term.scalar for term in terms]))
    return _ratio(np.nansum(t * w, axis=1), w.sum(axis=1))


def _score_terms(rows: Sequence[ScoreRow], study_ids: Sequence[str], any_severe_scalar: float,
                 eps: float) -> list[_Term]:
    """The terms with rows, in order: spinal, foraminal, subarticular, any severe spinal."""
    index = {s: i for i, s in enumerate(study_ids)}
    study = np.array([index[r.study_id] for r in rows], dtype=int)
    label = np.array([r.label for r in rows], dtype=int)
    weight = np.asarray(SAMPLE_WEIGHTS)[label]
    loss = row_log_losses(label, np.array([r.probs for r in rows], dtype=float), eps)
    group = np.array([r.group for r in rows])
    terms = [_Term(g, study[sel], weight[sel], loss[sel])
             for g in RSNA_GROUPS if (sel := group == g).any()]
    spinal = np.flatnonzero(group == "spinal")
    if spinal.size:
        # per study: label = any severe row, prediction = the largest (renormalised) severe
        # probability, weight = the largest sample weight of its spinal rows
        ss = np.unique(study[spinal])
        y = np.zeros(len(ss), dtype=int)
        ps = np.zeros(len(ss))
        ws = np.zeros(len(ss))
        for k, st in enumerate(ss):
            r = spinal[study[spinal] == st]
            raw = np.array([rows[i].probs for i in r], dtype=float)
            y[k] = int((label[r] == 2).any())
            ps[k] = float(np.max(raw[:, 2] / np.maximum(raw.sum(axis=1), 1e-12)))
            ws[k] = float(weight[r].max())
        terms.append(_Term("any_severe_spinal", ss, ws, row_log_losses(y, np.stack([1.0 - ps, ps], axis=1), eps),
                           any_severe_scalar))
    return terms


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (t, p), 1)
    return m


def cohen_kappa(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
    weights: str = "linear",
) -> float:
    """Cohen's kappa, unweighted (``"none"``), linearly or quadratically weighted.

    ``1 - sum(W * O) / sum(W * E)`` with O the observed confusion matrix, E the
    outer product of its marginals scaled to the same total, and W the
    disagreement weights ``|i - j|`` (linear) or ``(i - j)**2`` (quadratic).
    When E has no weighted disagreement (one class only), agreement gives 1.
    """
    return kappa_of_confusion(confusion_matrix(y_true, y_pred, n_classes), weights)


def kappa_of_confusion(confusion: np.ndarray, weights: str = "linear") -> float:
    """Cohen's kappa of a ``[true, predicted]`` matrix of counts (see :func:`cohen_kappa`)."""
    o = np.asarray(confusion, dtype=float)
    n_classes = o.shape[0]
    n = o.sum()
    if n == 0:
        raise ValueError("no samples")
    e = np.outer(o.sum(axis=1), o.sum(axis=0)) / n
    i, j = np.indices((n_classes, n_classes))
    if weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(float)
    elif weights == "none":
        w = (i != j).astype(float)
    else:
        raise ValueError(f"unknown weights {weights!r}")
    expected = float((w * e).sum())
    observed = float((w * o).sum())
    if expected == 0.0:
        return 1.0 if observed == 0.0 else 0.0
    return 1.0 - observed / expected


def macro_f1(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int
) -> float:
    """Unweighted mean of per-class F1 over the classes present in truth or prediction."""
    m = confusion_matrix(y_true, y_pred, n_classes)
    f1s: list[float] = []
    for k in range(n_classes):
        tp = float(m[k, k])
        fp = float(m[:, k].sum() - tp)
        fn = float(m[k, :].sum() - tp)
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    if t.size == 0:
        raise ValueError("no samples")
    return float(np.mean(t == p))


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, probs: Sequence[Sequence[float]] | np.ndarray, bins: int = 10
) -> float:
    """Top-label expected calibration error: rows binned by their largest probability
    (``bins`` equal-width bins on [0, 1]); the row-weighted mean over bins of
    ``|accuracy - mean confidence|``. 0 for a perfectly calibrated model."""
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape[0] != t.size or t.size == 0:
        raise ValueError("probs must be (n_samples, n_classes) with one row per label")
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == t).astype(float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        sel = which == b
        total += sel.sum() * abs(float(hit[sel].mean()) - float(conf[sel].mean()))
    return total / t.size


#: Resamples of the study-level bootstrap behind the 95 % intervals of ``spinenode evaluate``.
BOOTSTRAP_RESAMPLES = 1000


def study_resample_counts(n_studies: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n_studies)``: how many times each study is drawn in each bootstrap resample.

    A resample draws ``n_studies`` studies with replacement. Studies, not rows, are
    the unit: the levels of one study share its acquisition and its detector, so
    resampling levels alone would make the intervals too narrow.
    """
    if n_studies < 1:
        raise ValueError("no studies to resample")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_studies, np.full(n_studies, 1.0 / n_studies), size=resamples)


def percentile_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap values (percentile method; NaNs left out)."""
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(np.asarray(values, dtype=float), [tail, 100.0 - tail])
    return float(lo), float(hi)


def rsna_score_resampled(
    rows: Sequence[ScoreRow], study_ids: Sequence[str], counts: np.ndarray,
    any_severe_scalar: float = 1.0, eps: float = DEFAULT_EPS,
) -> np.ndarray:
    """The RSNA 2024 score of each resample, one per row of ``counts`` (``(resamples, len(study_ids))``).

    In resample ``b`` every row of study ``study_ids[s]`` counts ``counts[b, s]`` times,
    and so does the study's any-severe term: the same as :func:`rsna_score` of the
    rows with each drawn copy of a study given its own ID. Counts of one everywhere
    give ``rsna_score(rows).score``. A group with no rows in a resample is left out
    of that resample's mean, as :func:`rsna_score` leaves it out.
    """
    c = np.asarray(counts, dtype=float)
    if c.ndim != 2 or c.shape[1] != len(study_ids):
        raise ValueError("counts must be (resamples, studies)")
    return _mean_of_terms(_score_terms(rows, study_ids, any_severe_scalar, eps), c)


def cohen_kappa_resampled(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n_classes: int,
    row_counts: np.ndarray, weights: str = "linear",
) -> np.ndarray:
    """Cohen's kappa of each resample: in resample ``b``, row ``i`` counts ``row_counts[b, i]`` times."""
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    rc = np.asarray(row_counts, dtype=float)
    if rc.ndim != 2 or rc.shape[1] != t.size or t.shape != p.shape:
        raise ValueError("row_counts must be (resamples, rows) with one row per label")
    onehot = np.zeros((t.size, n_classes * n_classes))
    onehot[np.arange(t.size), t * n_classes + p] = 1.0
    cells = rc @ onehot
    out = np.full(rc.shape[0], np.nan)
    for b, flat in enumerate(cells):
        if flat.sum() > 0:
            out[b] = kappa_of_confusion(flat.reshape(n_classes, n_classes), weights)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def absolute_error_summary(errors: Sequence[float]) -> dict[str, float | int]:
    """n, median and mean absolute error, 90th percentile of the absolute error and the
    mean signed error (bias) of a list of errors (mm)."""
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        return {"n": 0}
    a = np.abs(e)
    return {"n": int(e.size), "median_abs_error": float(np.median(a)), "mean_abs_error": float(a.mean()),
            "p90_abs_error": float(np.percentile(a, 90)), "bias": float(e.mean())}
