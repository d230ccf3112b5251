"""Held-out report templates: kept apart from development and used only to measure.

They share no sentence template with :mod:`.templates_dev`: a narrative paragraph per level
("At L4/5 there is ... The central canal is moderately narrowed."), a compact list per level
("L4/L5 - canal: moderate; foramina: left mild, right severe; ..."), synonyms the dev set
never uses (thecal sac, lateral recess, neuroforaminal, patent, critical, markedly, slightly,
negative for, neither/nor, elsewhere) and levels written "L4/5", "L4/L5" or "L4\u20135".
"""

from __future__ import annotations

import numpy as np

from models import rsna
from models.phantom.pathology import HerniationTruth, StudyTruth
from models.reports.phrasing import (
    LEFT_RIGHT,
    LevelFormat,
    fmt_endash,
    fmt_slash,
    fmt_slash_short,
    level_list,
    wording,
)

NAME = "heldout"

_ADV = {
    "mild": ("mildly", "slightly"),
    "moderate": ("moderately",),
    "mild_moderate": ("mildly to moderately",),
    "severe": ("severely", "markedly"),
    "moderate_severe": ("moderately to severely",),
    "critical": ("critically", "severely"),
}
_ADJ = {
    "mild": ("mild", "slight"),
    "moderate": ("moderate",),
    "mild_moderate": ("mild-to-moderate",),
    "severe": ("severe", "marked"),
    "moderate_severe": ("moderate-to-severe",),
    "critical": ("critical",),
}
_SHORT = {
    "none": ("normal", "patent"),
    "mild": ("mild",),
    "moderate": ("moderate",),
    "mild_moderate": ("mild-moderate",),
    "severe": ("severe",),
    "moderate_severe": ("moderate-severe",),
    "critical": ("critical",),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _format(rng: np.random.Generator) -> LevelFormat:
    k = int(rng.integers(3))
    if k == 0:
        return LevelFormat(
            fmt_slash_short, lambda a, b: f"{fmt_slash_short(a)} through {fmt_slash_short(b)}"
        )
    if k == 1:
        return LevelFormat(fmt_slash, lambda a, b: f"{a.split('/')[0]}-{b.split('/')[1]}")
    return LevelFormat(fmt_endash, lambda a, b: f"{a.split('/')[0]}\u2013{b.split('/')[1]}")


def _canal(key: str, rng: np.random.Generator) -> str:
    if key == "none":
        return _pick(
            rng,
            (
                "The thecal sac is normal in caliber.",
                "There is no central canal stenosis.",
                "The central canal is patent.",
            ),
        )
    if rng.random() < 0.5:
        noun = _pick(rng, ("central canal", "thecal sac"))
        return f"The {noun} is {_pick(rng, _ADV[key])} narrowed."
    return f"There is {_pick(rng, _ADJ[key])} narrowing of the central canal."


def _pair(left_key: str, right_key: str, kind: str, rng: np.random.Generator) -> str:
    if kind == "foramen":
        plural, single, adj = "neural foramina", "neural foramen", "neuroforaminal"
    else:
        plural, single, adj = "lateral recesses", "lateral recess", "subarticular"
    if left_key == right_key:
        if left_key == "none":
            return _pick(rng, (f"The {plural} are patent.", f"Negative for {adj} stenosis."))
        if rng.random() < 0.5:
            return f"The {plural} are {_pick(rng, _ADV[left_key])} narrowed bilaterally."
        return f"There is {_pick(rng, _ADJ[left_key])} {adj} narrowing on both sides."
    parts = []
    for side, key in (("left", left_key), ("right", right_key)):
        if key == "none":
            parts.append(f"the {side} {single} is patent")
        else:
            parts.append(f"the {side} {single} is {_pick(rng, _ADV[key])} narrowed")
    if rng.random() < 0.5:
        parts.reverse()
    return _cap(f"{parts[0]}, and {parts[1]}.")


def _narrative(truth: StudyTruth, rng: np.random.Generator) -> str:
    fmt = _format(rng)
    lines = [
        "Exam: MR lumbar spine.",
        "Indication: Right leg pain. Rule out foraminal stenosis.",
        "",
        "Findings:",
        "Lumbar lordosis is preserved. No spondylolisthesis. Bone marrow signal is unremarkable.",
    ]
    for lv in truth.levels:
        keys = {c: wording(truth, c, lv, rng) for c in rsna.LUMBAR_CONDITIONS}
        pf = truth.pfirrmann[lv]
        h = truth.hernia(lv)
        at = f"At {fmt.disc(lv)}"
        if h.kind == "none":
            opener = (
                f"{at} the disc is preserved."
                if pf <= 2
                else f"{at} there is a desiccated disc without herniation."
            )
        elif h.kind == "bulge":
            opener = f"{at} there is a broad-based disc bulge."
        else:
            opener = f"{at} there is a {_herniation(h, rng)}."
        if h.hiz:
            opener += " " + _pick(
                rng,
                (
                    "An annular fissure is present posteriorly.",
                    "There is a posterior annular tear.",
                ),
            )
        canal = keys[rsna.SPINAL_CANAL_STENOSIS]
        fl, fr = (keys[c] for c in LEFT_RIGHT["foramen"])
        rl, rr = (keys[c] for c in LEFT_RIGHT["recess"])
        sent = [opener]
        if canal == fl == fr == "none" and rng.random() < 0.5:
            sent.append("Neither the central canal nor the neural foramina are narrowed.")
        else:
            sent.append(_canal(canal, rng))
            sent.append(_pair(fl, fr, "foramen", rng))
        sent.append(_pair(rl, rr, "recess", rng))
        if pf >= 4 and rng.random() < 0.5:
            sent.append("Mild facet arthropathy.")
        lines.append(" ".join(sent))
    lines += ["", "Impression:"]
    lines += _impression(truth, fmt, rng)
    return "\n".join(lines)


def _compact(truth: StudyTruth, rng: np.random.Generator) -> str:
    fmt = _format(rng)
    lines = ["MR LUMBAR SPINE", "Reason for exam: back pain.", "", "Report:"]
    normal_levels = []
    for lv in truth.levels:
        keys = {c: wording(truth, c, lv, rng) for c in rsna.LUMBAR_CONDITIONS}
        h = truth.hernia(lv)
        if all(k == "none" for k in keys.values()) and h.kind == "none" and not h.hiz:
            normal_levels.append(lv)
            continue
        disc = {"none": "no herniation", "bulge": "bulge"}.get(h.kind) or _short_herniation(h, rng)
        parts = [
            f"disc: {disc}{', HIZ' if h.hiz else ''}",
            f"canal: {_pick(rng, _SHORT[keys[rsna.SPINAL_CANAL_STENOSIS]])}",
        ]
        for kind, noun in (("foramen", "foramina"), ("recess", "lateral recesses")):
            kl, kr = (keys[c] for c in LEFT_RIGHT[kind])
            if kl == kr:
                parts.append(f"{noun}: {_pick(rng, _SHORT[kl])} bilaterally")
            else:
                parts.append(
                    f"{noun}: left {_pick(rng, _SHORT[kl])}, right {_pick(rng, _SHORT[kr])}"
                )
        lines.append(f"{fmt.disc(lv)} - " + "; ".join(parts) + ".")
    if normal_levels:
        if rng.random() < 0.5 or len(normal_levels) == len(truth.levels):
            lines.append(f"{level_list(normal_levels, truth.levels, fmt)}: no stenosis.")
        else:
            lines.append("Elsewhere, no significant stenosis.")
    lines += ["", "Conclusion:"]
    lines += _impression(truth, fmt, rng)
    return "\n".join(lines)


_POSITION = {
    "central": ("central", "midline"),
    "paracentral_left": ("left subarticular", "left paramedian"),
    "paracentral_right": ("right subarticular", "right paramedian"),
    "foraminal_left": ("left intraforaminal", "left foraminal"),
    "foraminal_right": ("right intraforaminal", "right foraminal"),
}
_MIGRATION = {
    "cranial": (", migrating superiorly", ", which migrates cranially"),
    "caudal": (", migrating inferiorly", ", which migrates caudally"),
}


def _herniation(h: HerniationTruth, rng: np.random.Generator) -> str:
    """ "left subarticular disc extrusion, migrating inferiorly"."""
    mig = "" if h.migration == "none" else _pick(rng, _MIGRATION[h.migration])
    return f"{_pick(rng, _POSITION[h.position])} disc {h.kind}{mig}"


def _short_herniation(h: HerniationTruth, rng: np.random.Generator) -> str:
    """ "right foraminal protrusion", "central extrusion, migrated caudally"."""
    mig = "" if h.migration == "none" else f", migrated {h.migration}ly"
    return f"{_pick(rng, _POSITION[h.position])} {h.kind}{mig}"


def _impression(truth: StudyTruth, fmt: LevelFormat, rng: np.random.Generator) -> list[str]:
    worst = max(truth.levels, key=lambda lv: truth.narrowing[(rsna.SPINAL_CANAL_STENOSIS, lv)])
    g = truth.grade(rsna.SPINAL_CANAL_STENOSIS, worst)
    out = []
    if g != rsna.NORMAL_MILD:
        out.append(
            f"Lumbar spondylosis, most pronounced at {fmt.disc(worst)}, where there is "
            f"{g.lower()} central canal stenosis."
        )
    else:
        out.append("No high-grade central canal stenosis.")
    sev = [
        lv
        for lv in truth.levels
        for c in (rsna.LEFT_NEURAL_FORAMINAL_NARROWING, rsna.RIGHT_NEURAL_FORAMINAL_NARROWING)
        if truth.grade(c, lv) == rsna.SEVERE
    ]
    if sev:
        sides = []
        for lv in dict.fromkeys(sev):
            l_sev = truth.grade(rsna.LEFT_NEURAL_FORAMINAL_NARROWING, lv) == rsna.SEVERE
            r_sev = truth.grade(rsna.RIGHT_NEURAL_FORAMINAL_NARROWING, lv) == rsna.SEVERE
            side = "bilateral" if l_sev and r_sev else ("left" if l_sev else "right")
            sides.append(f"severe {side} neuroforaminal narrowing at {fmt.disc(lv)}")
        out.append(_cap("; ".join(sides)) + ".")
    return out


def write_report(truth: StudyTruth, rng: np.random.Generator) -> str:
    """One report in a held-out phrasing chosen by ``rng``."""
    return _narrative(truth, rng) if rng.random() < 0.5 else _compact(truth, rng)
