"""The herniation model (issue 19): training end to end on a tiny set, the analyzer's new
findings beside unchanged old ones, and the evaluation metrics."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from models_cli import invoke_models_cli

from models import rsna
from models.herniation import (
    HERNIATION_POSITIONS,
    MIRROR_POSITION,
    HerniationCheckpoint,
    HerniationModel,
)
from models.registry import PACKAGE_WEIGHTS_DIR, Registry
from models.types import (
    HERNIATION_CONDITIONS,
    AnalysisResult,
    Condition,
    Findings,
    Grade,
    Level,
    LevelFindings,
    ModelId,
    Region,
)

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
LEVELS = rsna.LUMBAR_LEVELS


@pytest.fixture(scope="module")
def herniated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two lumbar MR phantoms (seed 4243, used by no training run), every level herniated
    (protrusions and extrusions), HIZ at about half of them."""
    from models.phantom.config import HerniationFrequencies, PhantomConfig
    from models.phantom.generate import generate_dataset

    base = HerniationFrequencies.realistic("lumbar")
    cfg = replace(PhantomConfig.for_region("lumbar", "MR", matrix=128), herniation=base.with_overrides({
        "types": {lv: [0.0, 0.2, 0.4, 0.4] for lv in LEVELS}, "hiz": {lv: 0.5 for lv in LEVELS}}))
    out = tmp_path_factory.mktemp("herniated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_dataset(out, 2, cfg, seed=4243)
    return out


@pytest.fixture(scope="module")
def tiny_run(herniated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``spinenode train herniation`` for one epoch on the two studies, through the CLI."""
    out = tmp_path_factory.mktemp("run")
    res = invoke_models_cli(["train", "herniation", "--data", str(herniated), "--out", str(out),
                             "--epochs", "1", "--device", "cpu", "--copies", "1", "--batch", "8"])
    assert res.exit_code == 0, res.output
    return out


def test_training_runs_end_to_end(tiny_run: Path, herniated: Path) -> None:
    entry, path = Registry(tiny_run / "weights").resolve("spinenode-herniation")
    assert entry.kind == "herniation" and 50_000 < path.stat().st_size < 2_000_000
    report = json.loads((tiny_run / "herniation_metrics.json").read_text())
    assert report["studies"] == 2 and report["crops_train"] > 0 and report["crops_val"] > 0
    assert set(report["temperatures"]) == {"type", "position", "hiz"}
    assert all(0.05 <= t <= 20 for t in report["temperatures"].values())
    ckpt = HerniationCheckpoint.load(path)
    assert set(ckpt.crop_offsets) == {"sag", "ax", "hiz"}
    # the crops are cached: one file per dataset, reused by the next run
    assert len(list((tiny_run / "crops").glob(f"{herniated.name}-*.npz"))) == 1


def test_calibration_moves_enriched_training_to_the_population() -> None:
    """Trained on enriched phantoms (HIZ at 40 % of the levels), a classifier's scores are
    calibrated to the population (10 %): the validation set is reweighted to the label
    frequencies of the non-enriched data and a bias fitted beside the temperature."""
    from models.train_herniation import fit_calibration, prior_weights

    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.4).astype(np.int64)  # enriched validation labels
    x = rng.normal(0.0, 1.0, n) + 1.5 * y  # one noisy score
    logits = np.stack([np.zeros(n), 2.0 * (1.5 * x - 1.125) + 2.0 * np.log(0.4 / 0.6)], axis=1)  # twice too sharp
    w = prior_weights(y, np.array([0.9, 0.1]), 2)
    assert w[y == 1].sum() / w.sum() == pytest.approx(0.1)
    t, bias = fit_calibration(logits, y, w, with_bias=True)
    assert bias is not None and t == pytest.approx(2.0, rel=0.15)
    z = logits / t + np.asarray(bias)
    p = np.exp(z[:, 1]) / np.exp(z).sum(axis=1)
    # the population's posterior of this score model: logit = 1.5 x - 1.125 + log(0.1 / 0.9)
    truth = 1.0 / (1.0 + np.exp(-(1.5 * x - 1.125 + np.log(0.1 / 0.9))))
    assert float(np.abs(p - truth).mean()) < 0.02
    t0, b0 = fit_calibration(logits, y, np.ones(n), with_bias=False)
    assert b0 is None and t0 == pytest.approx(2.0, rel=0.15)


def test_disc_frame_lays_a_tilted_disc_level() -> None:
    """The sagittal and HIZ crops are cut in the disc's frame: posterior across the spine
    axis, caudal along it, in the slice plane, whatever the tilt (here 30 degrees)."""
    from models.herniation import disc_frame
    from models.volume import Volume

    # sagittal slices: rows run posterior (+y), columns caudal (-z), slices along x
    vol = Volume("1.2", ("1", "2"), (1, 2), np.zeros((2, 8, 8), np.float32),
                 np.array([[0.0, 0, 0], [4.0, 0, 0]]), np.array([0.0, 1, 0, 0, 0, -1]), (1.0, 1.0))
    a = np.radians(30.0)
    axis = np.array([0.0, np.sin(a), np.cos(a)])  # towards the head, leaning posterior
    post, caudal = disc_frame(vol, axis)
    assert np.allclose(caudal, -axis) and abs(float(post @ axis)) < 1e-9
    assert post[1] > 0 and abs(post[0]) < 1e-9 and np.isclose(np.linalg.norm(post), 1.0)
    p0, c0 = disc_frame(vol, None)
    assert np.allclose(p0, [0, 1, 0]) and np.allclose(c0, [0, 0, -1])


def test_mirror_swaps_left_and_right() -> None:
    names = [HERNIATION_POSITIONS[i] for i in MIRROR_POSITION]
    assert names == ["central", "paracentral_right", "paracentral_left", "foraminal_right", "foraminal_left"]


def _weights(tmp: Path, herniation: Path | None) -> Path:
    """The shipped detector and grader (linked, not copied), with or without a herniation model."""
    reg = Registry(PACKAGE_WEIGHTS_DIR)
    tmp.mkdir()
    out = Registry(tmp)
    for kind in ("detector", "grader"):
        e = reg.entry_of_kind(kind)
        (tmp / e.file).symlink_to(reg.path_of(e))
        out.register(tmp / e.file, e.name, e.version, e.kind, file=e.file, meta=e.meta)
    if herniation is not None:
        e, path = Registry(herniation / "weights").resolve("spinenode-herniation")
        out.register(path, e.name, e.version, e.kind, file=e.file, meta=e.meta)
    return tmp


def test_analyzer_adds_findings_and_leaves_the_others(tiny_run: Path, herniated: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from models.analyzer import SpineAnalyzer

    monkeypatch.setenv("SPINENODE_YOLO_DIR", str(tmp_path / "yolo"))
    ds = rsna.read_dataset(herniated)
    sid = ds.study_ids[0]
    study = herniated / "train_images" / str(sid)
    plain = SpineAnalyzer.from_registry(_weights(tmp_path / "plain", None), device="cpu").analyze_dir(study)
    withh = SpineAnalyzer.from_registry(_weights(tmp_path / "with", tiny_run), device="cpu").analyze_dir(study)
    assert withh.findings.model.version == plain.findings.model.version + "+hrn-0.1.0"
    assert [lf.level for lf in withh.findings.levels] == [lf.level for lf in plain.findings.levels]
    assert len(plain.findings.levels) >= 4
    positions = focal = 0
    for a, b in zip(plain.findings.levels, withh.findings.levels):
        old = [g for g in b.grades if g.condition not in HERNIATION_CONDITIONS]
        assert old == list(a.grades)  # the existing findings, bit for bit
        assert not any(g.condition in HERNIATION_CONDITIONS for g in a.grades)
        kind = b.grade_of(Condition.DISC_HERNIATION)
        hiz = b.grade_of(Condition.HIGH_INTENSITY_ZONE)
        assert kind is not None and hiz is not None
        pos = b.grade_of(Condition.HERNIATION_POSITION)
        assert pos is None or kind.grade in ("protrusion", "extrusion")  # a position only for a focal one
        positions += pos is not None
        focal += kind.grade in ("protrusion", "extrusion")
        js = b.to_json()["findings"]
        assert set(js["disc_herniation"]["p"]) == {"none", "bulge", "protrusion", "extrusion"}
        assert set(js["high_intensity_zone"]["p"]) == {"absent", "present"}
    assert positions >= min(focal, 1)  # (a level whose axial slice misses the disc has none)
    assert plain.masks[0].segments == withh.masks[0].segments
    assert np.array_equal(plain.masks[0].labels, withh.masks[0].labels)


def test_model_without_axial_crop_reports_no_position(tiny_run: Path) -> None:
    from models.herniation import HerniationRequest

    e, path = Registry(tiny_run / "weights").resolve("spinenode-herniation")
    model = HerniationModel.from_file(path, e.model_id)
    rng = np.random.default_rng(0)
    sag = rng.random((5, 64, 64)).astype(np.float32)
    ax = rng.random((3, 64, 64)).astype(np.float32)
    hz = rng.random((3, 48, 48)).astype(np.float32)
    both, alone = model.probabilities([HerniationRequest(sag, ax, hz), HerniationRequest(sag, None, hz)])
    assert set(both) == {"type", "position", "hiz"} and set(alone) == {"type", "hiz"}
    for p in (*both.values(), *alone.values()):
        assert abs(float(p.sum()) - 1.0) < 1e-5


def _result(sid: int, per_level: dict[str, tuple[str, str | None, str]]) -> AnalysisResult:
    from models.types import Box

    lfs = []
    for name, (kind, pos, hiz) in per_level.items():
        def onehot(c: Condition, g: str) -> Grade:
            return Grade(c, tuple(0.9 if x == g else 0.1 / (len(c.grades) - 1) for x in c.grades))

        grades = [onehot(Condition.DISC_HERNIATION, kind), onehot(Condition.HIGH_INTENSITY_ZONE, hiz)]
        if pos is not None:
            grades.append(onehot(Condition.HERNIATION_POSITION, pos))
        lv = Level(name, "1.2", "1.2.3", 0, Box(0, 0, 1, 1), 0.9, (0.0, 0.0, 0.0))
        lfs.append(LevelFindings(lv, tuple(grades)))
    return AnalysisResult(Findings(str(sid), Region.LUMBAR, ModelId("m", "1"), tuple(lfs)))


def test_herniation_metrics_by_hand() -> None:
    from models.evaluate_herniation import herniation_metrics

    def lab(sid: int, lv: str, h: str, pos: str, hiz: bool) -> rsna.HerniationLabel:
        return rsna.HerniationLabel(sid, lv, h, pos, "none", 0.0, hiz)

    truth = {(1, "L1/L2"): lab(1, "L1/L2", "none", "", False),
             (1, "L2/L3"): lab(1, "L2/L3", "protrusion", "central", True),
             (1, "L3/L4"): lab(1, "L3/L4", "extrusion", "paracentral_left", False),
             (2, "L1/L2"): lab(2, "L1/L2", "bulge", "", True),
             (2, "L2/L3"): lab(2, "L2/L3", "protrusion", "foraminal_right", False)}
    outcomes = [
        (1, _result(1, {"L1-L2": ("none", None, "absent"), "L2-L3": ("protrusion", "central", "present"),
                        "L3-L4": ("protrusion", "paracentral_right", "present")})),
        (2, _result(2, {"L1-L2": ("none", None, "present")})),  # L2-L3 not found: missing
    ]
    m = herniation_metrics(truth, outcomes, None)
    assert m is not None and m["missing"] == 1
    assert m["type"]["n"] == 4 and m["type"]["accuracy"] == 0.5
    assert m["type"]["confusion"][1][0] == 1 and m["type"]["confusion"][3][2] == 1
    # F1 none: tp 1, fp 1 (the bulge) -> 2/3; protrusion: tp 1, fp 1 (the extrusion) -> 2/3
    assert m["type"]["f1"]["none"] == pytest.approx(2 / 3) and m["type"]["f1"]["protrusion"] == pytest.approx(2 / 3)
    assert m["type"]["f1"]["bulge"] == 0.0
    assert m["position"]["n"] == 2 and m["position"]["true_focal"] == 2 and m["position"]["accuracy"] == 0.5
    # HIZ: tp 2 (L2-L3, study 2 L1-L2), fp 1 (L3-L4), fn 0 -> precision 2/3, recall 1, F1 0.8
    assert m["hiz"]["precision"] == pytest.approx(2 / 3) and m["hiz"]["recall"] == 1.0
    assert m["hiz"]["f1"] == pytest.approx(0.8)
    assert herniation_metrics(truth, [(1, AnalysisResult(Findings("1", Region.LUMBAR, ModelId("m", "1"))))],
                              None) is None



def test_shipped_model_grades_a_herniated_phantom(herniated: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights in models/weights (sha256 in the manifest) load by default and grade the
    two fixture studies (every level a bulge, protrusion or extrusion, HIZ at about half),
    made at matrix 128, far coarser than the clinical sizes the model was trained on: a
    loose bar (the held-out numbers are in the model card)."""
    from models.analyzer import SpineAnalyzer, read_study_dir
    from models.evaluate_herniation import herniation_metrics

    monkeypatch.setenv("SPINENODE_YOLO_DIR", str(tmp_path / "yolo"))
    entry = Registry(PACKAGE_WEIGHTS_DIR).entry_of_kind("herniation")
    analyzer = SpineAnalyzer.from_registry(None, device="cpu")
    assert analyzer.herniation is not None and f"+hrn-{entry.version}" in analyzer.model_id.version
    ds = rsna.read_dataset(herniated)
    results = analyzer.analyze_many([(str(s), read_study_dir(herniated / "train_images" / str(s)), "lumbar")
                                     for s in ds.study_ids])
    m = herniation_metrics(rsna.read_herniation(herniated), list(zip(ds.study_ids, results)), None)
    assert m is not None and m["type"]["n"] >= 8 and m["missing"] <= 2
    called_none = m["type"]["confusion"]
    assert sum(row[0] for row in called_none[1:]) <= m["type"]["n"] // 2, m["type"]  # herniations seen as such
