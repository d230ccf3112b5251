"""Comprehensive 3D SR holding a TID 1500 Measurement Report, PRELIMINARY and UNVERIFIED.

Designed for the viewer (OHIF 3.13, checked against its code and against
``@cornerstonejs/adapters`` 5.6.8 in tests/test_viewer_sr.py). One measurement group
(TID 1501) per disc level, in this order:

1. Tracking Identifier and Tracking Unique Identifier. The identifier names the
   cornerstone tool the level's first measurement is (``Cornerstone3DTools@^0.1.0:Length``
   or ``...:RectangleROI``, then the level): OHIF offers to track, and imports, only
   groups whose identifier names a tool it knows.
2. Comment items (DCM 121106): the lines OHIF draws first, at most five in all:
   the level with "AI, PRELIMINARY, not a diagnosis", then the graded findings
   (moderate and severe in capitals). The first comment is also the label of the
   measurement that tracking imports.
3. Finding site: the disc (SNOMED CT).
4. Numeric measurements in mm, each with its geometry as INFERRED FROM a 2-point
   polyline on the source sagittal image (OHIF: Length). The first NUM carries the
   geometry tracking imports. Without a measurement the level's first NUM is the
   detection certainty (%) over the detection box (a 5-point polyline: RectangleROI).
5. Finding (DCM 121071) = Stenosis (SCT) when the level has a stenosis grade, and one
   qualitative evaluation per condition, post-coordinated: ``Stenosis = Severe`` with
   Finding Site (spinal canal; neural foramen and lateral recess are private) and
   Laterality (SCT) as concept modifiers, ``Pfirrmann grade = grade 3`` (private), and
   the probability of every grade in % as properties, each naming its grade. OHIF
   draws no CODE items, so these are out of its way, and complete for any other reader.
6. Algorithm identification (TID 4019).

Where an axial T2 series crosses the disc, the dural sac's cross-sectional area follows
the level's group as a group of its own (OHIF 3.13 draws every SCOORD of a group on the
image the group is shown on: in the level's group, the axial outline appeared on the
sagittal slice). Its Tracking Identifier names a closed freehand area
(``Cornerstone3DTools@^0.1.0:PlanarFreehandROI:dural sac L4-L5``), its Comment the
level, "dural sac area" and the AI caveat, its Finding Site the level's disc; its one
NUM is the area in mm2 (Area, SCT, with the private finding site Dural sac) inferred
from the closed outline (a POLYLINE whose last point is its first) on the axial image
it was measured on: tracking imports it there as a PlanarFreehandROI.

The report's "Qualitative Evaluations" container says in words that this is AI
output and not a diagnosis, with one summary line per level. A study that cannot
be analysed gets the same document with the reason instead of measurement groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from models import conditions
from models.measure import CANAL_AP_DIAMETER, DISC_HEIGHT, LinearMeasurement, measure_levels
from models.sac_area import DURAL_SAC_AREA, AreaMeasurement
from models.types import Findings, Grade, LevelFindings, ModelId, SeriesMasks
from workers.results import codes
from workers.results.builder import EncodeInputs
from workers.results.identity import DEVICE_NAME, MANUFACTURER, ResultIdentity

QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
#: cornerstone's tracking identifier prefix (adapters ``CORNERSTONE_3D_TAG``).
CORNERSTONE_TAG: Final = "Cornerstone3DTools@^0.1.0"
REL = hd.sr.RelationshipTypeValues
#: OHIF draws at most this many lines per measurement group.
OHIF_LINES: Final = 5

#: NUM concept per measurement kind: the standard Diameter (SCT) and Height (DCM),
#: post-coordinated with a Finding Site (the spinal canal; the level's disc). The Code
#: Meaning names the post-coordinated concept because OHIF draws it as the line's label.
MEASUREMENT_NAMES: Final[dict[str, CodedConcept]] = {
    CANAL_AP_DIAMETER: CodedConcept("81827009", "SCT", "Spinal canal AP diameter"),
    DISC_HEIGHT: CodedConcept("121207", "DCM", "Disc height"),
    DURAL_SAC_AREA: CodedConcept(codes.AREA.value, codes.AREA.scheme_designator, "Dural sac cross-sectional area"),
}


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


def _text(name: CodedConcept, value: str, rel: hd.sr.RelationshipTypeValues = REL.CONTAINS) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=rel)


def _code(name: CodedConcept, value: CodedConcept, rel: hd.sr.RelationshipTypeValues) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=rel)


def _evaluations(texts: Sequence[tuple[CodedConcept, str]]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type=REL.CONTAINS)
    container.ContentSequence = [_text(n, v) for n, v in texts]
    return container


# --- what people read --------------------------------------------------------------------
def _word(g: Grade) -> str:
    return conditions.GRADES[g.grade].word


def level_lines(lf: LevelFindings) -> list[str]:
    """The comment lines of a level: its name and the AI caveat, then the graded findings
    grouped as a radiologist reads them (canal, Pfirrmann and a herniation or HIZ; foramina;
    subarticular), in the words of the condition table (``models.conditions``)."""
    lines = [f"{lf.level.name} disc - AI, PRELIMINARY, not a diagnosis"]
    by = {g.condition: g for g in lf.grades}
    first = [f"{spec.short} {_word(g)}" for c, spec in conditions.CONDITIONS.items()
             if spec.laterality is None and spec.group != conditions.HERNIATION_GROUP and (g := by.get(c)) is not None]
    if (hern := conditions.herniation_phrase({c: g.grade for c, g in by.items()})) is not None:
        first.append(hern)  # on the graded line: OHIF draws at most five lines per level
    if first:
        lines.append(", ".join(first))
    sides: list[str] = []
    for left, right in conditions.pairs():
        gl, gr = by.get(left.condition), by.get(right.condition)
        if gl is not None and gr is not None and gl.grade == gr.grade:
            sides.append(f"{left.group} {_word(gl)}")  # both sides alike: said once, the line stays short
            continue
        parts = [f"{spec.laterality.initial} {_word(g)}" for spec, g in ((left, gl), (right, gr))
                 if g is not None and spec.laterality is not None]
        if parts:
            sides.append(f"{left.group} " + " ".join(parts))
    if sides:
        lines.append("; ".join(sides))
    if len(lines) == 1:
        lines.append("located, not graded")
    return lines


def summary_lines(findings: Findings) -> list[str]:
    """One plain-text line per level, e.g. 'L4-L5: spinal canal stenosis severe (p=0.81); ...'."""
    lines = []
    for lf in findings.levels:
        parts = [
            f"{g.condition.spec.long} {conditions.grade_label(g.grade)} (p={max(g.probabilities):.2f})"
            for g in lf.grades
        ]
        lines.append(f"{lf.level.name}: " + ("; ".join(parts) if parts else "located, not graded"))
    return lines


# --- coded content -----------------------------------------------------------------------
def _evaluation(g: Grade) -> hd.sr.QualitativeEvaluation:
    """One graded condition: ``Stenosis = Severe`` with Finding Site and Laterality as
    concept modifiers (``Pfirrmann grade = grade 3`` for the disc), and the probability
    of every grade in % as properties, each naming its grade."""
    cc = codes.CONDITION_CODES[g.condition]
    item = hd.sr.QualitativeEvaluation(name=cc.name, value=codes.GRADES[g.grade])
    children: list[Dataset] = []
    if cc.site is not None:
        children.append(_code(codes.FINDING_SITE, cc.site, REL.HAS_CONCEPT_MOD))
    if cc.laterality is not None:
        children.append(_code(codes.LATERALITY, cc.laterality, REL.HAS_CONCEPT_MOD))
    for grade, p in zip(g.condition.grades, g.probabilities):
        num = hd.sr.NumContentItem(name=codes.PROBABILITY, value=round(100.0 * float(p), 2), unit=codes.PERCENT,
                                   relationship_type=REL.HAS_PROPERTIES)
        num.ContentSequence = [_code(cc.grade_property, codes.GRADES[grade], REL.HAS_CONCEPT_MOD)]
        children.append(num)
    item[0].ContentSequence = children
    return item


def _polyline(points: Sequence[tuple[float, float]], source: Dataset,
              frame_number: int | None = None) -> hd.sr.CoordinatesForMeasurement:
    return hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(points, dtype=np.float32),
        source_image=hd.sr.SourceImageForRegion(
            str(source.SOPClassUID), str(source.SOPInstanceUID),
            referenced_frame_numbers=[frame_number] if frame_number else None),
    )


def _linear(m: LinearMeasurement, source: Dataset) -> hd.sr.Measurement:
    site = codes.SPINAL_CANAL if m.kind == CANAL_AP_DIAMETER else codes.DISCS[m.level]
    return hd.sr.Measurement(
        name=MEASUREMENT_NAMES[m.kind], value=round(m.value_mm, 2), unit=codes.MILLIMETRE,
        finding_sites=[hd.sr.FindingSite(site)],
        referenced_coordinates=[_polyline([m.p0, m.p1], source, m.frame_number)],
    )


def _area(a: AreaMeasurement, source: Dataset) -> hd.sr.Measurement:
    """The area inferred from its closed outline on the axial image it was measured on."""
    return hd.sr.Measurement(
        name=MEASUREMENT_NAMES[a.kind], value=round(a.value_mm2, 1), unit=codes.SQUARE_MILLIMETRE,
        finding_sites=[hd.sr.FindingSite(codes.DURAL_SAC)],
        referenced_coordinates=[_polyline(a.outline, source, a.frame_number)],
    )


def area_lines(level: str) -> list[str]:
    """The comment lines of a level's dural sac area group (OHIF draws them above the area)."""
    return [f"{level} dural sac area - AI, PRELIMINARY, not a diagnosis"]


def _area_group(a: AreaMeasurement, identity: ResultIdentity, model: ModelId, source: Dataset,
                ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The dural sac area of one level as its own group, shown on the axial image (see the module)."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.sub_uid("dural sac area", a.level),
            identifier=f"{CORNERSTONE_TAG}:PlanarFreehandROI:dural sac {a.level}",
        ),
        finding_sites=[hd.sr.FindingSite(codes.DISCS[a.level])],
        algorithm_id=_algorithm(model),
        measurements=[_area(a, source)],
    )
    group[0].ContentSequence[2:2] = [_text(codes.COMMENT, line) for line in area_lines(a.level)]
    return group


def _box_certainty(lf: LevelFindings, source: Dataset) -> hd.sr.Measurement:
    b = lf.level.box
    corners = [(b.x0, b.y0), (b.x1, b.y0), (b.x1, b.y1), (b.x0, b.y1), (b.x0, b.y0)]
    return hd.sr.Measurement(
        name=codes.CERTAINTY, value=round(100.0 * max(lf.level.confidence, 0.0), 1), unit=codes.PERCENT,
        referenced_coordinates=[_polyline(corners, source, lf.level.frame_number)],
    )


def _level_group(
    lf: LevelFindings, identity: ResultIdentity, model: ModelId, sources: Mapping[str, Dataset],
    measurements: Sequence[LinearMeasurement],
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    level = lf.level
    source = sources[level.sop_instance_uid]
    usable = [m for m in measurements if m.sop_instance_uid in sources]
    nums = [_linear(m, sources[m.sop_instance_uid]) for m in usable]
    tool = "Length" if nums else "RectangleROI"
    if not nums:
        nums = [_box_certainty(lf, source)]
    stenosis = any(g.condition.spec.evaluation == conditions.STENOSIS for g in lf.grades)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.sub_uid("level", level.name), identifier=f"{CORNERSTONE_TAG}:{tool}:disc {level.name}"
        ),
        finding_type=codes.STENOSIS if stenosis else None,
        finding_sites=[hd.sr.FindingSite(codes.DISCS[level.name])],
        algorithm_id=_algorithm(model),
        measurements=nums,
        qualitative_evaluations=[_evaluation(g) for g in lf.grades] or None,
    )
    # tracking identifiers first, then the lines the viewer draws, then the rest
    # (the Algorithm Family item highdicom adds is a CODE OHIF ignores)
    comments = [_text(codes.COMMENT, line) for line in level_lines(lf)[: OHIF_LINES - min(len(nums), 2)]]
    group[0].ContentSequence[2:2] = comments
    return group


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) mm of a single-frame image, or of a multi-frame one's shared functional groups."""
    if "PixelSpacing" in ds:
        return float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])
    try:
        sp = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return float(sp[0]), float(sp[1])
    except (AttributeError, IndexError, KeyError):
        return None


def measurements_from_masks(findings: Findings, masks: Sequence[SeriesMasks], evidence: Sequence[Dataset],
                            images: Mapping[tuple[str, int | None], np.ndarray] | None = None,
                            ) -> dict[str, list[LinearMeasurement]]:
    """Disc height and canal AP diameter per level (models.measure) from the analyzer's
    masks, with the pixel spacing of each level's source image; ``images`` (the pixels of
    the levels' slices by SOP Instance UID and frame) refine the canal's ends on the image."""
    spacing = {str(ds.SOPInstanceUID): sp for ds in evidence if (sp := _pixel_spacing(ds)) is not None}
    out: dict[str, list[LinearMeasurement]] = {}
    for m in masks:
        for lf in findings.levels:
            sp = spacing.get(lf.level.sop_instance_uid)
            if lf.level.series_uid == m.series_uid and sp is not None and lf.level.name not in out:
                out.update(measure_levels([lf.level], m, sp, images))
    return out


def build_findings_sr(
    findings: Findings,
    evidence: Sequence[Dataset],
    identity: ResultIdentity,
    predecessor: Dataset | None = None,
    measurements: Mapping[str, Sequence[LinearMeasurement]] | None = None,
    areas: Mapping[str, AreaMeasurement] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The SR for analysed findings. ``evidence`` holds the headers of the source
    instances (at least those the levels point at); ``measurements`` the linear
    measurements per level name (models.measure); ``areas`` the dural sac area per
    level name (models.sac_area), each a group of its own after its level's group."""
    sources = {str(ds.SOPInstanceUID): ds for ds in evidence}
    missing = [lf.level.sop_instance_uid for lf in findings.levels if lf.level.sop_instance_uid not in sources]
    if missing:
        raise ValueError(f"evidence lacks the source images of {len(missing)} level(s)")
    measured = measurements or {}
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations] = []
    for lf in findings.levels:
        groups.append(_level_group(lf, identity, findings.model, sources, measured.get(lf.level.name, ())))
        area = (areas or {}).get(lf.level.name)
        if area is not None and area.sop_instance_uid in sources and area.level in codes.DISCS:
            groups.append(_area_group(area, identity, findings.model, sources[area.sop_instance_uid]))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(identity, findings.model),
        procedure_reported=codes.PROCEDURE,
        imaging_measurements=groups or None,
        title=codes.REPORT_TITLE,
    )
    texts = [(codes.AI_DISCLAIMER, codes.DISCLAIMER_TEXT)]
    texts += [(codes.TRANSITIONAL_SEGMENT, f) for f in findings.flags]  # before the level lines
    texts += [(codes.private("SUMMARY", "Summary"), line) for line in summary_lines(findings)]
    texts += [(codes.private("NOT_ASSESSED", "Not assessed"), m) for m in findings.missing]
    _append(report, _evaluations(texts))
    return _document(report, evidence, identity, findings.model, predecessor)


def build_result(inputs: EncodeInputs, identity: ResultIdentity) -> Dataset:
    """The findings SR of the analysis record (builders.BUILDERS), with the measurements
    taken from its masks and the source images (workers/results/measure_inputs.py)."""
    from workers.results.measure_inputs import dural_sac_areas, level_images

    findings = inputs.record.findings
    measured = measurements_from_masks(findings, inputs.masks, inputs.evidence, level_images(inputs))
    return build_findings_sr(findings, inputs.evidence, identity, inputs.predecessor(identity),
                             measurements=measured, areas=dural_sac_areas(inputs, measured))


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
    # highdicom deep-copies the content tree, parses the copy back and searches it for
    # image references (0.3 CPU s of a 5-level report, most of the SR's cost): it gets
    # the root container without its items, which go in after, unchanged. Every image
    # the tree references comes from ``evidence`` (build_findings_sr's ``sources``).
    root = content[0]
    tree = root.ContentSequence
    root.ContentSequence = []
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
    root.ContentSequence = sr.ContentSequence = tree
    sr._content = content  # what highdicom's ``sr.content`` gives: the tree as built here
    sr.SeriesDescription = identity.series_description
    sr.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    return sr


def build_not_analysed_sr(
    reason: str,
    evidence: Sequence[Dataset],
    identity: ResultIdentity,
    model: ModelId,
    predecessor: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A short SR saying the AI did not analyse this study, and why.

    It has no measurement group (OHIF expects geometry in every group of the Imaging
    Measurements container and fails on one without): the status and the reason are
    text items of the report's Qualitative Evaluations container, which plain-text SR
    renderers show; OHIF's measurement view of it is empty."""
    status = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=identity.sub_uid("status"), identifier="analysis status"),
        algorithm_id=_algorithm(model),
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(identity, model),
        procedure_reported=codes.PROCEDURE,
        imaging_measurements=[status],  # highdicom requires one; removed below
        title=codes.REPORT_TITLE,
    )
    container = next(it for it in report[0].ContentSequence if it.ValueType == "CONTAINER")
    del container.ContentSequence
    _append(report, _evaluations([
        (codes.AI_DISCLAIMER, codes.DISCLAIMER_TEXT),
        (codes.NOT_ANALYSED, "The AI did not analyse this study."),
        (codes.REASON, reason[:1024]),
    ]))
    return _document(report, evidence, identity, model, predecessor)


def _append(report: hd.sr.MeasurementReport, item: Any) -> None:
    root = report[0]
    root.ContentSequence.append(item)


def grades_from_sr(ds: Dataset) -> dict[tuple[str, str], str]:
    """``{(condition, level): grade meaning}`` read back from a findings SR (tests, tools).

    The condition is recovered from the post-coordinated evaluation (name, Finding Site,
    Laterality) through the condition table (:data:`codes.CONDITION_CODES`); the level from the group's disc.
    """
    def key(c: Any) -> tuple[str, str]:
        return (str(c.CodeValue), str(c.CodingSchemeDesignator))

    by_codes = {
        (key(cc.name), key(cc.site) if cc.site else None, key(cc.laterality) if cc.laterality else None): str(name)
        for name, cc in codes.CONDITION_CODES.items()
    }
    levels = {key(code): level for level, code in codes.DISCS.items()}
    out: dict[tuple[str, str], str] = {}
    for container in ds.ContentSequence:
        if container.ValueType != "CONTAINER" or container.ConceptNameCodeSequence[0].CodeValue != "126010":
            continue
        for group in container.get("ContentSequence", []):
            items = group.get("ContentSequence", [])
            level = next((levels.get(key(it.ConceptCodeSequence[0])) for it in items
                          if it.ValueType == "CODE" and it.ConceptNameCodeSequence[0].CodeValue == "363698007"), None)
            for it in items:
                if it.ValueType != "CODE" or it.RelationshipType != "CONTAINS" or level is None:
                    continue
                mods = {str(m.ConceptNameCodeSequence[0].CodeValue): key(m.ConceptCodeSequence[0])
                        for m in it.get("ContentSequence", []) if m.RelationshipType == "HAS CONCEPT MOD"}
                cond = by_codes.get((key(it.ConceptNameCodeSequence[0]), mods.get("363698007"), mods.get("272741003")))
                if cond is not None:
                    out[(cond, level)] = str(it.ConceptCodeSequence[0].CodeMeaning)
    return out
