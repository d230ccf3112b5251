"""The one condition table: every graded condition the node reports, its codes and labels.

Everything that names a condition reads it from here: the SR (coded evaluations,
comment lines, summary), the key image, the admin dashboard's findings grid and the
demo's table. Adding a condition is one :class:`Condition` value and one row of
:data:`CONDITIONS`; the grades of a scale are :data:`GRADES`.

Codes are plain :class:`Code` triples so that this module imports nothing heavy (the
dashboard reads it without highdicom); ``workers/results/codes.py`` turns them into
highdicom ``CodedConcept``. Standard codes are SNOMED CT (SCT) concepts verified
against the PS3.16 tables bundled with pydicom (toolchain.md); where none exists
(neural foramen, lateral recess, the Pfirrmann grade, the RSNA "normal/mild" class,
disc herniation and its types, the paracentral and foraminal positions, the high-intensity
zone), the private scheme :data:`PRIVATE_SCHEME` is used, declared in the SR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

#: The private coding scheme of concepts that have no standard code.
PRIVATE_SCHEME: Final = "99SPINENODE"


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept as (code value, coding scheme designator, code meaning)."""

    value: str
    scheme: str
    meaning: str


def sct(value: str, meaning: str) -> Code:
    return Code(value, "SCT", meaning)


def private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


#: Display form of the Severity concept (pydicom's meaning is "Severity (attribute)").
SEVERITY: Final = sct("246112005", "Severity")
STENOSIS: Final = sct("415582006", "Stenosis")
SPINAL_CANAL: Final = sct("61853006", "Spinal canal")
#: No verified standard concept for these sites and this grade (toolchain.md): private.
NEURAL_FORAMEN: Final = private("NEURAL_FORAMEN", "Neural foramen")
LATERAL_RECESS: Final = private("LATERAL_RECESS", "Lateral recess (subarticular zone)")
PFIRRMANN_GRADE: Final = private("PFIRRMANN", "Pfirrmann grade")
#: Disc herniation and the high-intensity zone (models.herniation). pydicom's PS3.16 tables
#: hold no herniation concept (searched: herniat, protrusion, extrusion, bulg, prolaps, annul,
#: fissur; only "Herniated implant" of breast imaging): private. The position's concept is
#: SNOMED's Topographical modifier, "central" and the present/absent values are SNOMED too.
DISC_HERNIATION_CONCEPT: Final = private("DISC_HERNIATION", "Disc herniation")
TOPOGRAPHICAL_MODIFIER: Final = sct("106233006", "Topographical modifier")
#: (private code values stay within 16 characters: a longer one becomes a Long Code Value)
HIGH_INTENSITY_ZONE_CONCEPT: Final = private("ANNULAR_HIZ", "High-intensity zone of the annulus")
#: The group (ConditionSpec.group) of the herniation conditions: said together in one phrase
#: (:func:`herniation_phrase`), not in the generic lines of the other conditions.
HERNIATION_GROUP: Final = "herniation"


class Laterality(StrEnum):
    LEFT = "left"
    RIGHT = "right"

    @property
    def code(self) -> Code:
        return sct("7771000", "Left") if self is Laterality.LEFT else sct("24028007", "Right")

    @property
    def initial(self) -> str:
        """``L`` or ``R``, as short labels write the side."""
        return "L" if self is Laterality.LEFT else "R"


#: RSNA 2024 severity classes, in order (the order of every probability vector).
SEVERITY_GRADES: tuple[str, ...] = ("normal_mild", "moderate", "severe")
#: Pfirrmann disc degeneration grades 1-5, as labels.
PFIRRMANN_GRADES: tuple[str, ...] = ("1", "2", "3", "4", "5")
#: Disc herniation type, the position of a protrusion or extrusion, the high-intensity zone.
HERNIATION_GRADES: tuple[str, ...] = ("none", "bulge", "protrusion", "extrusion")
HERNIATION_POSITION_GRADES: tuple[str, ...] = ("central", "paracentral_left", "paracentral_right",
                                               "foraminal_left", "foraminal_right")
HIZ_GRADES: tuple[str, ...] = ("absent", "present")


class Condition(StrEnum):
    """A graded condition; the value is the key in the Findings JSON."""

    SPINAL_CANAL_STENOSIS = "spinal_canal_stenosis"
    LEFT_NEURAL_FORAMINAL_NARROWING = "left_neural_foraminal_narrowing"
    RIGHT_NEURAL_FORAMINAL_NARROWING = "right_neural_foraminal_narrowing"
    LEFT_SUBARTICULAR_STENOSIS = "left_subarticular_stenosis"
    RIGHT_SUBARTICULAR_STENOSIS = "right_subarticular_stenosis"
    PFIRRMANN = "pfirrmann"
    #: reported only when the herniation model is installed (models.herniation)
    DISC_HERNIATION = "disc_herniation"
    HERNIATION_POSITION = "herniation_position"
    HIGH_INTENSITY_ZONE = "high_intensity_zone"

    @property
    def spec(self) -> ConditionSpec:
        return CONDITIONS[self]

    @property
    def grades(self) -> tuple[str, ...]:
        return CONDITIONS[self].grades

    @property
    def rsna_group(self) -> str | None:
        """``spinal``/``foraminal``/``subarticular`` for the RSNA score; None for Pfirrmann."""
        return CONDITIONS[self].rsna_group


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    """How one condition is coded and labelled.

    In the SR a graded condition is a qualitative evaluation ``evaluation = grade``
    (``Stenosis = Severe``) with ``site`` and ``laterality`` post-coordinated, and the
    probability of each grade as a property of ``grade_property`` (Severity, Pfirrmann
    grade).
    """

    condition: Condition
    #: e.g. "spinal canal stenosis", "left neural foraminal narrowing"
    long: str
    #: one column or one finding on its own: "canal", "L foramen", "R subart."
    short: str
    #: the word a left/right pair shares in one line ("foramina L SEVERE R moderate")
    group: str
    laterality: Laterality | None
    evaluation: Code
    site: Code | None
    grade_property: Code
    grades: tuple[str, ...]
    #: the RSNA 2024 score's condition group; None where RSNA does not grade it
    rsna_group: str | None


def _severity(condition: Condition, long: str, short: str, group: str, laterality: Laterality | None,
              site: Code, rsna_group: str) -> ConditionSpec:
    return ConditionSpec(condition, long, short, group, laterality, STENOSIS, site, SEVERITY,
                         SEVERITY_GRADES, rsna_group)


_L, _R = Laterality.LEFT, Laterality.RIGHT

#: The condition table, in display order (columns, lines, summaries).
CONDITIONS: Final[dict[Condition, ConditionSpec]] = {
    Condition.SPINAL_CANAL_STENOSIS: _severity(
        Condition.SPINAL_CANAL_STENOSIS, "spinal canal stenosis", "canal", "canal", None, SPINAL_CANAL, "spinal"),
    Condition.LEFT_NEURAL_FORAMINAL_NARROWING: _severity(
        Condition.LEFT_NEURAL_FORAMINAL_NARROWING, "left neural foraminal narrowing", "L foramen", "foramina", _L,
        NEURAL_FORAMEN, "foraminal"),
    Condition.RIGHT_NEURAL_FORAMINAL_NARROWING: _severity(
        Condition.RIGHT_NEURAL_FORAMINAL_NARROWING, "right neural foraminal narrowing", "R foramen", "foramina", _R,
        NEURAL_FORAMEN, "foraminal"),
    Condition.LEFT_SUBARTICULAR_STENOSIS: _severity(
        Condition.LEFT_SUBARTICULAR_STENOSIS, "left subarticular stenosis", "L subart.", "subart.", _L,
        LATERAL_RECESS, "subarticular"),
    Condition.RIGHT_SUBARTICULAR_STENOSIS: _severity(
        Condition.RIGHT_SUBARTICULAR_STENOSIS, "right subarticular stenosis", "R subart.", "subart.", _R,
        LATERAL_RECESS, "subarticular"),
    Condition.PFIRRMANN: ConditionSpec(
        Condition.PFIRRMANN, "Pfirrmann grade of disc degeneration", "Pfirrmann", "Pfirrmann", None,
        PFIRRMANN_GRADE, None, PFIRRMANN_GRADE, PFIRRMANN_GRADES, None),
    Condition.DISC_HERNIATION: ConditionSpec(
        Condition.DISC_HERNIATION, "disc herniation", "herniation", HERNIATION_GROUP, None,
        DISC_HERNIATION_CONCEPT, None, DISC_HERNIATION_CONCEPT, HERNIATION_GRADES, None),
    Condition.HERNIATION_POSITION: ConditionSpec(
        Condition.HERNIATION_POSITION, "position of the disc herniation", "position", HERNIATION_GROUP, None,
        TOPOGRAPHICAL_MODIFIER, None, TOPOGRAPHICAL_MODIFIER, HERNIATION_POSITION_GRADES, None),
    Condition.HIGH_INTENSITY_ZONE: ConditionSpec(
        Condition.HIGH_INTENSITY_ZONE, "high-intensity zone (annular fissure)", "HIZ", HERNIATION_GROUP, None,
        HIGH_INTENSITY_ZONE_CONCEPT, None, HIGH_INTENSITY_ZONE_CONCEPT, HIZ_GRADES, None),
}


def spec_of(condition: Condition | str) -> ConditionSpec:
    return CONDITIONS[Condition(condition)]


def pairs() -> list[tuple[ConditionSpec, ConditionSpec]]:
    """The (left, right) conditions that share a group, in table order."""
    out = []
    for spec in CONDITIONS.values():
        if spec.laterality is Laterality.LEFT:
            right = next(s for s in CONDITIONS.values()
                         if s.group == spec.group and s.laterality is Laterality.RIGHT)
            out.append((spec, right))
    return out


@dataclass(frozen=True, slots=True)
class GradeSpec:
    """How a grade is coded and written: ``label`` in prose, ``word`` in a short line
    (moderate and severe in capitals, to stand out), ``abbr`` in a narrow table cell,
    ``concern`` 0 (none), 1 (moderate) or 2 (severe) for colours and filters."""

    code: Code
    label: str
    word: str
    abbr: str
    concern: int


#: Every grade of every scale. Moderate and severe are SNOMED; the RSNA class
#: "normal/mild" and the Pfirrmann grades have no standard concept.
GRADES: Final[dict[str, GradeSpec]] = {
    "normal_mild": GradeSpec(private("NORMAL_MILD", "Normal or mild"), "normal/mild", "normal/mild", "n/m", 0),
    "moderate": GradeSpec(sct("6736007", "Moderate"), "moderate", "MODERATE", "mod", 1),
    "severe": GradeSpec(sct("24484000", "Severe"), "severe", "SEVERE", "SEV", 2),
    **{g: GradeSpec(private(f"PFIRRMANN_{g}", f"Pfirrmann grade {g}"), g, g, g, (0, 0, 1, 2, 2)[int(g) - 1])
       for g in PFIRRMANN_GRADES},
    "none": GradeSpec(sct("260413007", "None"), "none", "none", "-", 0),
    "bulge": GradeSpec(private("DISC_BULGE", "Disc bulge"), "bulge", "bulge", "bulge", 0),
    "protrusion": GradeSpec(private("DISC_PROTRUSION", "Disc protrusion"), "protrusion", "PROTRUSION", "prot", 1),
    "extrusion": GradeSpec(private("DISC_EXTRUSION", "Disc extrusion"), "extrusion", "EXTRUSION", "EXTR", 2),
    "central": GradeSpec(sct("26216008", "Central"), "central", "central", "C", 0),
    **{f"{where}_{side}": GradeSpec(private(f"{where.upper()}_{side[0].upper()}", f"{where.capitalize()}, {side}"),
                                    f"{side} {where}", f"{where} {side[0].upper()}", f"{where[0].upper()}{side[0].upper()}", 0)
       for where in ("paracentral", "foraminal") for side in ("left", "right")},
    "absent": GradeSpec(sct("272519000", "Absent"), "absent", "absent", "-", 0),
    "present": GradeSpec(sct("52101004", "Present"), "present", "PRESENT", "yes", 1),
}


def herniation_phrase(grades: Mapping[Condition, str], min_concern: int = 0, prose: bool = False) -> str | None:
    """The herniation findings of a level in one phrase, as the SR's lines and the key image
    write them: 'PROTRUSION paracentral L, HIZ', 'bulge', 'HIZ'; None for no herniation and
    no HIZ (or none reported). ``grades``: condition -> its grade; a herniation type whose
    concern is below ``min_concern`` is left out (the key image: no bulges); ``prose`` writes the
    grades' labels ('protrusion left paracentral') instead of their short words."""
    parts = []
    kind = grades.get(Condition.DISC_HERNIATION)
    if kind is not None and kind != "none" and GRADES[kind].concern >= min_concern:
        pos = grades.get(Condition.HERNIATION_POSITION)
        def say(g: str) -> str:
            return GRADES[g].label if prose else GRADES[g].word

        parts.append(say(kind) + (f" {say(pos)}" if pos is not None else ""))
    if grades.get(Condition.HIGH_INTENSITY_ZONE) == "present":
        parts.append("HIZ")
    return ", ".join(parts) or None


def grade_label(grade: object) -> str:
    """A grade in prose ('normal/mild', 'severe', '3'); an unknown value as it is."""
    spec = GRADES.get(str(grade))
    return spec.label if spec is not None else str(grade)
