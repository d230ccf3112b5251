"""Training-data extraction, grader, analyzer (with a stub detector) and evaluation scoring."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models import rsna
from models.analyzer import SpineAnalyzer, read_study_dir
from models.detector import SegDetection, detector_image
from models.evaluate import StudyOutcome, level_matches, score_outcomes
from models.levels import spine_axes
from models.grader import (
    KIND_INDEX, GradeNet, Grader, GraderCheckpoint, CropRequest, HEADS, canonical_side, fit_temperature,
    grader_pixels, in_plane, n_parameters, plane_offset, recess_frame,
)
from models.train_data import (
    disc_centers, crop_offsets_of_study, grader_study_crops, is_validation, primary_series, write_detector_study,
    yolo_lines,
)
from models.types import Box, LUMBAR_LEVELS, ModelId
from models.volume import load_volume
from test_models_synth import DISC_Z, make_dataset

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> rsna.RsnaDataset:
    return make_dataset(tmp_path_factory.mktemp("synth"), n_studies=2)


def test_disc_centres_from_masks(dataset: rsna.RsnaDataset) -> None:
    sid = dataset.study_ids[0]
    series = primary_series(dataset, sid)
    assert series is not None
    vol = load_volume(dataset.series_dir(sid, series.series_id))
    centres = disc_centers(dataset, sid, vol, series)
    assert sorted(centres) == sorted(LUMBAR_LEVELS)
    for lv, z in DISC_Z.items():
        c = centres[lv.replace("/", "-")]
        assert abs(c[2] - z) < 1.0 and abs(c[1]) < 1.0 and abs(c[0]) < 1e-6


def test_yolo_lines_have_every_class(dataset: rsna.RsnaDataset) -> None:
    mv = rsna.read_masks(dataset.masks_path(1000, 10001))
    lines = yolo_lines(mv.labels[4], mv.labels.shape[1:])
    classes = sorted({int(line.split()[0]) for line in lines})
    assert classes == [0, 1, 2, 3, 4, 11, 12, 13]  # 5 lumbar discs, other disc, bodies, canal
    coords = np.array([float(v) for line in lines for v in line.split()[1:]])
    assert coords.min() >= 0 and coords.max() <= 1
    boxes = yolo_lines(None, (100, 100), [("L4-L5", 50.0, 50.0)], pixel_mm=1.0)
    assert boxes[0].split()[0] == "3" and len(boxes[0].split()) == 9


def test_crop_offsets(dataset: rsna.RsnaDataset) -> None:
    off = crop_offsets_of_study(dataset, 1000)
    left = np.median(np.asarray(off["left"]), axis=0)
    right = np.median(np.asarray(off["right"]), axis=0)
    assert left == pytest.approx([16.0, 20.0, 0.0], abs=1.0)
    assert right == pytest.approx([-16.0, 20.0, 0.0], abs=1.0)
    # the canal points lie 24 mm behind the disc centres: the canal crop moves half that way
    assert np.median(np.asarray(off["sag_t2"]), axis=0) == pytest.approx([0.0, 12.0, 0.0], abs=1.0)
    for side, x in (("sub_left", 10.0), ("sub_right", -10.0)):  # recesses at x = +-10, y = 24
        assert len(off[side]) == 5
        assert np.median(np.asarray(off[side]), axis=0) == pytest.approx([x, 24.0, 0.0], abs=1.0)


def test_grader_crops(dataset: rsna.RsnaDataset) -> None:
    offs = {"left": np.array([16.0, 20.0, 0.0]), "right": np.array([-16.0, 20.0, 0.0]),
            "sub_left": np.array([10.0, 24.0, 0.0]), "sub_right": np.array([-10.0, 24.0, 0.0])}
    cs = grader_study_crops(dataset, 1000, offs, n_aug=1)
    # 5 levels x (1 sagittal T2 + 2 foramina + 2 subarticular recesses)
    assert cs.x.shape == (25, 5, 64, 64)
    assert np.bincount(cs.kind).tolist() == [5, 10, 10]  # sag_t2, sag_t1, axial_t2
    has = (cs.y.max(axis=0) >= 0).tolist()
    # every lumbar head has labels; the cervical head none
    assert has == [True, True, False, True, True]
    # both recess crops are canonical: the synthetic recesses are mirror images, so the two crops agree
    ax = cs.x[cs.kind == KIND_INDEX["axial_t2"]].astype(np.float32)
    assert np.abs(ax[0::2] - ax[1::2]).mean() < 0.02


def _reencoded_dataset(src: Path, dst: Path, op: object) -> rsna.RsnaDataset:
    """The dataset as a scanner could send it: every image reoriented in plane by ``op``
    (headers rewritten, every voxel keeps its patient position) and the labels drawn on
    the images (masks, RSNA x/y points) moved with the pixels."""
    import shutil
    from dataclasses import replace

    from pydicom import dcmread

    from models.phantom.variants import reorient, reorient_array

    shutil.copytree(src, dst)
    shapes = {}
    for path in (dst / "train_images").rglob("*.dcm"):
        ds = dcmread(path)
        shapes[(int(path.parent.name), int(path.stem))] = (int(ds.Rows), int(ds.Columns))
        reorient(ds, op).save_as(path)
    for path in (dst / "masks").rglob("*.npz"):
        mv = rsna.read_masks(path)
        rsna.write_masks(path, reorient_array(mv.labels, op), mv.instance_numbers)
    coords = []
    for c in rsna.read_dataset(src).coordinates:
        rows, cols = shapes[(c.series_id, c.instance_number)]
        x, y = c.x, c.y
        if op.transpose:  # type: ignore[attr-defined]
            x, y, rows, cols = y, x, cols, rows
        if op.flip_rows:  # type: ignore[attr-defined]
            y = rows - 1 - y
        if op.flip_cols:  # type: ignore[attr-defined]
            x = cols - 1 - x
        coords.append(replace(c, x=x, y=y))
    rsna.write_coordinates(dst, coords)
    return rsna.read_dataset(dst)


def test_training_data_is_read_in_patient_space(dataset: rsna.RsnaDataset, tmp_path: Path) -> None:
    """Training reads every series in the analyzer's canonical orientation: a study sent
    transposed or mirrored (labels moved with the pixels) gives the same grader crops,
    crop offsets, detector images and YOLO labels as the plain study."""
    import cv2

    from models.phantom.variants import IN_PLANE

    sid = dataset.study_ids[0]
    plain_off = crop_offsets_of_study(dataset, sid)
    offs = {k: np.median(np.asarray(v), axis=0) for k, v in plain_off.items() if v}
    plain = grader_study_crops(dataset, sid, offs, n_aug=2)
    assert len(plain.kind) == 50
    write_detector_study(dataset, sid, tmp_path / "yolo-plain", "train")
    yolo_plain = sorted((tmp_path / "yolo-plain").rglob("*.*"))
    assert len(yolo_plain) == 6  # 3 slices: image + labels
    for op in (o for o in IN_PLANE if o.name in ("flip_rows", "transpose+flip_cols", "transpose+flip_rows+flip_cols")):
        ds = _reencoded_dataset(dataset.root, tmp_path / op.name, op)
        off = crop_offsets_of_study(ds, sid)
        for k, v in plain_off.items():
            np.testing.assert_allclose(np.asarray(off[k]).reshape(-1, 3), np.asarray(v).reshape(-1, 3), atol=1e-3,
                                       err_msg=f"{op.name} {k}")
        got = grader_study_crops(ds, sid, offs, n_aug=2)
        assert got.kind.tolist() == plain.kind.tolist() and got.y.tolist() == plain.y.tolist(), op.name
        np.testing.assert_allclose(got.x.astype(np.float32), plain.x.astype(np.float32), atol=2e-3, err_msg=op.name)
        write_detector_study(ds, sid, tmp_path / f"yolo-{op.name}", "train")
        yolo = sorted((tmp_path / f"yolo-{op.name}").rglob("*.*"))
        assert [p.name for p in yolo] == [p.name for p in yolo_plain], op.name
        for a, b in zip(yolo_plain, yolo):
            if a.suffix == ".png":
                np.testing.assert_array_equal(cv2.imread(str(a)), cv2.imread(str(b)), err_msg=f"{op.name} {a.name}")
            else:
                assert a.read_text() == b.read_text(), f"{op.name} {a.name}"


def test_study_split_is_grouped_and_stable() -> None:
    a = [is_validation(s, 0, 0.2) for s in range(1000)]
    assert a == [is_validation(s, 0, 0.2) for s in range(1000)]
    assert 0.15 < np.mean(a) < 0.25
    assert a != [is_validation(s, 1, 0.2) for s in range(1000)]


def test_gradenet_and_temperature() -> None:
    net = GradeNet()
    assert 1_000_000 < n_parameters(net) < 3_500_000
    out = net(torch.zeros(2, 5, 64, 64), torch.tensor([0, 2]))
    assert {k: tuple(v.shape) for k, v in out.items()} == {h: (2, n) for h, n in HEADS.items()}
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3.0
    p = np.exp(logits / 2.0)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.1)


def _grader(tmp_path: Path) -> Grader:
    torch.manual_seed(0)
    net = GradeNet()
    ckpt = GraderCheckpoint(net.state_dict(), net.widths, {"spinal_canal": 1.5},
                            {"left": (16.0, 20.0, 0.0), "right": (-16.0, 20.0, 0.0),
                             "sub_left": (10.0, 24.0, 0.0), "sub_right": (-10.0, 24.0, 0.0)}, {})
    ckpt.save(tmp_path / "g.pt")
    return Grader.from_file(tmp_path / "g.pt", ModelId("g", "0"))


class _StubDetector:
    """Returns the true disc boxes of the synthetic study (plus the T12-L1 disc)."""

    def __init__(self, boxes: list[tuple[str, Box]]) -> None:
        self.boxes = boxes
        self.calls = 0

    def detect(self, images: list[np.ndarray], batch_size: int = 32) -> list[list[SegDetection]]:
        self.calls += 1
        return [[SegDetection(n, 0.9, b, None) for n, b in self.boxes] for _ in images]


def _true_boxes() -> list[tuple[str, Box]]:
    out = []
    for name, z in [("other_disc", 70.0), *((k.replace("/", "-"), v) for k, v in DISC_Z.items())]:
        row = (100.0 - z) / 1.5
        out.append((name, Box(40 - 16 / 1.5 + 0.0, row - 3, 40 + 16 / 1.5, row + 3)))
    return out


def test_grader_checkpoint_roundtrip(tmp_path: Path) -> None:
    g = _grader(tmp_path)
    pr = g.probabilities([CropRequest("sag_t2", np.zeros((5, 64, 64), np.float32), ("spinal_canal", "pfirrmann"))])
    assert set(pr[0]) == {"spinal_canal", "pfirrmann"}
    assert pr[0]["pfirrmann"].sum() == pytest.approx(1.0)
    assert g.temperatures["spinal_canal"] == 1.5
    assert (tmp_path / "g.pt").stat().st_size < 8_000_000  # stored in half precision


def test_analyzer_end_to_end_with_stub_detector(dataset: rsna.RsnaDataset, tmp_path: Path) -> None:
    det = _StubDetector(_true_boxes())
    an = SpineAnalyzer(det, _grader(tmp_path), ModelId("spinenode-test", "0.0.1"))  # type: ignore[arg-type]
    series = read_study_dir(dataset.root / "train_images" / "1000")
    res = an.analyze("1.2.3", series, "lumbar")
    f = res.findings
    assert [lf.level.name for lf in f.levels] == list(LUMBAR_LEVELS)
    assert f.missing == ()
    for lf in f.levels:
        conds = {g.condition.value for g in lf.grades}
        assert conds == {"spinal_canal_stenosis", "pfirrmann", "left_neural_foraminal_narrowing",
                         "right_neural_foraminal_narrowing", "left_subarticular_stenosis",
                         "right_subarticular_stenosis"}
        z_true = DISC_Z[lf.level.name.replace("-", "/")]
        assert abs(lf.level.center_patient[2] - z_true) < 2.0
    js = f.to_json()
    assert js["model"] == {"name": "spinenode-test", "version": "0.0.1"}
    assert js["levels"][3]["level"] == "L4-L5"
    assert det.calls == 1


def test_analyzer_reports_missing_axial(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "noax", n_studies=1, axial=False)
    an = SpineAnalyzer(_StubDetector(_true_boxes()), _grader(tmp_path), ModelId("t", "0"))  # type: ignore[arg-type]
    res = an.analyze("1.2", read_study_dir(ds.root / "train_images" / "1000"), "lumbar")
    assert any("axial T2" in m for m in res.findings.missing)
    lf = res.findings.level("L3-L4")
    assert lf is not None and lf.grade_of("left_subarticular_stenosis") is None
    assert lf.grade_of("spinal_canal_stenosis") is not None


def test_batched_analysis_matches_single(dataset: rsna.RsnaDataset, tmp_path: Path) -> None:
    an = SpineAnalyzer(_StubDetector(_true_boxes()), _grader(tmp_path), ModelId("t", "0"))  # type: ignore[arg-type]
    studies = [(str(s), read_study_dir(dataset.root / "train_images" / str(s)), "lumbar") for s in dataset.study_ids]
    many = an.analyze_many(studies)
    one = an.analyze(*studies[1])
    a = many[1].findings.level("L4-L5")
    b = one.findings.level("L4-L5")
    assert a is not None and b is not None
    assert np.allclose(a.grades[0].probabilities, b.grades[0].probabilities, atol=1e-5)


def test_level_matching_and_scoring(dataset: rsna.RsnaDataset, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    truth = {"L1-L2": np.array([0.0, 0.0, 0.0]), "L2-L3": np.array([0.0, 0.0, -30.0])}
    assert level_matches(truth, {"L1-L2": np.array([0.0, 3.0, 0.0]), "L3-L4": np.array([0, 0, -31.0])}) == (2, 2, 1)
    assert level_matches(truth, {"L1-L2": np.array([0.0, 6.0, 0.0])}) == (2, 0, 0)
    an = SpineAnalyzer(_StubDetector(_true_boxes()), _grader(tmp_path), ModelId("t", "0"))  # type: ignore[arg-type]
    outs = []
    for sid in dataset.study_ids:
        res = an.analyze(str(sid), read_study_dir(dataset.root / "train_images" / str(sid)), "lumbar")
        series = primary_series(dataset, sid)
        assert series is not None
        vol = load_volume(dataset.series_dir(sid, series.series_id))
        outs.append(StudyOutcome(sid, disc_centers(dataset, sid, vol, series), res))
    rep = score_outcomes(dataset, outs)
    assert rep["level_detection_recall"] == 1.0 and rep["level_naming_accuracy"] == 1.0
    assert rep["missing_predictions"] == 0
    assert len(rep["conditions"]) == 5 and rep["pfirrmann"]["n"] == 10
    assert 0 < rep["rsna_score"]["score"] < 5
    lo, hi = rep["rsna_score"]["score_ci95"]  # study-level bootstrap, same seed, same interval
    assert lo <= rep["rsna_score"]["score"] <= hi
    for m in (*rep["conditions"].values(), rep["pfirrmann"]):
        assert m["kappa_linear_ci95"][0] <= m["kappa_linear_ci95"][1] <= 1.0
    for m in rep["conditions"].values():
        assert 0.0 <= m["ece"] <= 1.0
        assert sum(m["mean_probability"]) == pytest.approx(1.0) and sum(m["observed_frequency"]) == pytest.approx(1.0)
    assert score_outcomes(dataset, outs)["rsna_score"]["score_ci95"] == [lo, hi]
    assert rep["bootstrap"]["unit"] == "study"
    assert "score_ci95" not in score_outcomes(dataset, outs, resamples=0)["rsna_score"]
    from models.cli import _render

    _render({**rep, "model": "test"})  # the table of `spinenode evaluate` without --json
    out = capsys.readouterr().out
    assert f"{rep['rsna_score']['score']:.4f} ({lo:.3f} to {hi:.3f})" in out
    assert "95 % intervals: 1000 resamples of the studies (seed 0)" in out
    # mm measurements beside the phantom's: summarised per kind, and a table of their own
    from dataclasses import replace

    from models.measure import MeasurementError

    errs = (MeasurementError("disc_height", "L1-L2", 9.5, 9.0), MeasurementError("disc_height", "L2-L3", 8.0, 9.0),
            MeasurementError("canal_ap_diameter", "L1-L2", 12.0, 11.0),
            MeasurementError("dural_sac_area", "L1-L2", 90.0, 100.0), MeasurementError("dural_sac_area", "L2-L3", 160.0, 150.0))
    scored = score_outcomes(dataset, [replace(outs[0], measurement_errors=errs), *outs[1:]], resamples=0)
    mm = scored["measurements_mm"]
    assert mm["disc_height"] == {"n": 2, "median_abs_error": 0.75, "mean_abs_error": 0.75, "p90_abs_error": 0.95,
                                 "bias": -0.25}
    assert mm["canal_ap_diameter"]["n"] == 1 and mm["canal_ap_diameter"]["bias"] == 1.0
    # the transitional-segment caveat counted per ground truth (phantom_transitional.csv)
    from models.evaluate import transitional_flags
    from models.levels import TRANSITIONAL_FLAG

    flagged = replace(outs[0].result, findings=replace(outs[0].result.findings, flags=(f"{TRANSITIONAL_FLAG} (x)",)))
    t = transitional_flags([replace(outs[0], result=flagged), *outs[1:]], {outs[0].study_id: "sacralised_l5"})
    assert t == {"sacralised_l5": {"studies": 1, "flagged": 1}, "none": {"studies": len(outs) - 1, "flagged": 0}}
    # the dural sac area (mm2) on its own, with the error in % of the true area
    assert scored["measurements_mm2"] == {"dural_sac_area": {
        "n": 2, "median_abs_error": 10.0, "mean_abs_error": 10.0, "p90_abs_error": 10.0, "bias": 0.0,
        "median_abs_error_percent": pytest.approx(25 / 3), "bias_percent": pytest.approx(-5 / 3)}}
    _render({**rep, "model": "test", "measurements_mm": mm, "transitional_flags": t,
             "measurements_mm2": scored["measurements_mm2"]})
    out = capsys.readouterr().out
    assert "measurements (mm) against the phantom's label masks" in out
    assert "transitional segment flagged: 1 of 1 studies whose truth is sacralised_l5" in out
    assert "dural_sac_area (mm²" in out and "median |error| 10.0 (8.3 %)" in out


def test_detector_image_channels() -> None:
    pix = np.stack([np.full((4, 4), v, np.float32) for v in (0.0, 0.5, 1.0)])
    img = detector_image(pix, 0)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [0, 0, 128]


def test_tta_averages_the_slice_flip(tmp_path: Path) -> None:
    g = _grader(tmp_path)
    rng = np.random.default_rng(1)
    crop = rng.random((5, 64, 64)).astype(np.float32)
    flipped = crop[::-1].copy()
    a, b = g.probabilities([CropRequest("axial_t2", crop, ("subarticular",)),
                            CropRequest("axial_t2", flipped, ("subarticular",))])
    assert np.allclose(a["subarticular"], b["subarticular"], atol=1e-5)
    g.tta = False
    c = g.probabilities([CropRequest("axial_t2", crop, ("subarticular",))])[0]
    assert not np.allclose(c["subarticular"], a["subarticular"], atol=1e-6)


def test_canonical_side_puts_lateral_to_the_right() -> None:
    crop = np.zeros((5, 8, 8), np.float32)
    crop[:, :, -1] = 1.0  # something at the +column edge
    standard, flipped = np.array([1.0, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0])
    # standard axial: columns run towards patient left, so the left recess is lateral at +column
    assert canonical_side(crop, "left", standard)[0, 0, -1] == 1.0
    assert canonical_side(crop, "right", standard)[0, 0, 0] == 1.0
    assert canonical_side(crop, "left", flipped)[0, 0, 0] == 1.0
    assert canonical_side(crop, "right", flipped)[0, 0, -1] == 1.0
    with pytest.raises(ValueError):
        canonical_side(crop, "middle", standard)


def test_ct_crops_read_a_soft_tissue_window() -> None:
    hu = np.array([[[-1000.0, -100.0, 8.0, 88.0, 200.0, 950.0]]], np.float32)
    vol = SimpleNamespace(pixels=hu)
    ct = grader_pixels(vol, "CT")  # type: ignore[arg-type]
    assert ct[0, 0].tolist() == pytest.approx([0.0, 0.0, 0.36, 0.6266667, 1.0, 1.0], abs=1e-4)
    # MR keeps the percentile normalisation (and reuses an array it is given)
    given = np.zeros((1, 2, 2), np.float32)
    assert grader_pixels(vol, "MR", mr_pixels=given) is given  # type: ignore[arg-type]


def _axial_stack(deg: float) -> SimpleNamespace:
    """Row, column (LPS) of an axial stack tilted by ``deg`` about the left-right axis."""
    t = np.radians(deg)
    return SimpleNamespace(row_dir=np.array([1.0, 0.0, 0.0]), col_dir=np.array([0.0, np.cos(t), np.sin(t)]))


def _spine_axis(deg: float) -> np.ndarray:
    """Towards the head, for a disc tilted by ``deg`` (its normal)."""
    t = np.radians(deg)
    return np.array([0.0, -np.sin(t), np.cos(t)])


def test_recess_offsets_live_in_the_disc_plane() -> None:
    """An offset learned on one tilted stack lands on the disc's slice of a stack tilted otherwise."""
    centre = np.array([1.0, 2.0, 3.0])
    learned_on = _axial_stack(10.0)
    frame = recess_frame(learned_on, _spine_axis(12.0))  # type: ignore[arg-type]  # angled along the disc
    assert frame[1] == pytest.approx(learned_on.col_dir)
    recess = centre + in_plane((9.0, 16.0, 0.0), frame)
    assert plane_offset(recess, centre, frame) == pytest.approx([9.0, 16.0, 0.0])
    steep = _axial_stack(35.0)
    v = in_plane((9.0, 16.0, 0.0), recess_frame(steep, None))  # type: ignore[arg-type]  # no axis: the stack
    normal = np.cross(steep.row_dir, steep.col_dir)
    assert float(v @ normal) == pytest.approx(0.0, abs=1e-12)  # same slice as the disc centre
    assert np.linalg.norm(v) == pytest.approx(np.hypot(9.0, 16.0))


def test_recess_on_an_unangled_block_follows_the_disc_tilt() -> None:
    """Across a block that does not follow a 30-degree disc, the recess is placed in the disc
    plane (posterior and 8 mm higher than the centre: two 4 mm slices away), not in the slice."""
    block = _axial_stack(0.0)
    axis = _spine_axis(30.0)
    lateral, posterior = recess_frame(block, axis)  # type: ignore[arg-type]
    assert float(lateral @ axis) == pytest.approx(0.0, abs=1e-12)
    assert float(posterior @ axis) == pytest.approx(0.0, abs=1e-12)
    assert posterior[1] == pytest.approx(np.cos(np.radians(30.0)))  # still posterior (+y in LPS)
    v = in_plane((0.0, 16.0, 0.0), (lateral, posterior))
    assert v[2] == pytest.approx(16.0 * np.sin(np.radians(30.0)))


def test_spine_axes_follow_the_curve_to_the_end_discs() -> None:
    """Disc centres on a circular arc (a lordosis): the axis at each disc, end discs included,
    is the arc's tangent; fewer than two discs give none."""
    r = 150.0
    names = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
    angles = np.radians([40.0, 28.0, 16.0, 4.0, -8.0])  # top to bottom
    centers = {n: np.array([0.0, r * np.cos(a), r * np.sin(a)]) for n, a in zip(names, angles)}
    del centers["L3-L4"]  # a missed disc
    axes = spine_axes(centers, names)
    assert set(axes) == set(centers)
    for n, a in zip(names, angles):
        if n in axes:
            tangent = np.array([0.0, -np.sin(a), np.cos(a)])  # towards the head (larger angle)
            assert float(axes[n] @ tangent) > np.cos(np.radians(1.5)), n
    assert spine_axes({"L4-L5": np.zeros(3)}, names) == {}
