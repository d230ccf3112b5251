"""The training commands produce weights, a registry entry, metrics JSON and plots."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.registry import Registry
from models.train import TrainConfig, train_detector, train_grader
from test_models_synth import make_dataset

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def test_train_grader_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    make_dataset(data, n_studies=2)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="models.train_grader"):
        report = train_grader(TrainConfig(data=(data,), out=out, epochs=1, device="cpu", val_fraction=0.5))
    # one log line per epoch (rich's bars draw nothing into a log file)
    assert any(r.getMessage().startswith("grader epoch 1/1: train loss ") for r in caplog.records)
    assert report["crops_train"] > 0 and report["crops_val"] > 0
    assert set(report["crop_offsets_mm"]) == {"left", "right", "sub_left", "sub_right", "sag_t2"}
    for name in ("grader.pt", "grader_metrics.json", "grader_curves.png", "grader_confusion.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "grader_metrics.json").read_text())
    assert "spinal_canal" in metrics["val"] and metrics["epochs"] == 1
    entry, path = Registry(out / "weights").resolve("spinenode-grader")
    assert entry.kind == "grader" and path.stat().st_size > 1_000_000


def test_train_detector_and_cli(tmp_path: Path) -> None:
    """One epoch of YOLO-seg from scratch through the CLI (about 30 s on 2 cores)."""
    import typer

    from models.cli import register

    data = tmp_path / "data"
    make_dataset(data, n_studies=2, axial=False)
    os.environ["SPINENODE_YOLO_DIR"] = str(tmp_path / "yolo")
    app = typer.Typer()
    register(app)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "detector", "--data", str(data), "--out", str(out),
                                   "--epochs", "1", "--device", "cpu", "--imgsz", "128", "--batch", "2"])
    assert res.exit_code == 0, res.output
    entry, path = Registry(out / "weights").resolve("spinenode-detector")
    assert entry.meta["imgsz"] == 128
    assert (out / "detector_metrics.json").is_file()
    assert (out / "detector_run" / "results.csv").is_file()


def test_train_detector_writes_yolo_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The detector trainer's data step, with ultralytics' train call replaced by a stub."""
    data = tmp_path / "data"
    make_dataset(data, n_studies=2, axial=False)
    calls: dict[str, object] = {}

    class _Model:
        def __init__(self, cfg: str, task: str) -> None:
            calls["cfg"] = cfg

        def train(self, **kwargs: object) -> object:
            calls.update(kwargs)
            run = Path(str(kwargs["project"])) / str(kwargs["name"]) / "weights"
            run.mkdir(parents=True)
            (run / "best.pt").write_bytes(b"stub")
            return type("R", (), {"results_dict": {"metrics/mAP50(B)": 0.5}})()

    class _UL:
        YOLO = _Model

    monkeypatch.setattr("models.offline.load_ultralytics", lambda *a, **k: _UL)
    out = tmp_path / "run"
    report = train_detector(TrainConfig(data=(data,), out=out, epochs=3, device="cpu", val_fraction=0.5))
    assert calls["cfg"] == "yolov8n-seg.yaml" and calls["amp"] is False and calls["epochs"] == 3
    assert report["images"] == 6  # 2 studies x (middle slice and its two neighbours)
    assert (out / "yolo_data" / "dataset.yaml").read_text().count("L4-L5") == 1
    assert Registry(out / "weights").entry("spinenode-detector").meta["imgsz"] == 384
