"""Naming disc levels by counting along the spine, checked against the detector's classes.

The detector proposes disc candidates, each with a position along the spine
(patient superior coordinate, mm) and a vote per level name (its class
scores). Naming does not trust the votes alone:

1. candidates closer than half the typical disc spacing are duplicates (the
   more confident one stays);
2. the discs are ordered along the spine; a gap over 1.6 spacings means a
   missed disc, and the count skips a slot there;
3. every way to lay the region's level names onto the ordered slots is
   scored by the class votes it agrees with, plus a prior for counting from
   the anchor (lumbar: the lowest disc is L5-S1, counted up from the sacrum;
   cervical: the highest disc is C2-C3, counted down from C2); a disc voted
   ``other_disc`` supports assignments that leave it outside the region. The best
   assignment wins; slots outside the region (T12-L1, C1-C2) are dropped.

The landmark the count starts from is one the detector sees in every lumbar or
cervical field of view: the sacrum (lumbar, counting up) or C2 (cervical,
counting down). A transitional lumbosacral segment can make the lumbar count off
by one; :func:`transitional_signs` says when the junction looks transitional so
that the SR flags it instead of guessing silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.types import Region, levels_of

#: Vote key of a disc the detector calls outside the graded levels (T12-L1, T1-T2).
OTHER_DISC_VOTE = "other_disc"
#: Weight of the anchor prior relative to one fully confident class vote.
ANCHOR_PRIOR = 0.8
DUPLICATE_FRACTION = 0.5
GAP_FACTOR = 1.6


@dataclass(frozen=True, slots=True)
class DiscCandidate:
    """A detected disc before naming.

    ``axis_mm`` is its position along the spine, larger = more superior
    (patient z in LPS for an upright spine). ``votes`` maps level names to
    scores in [0, 1] (may be empty). ``key`` lets the caller find its detection again.
    """

    key: int
    axis_mm: float
    confidence: float
    votes: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NamedDisc:
    key: int
    name: str
    axis_mm: float


def deduplicate(cands: Sequence[DiscCandidate], spacing: float) -> list[DiscCandidate]:
    """Drop candidates within ``DUPLICATE_FRACTION * spacing`` of a more confident one."""
    kept: list[DiscCandidate] = []
    for c in sorted(cands, key=lambda c: -c.confidence):
        if all(abs(c.axis_mm - k.axis_mm) >= DUPLICATE_FRACTION * spacing for k in kept):
            kept.append(c)
    return sorted(kept, key=lambda c: c.axis_mm)


def typical_spacing(axis: Sequence[float]) -> float:
    """Median gap between neighbouring positions, robust to one missed disc."""
    a = np.sort(np.asarray(axis, dtype=float))
    if a.size < 2:
        return 0.0
    gaps = np.diff(a)
    gaps = gaps[gaps > 1e-6]
    if gaps.size == 0:
        return 0.0
    med = float(np.median(gaps))
    small = gaps[gaps < GAP_FACTOR * med]
    return float(np.median(small)) if small.size else med


def slots_of(axis_sorted_desc: Sequence[float], spacing: float) -> list[int]:
    """Slot number of each disc, top to bottom; a wide gap skips the missing slots."""
    slots = [0]
    for a, b in zip(axis_sorted_desc[:-1], axis_sorted_desc[1:]):
        gap = a - b
        skip = max(1, int(round(gap / spacing))) if spacing > 0 else 1
        slots.append(slots[-1] + (skip if gap > GAP_FACTOR * spacing else 1))
    return slots


def name_levels(
    cands: Sequence[DiscCandidate], region: Region | str, spacing_hint: float | None = None
) -> list[NamedDisc]:
    """Name disc candidates (see the module docstring); returns them top to bottom."""
    region = Region(region)
    names = levels_of(region)
    if not cands:
        return []
    spacing = spacing_hint or typical_spacing([c.axis_mm for c in cands]) or 1.0
    discs = sorted(deduplicate(cands, spacing), key=lambda c: -c.axis_mm)  # top first
    spacing = spacing_hint or typical_spacing([c.axis_mm for c in discs]) or spacing
    slots = slots_of([c.axis_mm for c in discs], spacing)
    n_slots = slots[-1] + 1
    # offset: name index of slot s is s + offset
    best: tuple[float, int] | None = None
    lowest_anchor = len(names) - n_slots  # lowest slot -> last name (L5-S1)
    highest_anchor = 0  # highest slot -> first name (C2-C3)
    anchor = lowest_anchor if region is Region.LUMBAR else highest_anchor
    for offset in range(-n_slots + 1, len(names)):
        score = 0.0
        for c, s in zip(discs, slots):
            idx = s + offset
            if 0 <= idx < len(names):
                score += float(c.votes.get(names[idx], 0.0))
            else:
                score += float(c.votes.get(OTHER_DISC_VOTE, 0.0))
        if offset == anchor:
            score += ANCHOR_PRIOR
        # prefer assignments that keep more discs inside the region
        inside = sum(1 for s in slots if 0 <= s + offset < len(names))
        score += 1e-3 * inside
        if best is None or score > best[0]:
            best = (score, offset)
    assert best is not None
    offset = best[1]
    out: list[NamedDisc] = []
    for c, s in zip(discs, slots):
        idx = s + offset
        if 0 <= idx < len(names):
            out.append(NamedDisc(c.key, names[idx], c.axis_mm))
    return out


def spine_axes(centers: Mapping[str, np.ndarray | Sequence[float]],
               order: Sequence[str]) -> dict[str, np.ndarray]:
    """The spine's direction (unit vector towards the head) at each disc, from the disc centres.

    ``order`` lists the level names from the most superior down. The axis at a disc is
    the tangent of a quadratic through it and its neighbours (the three consecutive found
    discs nearest it, by chord length), so the end discs (L5-S1, C2-C3) follow the
    curve instead of the chord to their one neighbour. With two discs the axis is the
    chord between them; with fewer, none is returned. On a smooth spine it is the disc's
    normal within a few degrees (discs lie across the spine).
    """
    names = [n for n in order if n in centers]
    pts = np.array([np.asarray(centers[n], dtype=float) for n in names])
    if len(names) < 2:
        return {}
    t = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        if len(names) == 2:
            d = pts[1] - pts[0]
        else:
            lo = min(max(i - 1, 0), len(names) - 3)
            tt, pp = t[lo:lo + 3], pts[lo:lo + 3]
            coef = np.polyfit(tt - tt[1], pp, 2)  # (3, 3): a, b, c per coordinate
            d = 2.0 * coef[0] * (t[i] - tt[1]) + coef[1]
        norm = float(np.linalg.norm(d))
        if norm > 1e-6:
            out[name] = -d / norm  # the order runs towards the feet
    return out


#: The caveat a study gets when its lumbosacral junction looks transitional (Findings.flags).
TRANSITIONAL_FLAG = "transitional lumbosacral segment suspected: level naming may be off by one"
#: The lowest lumbar disc is called rudimentary below this fraction of the median height of the
#: discs above it (mean thickness of the detector's disc masks). Measured on 16 + 16 phantoms
#: (seed 9150, docs/inputs.md): a sacralised L5's rudimentary L5/S1 disc 0.11-0.58, a Pfirrmann 5
#: L5/S1 disc 0.64-0.66, other L5/S1 discs 0.85-1.19.
RUDIMENTARY_FRACTION = 0.6


def transitional_signs(heights: Mapping[str, float], discs_below: int, region: Region | str) -> str | None:
    """The transitional-segment caveat with its reason, or None.

    Lumbar levels are named by counting up from the sacrum (the lowest disc is L5-S1,
    :func:`name_levels`); a lumbar field of view shows neither C2 nor the ribs, so a sixth
    lumbar vertebra and a sacralised L5 cannot be told apart from the count alone. What the
    analyzer can see at the lumbosacral junction, and flags instead of guessing:

    * the disc named L5-S1 is rudimentary: its height (``heights``, mm, per level name,
      :mod:`models.measure`) under :data:`RUDIMENTARY_FRACTION` of the median of the discs
      above it (a sacralised L5, or a lumbarised S1 whose rudimentary S1-S2 disc was counted);
    * ``discs_below`` discs were found below the one named L5-S1 (a disc between sacral
      segments: a lumbarised S1, a sixth lumbar-type vertebra).

    Cervical levels are counted down from C2 and get no caveat.
    """
    if Region(region) is not Region.LUMBAR:
        return None
    reasons: list[str] = []
    low = heights.get("L5-S1")
    above = [h for n, h in heights.items() if n != "L5-S1"]
    if low is not None and len(above) >= 2:
        ref = float(np.median(above))
        if ref > 0 and low < RUDIMENTARY_FRACTION * ref:
            reasons.append(f"the disc counted as L5-S1 is rudimentary ({low:.1f} mm, {low / ref:.2f} of the "
                           f"median height of the discs above)")
    if discs_below > 0:
        reasons.append(f"{discs_below} more disc{'s' if discs_below > 1 else ''} found below the one counted as L5-S1")
    if not reasons:
        return None
    return f"{TRANSITIONAL_FLAG} ({'; '.join(reasons)})"
