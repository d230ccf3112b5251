"""Ground truth of a phantom study: continuous narrowing per condition and level, Pfirrmann.

Each (condition, level) gets a *narrowing*: the fraction of the normal diameter that is
lost (canal: AP diameter of the dural sac; foramen: AP diameter of the foraminal fat;
subarticular: depth of the lateral recess). The renderer builds exactly that narrowing
from a disc bulge, ligamentum flavum thickening and facet hypertrophy, and the grade
follows from thresholds (:func:`models.rsna.grade_of_narrowing`), so borderline cases
exist just as in real readings.

Grades are correlated the way degeneration is: a per-study latent (age), a per-level
latent (that disc's degeneration) and per-condition noise are mixed in a Gaussian
copula, so every marginal is exactly the configured frequency while a study with
severe stenosis at L4/L5 tends to have a dark, flat L4/L5 disc and narrowed foramina.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models import rsna
from models.phantom.config import PhantomConfig

#: Loadings of the study and level latents (the rest is per-condition noise).
_STUDY_LOADING = 0.45
_LEVEL_LOADING = 0.55
#: Largest narrowing drawn (a severe canal is never fully closed).
_MAX_NARROWING = 0.92


@dataclass(frozen=True)
class StudyTruth:
    """The known answers of one study.

    ``narrowing[(condition, level)]`` is the continuous cause in [0, 0.92];
    ``pfirrmann[level]`` the disc grade 1-5 of every level of the region.
    """

    region: str
    levels: tuple[str, ...]
    narrowing: Mapping[tuple[str, str], float]
    pfirrmann: Mapping[str, int]

    def grade(self, condition: str, level: str) -> str:
        return rsna.grade_of_narrowing(self.narrowing[(condition, level)])

    def grades(self) -> dict[str, str]:
        """train.csv row: target column -> grade label."""
        return {rsna.target_column(c, lv): self.grade(c, lv) for c, lv in self.narrowing}


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return np.array([0.5 * (1.0 + math.erf(float(v) / math.sqrt(2.0))) for v in z.ravel()])


def narrowing_from_quantile(u: float, probs: tuple[float, float, float]) -> float:
    """Map a uniform quantile to a narrowing whose grade has the given frequencies.

    Within Normal/Mild the density falls towards the 1/3 threshold (most normal discs
    are clearly normal) but stays non-zero, so borderline cases are drawn.
    """
    pn, pm, ps = probs
    u = min(max(u, 0.0), 1.0 - 1e-9)
    if u < pn:
        return (1.0 / 3.0) * (u / pn) ** 1.5 * 0.999
    if u < pn + pm:
        return 1.0 / 3.0 + (1.0 / 3.0) * (u - pn) / pm * 0.999
    return 2.0 / 3.0 + (_MAX_NARROWING - 2.0 / 3.0) * (u - pn - pm) / max(ps, 1e-9)


def truth_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of a study's ground truth (independent of image rendering)."""
    return np.random.default_rng([int(seed), int(index), 1])


def sample_truth(seed: int, index: int, config: PhantomConfig) -> StudyTruth:
    """Draw the ground truth of study ``index`` of a run with ``seed``; cheap (no images).

    The same (seed, index, config) always gives the same truth, and
    :func:`models.phantom.generate.generate_study` renders exactly this truth.
    """
    rng = truth_rng(seed, index)
    levels = rsna.levels_of(config.region)
    conditions = rsna.conditions_of(config.region)
    n_lv, n_c = len(levels), len(conditions)
    study = rng.standard_normal()
    level_lat = rng.standard_normal(n_lv)
    noise = rng.standard_normal((n_c, n_lv))
    # Left/right of one condition share part of their noise.
    for a, b in ((1, 2), (3, 4)):
        if b < n_c:
            noise[b] = 0.6 * noise[a] + 0.8 * noise[b]
    score = (_STUDY_LOADING * study + _LEVEL_LOADING * level_lat[None, :]
             + math.sqrt(1.0 - _STUDY_LOADING**2 - _LEVEL_LOADING**2) * noise)
    u = _phi(score).reshape(n_c, n_lv)
    narrowing: dict[tuple[str, str], float] = {}
    for ci, cond in enumerate(conditions):
        for li, lv in enumerate(levels):
            probs = config.grades.severity[cond][lv]
            narrowing[(cond, lv)] = narrowing_from_quantile(float(u[ci, li]), probs)
    pf_score = (_STUDY_LOADING * study + _LEVEL_LOADING * level_lat
                + math.sqrt(1.0 - _STUDY_LOADING**2 - _LEVEL_LOADING**2)
                * rng.standard_normal(n_lv))
    pf_u = _phi(pf_score)
    pfirrmann: dict[str, int] = {}
    for li, lv in enumerate(levels):
        cum = np.cumsum(config.grades.pfirrmann[lv])
        pfirrmann[lv] = int(min(np.searchsorted(cum, pf_u[li], side="right"), 4)) + 1
    return StudyTruth(config.region, levels, narrowing, pfirrmann)
