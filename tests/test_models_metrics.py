"""RSNA 2024 score, kappa, F1 and accuracy against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import (
    ScoreRow,
    accuracy,
    binary_log_loss,
    cohen_kappa,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    cohen_kappa_resampled,
    percentile_interval,
    rsna_score,
    rsna_score_resampled,
    study_resample_counts,
    weighted_log_loss,
)


def test_weighted_log_loss_hand_computed() -> None:
    # -(1*ln .8 + 4*ln .6) / 5
    got = weighted_log_loss([0, 2], [[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]], [1, 4])
    assert got == pytest.approx(-(math.log(0.8) + 4 * math.log(0.6)) / 5, rel=1e-12)


def test_log_loss_renormalises_rows_and_clips_zeros() -> None:
    # rows that do not sum to one are renormalised after clipping: 0.4 / 0.8
    assert weighted_log_loss([0], [[0.4, 0.2, 0.2]]) == pytest.approx(math.log(2))
    # a zero probability on the true class is clipped, not infinite
    got = weighted_log_loss([2], [[0.5, 0.5, 0.0]], eps=1e-15)
    assert got == pytest.approx(-math.log(1e-15), rel=1e-6)


def test_binary_log_loss() -> None:
    got = binary_log_loss([1, 0], [0.6, 0.3], [4, 1])
    assert got == pytest.approx(-(4 * math.log(0.6) + math.log(0.7)) / 5)


def _study(sid: str, spinal: list[tuple[int, tuple[float, float, float]]]) -> list[ScoreRow]:
    return [ScoreRow(sid, "spinal", f"L{i}", lab, p) for i, (lab, p) in enumerate(spinal)]


def test_rsna_score_one_study_hand_computed() -> None:
    rows = _study("1", [(0, (0.8, 0.1, 0.1)), (2, (0.2, 0.2, 0.6))])
    rows.append(ScoreRow("1", "foraminal", "L1", 1, (0.5, 0.5, 0.0)))
    rows.append(ScoreRow("1", "subarticular", "L1", 0, (1.0, 0.0, 0.0)))
    s = rsna_score(rows)
    spinal = -(math.log(0.8) + 4 * math.log(0.6)) / 5  # 0.453292
    foraminal = math.log(2)
    any_severe = -math.log(0.6)  # label 1, p = max severe = 0.6, weight 4
    assert s.spinal == pytest.approx(spinal)
    assert s.foraminal == pytest.approx(foraminal)
    assert s.subarticular == pytest.approx(0.0, abs=1e-12)
    assert s.any_severe_spinal == pytest.approx(any_severe)
    assert s.score == pytest.approx((spinal + foraminal + 0.0 + any_severe) / 4)
    assert s.score == pytest.approx(0.414316, abs=1e-6)


def test_any_severe_term_uses_max_weight_per_study() -> None:
    # study a: moderate at one level (weight 2), no severe -> label 0, p = max severe = 0.3
    # study b: all normal (weight 1), label 0, p = 0.1
    rows = _study("a", [(1, (0.2, 0.5, 0.3)), (0, (0.9, 0.05, 0.05))])
    rows += _study("b", [(0, (0.8, 0.1, 0.1))])
    s = rsna_score(rows)
    expected_any = -(2 * math.log(0.7) + 1 * math.log(0.9)) / 3
    assert s.any_severe_spinal == pytest.approx(expected_any)
    spinal = -(2 * math.log(0.5) + math.log(0.9) + math.log(0.8)) / 4
    assert s.spinal == pytest.approx(spinal)
    # only spinal rows: the mean of the two terms present
    assert s.foraminal is None and s.subarticular is None
    assert s.score == pytest.approx((spinal + expected_any) / 2)


def test_perfect_prediction_scores_near_zero_and_wrong_one_high() -> None:
    good = _study("x", [(2, (0.0, 0.0, 1.0))])
    bad = _study("x", [(2, (1.0, 0.0, 0.0))])
    assert rsna_score(good).score < 1e-10
    assert rsna_score(bad).score > 10


def test_score_row_validates() -> None:
    with pytest.raises(ValueError):
        ScoreRow("1", "canal", "L1", 0, (1, 0, 0))
    with pytest.raises(ValueError):
        ScoreRow("1", "spinal", "L1", 3, (1, 0, 0))


def test_linear_kappa_hand_computed() -> None:
    # O=[[1,1,0],[0,1,0],[0,0,1]]; E from marginals (2,1,1)x(1,2,1)/4; sum W*E = 3.5
    k = cohen_kappa([0, 0, 1, 2], [0, 1, 1, 2], 3, "linear")
    assert k == pytest.approx(1 - 1 / 3.5)


def test_kappa_variants() -> None:
    y = [0, 1, 2, 2, 1, 0]
    assert cohen_kappa(y, y, 3) == pytest.approx(1.0)
    # unweighted: po = 3/4, pe = (2*1 + 1*2 + 1*1)/16 = 5/16 -> (0.75-0.3125)/(0.6875)
    assert cohen_kappa([0, 0, 1, 2], [0, 1, 1, 2], 3, "none") == pytest.approx(0.4375 / 0.6875)
    # quadratic: W*O = 1; W*E = 1*1 + 4*.5 + 1*.25 + 1*.25 + 4*.25 + 1*.5 = 5
    assert cohen_kappa([0, 0, 1, 2], [0, 1, 1, 2], 3, "quadratic") == pytest.approx(0.8)
    assert cohen_kappa([0, 0], [0, 0], 3) == 1.0
    with pytest.raises(ValueError):
        cohen_kappa([0], [0], 3, "cubic")


def test_macro_f1_and_accuracy() -> None:
    t, p = [0, 0, 1, 2], [0, 1, 1, 2]
    assert macro_f1(t, p, 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert accuracy(t, p) == pytest.approx(0.75)
    m = confusion_matrix(t, p, 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert np.trace(m) == 3


def _mixed_rows(n_studies: int, seed: int) -> list[ScoreRow]:
    """Random lumbar-like rows: spinal, foraminal and subarticular at five levels per study."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        for group in ("spinal", "foraminal", "subarticular"):
            for lv in range(5):
                p = rng.dirichlet((2.0, 1.0, 0.5))
                rows.append(ScoreRow(f"s{s}", group, f"L{lv}", int(rng.choice(3, p=(0.7, 0.2, 0.1))),
                                     (float(p[0]), float(p[1]), float(p[2]))))
    return rows


def test_resampled_rsna_score_is_the_score_of_the_resampled_studies() -> None:
    """Counts of one give the plain score; a drawn resample gives the score of the rows with
    each copy of a study under its own ID (the any-severe term counted per copy)."""
    rows = _mixed_rows(6, seed=3)
    ids = [f"s{s}" for s in range(6)]
    ones = np.ones((1, 6))
    assert rsna_score_resampled(rows, ids, ones)[0] == pytest.approx(rsna_score(rows).score, rel=1e-12)
    counts = study_resample_counts(6, resamples=5, seed=1)
    got = rsna_score_resampled(rows, ids, counts)
    for b in range(5):
        copies = [ScoreRow(f"{r.study_id}#{k}", r.group, r.level, r.label, r.probs)
                  for r in rows for k in range(int(counts[b, ids.index(r.study_id)]))]
        assert got[b] == pytest.approx(rsna_score(copies).score, rel=1e-12)


def test_resampled_kappa_counts_rows_by_their_study() -> None:
    t = [0, 0, 1, 2, 2, 1]
    p = [0, 1, 1, 2, 1, 1]
    assert cohen_kappa_resampled(t, p, 3, np.ones((1, 6)))[0] == pytest.approx(cohen_kappa(t, p, 3))
    twice_first = np.array([[2, 2, 0, 0, 1, 1]])  # rows of one study drawn twice, another never
    assert cohen_kappa_resampled(t, p, 3, twice_first)[0] == pytest.approx(
        cohen_kappa([0, 0, 0, 0, 2, 1], [0, 1, 0, 1, 1, 1], 3))
    assert np.isnan(cohen_kappa_resampled(t, p, 3, np.zeros((1, 6)))[0])


def test_study_bootstrap_is_reproducible_and_brackets_the_estimate() -> None:
    counts = study_resample_counts(40, resamples=400, seed=0)
    assert counts.shape == (400, 40) and (counts.sum(axis=1) == 40).all()
    assert (counts == study_resample_counts(40, resamples=400, seed=0)).all()
    rows = _mixed_rows(40, seed=7)
    ids = [f"s{s}" for s in range(40)]
    lo, hi = percentile_interval(rsna_score_resampled(rows, ids, counts))
    assert lo < rsna_score(rows).score < hi
    assert hi - lo < 0.5 * rsna_score(rows).score  # 40 studies pin the score down to well within a half
    assert percentile_interval([1.0, 2.0, 3.0, float("nan")], level=1.0) == (1.0, 3.0)
    with pytest.raises(ValueError):
        study_resample_counts(0)


def test_expected_calibration_error_hand_computed() -> None:
    # bin 0.9-1.0: confidences .95, .95, right and wrong -> |0.5 - 0.95| over 2 rows;
    # bin 0.6-0.7: confidence .6, right -> |1 - 0.6| over 1 row; ECE = (2*0.45 + 0.4) / 3
    probs = [[0.95, 0.03, 0.02], [0.02, 0.03, 0.95], [0.6, 0.3, 0.1]]
    assert expected_calibration_error([0, 0, 0], probs) == pytest.approx((2 * 0.45 + 0.4) / 3)
    # a confidence of exactly 1 falls in the top bin, and a right answer there costs nothing
    assert expected_calibration_error([1], [[0.0, 1.0, 0.0]]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        expected_calibration_error([], np.zeros((0, 3)))
