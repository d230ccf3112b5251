"""The weights registry refuses unknown or altered weights and never downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.registry import (
    AlteredWeightsError, PACKAGE_WEIGHTS_DIR, Registry, UnknownWeightsError, WeightsEntry, sha256_of,
)


def _reg(tmp_path: Path) -> tuple[Registry, Path]:
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights-v1")
    reg = Registry(tmp_path / "weights")
    reg.register(src, "det", "0.1.0", "detector", file="det.bin", meta={"imgsz": 256})
    return reg, reg.root / "det.bin"


def test_resolve_verified(tmp_path: Path) -> None:
    reg, path = _reg(tmp_path)
    entry, got = reg.resolve("det")
    assert got == path and entry.meta == {"imgsz": 256}
    assert entry.sha256 == sha256_of(path)
    assert reg.entry_of_kind("detector").model_id.version == "0.1.0"


def test_unknown_refused(tmp_path: Path) -> None:
    reg, _ = _reg(tmp_path)
    with pytest.raises(UnknownWeightsError):
        reg.resolve("grader")
    with pytest.raises(UnknownWeightsError):
        reg.resolve("det", "9.9.9")
    with pytest.raises(UnknownWeightsError):
        Registry(tmp_path / "empty").resolve("det")


def test_altered_refused(tmp_path: Path) -> None:
    reg, path = _reg(tmp_path)
    path.write_bytes(b"weights-v2")
    with pytest.raises(AlteredWeightsError):
        reg.resolve("det")
    path.unlink()
    with pytest.raises(AlteredWeightsError):
        reg.resolve("det")


def test_path_escape_refused(tmp_path: Path) -> None:
    reg, path = _reg(tmp_path)
    data = json.loads(reg.manifest_path.read_text())
    data["models"][0]["file"] = "../w.bin"
    data["models"][0]["sha256"] = sha256_of(tmp_path / "w.bin")
    reg.manifest_path.write_text(json.dumps(data))
    with pytest.raises(AlteredWeightsError):
        reg.resolve("det")


def test_latest_version_wins(tmp_path: Path) -> None:
    reg, _ = _reg(tmp_path)
    src = tmp_path / "w2.bin"
    src.write_bytes(b"weights-v10")
    reg.register(src, "det", "0.10.0", "detector", file="det10.bin")
    assert reg.entry("det").version == "0.10.0"
    assert reg.entry("det", "0.1.0").file == "det.bin"


def test_shipped_manifest_entries_verify() -> None:
    """Every weights file the package ships matches its manifest."""
    reg = Registry(PACKAGE_WEIGHTS_DIR)
    for entry in reg.entries():
        assert isinstance(entry, WeightsEntry)
        assert reg.path_of(entry).is_file()
