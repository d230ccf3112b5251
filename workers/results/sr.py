"""Comprehensive 3D SR holding a TID 1500 Measurement Report, PRELIMINARY and UNVERIFIED.

One measurement group (TID 1410) per disc level: tracking identifier, finding site
(disc code), a qualitative evaluation per condition (severity coded), the class
probabilities as numbers, the detection box as a SCOORD polyline on the source
sagittal image, and the algorithm identification (TID 4019). The report's
"Qualitative Evaluations" container says in words that this is AI output and not
a diagnosis. A study that cannot be analysed gets the same document with the
reason instead of measurement groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from models.types import Findings, LevelFindings, ModelId
from workers.results import codes
from workers.results.identity import DEVICE_NAME, MANUFACTURER, ResultIdentity

QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def _algorithm(model: ModelId) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version, family=codes.ALGORITHM_FAMILY, manufacturer=MANUFACTURER
    )


def _observation_context(identity: ResultIdentity, model: ModelId) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=identity.sub_uid("device", model.name, model.version),
        name=DEVICE_NAME,
        manufacturer_name=MANUFACTURER,
        model_name=f"{model.name} {model.version}"[:64],
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _text(name: CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _evaluations(texts: Sequence[tuple[CodedConcept, str]]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = [_text(n, v) for n, v in texts]
    return container


_GRADE_TAGS = {"normal_mild": ("NM", "normal/mild"), "moderate": ("MOD", "moderate"), "severe": ("SEV", "severe")}


def _probability_concept(condition: str, grade: str) -> CodedConcept:
    """E.g. ``P_SCS_SEV`` "Probability severe, spinal canal stenosis"; ``P_PFIRRMANN_3``."""
    cond = codes.CONDITIONS[condition]
    if condition == "pfirrmann":
        return codes.private(f"P_PFIRRMANN_{grade}", f"Probability Pfirrmann grade {grade}")
    tag, label = _GRADE_TAGS[grade]
    return codes.private(f"P_{cond.value}_{tag}", f"Probability {label}, {cond.meaning.lower()}")


def _level_group(
    lf: LevelFindings, identity: ResultIdentity, model: ModelId, sources: Mapping[str, Dataset]
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    level = lf.level
    source = sources[level.sop_instance_uid]
    b = level.box
    polyline = np.array(
        [[b.x0, b.y0], [b.x1, b.y0], [b.x1, b.y1], [b.x0, b.y1], [b.x0, b.y0]], dtype=np.float32
    )
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polyline,
        source_image=hd.sr.SourceImageForRegion(
            str(source.SOPClassUID), level.sop_instance_uid,
            referenced_frame_numbers=[level.frame_number] if level.frame_number else None),
    )
    algorithm = _algorithm(model)
    evaluations = [
        hd.sr.QualitativeEvaluation(name=codes.CONDITIONS[str(g.condition)], value=codes.GRADES[g.grade])
        for g in lf.grades
    ]
    measurements = [
        hd.sr.Measurement(
            name=_probability_concept(str(g.condition), grade),
            value=round(float(p), 4),
            unit=dcm_codes.UCUM.NoUnits,
        )
        for g in lf.grades
        for grade, p in zip(g.condition.grades, g.probabilities)
    ]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.sub_uid("level", level.name), identifier=f"disc level {level.name}"
        ),
        referenced_region=region,
        finding_sites=[hd.sr.FindingSite(codes.DISCS[level.name])],
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )


def summary_lines(findings: Findings) -> list[str]:
    """One plain-text line per level, e.g. 'L4-L5: spinal canal stenosis severe (p=0.81); ...'."""
    lines = []
    for lf in findings.levels:
        parts = [
            f"{codes.CONDITIONS[str(g.condition)].meaning.lower()} {g.grade.replace('_', '/')} "
            f"(p={max(g.probabilities):.2f})"
            for g in lf.grades
        ]
        lines.append(f"{lf.level.name}: " + ("; ".join(parts) if parts else "located, not graded"))
    return lines


def _document(
    content: hd.sr.MeasurementReport,
    evidence: Sequence[Dataset],
    identity: ResultIdentity,
    model: ModelId,
    predecessor: Dataset | None,
) -> hd.sr.Comprehensive3DSR:
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=dcm_codes.DCM.ProcessingEquipment,
        manufacturer_model_name=f"{model.name}"[:64],
        software_versions=model.version,
        contribution_description="AI analysis (PRELIMINARY, UNVERIFIED, not a diagnosis)",
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=content,
        series_instance_uid=identity.series_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=[predecessor] if predecessor is not None else None,
        contributing_equipment=[equipment],
    )
    sr.SeriesDescription = identity.series_description
    sr.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    return sr


def build_findings_sr(
    findings: Findings,
    evidence: Sequence[Dataset],
    identity: ResultIdentity,
    predecessor: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The SR for analysed findings. ``evidence`` holds the headers of the source
    instances (at least those the levels point at)."""
    sources = {str(ds.SOPInstanceUID): ds for ds in evidence}
    missing = [lf.level.sop_instance_uid for lf in findings.levels if lf.level.sop_instance_uid not in sources]
    if missing:
        raise ValueError(f"evidence lacks the source images of {len(missing)} level(s)")
    groups = [_level_group(lf, identity, findings.model, sources) for lf in findings.levels]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(identity, findings.model),
        procedure_reported=codes.PROCEDURE,
        imaging_measurements=groups or None,
        title=codes.REPORT_TITLE,
    )
    texts = [(codes.AI_DISCLAIMER, codes.DISCLAIMER_TEXT)]
    texts += [(codes.private("SUMMARY", "Summary"), line) for line in summary_lines(findings)]
    texts += [(codes.private("NOT_ASSESSED", "Not assessed"), m) for m in findings.missing]
    _append(report, _evaluations(texts))
    return _document(report, evidence, identity, findings.model, predecessor)


def build_not_analysed_sr(
    reason: str,
    evidence: Sequence[Dataset],
    identity: ResultIdentity,
    model: ModelId,
    predecessor: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A short SR saying the AI did not analyse this study, and why."""
    status = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=identity.sub_uid("status"), identifier="analysis status"),
        algorithm_id=_algorithm(model),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=codes.ANALYSIS_STATUS, value=codes.NOT_ANALYSED)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(identity, model),
        procedure_reported=codes.PROCEDURE,
        imaging_measurements=[status],
        title=codes.REPORT_TITLE,
    )
    _append(report, _evaluations([
        (codes.AI_DISCLAIMER, codes.DISCLAIMER_TEXT),
        (codes.NOT_ANALYSED, "The AI did not analyse this study."),
        (codes.REASON, reason[:1024]),
    ]))
    return _document(report, evidence, identity, model, predecessor)


def _append(report: hd.sr.MeasurementReport, item: Any) -> None:
    root = report[0]
    root.ContentSequence.append(item)
