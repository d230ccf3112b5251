"""Read one free-text report into level-by-level labels.

The reader works sentence by sentence:

1. Lines under a history/indication/comparison/technique header are skipped (they hold the
   question, not the answer); so are sentences with a hypothetical cue ("rule out").
2. A sentence is split into clauses at ";", "but", "while", ...; each clause is scanned into
   tokens: level mentions (:mod:`.levels`) and the phrases of ``vocabulary.toml`` (grades,
   negation cues, conditions, sides, copulas, conjunctions, ...).
3. Condition mentions joined only by "and"/"or"/","/head nouns form a group ("spinal canal
   or neural foraminal stenosis"). Each group owns the words before it (back to the previous
   group) and after it: a level phrase right after it ("... stenosis at L4-L5") and, after a
   copula, its predicate up to the next conjunction ("the canal is moderately narrowed, and
   ..."); the last group owns the rest of the clause.
4. In a group's words, the grade comes from a grade word (a range such as "mild to
   moderate" counts as the higher grade) or a negation cue (Normal/Mild); sides from
   left/right/bilateral, paired with the grade of their own stretch between conjunctions
   ("moderate left and mild right"). No side on a left/right condition means both sides.
5. Levels come from the group's words, else the clause's or sentence's, else the level
   that heads the paragraph ("L4-L5: ..."), else the level named in the previous sentence.
6. A sentence with a level, no condition and a whole-level word ("L1-L2: unremarkable.",
   "no stenosis") makes every condition of those levels Normal/Mild unless it names another
   finding ("no disc herniation at L4-L5" says nothing about stenosis).
7. "At the remaining levels"/"elsewhere" fills only the levels no other sentence described.

Each label carries a confidence (rules below, :data:`CONFIDENCE`) and its sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from models import rsna
from models.reports import vocabulary as V
from models.reports.levels import LEVEL_RE, disc_levels

#: Confidence of a label and what lowers it (multiplied).
CONFIDENCE: dict[str, float] = {
    "base": 0.95,
    "grade_range": 0.85,  # "mild to moderate"
    "side_unspecified": 0.8,  # "mild foraminal narrowing" (singular noun, no side word)
    "grade_inherited": 0.85,  # "moderate canal stenosis and left foraminal narrowing"
    "predicate": 0.97,  # grade after a copula ("the canal is moderately narrowed")
    "level_from_context": 0.97,  # from the paragraph's "L4-L5:" header
    "level_from_previous": 0.8,  # from the previous sentence's level
    "whole_level": 0.9,  # "L1-L2: unremarkable"
    "remaining": 0.85,  # "... at the remaining levels"
    "conflict": 0.6,  # two statements disagree: the more severe is kept
    "condition_carried": 0.9,  # "moderate canal stenosis at L4-L5; mild at L5-S1"
}

LEVEL = "level"
_WHOLE_LEVEL_WORDS = frozenset({"normal", "unremarkable"})
WORD = "word"


@dataclass(frozen=True)
class Token:
    kind: str
    value: str
    start: int
    end: int
    text: str
    levels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Label:
    """One extracted label: RSNA condition and level, grade, confidence, source sentence."""

    condition: str
    level: str
    grade: str
    confidence: float
    sentence: str
    remaining: bool = False


@dataclass
class _Context:
    header: tuple[str, ...] = ()
    previous: tuple[str, ...] = ()
    factors: list[str] = field(default_factory=list)


_SECTION_RE = re.compile(r"^\s*([a-z][a-z /&-]{1,40}?)\s*:")
_ENUM_RE = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s+")
_SENT_RE = re.compile(r"(?<=[.!?])\s+")
_WORD_RE = re.compile(r"[a-z]+")
_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"})


def normalize(text: str) -> str:
    """Lowercase, one kind of dash, single spaces (keeps newlines)."""
    t = text.translate(_DASHES).lower()
    return "\n".join(" ".join(line.split()) for line in t.splitlines())


def tokenize(text: str, vocab: V.Vocabulary) -> list[Token]:
    """Scan normalized text into level, vocabulary and plain-word tokens (in order)."""
    toks: list[Token] = []
    taken = [False] * len(text)
    for m in LEVEL_RE.finditer(text):
        lv = disc_levels(m.group("a"), m.group("b"))
        if lv is None:
            continue
        toks.append(Token(LEVEL, "", m.start(), m.end(), m.group(0), lv))
        for i in range(m.start(), m.end()):
            taken[i] = True
    for m in vocab.pattern().finditer(text):
        if any(taken[m.start() : m.end()]):
            continue
        phrase = " ".join(m.group(0).split())
        kind, value = vocab.lookup(phrase)
        toks.append(Token(kind, value, m.start(), m.end(), phrase))
        for i in range(m.start(), m.end()):
            taken[i] = True
    for m in _WORD_RE.finditer(text):
        if not any(taken[m.start() : m.end()]):
            toks.append(Token(WORD, m.group(0), m.start(), m.end(), m.group(0)))
    toks.sort(key=lambda t: t.start)
    return _merge_grade_ranges(_positions_of_herniation(toks), text, vocab)


_HERNIATION_WORDS = frozenset(
    {"protrusion", "extrusion", "herniation", "herniated", "bulge", "bulging"}
)


def _positions_of_herniation(toks: list[Token]) -> list[Token]:
    """ "right foraminal disc protrusion": the condition word names the herniation's position,
    not a graded condition (it would otherwise take a nearby grade)."""
    out = list(toks)
    for i, t in enumerate(out):
        if t.kind != V.COND:
            continue
        j = i + 1
        while j < len(out) and out[j].text in ("disc", "disk"):
            j += 1
        if j < len(out) and out[j].kind == V.FINDING and out[j].text in _HERNIATION_WORDS:
            out[i] = Token(WORD, t.text, t.start, t.end, t.text)
    return out


def _merge_grade_ranges(toks: list[Token], text: str, vocab: V.Vocabulary) -> list[Token]:
    """ "mild to moderate" -> one grade token with the higher grade (value "2r" style)."""
    out: list[Token] = []
    joiners = {j.strip() for j in vocab.range_joiners}
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == V.GRADE:
            j = i + 1
            if (
                j < len(toks)
                and toks[j].kind in (V.CONJ, WORD, V.COPULA)
                and toks[j].text in joiners
            ):
                j += 1
            gap = text[t.end : toks[j].start].strip() if j < len(toks) else ""
            if (
                j < len(toks)
                and toks[j].kind == V.GRADE
                and gap.strip("-") in joiners | {""}
                and toks[j].value != t.value
            ):
                hi = max(int(t.value), int(toks[j].value))
                out.append(
                    Token(V.GRADE, f"{hi}r", t.start, toks[j].end, text[t.start : toks[j].end])
                )
                i = j + 1
                continue
        out.append(t)
        i += 1
    return out


def sentences(text: str, vocab: V.Vocabulary) -> Iterator[tuple[str, bool]]:
    """Sentences to read (as written, whitespace collapsed), with True where a new
    paragraph starts (the level context is reset there)."""
    skipping = False
    new_par = True
    for raw in text.splitlines():
        line = " ".join(raw.split())
        low = normalize(line)
        if not low:
            new_par = True
            continue
        head = _SECTION_RE.match(low)
        if head and not LEVEL_RE.match(low):
            skipping = head.group(1).strip() in vocab.skip_headers
            new_par = True
            line = line[head.end() :].strip()
        if skipping or not line:
            continue
        line = _ENUM_RE.sub("", line)
        for s in _SENT_RE.split(line):
            if s.strip():
                yield s.strip(), new_par
                new_par = False


def _clauses(toks: Sequence[Token]) -> list[list[Token]]:
    out: list[list[Token]] = [[]]
    for t in toks:
        if t.kind == V.BREAK:
            out.append([])
        else:
            out[-1].append(t)
    return [c for c in out if c]


_LEVEL_FILLERS = {
    "at",
    "from",
    "through",
    "to",
    "level",
    "levels",
    "the",
    "in",
    "of",
    "disc",
    "disk",
    "space",
    "interspace",
}
_GROUP_FILLERS = {"the", "of", "and", "or", "nor"}


@dataclass
class _Group:
    conds: list[Token]
    first: int
    last: int
    window: list[Token] = field(default_factory=list)
    post_copula: bool = False


def _groups(clause: Sequence[Token]) -> list[_Group]:
    groups: list[_Group] = []
    for i, t in enumerate(clause):
        if t.kind != V.COND:
            continue
        if groups:
            g = groups[-1]
            between = clause[g.last + 1 : i]
            if all(
                b.kind in (V.CONJ, V.NOUN)
                or (b.kind == WORD and b.value in _GROUP_FILLERS)
                or (b.kind == V.NEG and b.text == "nor")
                for b in between
            ):
                g.conds.append(t)
                g.last = i
                continue
        groups.append(_Group([t], i, i))
    # Windows: words before each group (from the previous group's end) and after it.
    for k, g in enumerate(groups):
        start = (
            0 if k == 0 else groups[k - 1].last + 1 + _post_len(clause, groups[k - 1], groups[k])
        )
        end = (
            len(clause)
            if k == len(groups) - 1
            else g.last + 1 + _post_len(clause, g, groups[k + 1])
        )
        g.window = [t for t in clause[start : g.first]] + [t for t in clause[g.last + 1 : end]]
        after = [
            t
            for t in clause[g.last + 1 : end]
            if t.kind not in (V.NOUN, LEVEL) and not (t.kind == WORD and t.value in _LEVEL_FILLERS)
        ]
        g.post_copula = bool(after) and after[0].kind == V.COPULA
    return groups


def _post_len(clause: Sequence[Token], a: _Group, b: _Group) -> int:
    """How many tokens after group ``a`` (and before group ``b``) belong to ``a``."""
    between = clause[a.last + 1 : b.first]
    n = 0
    i = 0
    while i < len(between):  # a level phrase right after the group
        t = between[i]
        if t.kind in (LEVEL, V.REMAINING, V.ALL, V.NOUN):
            n = i + 1
        elif t.kind == V.CONJ or (t.kind == WORD and t.value in _LEVEL_FILLERS):
            pass
        else:
            break
        i += 1
    rest = between[n:]
    j = 0
    while j < len(rest) and rest[j].kind in (V.NOUN,):
        j += 1
    if j < len(rest) and rest[j].kind == V.COPULA:  # "the canal is moderately narrowed, and ..."
        seen = False
        for k in range(j, len(rest)):
            if rest[k].kind in (V.GRADE, V.NEG, V.NORMAL_WORD):
                seen = True
            elif seen and rest[k].kind == V.CONJ:
                return n + k
        return n + len(rest)
    return n


@dataclass(frozen=True)
class _Segment:
    sides: tuple[str, ...]
    grade: int | None
    ranged: bool
    levels: tuple[str, ...]
    has_level: bool
    remaining: str  # "", "remaining" or "all"


def _segments(window: Sequence[Token]) -> list[_Segment]:
    segs: list[list[Token]] = [[]]
    for t in window:
        if t.kind == V.CONJ:
            segs.append([])
        else:
            segs[-1].append(t)
    out = []
    graded = sum(1 for s in segs if any(t.kind in (V.GRADE, V.NEG, V.NORMAL_WORD) for t in s))
    for s in segs:
        sides = tuple(t.value for t in s if t.kind == V.SIDE)
        neg = next((k for k, t in enumerate(s) if t.kind == V.NEG), None)
        grades = [t for t in s if t.kind in (V.GRADE, V.NORMAL_WORD)]
        grade: int | None = None
        ranged = False
        if any(t.kind == V.FINDING for t in s) and graded > 1:
            grades, neg = [], None  # "mild disc bulge with moderate canal stenosis"
        if neg is not None:
            # "no severe stenosis", "not severe": less than that grade, which is not read
            after = [t for t in s[neg:] if t.kind == V.GRADE and t.value.rstrip("r") != "0"]
            grade = None if after else 0
        elif grades:
            g = grades[-1]
            grade = 0 if g.kind == V.NORMAL_WORD else int(g.value.rstrip("r"))
            ranged = g.value.endswith("r")
        levels = tuple(lv for t in s if t.kind == LEVEL for lv in t.levels)
        has_level = any(t.kind == LEVEL for t in s)
        rem = (
            "remaining"
            if any(t.kind == V.REMAINING for t in s)
            else ("all" if any(t.kind == V.ALL for t in s) else "")
        )
        out.append(_Segment(sides, grade, ranged, levels, has_level, rem))
    return out


@dataclass(frozen=True)
class _Assertion:
    key: str  # condition key of the vocabulary
    side: str  # "left", "right", "both", "" (none given)
    grade: int
    levels: tuple[str, ...]
    has_level: bool
    remaining: str
    factors: tuple[str, ...]


def _side_grades(
    segs: Sequence[_Segment],
) -> list[tuple[str, int, bool, tuple[str, ...], bool, str]]:
    """(side, grade, ranged, levels, has_level, remaining) from a group's segments."""
    out = []
    graded = [s for s in segs if s.grade is not None]
    per_segment_levels = len([s for s in graded if s.has_level]) >= 2 and all(
        s.has_level or s.remaining for s in graded
    )
    for i, s in enumerate(segs):
        if s.grade is None and not s.sides:
            continue
        grade, ranged = s.grade, s.ranged
        if grade is None:  # "left and right ... is moderate": take a later side-less grade
            nxt = next((t for t in segs[i + 1 :] if t.grade is not None and not t.sides), None)
            prv = next((t for t in reversed(segs[:i]) if t.grade is not None), None)
            src = nxt or prv
            if src is None:
                continue
            grade, ranged = src.grade, src.ranged
        elif not s.sides:
            # a side-less grade already used by side-only segments before it is not re-used
            if any(t.grade is None and t.sides for t in segs[:i]) and any(t.sides for t in segs):
                continue
        for side in s.sides or ("",):
            out.append(
                (
                    side,
                    grade,
                    ranged,
                    s.levels if per_segment_levels else (),
                    s.has_level,
                    s.remaining,
                )
            )
    if not per_segment_levels:
        levels = tuple(lv for s in segs for lv in s.levels)
        has_level = any(s.has_level for s in segs)
        rem = next((s.remaining for s in segs if s.remaining), "")
        out = [(sd, g, r, levels, has_level, rem) for sd, g, r, _, _, _ in out]
    return out


def _clause_assertions(
    clause: Sequence[Token], vocab: V.Vocabulary, carry: Sequence[Token] = ()
) -> list[_Assertion]:
    """Assertions of one clause; ``carry`` are the conditions (and side words) of the
    sentence's previous clause, used by a clause that grades levels without naming a
    condition ("moderate canal stenosis at L4-L5; mild at L5-S1")."""
    groups = _groups(clause)
    kinds = {t.kind for t in clause}
    if not groups and carry and V.FINDING not in kinds and kinds & {V.GRADE, V.NEG, V.NORMAL_WORD}:
        sides = [] if V.SIDE in kinds else [t for t in carry if t.kind == V.SIDE]
        conds = [t for t in carry if t.kind == V.COND]
        groups = [_Group(conds, len(clause), len(clause) - 1, sides + list(clause))]
        carried: tuple[str, ...] = ("condition_carried",)
    else:
        carried = ()
    out: list[_Assertion] = []
    prev: list[tuple[str, int, bool, tuple[str, ...], bool, str]] = []
    for g in groups:
        pairs = _side_grades(_segments(g.window))
        factors: tuple[str, ...] = carried + (("predicate",) if g.post_copula else ())
        if not any(True for p in pairs if p[1] is not None) and prev:
            levels_here = tuple(lv for t in g.window if t.kind == LEVEL for lv in t.levels)
            sides_here = tuple(t.value for t in g.window if t.kind == V.SIDE)
            base = next(p for p in prev)
            pairs = [
                (
                    sd,
                    base[1],
                    base[2],
                    levels_here or base[3],
                    bool(levels_here) or base[4],
                    base[5],
                )
                for sd in (sides_here or ("",))
            ]
            factors = factors + ("grade_inherited",)
        if not pairs:
            continue
        prev = pairs
        for cond in g.conds:
            plural = cond.text in vocab.plural
            for side, grade, ranged, levels, has_level, rem in pairs:
                f = factors + (("grade_range",) if ranged else ())
                if cond.value != "canal" and side == "" and not plural and grade > 0:
                    f = f + ("side_unspecified",)
                out.append(_Assertion(cond.value, side, grade, levels, has_level, rem, f))
    return out


def _whole_level(clause: Sequence[Token]) -> _Assertion | None:
    """ "L1-L2: unremarkable." / "no stenosis at L1-L2": every condition Normal/Mild."""
    kinds = {t.kind for t in clause}
    if V.COND in kinds or V.FINDING in kinds:
        return None
    grades = [t for t in clause if t.kind == V.GRADE]
    if any(t.text not in _WHOLE_LEVEL_WORDS for t in grades if V.NEG not in kinds):
        return None  # "mild at L5-S1" grades something unnamed, not the whole level
    normal = (
        V.NORMAL_WORD in kinds
        or (V.NEG in kinds and V.NOUN in kinds)
        or (
            grades
            and all(t.value == "0" for t in grades)
            and not any(t.kind == V.NOUN for t in clause)
        )
    )
    if not normal or any(t.value not in ("0",) for t in grades if V.NEG not in kinds):
        return None
    levels = tuple(lv for t in clause if t.kind == LEVEL for lv in t.levels)
    rem = "remaining" if V.REMAINING in kinds else ("all" if V.ALL in kinds else "")
    return _Assertion(
        "*", "", 0, levels, any(t.kind == LEVEL for t in clause), rem, ("whole_level",)
    )


def _conditions(key: str, side: str, region: str) -> tuple[str, ...]:
    allowed = rsna.conditions_of(region)
    if key == "*":
        return allowed
    conds = V.CONDITION_KEYS[key]
    if len(conds) == 2:
        if side == "left":
            conds = conds[:1]
        elif side == "right":
            conds = conds[1:]
    return tuple(c for c in conds if c in allowed)


def _confidence(factors: Sequence[str]) -> float:
    c = CONFIDENCE["base"]
    for f in factors:
        c *= CONFIDENCE[f]
    return round(c, 3)


@dataclass(frozen=True)
class SentenceContext:
    """One sentence to read, its tokens and the level context around it."""

    sentence: str
    toks: list[Token]
    header: tuple[str, ...]  # levels heading the paragraph ("L4-L5: ...")
    previous: tuple[str, ...]  # levels named by the previous sentence (weaker)


def walk(text: str, vocab: V.Vocabulary) -> Iterator[SentenceContext]:
    """The sentences of a report that are read (sections and hypotheticals skipped), with
    their level context; shared by the stenosis reader and :mod:`.discs`."""
    ctx = _Context()
    for sentence, new_par in sentences(text, vocab):
        if new_par:
            ctx = _Context()
        toks = tokenize(normalize(sentence), vocab)
        if any(t.kind == V.HYPO for t in toks):
            continue
        lead = [t for t in toks if not (t.kind == WORD and t.value in ("at", "the"))]
        starts_with_level = bool(lead) and lead[0].kind == LEVEL
        if starts_with_level:
            ctx.header, ctx.previous = lead[0].levels, ()
        yield SentenceContext(sentence, toks, ctx.header, ctx.previous)
        if any(t.kind == LEVEL for t in toks) and not starts_with_level:
            ctx.previous = tuple(lv for t in toks if t.kind == LEVEL for lv in t.levels)


def read_report(
    text: str, region: str = "lumbar", vocab: V.Vocabulary | None = None
) -> list[Label]:
    """Every label a report states, one per (condition, level), merged (see module doc)."""
    vocab = vocab or V.load_vocabulary()
    region_levels = set(rsna.levels_of(region))
    raw: list[Label] = []
    for sc in walk(text, vocab):
        sentence, toks, ctx = sc.sentence, sc.toks, sc
        sent_levels = tuple(lv for t in toks if t.kind == LEVEL for lv in t.levels)
        has_sent_level = any(t.kind == LEVEL for t in toks)
        clause_levels: tuple[str, ...] = ()
        carry: list[Token] = []
        for clause in _clauses(toks):
            assertions = _clause_assertions(clause, vocab, carry)
            named = [t for t in clause if t.kind == V.COND]
            whole = None if (carry and not named and assertions) else _whole_level(clause)
            if named:
                carry = [t for t in clause if t.kind in (V.COND, V.SIDE)]
            if whole is not None and (whole.has_level or whole.remaining or ctx.header):
                assertions.append(whole)
            here = tuple(lv for t in clause if t.kind == LEVEL for lv in t.levels)
            clause_levels = here or clause_levels
            for a in assertions:
                extra: tuple[str, ...] = ()
                if a.remaining:
                    levels, extra = tuple(region_levels), ("remaining",)
                elif a.has_level:
                    levels = a.levels
                elif here:
                    levels = here
                elif has_sent_level:
                    levels = clause_levels or sent_levels
                elif ctx.header:
                    levels, extra = ctx.header, ("level_from_context",)
                elif ctx.previous:
                    levels, extra = ctx.previous, ("level_from_previous",)
                else:
                    continue
                conf = _confidence(a.factors + extra)
                for lv in levels:
                    if lv not in region_levels:
                        continue
                    for cond in _conditions(a.key, a.side, region):
                        raw.append(
                            Label(
                                cond,
                                lv,
                                rsna.SEVERITIES[a.grade],
                                conf,
                                sentence,
                                remaining=bool(a.remaining),
                            )
                        )
    return merge(raw)


def merge(raw: Sequence[Label]) -> list[Label]:
    """One label per (condition, level): explicit statements beat "remaining levels"; the
    most confident wins; disagreeing statements keep the more severe grade with less
    confidence."""
    best: dict[tuple[str, str], list[Label]] = {}
    for lab in raw:
        best.setdefault((lab.condition, lab.level), []).append(lab)
    out = []
    for key, labs in best.items():
        explicit = [lb for lb in labs if not lb.remaining] or labs
        top = max(lb.confidence for lb in explicit)
        cands = [lb for lb in explicit if lb.confidence >= top - 1e-9]
        grades = {lb.grade for lb in explicit}
        pick = max(cands, key=lambda lb: rsna.SEVERITIES.index(lb.grade))
        if len(grades) > 1:
            worst = max(explicit, key=lambda lb: (rsna.SEVERITIES.index(lb.grade), lb.confidence))
            pick = replace(worst, confidence=round(worst.confidence * CONFIDENCE["conflict"], 3))
        out.append(pick)
    order = {c: i for i, c in enumerate(rsna.CONDITIONS)}
    return sorted(out, key=lambda lb: (order[lb.condition], lb.level))
