"""Every coded concept the node writes, once.

Standard codes are SNOMED CT (SCT) and DICOM (DCM) concepts verified against the
PS3.16 tables bundled with pydicom (toolchain.md). Where no standard concept
exists (neural foraminal and subarticular stenosis, the Pfirrmann grade, the
RSNA "normal/mild" class), the private scheme ``99SPINENODE`` is used and
declared in the SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

PRIVATE_SCHEME: Final = "99SPINENODE"
PRIVATE_SCHEME_NAME: Final = "spinenode private concepts"
PRIVATE_SCHEME_VERSION: Final = "1"


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


def sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, "SCT", meaning)


# --- document ---------------------------------------------------------------------
#: CID 100 has no spine-specific procedure: "Imaging procedure".
PROCEDURE: Final = sct("363679005", "Imaging procedure")
ALGORITHM_FAMILY: Final = codes.cid7162.ArtificialIntelligence
REPORT_TITLE: Final = codes.cid7021.ImagingMeasurementReport

# --- findings ------------------------------------------------------------------------
#: Display form of the Severity concept (codes.SCT.Severity.meaning is "Severity (attribute)").
SEVERITY: Final = sct("246112005", "Severity")
STENOSIS: Final = sct("415582006", "Stenosis")
SPINAL_CANAL: Final = sct("61853006", "Spinal canal")
LEFT: Final = sct("7771000", "Left")
RIGHT: Final = sct("24028007", "Right")

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
#: No verified standard concept for these sites and this grade (toolchain.md): private.
NEURAL_FORAMEN: Final = private("NEURAL_FORAMEN", "Neural foramen")
LATERAL_RECESS: Final = private("LATERAL_RECESS", "Lateral recess (subarticular zone)")
PFIRRMANN_GRADE: Final = private("PFIRRMANN", "Pfirrmann grade")


@dataclass(frozen=True, slots=True)
class ConditionCodes:
    """How one graded condition is written: a qualitative evaluation ``name = grade``
    (``Stenosis = Severe``) with site and laterality post-coordinated, the concept the
    probabilities are of (Severity, or Pfirrmann grade), and the labels people read."""

    name: CodedConcept
    site: CodedConcept | None
    laterality: CodedConcept | None
    grade_property: CodedConcept
    #: e.g. "spinal canal stenosis", "left neural foraminal narrowing"
    long: str
    #: the group a short label joins ("canal", "foramina", "subarticular", "Pfirrmann")
    short: str


#: The one condition table (used by sr.py, keyimages.py and the summary lines).
CONDITION_CODES: Final[dict[str, ConditionCodes]] = {
    "spinal_canal_stenosis": ConditionCodes(STENOSIS, SPINAL_CANAL, None, SEVERITY,
                                            "spinal canal stenosis", "canal"),
    "left_neural_foraminal_narrowing": ConditionCodes(STENOSIS, NEURAL_FORAMEN, LEFT, SEVERITY,
                                                      "left neural foraminal narrowing", "foramina"),
    "right_neural_foraminal_narrowing": ConditionCodes(STENOSIS, NEURAL_FORAMEN, RIGHT, SEVERITY,
                                                       "right neural foraminal narrowing", "foramina"),
    "left_subarticular_stenosis": ConditionCodes(STENOSIS, LATERAL_RECESS, LEFT, SEVERITY,
                                                 "left subarticular stenosis", "subarticular"),
    "right_subarticular_stenosis": ConditionCodes(STENOSIS, LATERAL_RECESS, RIGHT, SEVERITY,
                                                  "right subarticular stenosis", "subarticular"),
    "pfirrmann": ConditionCodes(PFIRRMANN_GRADE, None, None, PFIRRMANN_GRADE,
                                "Pfirrmann grade of disc degeneration", "Pfirrmann"),
}

#: Severity values (RSNA 2024 classes). Moderate and severe are SNOMED; the RSNA class
#: "normal/mild" has no single standard concept.
GRADES: Final[dict[str, CodedConcept]] = {
    "normal_mild": private("NORMAL_MILD", "Normal or mild"),
    "moderate": sct("6736007", "Moderate"),
    "severe": sct("24484000", "Severe"),
    "1": private("PFIRRMANN_1", "Pfirrmann grade 1"),
    "2": private("PFIRRMANN_2", "Pfirrmann grade 2"),
    "3": private("PFIRRMANN_3", "Pfirrmann grade 3"),
    "4": private("PFIRRMANN_4", "Pfirrmann grade 4"),
    "5": private("PFIRRMANN_5", "Pfirrmann grade 5"),
}

#: How a grade reads in a short label: moderate and severe in capitals, to stand out.
GRADE_WORDS: Final[dict[str, str]] = {
    "normal_mild": "normal/mild", "moderate": "MODERATE", "severe": "SEVERE",
    "1": "1", "2": "2", "3": "3", "4": "4", "5": "5",
}


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
SPINAL_CANAL_STRUCTURE: Final = sct("61853006", "Spinal canal")

# --- "not analysed" ------------------------------------------------------------------
NOT_ANALYSED: Final = private("NOT_ANALYSED", "AI analysis not performed")
REASON: Final = private("REASON", "Reason")
AI_DISCLAIMER: Final = private("DISCLAIMER", "AI result disclaimer")
DISCLAIMER_TEXT: Final = (
    "PRELIMINARY, UNVERIFIED AI RESULT - NOT A DIAGNOSIS. Produced by an algorithm "
    "for review by a radiologist; not clinically validated."
)


def coding_scheme_identification() -> Dataset:
    """The Coding Scheme Identification item that declares ``99SPINENODE``."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeVersion = PRIVATE_SCHEME_VERSION
    item.CodingSchemeResponsibleOrganization = "spinenode project"
    return item
