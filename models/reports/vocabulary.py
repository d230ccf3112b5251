"""The report reader's vocabulary, loaded from ``vocabulary.toml`` (data, not code)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from models import rsna

VOCABULARY_FILE = Path(__file__).with_name("vocabulary.toml")

#: Token kinds produced by :func:`Vocabulary.pattern` matches.
(
    GRADE,
    NEG,
    COND,
    SIDE,
    NOUN,
    COPULA,
    CONJ,
    BREAK,
    REMAINING,
    ALL,
    FINDING,
    IGNORE,
    HYPO,
    NORMAL_WORD,
) = (
    "grade",
    "neg",
    "cond",
    "side",
    "noun",
    "copula",
    "conj",
    "break",
    "remaining",
    "all",
    "finding",
    "ignore",
    "hypo",
    "normal_word",
)

#: Condition keys of the vocabulary -> RSNA conditions (left, right) or the single one.
CONDITION_KEYS: Mapping[str, tuple[str, ...]] = {
    "canal": (rsna.SPINAL_CANAL_STENOSIS,),
    "foramen": (rsna.LEFT_NEURAL_FORAMINAL_NARROWING, rsna.RIGHT_NEURAL_FORAMINAL_NARROWING),
    "recess": (rsna.LEFT_SUBARTICULAR_STENOSIS, rsna.RIGHT_SUBARTICULAR_STENOSIS),
}


@dataclass(frozen=True)
class Vocabulary:
    """Phrase tables of ``vocabulary.toml``; ``entries`` maps a phrase to (kind, value)."""

    entries: Mapping[str, tuple[str, str]]
    plural: frozenset[str]
    range_joiners: tuple[str, ...]
    skip_headers: frozenset[str]

    def pattern(self) -> re.Pattern[str]:
        return _compile(tuple(sorted(self.entries, key=lambda p: (-len(p), p))))

    def lookup(self, phrase: str) -> tuple[str, str]:
        return self.entries[phrase]


@lru_cache(maxsize=4)
def _compile(phrases: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for p in phrases:
        body = re.escape(p).replace(r"\ ", r"\s+")
        pre = r"(?<![a-z0-9])" if p[0].isalnum() else ""
        post = r"(?![a-z0-9])" if p[-1].isalnum() else ""
        parts.append(pre + body + post)
    return re.compile("|".join(parts))


def _add(entries: dict[str, tuple[str, str]], phrase: str, kind: str, value: str = "") -> None:
    key = " ".join(phrase.lower().split())
    if key in entries and entries[key][0] != kind:
        raise ValueError(f"vocabulary: {key!r} is both {entries[key][0]} and {kind}")
    entries[key] = (kind, value)


@lru_cache(maxsize=4)
def load_vocabulary(path: Path = VOCABULARY_FILE) -> Vocabulary:
    """Read and check the vocabulary file (cached)."""
    data = tomllib.loads(Path(path).read_text())
    e: dict[str, tuple[str, str]] = {}
    for phrase, grade in data["grades"].items():
        if int(grade) not in (0, 1, 2):
            raise ValueError(f"vocabulary: grade of {phrase!r} must be 0, 1 or 2")
        _add(e, phrase, GRADE, str(int(grade)))
    for phrase in data["negation"]["cues"]:
        _add(e, phrase, NEG)
    for phrase, key in data["conditions"].items():
        if key not in CONDITION_KEYS:
            raise ValueError(f"vocabulary: unknown condition key {key!r} for {phrase!r}")
        _add(e, phrase, COND, key)
    for phrase in data["nouns"]["words"]:
        _add(e, phrase, NOUN)
    for phrase in data["ignore"]["phrases"]:
        _add(e, phrase, IGNORE)
    for phrase, side in data["sides"].items():
        _add(e, phrase, SIDE, side)
    for phrase in data["copulas"]["words"]:
        _add(e, phrase, COPULA)
    for phrase in data["conjunctions"]["words"]:
        _add(e, phrase, CONJ)
    for phrase in data["clause_breaks"]["words"]:
        _add(e, phrase, BREAK)
    for phrase in data["all_levels"]["remaining"]:
        _add(e, phrase, REMAINING)
    for phrase in data["all_levels"]["all"]:
        _add(e, phrase, ALL)
    for phrase in data["findings"]["words"]:
        _add(e, phrase, FINDING)
    for phrase in data["generic_normal"]["words"]:
        key = " ".join(phrase.lower().split())
        if key not in e:
            _add(e, phrase, NORMAL_WORD)
    for phrase in data["hypothetical"]["cues"]:
        _add(e, phrase, HYPO)
    plural = frozenset(" ".join(p.lower().split()) for p in data["plural"]["phrases"])
    return Vocabulary(
        entries=e,
        plural=plural,
        range_joiners=tuple(data["grade_range"]["joiners"]),
        skip_headers=frozenset(h.lower() for h in data["skip_sections"]["headers"]),
    )
