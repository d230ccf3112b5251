"""Configuration of the phantom generator: region, modality, image sizes, grade frequencies."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from models import rsna

#: Default grade frequencies (Normal/Mild, Moderate, Severe) per condition and level,
#: close to the RSNA 2024 training labels: spinal canal about 86 % normal/mild,
#: foramina about 74 %, subarticular about 73 %, worst at L4/L5 and L5/S1.
_LUMBAR_FREQUENCIES: dict[str, dict[str, tuple[float, float, float]]] = {
    rsna.SPINAL_CANAL_STENOSIS: {
        "L1/L2": (0.95, 0.03, 0.02), "L2/L3": (0.90, 0.05, 0.05), "L3/L4": (0.84, 0.08, 0.08),
        "L4/L5": (0.72, 0.13, 0.15), "L5/S1": (0.90, 0.06, 0.04),
    },
    **{
        side: {
            "L1/L2": (0.92, 0.07, 0.01), "L2/L3": (0.85, 0.13, 0.02), "L3/L4": (0.72, 0.24, 0.04),
            "L4/L5": (0.61, 0.31, 0.08), "L5/S1": (0.59, 0.31, 0.10),
        }
        for side in (rsna.LEFT_NEURAL_FORAMINAL_NARROWING, rsna.RIGHT_NEURAL_FORAMINAL_NARROWING)
    },
    **{
        side: {
            "L1/L2": (0.88, 0.09, 0.03), "L2/L3": (0.80, 0.14, 0.06), "L3/L4": (0.70, 0.20, 0.10),
            "L4/L5": (0.58, 0.26, 0.16), "L5/S1": (0.69, 0.21, 0.10),
        }
        for side in (rsna.LEFT_SUBARTICULAR_STENOSIS, rsna.RIGHT_SUBARTICULAR_STENOSIS)
    },
}
_CERVICAL_FREQUENCIES: dict[str, dict[str, tuple[float, float, float]]] = {
    rsna.SPINAL_CANAL_STENOSIS: {
        "C2/C3": (0.95, 0.03, 0.02), "C3/C4": (0.85, 0.09, 0.06), "C4/C5": (0.79, 0.12, 0.09),
        "C5/C6": (0.68, 0.18, 0.14), "C6/C7": (0.76, 0.14, 0.10), "C7/T1": (0.93, 0.05, 0.02),
    },
}
#: Pfirrmann grade 1-5 frequencies per lumbar level (cervical uses the mean row).
_PFIRRMANN: dict[str, tuple[float, float, float, float, float]] = {
    "L1/L2": (0.30, 0.40, 0.20, 0.08, 0.02), "L2/L3": (0.25, 0.38, 0.24, 0.10, 0.03),
    "L3/L4": (0.18, 0.34, 0.28, 0.15, 0.05), "L4/L5": (0.10, 0.24, 0.30, 0.24, 0.12),
    "L5/S1": (0.10, 0.22, 0.30, 0.25, 0.13),
}


#: The ``realistic`` preset: herniation type frequencies (none, bulge, protrusion,
#: extrusion) per level and the high-intensity-zone (HIZ) probability per level, both most
#: common at L4/L5 and L5/S1. The default is ``none`` (no herniation, no HIZ): the shipped
#: models were trained on phantoms without them, and with this preset their grades move
#: at herniated levels (docs/phantom.md).
_LUMBAR_HERNIATION: dict[str, tuple[float, float, float, float]] = {
    "L1/L2": (0.70, 0.18, 0.09, 0.03), "L2/L3": (0.62, 0.22, 0.12, 0.04),
    "L3/L4": (0.50, 0.27, 0.17, 0.06), "L4/L5": (0.34, 0.30, 0.26, 0.10),
    "L5/S1": (0.36, 0.28, 0.26, 0.10),
}
_CERVICAL_HERNIATION: dict[str, tuple[float, float, float, float]] = {
    "C2/C3": (0.85, 0.10, 0.04, 0.01), "C3/C4": (0.60, 0.20, 0.15, 0.05),
    "C4/C5": (0.55, 0.22, 0.17, 0.06), "C5/C6": (0.40, 0.27, 0.24, 0.09),
    "C6/C7": (0.45, 0.25, 0.22, 0.08), "C7/T1": (0.80, 0.13, 0.05, 0.02),
}
_LUMBAR_HIZ: dict[str, float] = {"L1/L2": 0.03, "L2/L3": 0.05, "L3/L4": 0.08, "L4/L5": 0.15,
                                 "L5/S1": 0.13}
_CERVICAL_HIZ: dict[str, float] = {lv: 0.03 for lv in rsna.CERVICAL_LEVELS}
HERNIATION_TYPES: tuple[str, ...] = rsna.HERNIATION_TYPES
HERNIATION_POSITIONS: tuple[str, ...] = rsna.HERNIATION_POSITIONS
MIGRATIONS: tuple[str, ...] = ("none", "cranial", "caudal")
#: Transitional lumbosacral segments the phantom can render (lumbar only; ``none`` the default).
#: ``lumbarised_s1``: six lumbar-type vertebrae, S1 separated from the sacrum by a rudimentary
#: S1/S2 disc; ``sacralised_l5``: L5 partly fused to the sacrum, a rudimentary L5/S1 disc.
TRANSITIONAL: tuple[str, ...] = ("none", "lumbarised_s1", "sacralised_l5")


def _probs(values: object, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{what}: expected {n} numbers, not {values!r}")
    p = tuple(float(x) for x in values)
    if len(p) != n or min(p) < 0 or abs(sum(p) - 1.0) > 1e-3:
        raise ValueError(f"{what}: expected {n} frequencies summing to 1, not {values!r}")
    return p


@dataclass(frozen=True)
class HerniationFrequencies:
    """Disc herniation and HIZ frequencies.

    ``types[level]`` = (none, bulge, protrusion, extrusion); ``positions`` = (central,
    paracentral left, paracentral right, foraminal left, foraminal right) for protrusions and
    extrusions (a central or foraminal draw without room for it becomes paracentral on the
    same side, see docs/phantom.md); ``migration`` = (none, cranial, caudal) for extrusions;
    ``hiz[level]`` the probability of a high-intensity zone. Presets: :meth:`none` (the
    default) and :meth:`realistic`.
    """

    types: Mapping[str, tuple[float, float, float, float]]
    positions: tuple[float, float, float, float, float] = (0.30, 0.25, 0.25, 0.10, 0.10)
    migration: tuple[float, float, float] = (0.40, 0.25, 0.35)
    hiz: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def preset(cls, name: str, region: str) -> HerniationFrequencies:
        """``none`` or ``realistic``."""
        if name == "none":
            return cls.none(region)
        if name == "realistic":
            return cls.realistic(region)
        raise ValueError(f"herniation preset must be none or realistic, not {name!r}")

    @classmethod
    def realistic(cls, region: str) -> HerniationFrequencies:
        """Frequencies of a clinical population (most herniations at L4/L5, L5/S1)."""
        if region == "cervical":
            return cls(_CERVICAL_HERNIATION, hiz=_CERVICAL_HIZ)
        return cls(_LUMBAR_HERNIATION, hiz=_LUMBAR_HIZ)

    @classmethod
    def none(cls, region: str) -> HerniationFrequencies:
        """No herniation and no HIZ anywhere."""
        levels = rsna.levels_of(region)
        return cls({lv: (1.0, 0.0, 0.0, 0.0) for lv in levels}, hiz={lv: 0.0 for lv in levels})

    def with_overrides(self, data: Mapping[str, object]) -> HerniationFrequencies:
        """Apply a TOML table: ``[herniation] positions = [...]``, ``migration = [...]``,
        ``[herniation.types] "L4/L5" = [pn, pb, pp, pe]``, ``[herniation.hiz] "L4/L5" = 0.2``."""
        types = dict(self.types)
        hiz = dict(self.hiz)
        for key in data:
            if key not in ("types", "positions", "migration", "hiz"):
                raise ValueError(f"unknown key in [herniation]: {key!r}")
        for lv, probs in dict(data.get("types", {})).items():  # type: ignore[call-overload]
            if lv not in types:
                raise ValueError(f"herniation types: unknown level {lv!r}")
            types[lv] = _probs(probs, 4, f"herniation types {lv}")  # type: ignore[assignment]
        for lv, p in dict(data.get("hiz", {})).items():  # type: ignore[call-overload]
            if lv not in hiz or not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"bad HIZ probability for {lv!r}: {p!r}")
            hiz[lv] = float(p)
        positions = (_probs(data["positions"], 5, "herniation positions")
                     if "positions" in data else self.positions)
        migration = (_probs(data["migration"], 3, "herniation migration")
                     if "migration" in data else self.migration)
        return replace(self, types=types, hiz=hiz, positions=positions,  # type: ignore[arg-type]
                       migration=migration)


@dataclass(frozen=True)
class GradeFrequencies:
    """Target grade frequencies: ``severity[condition][level] = (p_normal, p_mod, p_sev)``."""

    severity: Mapping[str, Mapping[str, tuple[float, float, float]]]
    pfirrmann: Mapping[str, tuple[float, float, float, float, float]]

    @classmethod
    def default(cls, region: str) -> GradeFrequencies:
        if region == "cervical":
            mean = tuple(
                sum(v[i] for v in _PFIRRMANN.values()) / len(_PFIRRMANN) for i in range(5)
            )
            pf = {lv: mean for lv in rsna.CERVICAL_LEVELS}
            return cls(_CERVICAL_FREQUENCIES, pf)  # type: ignore[arg-type]
        return cls(_LUMBAR_FREQUENCIES, _PFIRRMANN)

    def with_overrides(self, overrides: Mapping[str, object]) -> GradeFrequencies:
        """Replace rows from a TOML table ``{condition: {level: [pn, pm, ps]}}``."""
        sev = {c: dict(v) for c, v in self.severity.items()}
        for cond, levels in overrides.items():
            if cond not in sev or not isinstance(levels, Mapping):
                raise ValueError(f"unknown condition in grade frequencies: {cond!r}")
            for lv, probs in levels.items():
                p = tuple(float(x) for x in probs)
                if lv not in sev[cond] or len(p) != 3 or abs(sum(p) - 1.0) > 1e-3:
                    raise ValueError(f"bad grade frequencies for {cond} {lv}: {probs!r}")
                sev[cond][lv] = p  # type: ignore[assignment]
        return replace(self, severity=sev)


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate.

    ``matrix`` fixes the in-plane matrix of every series (None: a clinical size drawn
    per study, 320-512 sagittal, 256-448 axial); ``noise`` scales the noise level
    (1.0 typical clinical, 0 none); ``axial_block_probability`` is the share of studies
    whose axial T2 is one contiguous unangled block instead of stacks angled along
    each disc. ``thickness_blur`` blends planes a third of the slice thickness away into
    each slice (partial volume; about 20 % of the generation time).
    """

    region: str = "lumbar"
    modality: str = "MR"
    matrix: int | None = None
    noise: float = 1.0
    axial_block_probability: float = 0.25
    thickness_blur: bool = True
    frequencies: GradeFrequencies | None = None  # None: the region's defaults
    herniation: HerniationFrequencies | None = None  # None: none (no herniation, no HIZ)
    transitional: str = "none"  # one of TRANSITIONAL: every study of the run gets it

    def __post_init__(self) -> None:
        if self.transitional not in TRANSITIONAL:
            raise ValueError(f"transitional must be one of {', '.join(TRANSITIONAL)}, not {self.transitional!r}")
        if self.transitional != "none" and self.region != "lumbar":
            raise ValueError("a transitional lumbosacral segment needs region lumbar")
        if self.region not in ("lumbar", "cervical"):
            raise ValueError(f"region must be lumbar or cervical, not {self.region!r}")
        if self.modality not in ("MR", "CT"):
            raise ValueError(f"modality must be MR or CT, not {self.modality!r}")
        if self.matrix is not None and not 64 <= self.matrix <= 1024:
            raise ValueError(f"matrix must be 64-1024, not {self.matrix}")
        if self.noise < 0:
            raise ValueError("noise must be >= 0")
        if self.frequencies is None:
            object.__setattr__(self, "frequencies", GradeFrequencies.default(self.region))
        if self.herniation is None:
            object.__setattr__(self, "herniation", HerniationFrequencies.none(self.region))
        bad = [lv for lv in rsna.levels_of(self.region)
               if lv not in self.herniation.types or lv not in self.herniation.hiz]
        if bad:
            raise ValueError(f"herniation frequencies lack the {self.region} levels {bad}")
        missing = [lv for lv in rsna.levels_of(self.region)
                   if lv not in self.frequencies.severity[rsna.SPINAL_CANAL_STENOSIS]]
        if missing:
            raise ValueError(f"grade frequencies lack the {self.region} levels {missing}")

    @property
    def grades(self) -> GradeFrequencies:
        """The grade frequencies in effect (never None after construction)."""
        assert self.frequencies is not None
        return self.frequencies

    @property
    def hernias(self) -> HerniationFrequencies:
        """The herniation/HIZ frequencies in effect (never None after construction)."""
        assert self.herniation is not None
        return self.herniation

    @classmethod
    def for_region(cls, region: str = "lumbar", modality: str = "MR", *,
                   matrix: int | None = None, noise: float = 1.0,
                   grade_config: Path | None = None,
                   thickness_blur: bool = True, herniation: str = "none",
                   transitional: str = "none") -> PhantomConfig:
        """A config with the region's default frequencies, optionally overridden by a
        TOML file holding ``[severity."Spinal Canal Stenosis"] "L4/L5" = [0.5, 0.3, 0.2]``
        and/or a ``[herniation]`` table (:meth:`HerniationFrequencies.with_overrides`,
        applied to the ``herniation`` preset, ``none`` or ``realistic``)."""
        freq = GradeFrequencies.default(region)
        hern = HerniationFrequencies.preset(herniation, region)
        if grade_config is not None:
            data = tomllib.loads(Path(grade_config).read_text())
            freq = freq.with_overrides(data.get("severity", {}))
            hern = hern.with_overrides(data.get("herniation", {}))
        return cls(region=region, modality=modality, matrix=matrix, noise=noise,
                   frequencies=freq, herniation=hern, thickness_blur=thickness_blur,
                   transitional=transitional)
