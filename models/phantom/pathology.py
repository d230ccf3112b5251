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

Disc herniation (none / bulge / protrusion / extrusion, with a position and, for
extrusions, a migration) and high-intensity zones are drawn from their own random stream
(:func:`sample_herniation`), so adding them changed none of the grades or Pfirrmann grades
above; their latent leans on the same disc's Pfirrmann and canal scores (degenerated discs
herniate more) while every marginal stays the configured frequency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from models import rsna
from models.phantom.config import (
    HERNIATION_POSITIONS,
    HERNIATION_TYPES,
    MIGRATIONS,
    HerniationFrequencies,
    PhantomConfig,
)

#: Loadings of the study and level latents (the rest is per-condition noise).
_STUDY_LOADING = 0.45
_LEVEL_LOADING = 0.55
#: Largest narrowing drawn (a severe canal is never fully closed).
_MAX_NARROWING = 0.92


#: Loadings of the herniation latent on the disc's Pfirrmann and canal scores (the
#: two scores correlate 0.505); the rest is its own noise, so the latent is N(0, 1).
_HERN_PF, _HERN_CANAL = 0.5, 0.3
_HERN_NOISE = math.sqrt(1.0 - _HERN_PF**2 - _HERN_CANAL**2 - 2 * _HERN_PF * _HERN_CANAL
                        * (_STUDY_LOADING**2 + _LEVEL_LOADING**2))
_HIZ_PF = 0.5
#: A central herniation needs this much canal narrowing, a foraminal one this much
#: narrowing of that foramen (the phantom draws the herniation inside the space the
#: narrowing already took, so the graded geometry is unchanged); otherwise it is drawn
#: paracentral on the same side.
CENTRAL_MIN_NARROWING = 0.2
FORAMINAL_MIN_NARROWING = 0.3


@dataclass(frozen=True)
class HerniationTruth:
    """Disc herniation and HIZ at one level.

    ``kind`` one of ``none``, ``bulge``, ``protrusion``, ``extrusion``; ``position`` one of
    :data:`models.phantom.config.HERNIATION_POSITIONS` for protrusions and extrusions, else
    ``""``; ``migration`` ``none``/``cranial``/``caudal`` (extrusions only) by
    ``migration_mm``; ``size`` in [0, 1] scales the herniation's depth; ``hiz`` whether a
    high-intensity zone sits in the posterior annulus.
    """

    kind: str = "none"
    position: str = ""
    migration: str = "none"
    migration_mm: float = 0.0
    size: float = 0.0
    hiz: bool = False


@dataclass(frozen=True)
class StudyTruth:
    """The known answers of one study.

    ``narrowing[(condition, level)]`` is the continuous cause in [0, 0.92];
    ``pfirrmann[level]`` the disc grade 1-5 of every level of the region;
    ``herniation[level]`` the herniation and HIZ of every level (empty: none anywhere);
    ``transitional`` the transitional lumbosacral segment (``none``, ``lumbarised_s1``,
    ``sacralised_l5``: :data:`models.phantom.config.TRANSITIONAL`). The graded levels keep
    their names counted up from the sacrum (the lowest well-formed disc above it is L5/S1 in
    a lumbarised S1; the rudimentary disc is L5/S1 in a sacralised L5).
    """

    region: str
    levels: tuple[str, ...]
    narrowing: Mapping[tuple[str, str], float]
    pfirrmann: Mapping[str, int]
    herniation: Mapping[str, HerniationTruth] = field(default_factory=dict)
    transitional: str = "none"

    def hernia(self, level: str) -> HerniationTruth:
        return self.herniation.get(level, HerniationTruth())

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
    herniation = sample_herniation(seed, index, config.region, config.hernias, pf_score,
                                   score[0], narrowing)
    return StudyTruth(config.region, levels, narrowing, pfirrmann, herniation, config.transitional)


def _pick(cum: np.ndarray, u: float) -> int:
    return int(min(np.searchsorted(cum, u, side="right"), len(cum) - 1))


def sample_herniation(seed: int, index: int, region: str, freq: HerniationFrequencies,
                      pf_score: np.ndarray, canal_score: np.ndarray,
                      narrowing: Mapping[tuple[str, str], float]) -> dict[str, HerniationTruth]:
    """Herniation and HIZ per level from stream ``[seed, index, 4]`` (see module doc).

    ``pf_score`` / ``canal_score`` are the levels' standard-normal Pfirrmann and canal
    scores of :func:`sample_truth`.
    """
    rng = np.random.default_rng([int(seed), int(index), 4])
    levels = rsna.levels_of(region)
    n = len(levels)
    z_type, u_pos, u_side, u_size, u_mig, u_mm, z_hiz = (rng.standard_normal(n), rng.random(n),
                                                         rng.random(n), rng.random(n),
                                                         rng.random(n), rng.random(n),
                                                         rng.standard_normal(n))
    t_u = _phi(_HERN_PF * pf_score + _HERN_CANAL * canal_score + _HERN_NOISE * z_type)
    h_u = _phi(_HIZ_PF * pf_score + math.sqrt(1.0 - _HIZ_PF**2) * z_hiz)
    pos_cum = np.cumsum(freq.positions)
    mig_cum = np.cumsum(freq.migration)
    out: dict[str, HerniationTruth] = {}
    for li, lv in enumerate(levels):
        kind = HERNIATION_TYPES[_pick(np.cumsum(freq.types[lv]), float(t_u[li]))]
        hiz = bool(h_u[li] >= 1.0 - freq.hiz[lv])
        position, migration, mm = "", "none", 0.0
        if kind in ("protrusion", "extrusion"):
            position = HERNIATION_POSITIONS[_pick(pos_cum, float(u_pos[li]))]
            side = "left" if position.endswith("left") else "right"
            if position == "central":
                side = "left" if u_side[li] < 0.5 else "right"
                if narrowing.get((rsna.SPINAL_CANAL_STENOSIS, lv), 0.0) < CENTRAL_MIN_NARROWING:
                    position = f"paracentral_{side}"
            elif position.startswith("foraminal"):
                cond = (rsna.LEFT_NEURAL_FORAMINAL_NARROWING if side == "left"
                        else rsna.RIGHT_NEURAL_FORAMINAL_NARROWING)
                if narrowing.get((cond, lv), 0.0) < FORAMINAL_MIN_NARROWING:
                    position = f"paracentral_{side}"
            if kind == "extrusion" and not position.startswith("foraminal"):
                migration = MIGRATIONS[_pick(mig_cum, float(u_mig[li]))]
                if migration == "caudal" and lv == "L5/S1":
                    migration = "none"  # the phantom's sacrum has no room drawn for it
                mm = round(3.0 + 6.0 * float(u_mm[li]), 1) if migration != "none" else 0.0
        out[lv] = HerniationTruth(kind, position, migration, mm, round(float(u_size[li]), 3), hiz)
    return out
