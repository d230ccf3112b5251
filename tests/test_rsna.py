"""models.rsna: the RSNA 2024 vocabulary, reader and writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import rsna


def test_lumbar_targets_are_rsnas_25_columns_in_order() -> None:
    assert len(rsna.LUMBAR_TARGETS) == 25
    assert rsna.LUMBAR_TARGETS[0] == "spinal_canal_stenosis_l1_l2"
    assert rsna.LUMBAR_TARGETS[4] == "spinal_canal_stenosis_l5_s1"
    assert rsna.LUMBAR_TARGETS[5] == "left_neural_foraminal_narrowing_l1_l2"
    assert rsna.LUMBAR_TARGETS[14] == "right_neural_foraminal_narrowing_l5_s1"
    assert rsna.LUMBAR_TARGETS[-1] == "right_subarticular_stenosis_l5_s1"
    assert rsna.CERVICAL_TARGETS == tuple(
        f"spinal_canal_stenosis_{s}"
        for s in ("c2_c3", "c3_c4", "c4_c5", "c5_c6", "c6_c7", "c7_t1"))
    assert rsna.TARGET_INDEX["left_subarticular_stenosis_l4_l5"] == (
        "Left Subarticular Stenosis", "L4/L5")


def test_level_name_conversion() -> None:
    from models.types import LUMBAR_LEVELS as PROJECT_LUMBAR

    assert tuple(rsna.project_level(lv) for lv in rsna.LUMBAR_LEVELS) == PROJECT_LUMBAR
    assert rsna.rsna_level("C7-T1") == "C7/T1"


def test_grade_thresholds() -> None:
    assert rsna.grade_of_narrowing(0.0) == "Normal/Mild"
    assert rsna.grade_of_narrowing(0.3333) == "Normal/Mild"
    assert rsna.grade_of_narrowing(0.34) == "Moderate"
    assert rsna.grade_of_narrowing(0.67) == "Severe"


def _write_small(root: Path) -> None:
    grades = {t: "Normal/Mild" for t in rsna.LUMBAR_TARGETS}
    grades["spinal_canal_stenosis_l4_l5"] = "Severe"
    grades["left_subarticular_stenosis_l5_s1"] = None  # type: ignore[assignment]
    rsna.write_labels(root, [rsna.StudyLabels(7, grades)])
    rsna.write_coordinates(root, [
        rsna.LabelCoordinate(7, 71, 8, rsna.SPINAL_CANAL_STENOSIS, "L4/L5", 120.5, 200.25)])
    rsna.write_series_descriptions(root, [rsna.SeriesInfo(7, 71, rsna.SAGITTAL_T2_STIR),
                                          rsna.SeriesInfo(7, 72, rsna.AXIAL_T2)])
    rsna.write_pfirrmann(root, {(7, "L4/L5"): 4})


def test_round_trip(tmp_path: Path) -> None:
    _write_small(tmp_path)
    header = (tmp_path / "train.csv").read_text().splitlines()[0].split(",")
    assert header == ["study_id", *rsna.LUMBAR_TARGETS]
    data = rsna.read_dataset(tmp_path)
    assert data.region == "lumbar"
    assert data.study_ids == (7,)
    lab = data.labels[7]
    assert lab.grade(rsna.SPINAL_CANAL_STENOSIS, "L4/L5") == "Severe"
    assert lab.class_index(rsna.SPINAL_CANAL_STENOSIS, "L4/L5") == 2
    assert lab.grade(rsna.LEFT_SUBARTICULAR_STENOSIS, "L5/S1") is None
    (c,) = data.coordinates_of(7)
    assert (c.series_id, c.instance_number, c.x, c.y) == (71, 8, 120.5, 200.25)
    assert [s.series_id for s in data.series_of(7, rsna.AXIAL_T2)] == [72]
    assert data.pfirrmann[(7, "L4/L5")] == 4
    assert data.image_path(7, 71, 3) == tmp_path / "train_images" / "7" / "71" / "3.dcm"


def test_reader_rejects_unknown_grade(tmp_path: Path) -> None:
    _write_small(tmp_path)
    text = (tmp_path / "train.csv").read_text().replace("Severe", "Terrible")
    (tmp_path / "train.csv").write_text(text)
    with pytest.raises(ValueError, match="Terrible"):
        rsna.read_dataset(tmp_path)


def test_masks_round_trip(tmp_path: Path) -> None:
    vol = np.zeros((2, 4, 5), np.uint8)
    vol[1, 2, 3] = rsna.DISC_LABELS["L4/L5"]
    path = rsna.write_masks(tmp_path / "m.npz", vol, [1, 2])
    m = rsna.read_masks(path)
    assert m.slice_of(2)[2, 3] == 14
    assert m.label_names[14] == "disc L4/L5"
    assert m.label_names[rsna.MASK_SPINAL_CANAL] == "spinal canal"
