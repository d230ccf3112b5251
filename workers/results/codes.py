"""Every coded concept the node writes, once, as highdicom ``CodedConcept``.

The codes of the conditions and grades are defined with the condition table
(``models/conditions.py``) and only turned into ``CodedConcept`` here; the rest
(document, measurements, levels, segments) are defined here. Standard codes are
SNOMED CT (SCT) and DICOM (DCM) concepts verified against the PS3.16 tables bundled
with pydicom (toolchain.md). Where no standard concept exists, the private scheme
``99SPINENODE`` is used and declared in the Coding Scheme Identification Sequence of the SR (and of the
SEG when one of its segments uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from models import conditions
from models.conditions import PRIVATE_SCHEME, Code, Condition, ConditionSpec

PRIVATE_SCHEME_NAME: Final = "spinenode private concepts"
PRIVATE_SCHEME_VERSION: Final = "1"


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


def sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "SCT", meaning)


def concept(code: Code) -> CodedConcept:
    return CodedConcept(code.value, code.scheme, code.meaning)


# --- document ---------------------------------------------------------------------
#: CID 100 has no spine-specific procedure: "Imaging procedure".
PROCEDURE: Final = sct("363679005", "Imaging procedure")
ALGORITHM_FAMILY: Final = codes.cid7162.ArtificialIntelligence
REPORT_TITLE: Final = codes.cid7021.ImagingMeasurementReport

# --- findings ------------------------------------------------------------------------
SEVERITY: Final = concept(conditions.SEVERITY)
STENOSIS: Final = concept(conditions.STENOSIS)
SPINAL_CANAL: Final = concept(conditions.SPINAL_CANAL)

# --- post-coordination (TID 1501 groups; codes verified in pydicom's PS3.16 tables) ----------
FINDING: Final = CodedConcept("121071", "DCM", "Finding")
FINDING_SITE: Final = sct("363698007", "Finding Site")
LATERALITY: Final = sct("272741003", "Laterality")
PROBABILITY: Final = CodedConcept("122157", "DCM", "Probability")
COMMENT: Final = CodedConcept("121106", "DCM", "Comment")
CERTAINTY: Final = CodedConcept("111012", "DCM", "Certainty of Finding")
DIAMETER: Final = sct("81827009", "Diameter")
HEIGHT: Final = CodedConcept("121207", "DCM", "Height")
PERCENT: Final = CodedConcept("%", "UCUM", "Percent")
MILLIMETRE: Final = CodedConcept("mm", "UCUM", "mm")
SQUARE_MILLIMETRE: Final = CodedConcept("mm2", "UCUM", "mm2")
AREA: Final = sct("42798000", "Area")
#: The dural sac (thecal sac) has no code in pydicom's PS3.16 tables: private.
DURAL_SAC: Final = private("DURAL_SAC", "Dural sac")


@dataclass(frozen=True, slots=True)
class ConditionCodes:
    """The codes of one row of the condition table (``models.conditions``) as CodedConcepts."""

    name: CodedConcept
    site: CodedConcept | None
    laterality: CodedConcept | None
    grade_property: CodedConcept

    @classmethod
    def of(cls, spec: ConditionSpec) -> ConditionCodes:
        return cls(concept(spec.evaluation), concept(spec.site) if spec.site is not None else None,
                   concept(spec.laterality.code) if spec.laterality is not None else None,
                   concept(spec.grade_property))


#: The coded form of each row of the condition table.
CONDITION_CODES: Final[dict[Condition, ConditionCodes]] = {c: ConditionCodes.of(spec) for c, spec in conditions.CONDITIONS.items()}
#: The coded form of every grade.
GRADES: Final[dict[str, CodedConcept]] = {g: concept(spec.code) for g, spec in conditions.GRADES.items()}


#: Finding sites: the intervertebral disc of each level (PS3.16 meanings; SEG segment property too).
DISCS: Final[dict[str, CodedConcept]] = {
    "C2-C3": sct("1078209008", "C2/C3 disc"),
    "C3-C4": sct("58820006", "C3/C4 disc"),
    "C4-C5": sct("49400002", "C4/C5 disc"),
    "C5-C6": sct("73959003", "C5/C6 disc"),
    "C6-C7": sct("75095006", "C6/C7 disc"),
    "C7-T1": sct("37414007", "C7/T1 disc"),
    "L1-L2": sct("80064006", "L1/L2 disc"),
    "L2-L3": sct("67459009", "L2/L3 disc"),
    "L3-L4": sct("62551000", "L3/L4 disc"),
    "L4-L5": sct("84020006", "L4/L5 disc"),
    "L5-S1": sct("715056000", "L5/S1 disc"),
}

# --- segmentation -------------------------------------------------------------------
ANATOMICAL_STRUCTURE: Final = sct("91723000", "Anatomical Structure")
VERTEBRA: Final = sct("51282000", "Vertebra")
#: The canal segment is the same concept as the canal stenosis' finding site (the condition table).
SPINAL_CANAL_STRUCTURE: Final = SPINAL_CANAL
#: The category of a herniated-material segment (CID 7150; pydicom's
#: ``codes.cid7150.MorphologicallyAbnormalStructure``).
MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Final = sct("49755003", "Morphologically Abnormal Structure")
#: The property type of a herniated-material segment. PS3.16 (pydicom's tables: searched
#: herniation, prolapse, protrusion, extrusion) holds no herniation concept: the private one
#: of the condition table, so a SEG that uses it declares ``99SPINENODE``.
DISC_HERNIATION: Final = concept(conditions.DISC_HERNIATION_CONCEPT)

# --- "not analysed" ------------------------------------------------------------------
NOT_ANALYSED: Final = private("NOT_ANALYSED", "AI analysis not performed")
REASON: Final = private("REASON", "Reason")
AI_DISCLAIMER: Final = private("DISCLAIMER", "AI result disclaimer")
DISCLAIMER_TEXT: Final = (
    "PRELIMINARY, UNVERIFIED AI RESULT - NOT A DIAGNOSIS. Produced by an algorithm "
    "for review by a radiologist; not clinically validated."
)


# --- caveats (Findings.flags) -----------------------------------------------------------
#: No lumbosacral transitional vertebra concept in pydicom's PS3.16 tables (searched: transitional,
#: sacralisation, lumbarisation, lumbosacral): private. Findings.flags holds only this caveat so far.
TRANSITIONAL_SEGMENT: Final = private("LSTV", "Transitional lumbosacral segment suspected")


def coding_scheme_identification() -> Dataset:
    """The Coding Scheme Identification item that declares ``99SPINENODE``."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeVersion = PRIVATE_SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = "spinenode project"
    return item
