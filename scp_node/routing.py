"""Which studies are analysed: eligibility rules kept as data (TOML)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from spinenode.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RegionRule:
    name: str
    body_parts: frozenset[str]
    descriptions: tuple[re.Pattern[str], ...]


@dataclass(frozen=True, slots=True)
class EligibilityRules:
    modalities: frozenset[str]
    regions: tuple[RegionRule, ...]


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What routing looks at: per-series modality, body part and description."""

    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    descriptions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    eligible: bool
    region: str | None
    reason: str


def _norm_body_part(text: str) -> str:
    return re.sub(r"[\s_\-]", "", text.upper())


def load_rules(path: Path | None = None) -> EligibilityRules:
    """Load the rules from ``path``, or the packaged defaults."""
    try:
        if path is None:
            raw = tomllib.loads(
                resources.files("scp_node.rules").joinpath("eligibility.toml").read_text("utf-8")
            )
        else:
            raw = tomllib.loads(path.read_text("utf-8"))
        regions = tuple(
            RegionRule(
                name=str(r["name"]),
                body_parts=frozenset(_norm_body_part(b) for b in r.get("body_parts", [])),
                descriptions=tuple(re.compile(p, re.IGNORECASE) for p in r.get("descriptions", [])),
            )
            for r in raw["region"]
        )
        modalities = frozenset(str(m).upper() for m in raw["modalities"])
    except (OSError, KeyError, TypeError, re.error, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid eligibility rules {path or '(packaged)'}: {exc}") from exc
    if not regions:
        raise ConfigError("eligibility rules define no region")
    return EligibilityRules(modalities, regions)


def decide(facts: StudyFacts, rules: EligibilityRules) -> Decision:
    """Eligible (with its region) or not (with the reason an admin reads)."""
    modalities = {m.upper() for m in facts.modalities if m}
    if not modalities & rules.modalities:
        found = ",".join(sorted(modalities)) or "none"
        return Decision(False, None, f"modality {found} is not one of {','.join(sorted(rules.modalities))}")
    scores: dict[str, int] = {}
    body_parts = [_norm_body_part(b) for b in facts.body_parts if b]
    for rule in rules.regions:
        score = 2 * sum(b in rule.body_parts for b in body_parts)
        score += sum(any(p.search(d) for p in rule.descriptions) for d in facts.descriptions if d)
        if score:
            scores[rule.name] = score
    if not scores:
        parts = ",".join(sorted(set(body_parts))) or "none"
        return Decision(
            False, None, f"no lumbar or cervical spine body part (BodyPartExamined: {parts}) or description"
        )
    order = [r.name for r in rules.regions]
    region = max(scores, key=lambda name: (scores[name], -order.index(name)))
    return Decision(True, region, f"{region} spine")
