"""highdicom Segmentation from the model's masks: one segment per structure.

Segments: each disc by level (SNOMED disc codes), the vertebral bodies (property type
Vertebra), the spinal canal, and the herniated material of each level the herniation model
calls a protrusion or extrusion ('herniated material L4-L5': category Morphologically
Abnormal Structure, the private type Disc herniation, the level's disc as anatomic region;
the SEG then declares the private coding scheme). BINARY, one frame per sagittal slice a
segment lies on (the analyzer spreads the masks over the slices, models/masks3d.py),
empty frames omitted, referencing the source series, with the algorithm identification
and a RecommendedDisplayCIELabValue per segment (OHIF warns and picks its own colours
without one).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from models.conditions import PRIVATE_SCHEME
from models.types import BODIES_SEGMENT, CANAL_SEGMENT, DISC_SEGMENT, HERNIATED_SEGMENT, ModelId, SeriesMasks
from workers.results import codes
from workers.results.builder import EncodeInputs
from workers.results.identity import MANUFACTURER, ResultIdentity

#: Display colours (RGB): discs cycle through six hues by level, bone for the bodies,
#: cyan for the canal, saturated magenta for herniated material (CIE76 distance at least 54
#: from every other colour here, so it stands out over its disc).
DISC_COLOURS: Final[tuple[tuple[int, int, int], ...]] = (
    (230, 80, 80), (240, 170, 40), (240, 230, 60), (90, 200, 90), (60, 170, 230), (160, 110, 230))
BODY_COLOUR: Final = (222, 205, 160)
CANAL_COLOUR: Final = (40, 220, 220)
HERNIATION_COLOUR: Final = (255, 0, 255)

#: Segment labels (models.types): a disc is ``DISC_PREFIX + level``, its herniated material
#: ``HERNIATED_PREFIX + level`` (the level as in ``codes.DISCS``: 'L4-L5').
DISC_PREFIX: Final = DISC_SEGMENT
HERNIATED_PREFIX: Final = HERNIATED_SEGMENT


@dataclass(frozen=True, slots=True)
class SegmentCodes:
    """The coded description of one segment: category (CID 7150), property type, and
    the anatomic regions it lies in (empty where the type names the structure itself)."""

    category: CodedConcept
    property_type: CodedConcept
    anatomic_regions: tuple[CodedConcept, ...] = ()

    def concepts(self) -> tuple[CodedConcept, ...]:
        return (self.category, self.property_type, *self.anatomic_regions)


def _disc(level: str, label: str) -> CodedConcept:
    try:
        return codes.DISCS[level]
    except KeyError:
        raise ValueError(f"no disc level {level!r} in segment {label!r}") from None


def segment_codes(label: str) -> SegmentCodes:
    """The codes of a segment by its label ('disc L4-L5', 'vertebral bodies', 'spinal canal',
    'herniated material L4-L5'); ValueError for any other label."""
    if label.startswith(DISC_PREFIX):
        return SegmentCodes(codes.ANATOMICAL_STRUCTURE, _disc(label.removeprefix(DISC_PREFIX), label))
    if label.startswith(HERNIATED_PREFIX):
        disc = _disc(label.removeprefix(HERNIATED_PREFIX), label)
        return SegmentCodes(codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.DISC_HERNIATION, (disc,))
    if label == BODIES_SEGMENT:
        return SegmentCodes(codes.ANATOMICAL_STRUCTURE, codes.VERTEBRA)
    if label == CANAL_SEGMENT:
        return SegmentCodes(codes.ANATOMICAL_STRUCTURE, codes.SPINAL_CANAL_STRUCTURE)
    raise ValueError(f"no code for segment {label!r}")


def display_rgb(label: str) -> tuple[int, int, int]:
    """The colour of a segment by its label (see :func:`segment_codes`)."""
    if label.startswith(DISC_PREFIX):
        name = label.removeprefix(DISC_PREFIX)
        order = [lv for lv in codes.DISCS]
        return DISC_COLOURS[order.index(name) % len(DISC_COLOURS)] if name in order else DISC_COLOURS[0]
    if label.startswith(HERNIATED_PREFIX):
        return HERNIATION_COLOUR
    return BODY_COLOUR if label == BODIES_SEGMENT else CANAL_COLOUR


def build_seg(
    masks: SeriesMasks, sources: Sequence[Dataset], identity: ResultIdentity, model: ModelId
) -> hd.seg.Segmentation:
    """``sources`` are the series' headers in the order of ``masks.sop_instance_uids``."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    missing = [u for u in masks.sop_instance_uids if u not in by_uid]
    if missing:
        raise ValueError(f"{len(missing)} source instance(s) of the mask are not in the study")
    labels = np.asarray(masks.labels, dtype=np.uint8)
    if masks.frame_numbers:  # a multi-frame source: one image, the labels in its frame order
        if len(set(masks.sop_instance_uids)) != 1:
            raise ValueError("masks on frames of several multi-frame images are not supported")
        ordered = [by_uid[masks.sop_instance_uids[0]]]
        order = np.argsort(masks.frame_numbers, kind="stable")
        if [masks.frame_numbers[i] for i in order] != list(range(1, int(ordered[0].NumberOfFrames) + 1)):
            raise ValueError("masks must cover every frame of the multi-frame source once")
        labels = labels[order]
    else:
        ordered = [by_uid[u] for u in masks.sop_instance_uids]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name, family=codes.ALGORITHM_FAMILY, version=model.version
    )
    numbers = sorted(masks.segments)
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError("segment numbers must be 1..N")
    coded = {n: segment_codes(masks.segments[n]) for n in numbers}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=masks.segments[n][:64],
            segmented_property_category=coded[n].category,
            segmented_property_type=coded[n].property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=identity.sub_uid("segment", masks.segments[n]),
            tracking_id=masks.segments[n][:64],
            anatomic_regions=list(coded[n].anatomic_regions) or None,
            display_color=hd.color.CIELabColor.from_rgb(*display_rgb(masks.segments[n])),
        )
        for n in numbers
    ]
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=identity.series_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name[:64],
        software_versions=model.version,
        device_serial_number="0",
        content_label="AI_SPINE",
        content_description="AI segmentation, PRELIMINARY, not a diagnosis",
        omit_empty_frames=True,
    )
    seg.SeriesDescription = identity.series_description
    if any(c.scheme_designator == PRIVATE_SCHEME for sc in coded.values() for c in sc.concepts()):
        seg.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    return seg


def build_result(inputs: EncodeInputs, identity: ResultIdentity) -> Dataset | None:
    """The SEG of the record's masks (builders.BUILDERS); none without masks. One SEG per
    study: the analyzer segments the primary sagittal series, the first mask set."""
    if not inputs.masks:
        return None
    return build_seg(inputs.masks[0], inputs.evidence, identity, inputs.record.findings.model)


def save_masks(masks: Sequence[SeriesMasks], path: Path) -> str:
    """Persist the analyzer's masks for the encode stage (npz: labels, UIDs, segment names);
    returns the file's sha256 (hex), which the analysis record carries."""
    import hashlib

    from spinenode.core.storage import atomic_write

    arrays: dict[str, np.ndarray] = {}
    for i, m in enumerate(masks):
        arrays[f"labels_{i}"] = m.labels
        arrays[f"uids_{i}"] = np.array(m.sop_instance_uids)
        arrays[f"series_{i}"] = np.array([m.series_uid])
        arrays[f"segments_{i}"] = np.array([f"{k}\t{v}" for k, v in sorted(m.segments.items())])
        arrays[f"frames_{i}"] = np.array(m.frame_numbers, dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, count=np.array([len(masks)]), **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def load_masks(path: Path) -> list[SeriesMasks]:
    with np.load(path, allow_pickle=False) as data:
        out = []
        for i in range(int(data["count"][0])):
            segments = {int(k): v for k, v in (s.split("\t", 1) for s in data[f"segments_{i}"].tolist())}
            out.append(SeriesMasks(
                series_uid=str(data[f"series_{i}"][0]),
                sop_instance_uids=tuple(str(u) for u in data[f"uids_{i}"].tolist()),
                labels=np.array(data[f"labels_{i}"]),
                segments=segments,
                frame_numbers=tuple(int(f) for f in data[f"frames_{i}"].tolist()) if f"frames_{i}" in data else (),
            ))
        return out
