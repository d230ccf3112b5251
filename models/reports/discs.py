"""Disc herniation (type, position, migration) and high-intensity zones read from a report.

Works on the sentences and level context of :func:`models.reports.parser.walk`, with its own
phrase tables (``[discs.*]`` in ``vocabulary.toml``). Per clause, every herniation word
("bulge", "protrusion", "extrusion", "herniation", ...) and HIZ phrase ("high-intensity
zone", "annular fissure", ...) is a mention; the words from the previous mention to the
next one are its own: a negation cue before it makes it absent ("no disc herniation"; a
mention joined to a negated one by "or"/"nor" is negated too), a position word before it
(else after it) with its side gives the position ("left paracentral disc protrusion",
"extrusion in the right subarticular zone"), a migration word the migration, and level
mentions the levels (else the sentence's, else the paragraph header's, else the previous
sentence's; "at the remaining levels" fills only undescribed levels).

Per level the most severe type stated wins (extrusion > protrusion > bulge), then a
stated absence; "herniation" alone gives a position and an absence but no type. A level the
report says nothing about is left unread (``None``): scoring counts it as no herniation
and no HIZ, which is how reports are written.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from models import rsna
from models.reports import vocabulary as V
from models.reports.parser import LEVEL, SentenceContext, Token, normalize, walk

_SEVERITY = {"bulge": 1, "protrusion": 2, "extrusion": 3}
#: A mention joined to a negated one only by these words (with "or"/"nor") is negated too:
#: "no disc bulge or herniation"; "no herniation, HIZ" and "no bulge and a HIZ" are not.
_JOINERS = {"or", "nor", ",", "disc", "disk", "focal", "a", "an", "the", "any"}


@dataclass(frozen=True)
class DiscLabel:
    """What a report says about one disc level (``None``: nothing said)."""

    level: str
    herniation: str | None  # none / bulge / protrusion / extrusion
    position: str  # "" or one of rsna.HERNIATION_POSITIONS
    migration: str  # "" (not said), cranial, caudal
    hiz: bool | None
    confidence: float
    sentence: str


@dataclass(frozen=True)
class _Tables:
    types: Mapping[str, str]
    positions: Mapping[str, str]
    migration: Mapping[str, str]
    hiz: frozenset[str]
    pattern: re.Pattern[str]


@lru_cache(maxsize=2)
def _tables(path: Path = V.VOCABULARY_FILE) -> _Tables:
    d = tomllib.loads(Path(path).read_text())["discs"]
    types = {k.lower(): v for k, v in d["types"].items()}
    positions = {k.lower(): v for k, v in d["positions"].items()}
    migration = {k.lower(): v for k, v in d["migration"].items()}
    hiz = frozenset(p.lower() for p in d["hiz"]["phrases"])
    phrases = sorted({*types, *positions, *migration, *hiz}, key=lambda p: (-len(p), p))
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in phrases)
    return _Tables(
        types, positions, migration, hiz, re.compile(rf"(?<![a-z0-9])(?:{body})(?![a-z0-9])")
    )


@dataclass(frozen=True)
class _Mention:
    kind: str  # a type, "herniation" or "hiz"
    start: int
    end: int


@dataclass(frozen=True)
class _Assertion:
    kind: str
    negated: bool
    position: str
    migration: str
    levels: tuple[str, ...]
    remaining: bool
    confidence: float
    sentence: str


def _words(text: str, a: int, b: int) -> list[str]:
    return re.findall(r"[a-z]+|,", text[a:b])


def _sentence_assertions(sc: SentenceContext, tb: _Tables) -> list[_Assertion]:
    low = normalize(sc.sentence)
    breaks = [t.start for t in sc.toks if t.kind == V.BREAK]
    bounds = [0, *breaks, len(low)]
    hits = [(m.start(), m.end(), " ".join(m.group(0).split())) for m in tb.pattern.finditer(low)]
    sent_levels = tuple(lv for t in sc.toks if t.kind == LEVEL for lv in t.levels)
    out: list[_Assertion] = []
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        in_clause = [h for h in hits if c0 <= h[0] < c1]
        mentions = [
            _Mention(tb.types[p] if p in tb.types else "hiz", a, b)
            for a, b, p in in_clause
            if p in tb.types or p in tb.hiz
        ]
        negated_prev = False
        for i, m in enumerate(mentions):
            w0 = mentions[i - 1].end if i else c0
            w1 = mentions[i + 1].start if i + 1 < len(mentions) else c1
            toks = [t for t in sc.toks if w0 <= t.start < w1]
            neg = any(t.kind == V.NEG and t.start < m.start for t in toks)
            between = set(_words(low, w0, m.start))
            joined = i > 0 and bool(between & {"or", "nor"}) and between <= _JOINERS
            negated = neg or (joined and negated_prev)
            negated_prev = negated
            position = _position(in_clause, toks, tb, w0, m, w1)
            migration = next(
                (tb.migration[p] for a, _, p in in_clause if p in tb.migration and w0 <= a < w1), ""
            )
            lv_toks = [t for t in toks if t.kind == LEVEL]
            remaining = any(t.kind in (V.REMAINING, V.ALL) for t in sc.toks if c0 <= t.start < c1)
            conf = 0.95 if not negated else 0.9
            if lv_toks:
                levels = tuple(lv for t in lv_toks for lv in t.levels)
            elif remaining:
                levels, conf = (), conf * 0.85
            elif sent_levels:
                levels = sent_levels
            elif sc.header:
                levels, conf = sc.header, conf * 0.97
            elif sc.previous:
                levels, conf = sc.previous, conf * 0.8
            else:
                continue
            out.append(
                _Assertion(
                    m.kind,
                    negated,
                    position,
                    migration,
                    levels,
                    remaining and not lv_toks,
                    round(conf, 3),
                    sc.sentence,
                )
            )
    return out


def _position(
    hits: Sequence[tuple[int, int, str]],
    toks: Sequence[Token],
    tb: _Tables,
    w0: int,
    m: _Mention,
    w1: int,
) -> str:
    """Position words before the mention (nearest first), else after it, with a side."""
    before = [h for h in hits if w0 <= h[0] < m.start and h[2] in tb.positions]
    after = [h for h in hits if m.end <= h[0] < w1 and h[2] in tb.positions]
    for group, lo, hi in ((before[::-1], w0, m.start), (after, m.end, w1)):
        if not group:
            continue
        pos = tb.positions[group[0][2]]
        if pos == "central":
            return "central"
        sides = [t.value for t in toks if t.kind == V.SIDE and lo <= t.start < hi]
        if len(set(sides)) == 1 and sides[0] in ("left", "right"):
            return f"{pos}_{sides[0]}"
        return ""
    return ""


def read_discs(
    text: str, region: str = "lumbar", vocab: V.Vocabulary | None = None
) -> list[DiscLabel]:
    """One :class:`DiscLabel` per level the report says something about."""
    vocab = vocab or V.load_vocabulary()
    tb = _tables()
    region_levels = rsna.levels_of(region)
    explicit: dict[str, list[_Assertion]] = {}
    remaining: list[_Assertion] = []
    for sc in walk(text, vocab):
        for a in _sentence_assertions(sc, tb):
            if a.remaining:
                remaining.append(a)
            for lv in a.levels:
                if lv in region_levels:
                    explicit.setdefault(lv, []).append(a)
    out = []
    for lv in region_levels:
        said = explicit.get(lv, [])
        herniation = [a for a in said if a.kind != "hiz"]
        hiz = [a for a in said if a.kind == "hiz"]
        if not herniation:
            herniation = [a for a in remaining if a.kind != "hiz" and a.negated]
        if not hiz:
            hiz = [a for a in remaining if a.kind == "hiz" and a.negated]
        if not herniation and not hiz:
            continue
        kind, position, migration, conf, sentence = None, "", "", 1.0, ""
        positive = [a for a in herniation if not a.negated and a.kind in _SEVERITY]
        if positive:
            top = max(positive, key=lambda a: (_SEVERITY[a.kind], a.confidence))
            kind, conf, sentence, migration = top.kind, top.confidence, top.sentence, top.migration
            position = top.position or next(
                (a.position for a in herniation if not a.negated and a.position), ""
            )
        elif any(a.negated for a in herniation):
            neg = max((a for a in herniation if a.negated), key=lambda a: a.confidence)
            kind, conf, sentence = "none", neg.confidence, neg.sentence
            if any(not a.negated for a in herniation):  # "herniation" alone, type unknown
                kind = None
        elif herniation:  # only "herniation": a position without a type
            top = max(herniation, key=lambda a: a.confidence)
            position, conf, sentence = top.position, top.confidence, top.sentence
        hiz_value = None
        if hiz:
            pos_h = [a for a in hiz if not a.negated]
            pick = max(pos_h or hiz, key=lambda a: a.confidence)
            hiz_value = bool(pos_h)
            if not sentence:
                sentence, conf = pick.sentence, pick.confidence
        out.append(DiscLabel(lv, kind, position, migration, hiz_value, conf, sentence))
    return out
