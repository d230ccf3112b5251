"""Development report templates: the phrasings the reader was built and tuned against.

Two structures: one paragraph per level ("L4-L5: ... ") and one sentence per condition and
grade over lists and ranges of levels, with an impression; levels written "L4-L5" or "L4-5".
The held-out phrasings (:mod:`.templates_heldout`) share no sentence template with these.
"""

from __future__ import annotations

import numpy as np

from models import rsna
from models.phantom.pathology import HerniationTruth, StudyTruth
from models.reports.phrasing import (
    LEFT_RIGHT,
    WORDING_GRADE,
    LevelFormat,
    fmt_dash,
    fmt_short,
    level_list,
    wording,
)

NAME = "dev"

_CANAL = ("spinal canal stenosis", "central canal stenosis")
_FORAMEN = ("neural foraminal narrowing", "foraminal stenosis")
_RECESS = ("subarticular stenosis", "subarticular recess narrowing")
_WORD = {
    "mild": ("mild", "minimal"),
    "moderate": ("moderate",),
    "mild_moderate": ("mild to moderate",),
    "severe": ("severe",),
    "moderate_severe": ("moderate to severe",),
    "critical": ("severe",),
}

_HEAD = (
    "MRI LUMBAR SPINE WITHOUT CONTRAST\n"
    "CLINICAL HISTORY: Low back pain radiating to the {side} leg. "
    "Evaluate for foraminal stenosis.\n"
    "TECHNIQUE: Sagittal T1, T2 and STIR, axial T2.\n"
    "COMPARISON: None.\n"
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _formats(rng: np.random.Generator) -> LevelFormat:
    if rng.random() < 0.5:
        return LevelFormat(fmt_dash, lambda a, b: f"from {fmt_dash(a)} through {fmt_dash(b)}")
    return LevelFormat(fmt_short, lambda a, b: f"{a.split('/')[0]} to {b.split('/')[1]}")


def _phrase(key: str, noun: str, rng: np.random.Generator, side: str = "") -> str:
    s = f"{side} " if side else ""
    if key == "none":
        return f"no {noun}" if side == "bilateral" else f"no {s}{noun}"
    return f"{_pick(rng, _WORD[key])} {s}{noun}"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _paired(
    truth: StudyTruth, kind: str, lv: str, nouns: tuple[str, ...], rng: np.random.Generator
) -> list[str]:
    left, right = LEFT_RIGHT[kind]
    kl, kr = wording(truth, left, lv, rng), wording(truth, right, lv, rng)
    noun = _pick(rng, nouns)
    if kl == kr:
        if kl == "none":
            return [f"No {noun}."]
        return [_cap(_phrase(kl, noun, rng, "bilateral")) + "."]
    if "none" not in (kl, kr) and rng.random() < 0.6:
        return [_cap(f"{_pick(rng, _WORD[kl])} left and {_pick(rng, _WORD[kr])} right {noun}.")]
    return [_cap(_phrase(kl, noun, rng, "left")) + ".", _cap(_phrase(kr, noun, rng, "right")) + "."]


def _impression(truth: StudyTruth, fmt: LevelFormat, rng: np.random.Generator) -> list[str]:
    items = []
    for lv in truth.levels:
        g = truth.grade(rsna.SPINAL_CANAL_STENOSIS, lv)
        if g != rsna.NORMAL_MILD:
            items.append(f"{g} spinal canal stenosis at {fmt.disc(lv)}.")
    for kind, noun in (
        ("foramen", "neural foraminal narrowing"),
        ("recess", "subarticular stenosis"),
    ):
        for lv in truth.levels:
            left, right = LEFT_RIGHT[kind]
            gl, gr = truth.grade(left, lv), truth.grade(right, lv)
            if gl == gr and gl != rsna.NORMAL_MILD:
                items.append(f"{gl} bilateral {noun} at {fmt.disc(lv)}.")
                continue
            for side, g in (("left", gl), ("right", gr)):
                if g != rsna.NORMAL_MILD:
                    items.append(f"{g} {side} {noun} at {fmt.disc(lv)}.")
    if not items:
        return ["IMPRESSION: No significant spinal canal or neural foraminal stenosis."]
    return ["IMPRESSION:"] + [f"{i + 1}. {t}" for i, t in enumerate(items)]


def _by_level(truth: StudyTruth, rng: np.random.Generator) -> str:
    fmt = _formats(rng)
    lines = [
        _HEAD.format(side=_pick(rng, ("left", "right"))),
        "FINDINGS:",
        "Alignment is normal. Vertebral body heights are maintained. The conus terminates at L1.",
        "T12-L1: Unremarkable.",
    ]
    for lv in truth.levels:
        keys = {c: wording(truth, c, lv, rng) for c in rsna.LUMBAR_CONDITIONS}
        pf = truth.pfirrmann[lv]
        h = truth.hernia(lv)
        disc = _disc(h, pf, rng)
        quiet = h.kind == "none" and not h.hiz
        if quiet and all(k == "none" for k in keys.values()) and rng.random() < 0.5:
            lines.append(
                f"{fmt.disc(lv)}: {_pick(rng, ('Unremarkable.', 'Normal.', 'No stenosis.'))}"
            )
            continue
        parts = [disc]
        canal = keys[rsna.SPINAL_CANAL_STENOSIS]
        canal_noun = _pick(rng, _CANAL)
        if (
            canal == "none"
            and keys[rsna.LEFT_NEURAL_FORAMINAL_NARROWING] == "none"
            and keys[rsna.RIGHT_NEURAL_FORAMINAL_NARROWING] == "none"
        ):
            parts.append("No spinal canal or neural foraminal stenosis.")
        else:
            parts.append(_cap(_phrase(canal, canal_noun, rng)) + ".")
            parts.extend(_paired(truth, "foramen", lv, _FORAMEN, rng))
        parts.extend(_paired(truth, "recess", lv, _RECESS, rng))
        lines.append(f"{fmt.disc(lv)}: " + " ".join(parts))
    lines.append("")
    lines.extend(_impression(truth, fmt, rng))
    return "\n".join(lines)


_POSITION = {
    "central": "central",
    "paracentral_left": "left paracentral",
    "paracentral_right": "right paracentral",
    "foraminal_left": "left foraminal",
    "foraminal_right": "right foraminal",
}


def _herniation(h: HerniationTruth) -> str:
    """ "left paracentral disc extrusion with caudal migration"."""
    mig = "" if h.migration == "none" else f" with {h.migration} migration"
    return f"{_POSITION[h.position]} disc {h.kind}{mig}"


def _disc(h: HerniationTruth, pf: int, rng: np.random.Generator) -> str:
    if h.kind == "none":
        s = (
            "Normal disc."
            if pf <= 2
            else _pick(
                rng, ("Disc desiccation without herniation.", "No disc bulge or herniation.")
            )
        )
    elif h.kind == "bulge":
        s = _pick(
            rng,
            (
                "Diffuse disc bulge.",
                "Disc desiccation with a mild disc bulge.",
                "Broad-based disc bulge.",
            ),
        )
    else:
        s = _cap(_herniation(h)) + "."
    if h.hiz:
        s += " " + _pick(
            rng, ("High-intensity zone in the posterior annulus.", "Posterior annular fissure.")
        )
    return s


def _discs(truth: StudyTruth, fmt: LevelFormat, rng: np.random.Generator) -> list[str]:
    order = truth.levels
    out = []
    bulges = [lv for lv in order if truth.hernia(lv).kind == "bulge"]
    if bulges:
        out.append(
            f"Disc bulge{'s' if len(bulges) > 1 else ''} at {level_list(bulges, order, fmt)}."
        )
    for lv in order:
        h = truth.hernia(lv)
        if h.kind in ("protrusion", "extrusion"):
            out.append(_cap(_herniation(h)) + f" at {fmt.disc(lv)}.")
    hiz = [lv for lv in order if truth.hernia(lv).hiz]
    if hiz:
        out.append(
            f"High-intensity zone{'s' if len(hiz) > 1 else ''} at {level_list(hiz, order, fmt)}."
        )
    if any(truth.hernia(lv).kind == "none" for lv in order) and rng.random() < 0.5:
        out.append("No disc herniation at the remaining levels.")
    return out


def _by_condition(truth: StudyTruth, rng: np.random.Generator) -> str:
    fmt = _formats(rng)
    order = truth.levels
    lines = [
        _HEAD.format(side=_pick(rng, ("left", "right"))),
        "FINDINGS:",
        "Vertebral body heights and alignment are normal. Normal marrow signal.",
    ]
    # canal
    noun = _pick(rng, _CANAL)
    groups: dict[str, list[str]] = {}
    for lv in order:
        groups.setdefault(wording(truth, rsna.SPINAL_CANAL_STENOSIS, lv, rng), []).append(lv)
    lines.extend(_group_sentences(groups, noun, "", order, fmt, rng))
    for kind, nouns in (("foramen", _FORAMEN), ("recess", _RECESS)):
        noun = _pick(rng, nouns)
        left, right = LEFT_RIGHT[kind]
        sided: dict[tuple[str, str], list[str]] = {}
        for lv in order:
            kl, kr = wording(truth, left, lv, rng), wording(truth, right, lv, rng)
            if kl == kr:
                sided.setdefault(("bilateral", kl), []).append(lv)
            else:
                sided.setdefault(("left", kl), []).append(lv)
                sided.setdefault(("right", kr), []).append(lv)
        normal_all = [k for k in sided if k[1] == "none"]
        for key in sorted(sided, key=lambda k: (k[1] == "none", -WORDING_GRADE[k[1]], k[0])):
            if (
                key in normal_all
                and len(normal_all) >= 1
                and key == normal_all[-1]
                and rng.random() < 0.5
            ):
                lines.append(f"No {noun} at the remaining levels.")
                break
            lines.append(
                _cap(_phrase(key[1], noun, rng, key[0]))
                + " at "
                + level_list(sided[key], order, fmt)
                + "."
            )
    lines.extend(_discs(truth, fmt, rng))
    lines.append("")
    lines.extend(_impression(truth, fmt, rng))
    return "\n".join(lines)


def _group_sentences(
    groups: dict[str, list[str]],
    noun: str,
    side: str,
    order: tuple[str, ...],
    fmt: LevelFormat,
    rng: np.random.Generator,
) -> list[str]:
    out = []
    keys = sorted(groups, key=lambda k: (k == "none", -WORDING_GRADE[k]))
    for k in keys:
        if k == "none" and len(keys) > 1 and rng.random() < 0.5:
            out.append(f"No {noun} at the remaining levels.")
            continue
        out.append(
            _cap(_phrase(k, noun, rng, side)) + " at " + level_list(groups[k], order, fmt) + "."
        )
    return out


def write_report(truth: StudyTruth, rng: np.random.Generator) -> str:
    """One report in a development phrasing chosen by ``rng``."""
    return _by_level(truth, rng) if rng.random() < 0.5 else _by_condition(truth, rng)
