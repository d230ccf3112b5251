"""Configuration of the phantom generator: region, modality, image sizes, grade frequencies."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
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

    def __post_init__(self) -> None:
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
        missing = [lv for lv in rsna.levels_of(self.region)
                   if lv not in self.frequencies.severity[rsna.SPINAL_CANAL_STENOSIS]]
        if missing:
            raise ValueError(f"grade frequencies lack the {self.region} levels {missing}")

    @property
    def grades(self) -> GradeFrequencies:
        """The grade frequencies in effect (never None after construction)."""
        assert self.frequencies is not None
        return self.frequencies

    @classmethod
    def for_region(cls, region: str = "lumbar", modality: str = "MR", *,
                   matrix: int | None = None, noise: float = 1.0,
                   grade_config: Path | None = None,
                   thickness_blur: bool = True) -> PhantomConfig:
        """A config with the region's default frequencies, optionally overridden by a
        TOML file holding ``[severity."Spinal Canal Stenosis"] "L4/L5" = [0.5, 0.3, 0.2]``."""
        freq = GradeFrequencies.default(region)
        if grade_config is not None:
            data = tomllib.loads(Path(grade_config).read_text())
            freq = freq.with_overrides(data.get("severity", {}))
        return cls(region=region, modality=modality, matrix=matrix, noise=noise,
                   frequencies=freq, thickness_blur=thickness_blur)
