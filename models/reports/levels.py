"""Level mentions in report text: "L4-L5", "L4-5", "L4/5", "L5-S1", ranges "L3 to S1",
"L3-S1", "L1-L2 through L3-L4", lists are separate mentions.

A mention names vertebrae; the disc levels it covers are every pair of neighbouring
vertebrae from its first to its last ("L3-S1" -> L3/L4, L4/L5, L5/S1). A single vertebra
("the conus ends at L1") covers no disc level.
"""

from __future__ import annotations

import re

_ORDER: tuple[str, ...] = (
    *(f"c{i}" for i in range(1, 8)),
    *(f"t{i}" for i in range(1, 13)),
    *(f"l{i}" for i in range(1, 6)),
    *(f"s{i}" for i in range(1, 6)),
)
_INDEX = {v: i for i, v in enumerate(_ORDER)}

_VERT = r"[ctls]\s?\d{1,2}(?![\d])"
_PAIR = rf"(?:{_VERT})(?:\s*[-/]\s*(?:{_VERT}|\d{{1,2}}(?![\d.]*\s*mm)(?![\d])))?"
_JOIN = r"\s*(?:-|\bto\b|\bthrough\b|\bthru\b|\buntil\b)\s*"
#: One level mention (the caller lowercases the text and turns dashes into "-").
LEVEL_RE = re.compile(
    rf"(?<![a-z0-9])(?:from\s+)?(?P<a>{_PAIR})(?:{_JOIN}(?P<b>{_PAIR}))?(?![a-z0-9])"
)
_V_RE = re.compile(r"([ctls])\s?(\d{1,2})")


def _vertebrae(pair: str) -> tuple[int, int] | None:
    """Index of the first and last vertebra of ``"l4-5"``, ``"l5/s1"``, ``"l4"``."""
    parts = re.split(r"\s*[-/]\s*", pair.strip())
    first = _V_RE.fullmatch(parts[0].replace(" ", "")) or _V_RE.fullmatch(parts[0])
    if first is None:
        return None
    a = f"{first.group(1)}{int(first.group(2))}"
    if a not in _INDEX:
        return None
    if len(parts) == 1:
        return _INDEX[a], _INDEX[a]
    m = _V_RE.fullmatch(parts[1].replace(" ", ""))
    b = f"{m.group(1)}{int(m.group(2))}" if m else f"{first.group(1)}{int(parts[1])}"
    if b not in _INDEX:
        return None
    return _INDEX[a], _INDEX[b]


def disc_levels(a: str, b: str | None) -> tuple[str, ...] | None:
    """RSNA-style disc levels ("L4/L5") covered by a mention; None when it is not a level
    mention at all (e.g. "l4-9"); ``()`` for a single vertebra."""
    va = _vertebrae(a)
    if va is None:
        return None
    lo, hi = va
    if b is not None:
        vb = _vertebrae(b)
        if vb is None:
            return None
        hi = vb[1]
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo > 12:
        return None
    return tuple(f"{_ORDER[i].upper()}/{_ORDER[i + 1].upper()}" for i in range(lo, hi))
