"""SEG and key image objects: dciodvfy 0 errors, strict read-back, references resolve."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dicom_codes

import dicomgen
from models.types import Box, Condition, Findings, Grade, Level, LevelFindings, ModelId, Region, SeriesMasks
from peers import dciodvfy
from workers.results import codes
from workers.results.identity import ResultIdentity, ResultKind, inputs_digest
from workers.results.keyimages import BANNER, build_key_image
from workers.results.seg import HERNIATION_COLOUR, build_seg, display_rgb, load_masks, save_masks

MODEL = ModelId("spinenode-test-model", "0.0.1")


@pytest.fixture
def sagittal(tmp_path: Path) -> list[Dataset]:
    st = dicomgen.write_study(tmp_path / "src", seed=61, rows=96, cols=96,
                              series=(dicomgen.SeriesSpec("SAG T2", "sagittal", 9, "T2"),))
    return [dcmread(p) for p in st.paths]


def _masks(sagittal: list[Dataset]) -> SeriesMasks:
    labels = np.zeros((len(sagittal), 96, 96), dtype=np.uint8)
    k = len(sagittal) // 2
    for j in (k - 1, k, k + 1):  # on three sagittal slices: a 3D SEG
        labels[j, 20:26, 30:60] = 1   # disc L4-L5
        labels[j, 40:46, 30:60] = 2   # disc L5-S1
        labels[j, 27:39, 30:60] = 3   # vertebral bodies
    labels[k, 10:80, 62:70] = 4   # spinal canal, middle slice only
    return SeriesMasks(str(sagittal[0].SeriesInstanceUID), tuple(str(d.SOPInstanceUID) for d in sagittal), labels,
                       {1: "disc L4-L5", 2: "disc L5-S1", 3: "vertebral bodies", 4: "spinal canal"}, MODEL)


def _identity(sagittal: list[Dataset], kind: ResultKind) -> ResultIdentity:
    return ResultIdentity(str(sagittal[0].StudyInstanceUID), kind, MODEL.name, MODEL.version,
                          inputs_digest(str(d.SOPInstanceUID) for d in sagittal))


def test_seg_valid_and_round_trips(sagittal: list[Dataset], tmp_path: Path) -> None:
    masks = _masks(sagittal)
    save_masks([masks], tmp_path / "m.npz")
    (loaded,) = load_masks(tmp_path / "m.npz")
    assert np.array_equal(loaded.labels, masks.labels) and loaded.segments == masks.segments
    headers = [_header(d) for d in sagittal]
    seg = build_seg(loaded, headers, _identity(sagittal, ResultKind.SEG), MODEL)
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    result = dciodvfy(path)
    assert result.errors == [], result.output
    back = hd.seg.segread(path)
    assert back.number_of_segments == 4 and back.NumberOfFrames == 10  # 3 + 3 + 3 + 1, empty frames omitted
    labels = [d.SegmentLabel for d in back.SegmentSequence]
    assert labels == ["disc L4-L5", "disc L5-S1", "vertebral bodies", "spinal canal"]
    assert back.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "84020006"
    ref = back.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == sagittal[0].SeriesInstanceUID
    k = len(sagittal) // 2
    refs = {str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for f in back.PerFrameFunctionalGroupsSequence}
    assert refs == {str(sagittal[j].SOPInstanceUID) for j in (k - 1, k, k + 1)}
    colours = [tuple(int(v) for v in d.RecommendedDisplayCIELabValue) for d in back.SegmentSequence]
    assert len(set(colours)) == 4  # one display colour per segment
    assert hd.color.CIELabColor.from_dicom_value(colours[3]).to_rgb() == (40, 220, 220)  # the canal in cyan
    arr = back.get_volume().array if hasattr(back, "get_volume") else None
    assert arr is None or arr.shape[-1] == 4


def _herniated(sagittal: list[Dataset]) -> SeriesMasks:
    """The masks of ``_masks`` plus the herniated material of L4-L5 as segment 5 (the
    analyzer's contract): painted over the back of the disc and beyond it into background,
    on two of the disc's three slices."""
    base = _masks(sagittal)
    labels = base.labels.copy()
    k = len(sagittal) // 2
    for j in (k - 1, k):
        labels[j, 21:25, 55:64] = 5  # cols 55-59 over disc L4-L5, 60-61 background, 62-63 over the canal on k
    return SeriesMasks(base.series_uid, base.sop_instance_uids, labels,
                       {**base.segments, 5: "herniated material L4-L5"}, MODEL)


def _code(item: Dataset) -> tuple[str, str, str]:
    return str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning)


def test_seg_herniated_material_segment(sagittal: list[Dataset], tmp_path: Path) -> None:
    masks = _herniated(sagittal)
    save_masks([masks], tmp_path / "m.npz")  # through the analysis side file, as in the pipeline
    (loaded,) = load_masks(tmp_path / "m.npz")
    headers = [_header(d) for d in sagittal]
    path = tmp_path / "seg.dcm"
    build_seg(loaded, headers, _identity(sagittal, ResultKind.SEG), MODEL).save_as(path)
    result = dciodvfy(path)
    assert result.errors == [], result.output
    assert all("<99SPINENODE>" in w for w in result.warnings), result.output  # only: designator unknown to it
    back = hd.seg.segread(path)
    assert back.number_of_segments == 5
    desc = back.SegmentSequence[4]
    assert desc.SegmentNumber == 5 and desc.SegmentLabel == "herniated material L4-L5"
    category = dicom_codes.cid7150.MorphologicallyAbnormalStructure
    assert _code(desc.SegmentedPropertyCategoryCodeSequence[0]) == (category.value, "SCT", category.meaning)
    assert _code(desc.SegmentedPropertyTypeCodeSequence[0]) == ("DISC_HERNIATION", "99SPINENODE", "Disc herniation")
    assert [_code(r) for r in desc.AnatomicRegionSequence] == [("84020006", "SCT", "L4/L5 disc")]
    assert desc.SegmentAlgorithmType == "AUTOMATIC" and desc.TrackingID == "herniated material L4-L5"
    rgb = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in desc.RecommendedDisplayCIELabValue)).to_rgb()
    assert rgb == HERNIATION_COLOUR == display_rgb("herniated material L4-L5")
    others = {tuple(int(v) for v in d.RecommendedDisplayCIELabValue) for d in back.SegmentSequence[:4]}
    assert tuple(int(v) for v in desc.RecommendedDisplayCIELabValue) not in others
    # the anatomical segments keep their category and carry no anatomic region
    for d in back.SegmentSequence[:4]:
        assert _code(d.SegmentedPropertyCategoryCodeSequence[0])[0] == "91723000" and "AnatomicRegionSequence" not in d
    # the private scheme of the type is declared, as in the SR
    (scheme,) = back.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99SPINENODE" and scheme.CodingSchemeName
    # frames: exactly the herniated pixels, on the two slices that hold them; the disc keeps the rest
    uids = [str(d.SOPInstanceUID) for d in sagittal]
    k = len(sagittal) // 2
    frames = {str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
              for f in back.PerFrameFunctionalGroupsSequence
              if int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 5}
    assert frames == {uids[k - 1], uids[k]}
    for seg_number in (1, 5):
        got = back.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[seg_number],
                                                 ignore_spatial_locations=True)[..., 0]
        assert np.array_equal(got.astype(bool), masks.labels == seg_number), seg_number
    assert int((masks.labels == 5).sum()) == 2 * 4 * 9


def test_seg_declares_private_scheme_only_when_used(sagittal: list[Dataset], tmp_path: Path) -> None:
    seg = build_seg(_masks(sagittal), [_header(d) for d in sagittal], _identity(sagittal, ResultKind.SEG), MODEL)
    assert "CodingSchemeIdentificationSequence" not in seg
    assert codes.DISC_HERNIATION.scheme_designator == "99SPINENODE"


def test_seg_herniated_material_of_an_unknown_level_is_refused(sagittal: list[Dataset]) -> None:
    base = _masks(sagittal)
    bad = SeriesMasks(base.series_uid, base.sop_instance_uids, base.labels,
                      {**base.segments, 4: "herniated material L9-L10"}, MODEL)
    with pytest.raises(ValueError, match="L9-L10"):
        build_seg(bad, [_header(d) for d in sagittal], _identity(sagittal, ResultKind.SEG), MODEL)


def _header(ds: Dataset) -> Dataset:
    out = ds.copy()
    del out.PixelData
    return out


def test_key_image_valid_and_marked(sagittal: list[Dataset], tmp_path: Path) -> None:
    mid = sagittal[len(sagittal) // 2]
    lvl = Level("L4-L5", str(mid.SeriesInstanceUID), str(mid.SOPInstanceUID), 4, Box(30, 20, 60, 26), 0.9,
                (0.0, 0.0, 0.0))
    findings = Findings(str(mid.StudyInstanceUID), Region.LUMBAR, MODEL, (
        LevelFindings(lvl, (Grade(Condition.SPINAL_CANAL_STENOSIS, (0.1, 0.2, 0.7)),)),))
    sc = build_key_image(mid, findings, _identity(sagittal, ResultKind.KEY_IMAGES))
    path = tmp_path / "ki.dcm"
    sc.save_as(path)
    result = dciodvfy(path)
    assert result.errors == [] and result.warnings == [], result.output  # Laterality: absent, body part set
    ds = dcmread(path)
    assert ds.BodyPartExamined and "Laterality" not in ds
    assert ds.BurnedInAnnotation == "YES" and BANNER in ds.ImageComments
    assert ds.StudyInstanceUID == mid.StudyInstanceUID and ds.SeriesNumber == 9903
    rgb = ds.pixel_array
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 768
    # the severe box is drawn in red somewhere
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    assert red.sum() > 100
    # the caveat is burned in below the image, centred: not under OHIF's cine control
    # (top centre of a secondary capture) nor under the corner overlays
    yellow = (rgb[..., 0] > 200) & (rgb[..., 1] > 200) & (rgb[..., 2] < 80)
    rows, cols = np.nonzero(yellow)
    h, w = rgb.shape[:2]
    assert rows.size > 200 and rows.min() > 96 * 8  # below the 96-px source scaled by 8
    assert rows.max() < h and cols.min() > 0.2 * w and cols.max() < 0.8 * w
    assert not yellow[: h // 4].any()
