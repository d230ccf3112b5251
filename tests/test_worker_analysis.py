"""The analyze stage reads pixels only for the series it selected; the rest as headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from workers import analysis


class _Recorder:
    """Stands in for the analyzer (our own component, not a peer) and keeps what it was given."""

    def __init__(self) -> None:
        self.series: dict[str, list[Any]] = {}

    def analyze(self, study_uid: str, series: Mapping[str, Sequence[Any]], region: str | None) -> str:
        self.series = {k: list(v) for k, v in series.items()}
        return f"analysed {study_uid}"


def test_pixels_are_read_for_the_selected_series_only(study_dir: Any) -> None:
    study = study_dir(seed=31)
    recorder = _Recorder()
    chosen = study.series_uids[0]
    out = analysis.run_analysis(recorder, study.study_uid, study.series_paths, "lumbar", {chosen})
    assert out == f"analysed {study.study_uid}"
    assert set(recorder.series) == set(study.series_uids)  # every series, for classification
    assert all("PixelData" in ds for ds in recorder.series[chosen])
    others = [ds for uid in study.series_uids if uid != chosen for ds in recorder.series[uid]]
    assert others and all("PixelData" not in ds for ds in others)
    # without a selection (callers that do not classify first) everything is read in full
    analysis.run_analysis(recorder, study.study_uid, study.series_paths, "lumbar")
    assert all("PixelData" in ds for v in recorder.series.values() for ds in v)


def test_the_analyze_stage_reads_each_file_once_and_hands_pixels_to_the_selection_only(
        study_dir: Any, tmp_path: Path) -> None:
    """workers/series.py: one read per file; classification sees headers only; the
    selected series get their pixel data back (read from the file only when used), the
    others none. A remote worker classifies from header-only files and reads the selected
    series again from the full files fetched afterwards."""
    from pydicom import dcmread

    from workers.series import classify, for_analysis, read_study

    import dicomgen

    study = study_dir(seed=32, series=(
        dicomgen.SeriesSpec("SAG T2 TSE", "sagittal", 9, "T2"), dicomgen.SeriesSpec("AX T2", "axial", 6, "T2"),
        dicomgen.SeriesSpec("COR STIR", "coronal", 5, "STIR")))  # a coronal series: not selected
    files = {uid: list(paths) for uid, paths in study.series_paths.items()}
    read = read_study(files)
    assert all("PixelData" not in ds for dss in read.datasets.values() for ds in dss)  # classified as headers
    classes, selection = classify(read)
    chosen = selection.series_uids()
    assert chosen and set(read.datasets) - chosen
    series, unreadable = for_analysis(read, selection, files)
    assert unreadable == {}
    for uid, dss in series.items():
        assert dss == read.datasets[uid] and all(a is b for a, b in zip(dss, read.datasets[uid]))  # not read again
        assert all(("PixelData" in ds) == (uid in chosen) for ds in dss)
    assert all(ds.pixel_array.shape == (ds.Rows, ds.Columns) for uid in chosen for ds in series[uid])

    # a remote worker: header-only files first, the full files of the selection later
    headers: dict[str, list[Path]] = {}
    for uid, paths in files.items():
        for p in paths:
            out = tmp_path / "headers" / uid / p.name
            out.parent.mkdir(parents=True, exist_ok=True)
            dcmread(p, stop_before_pixels=True).save_as(out, enforce_file_format=True)
            headers.setdefault(uid, []).append(out)
    remote = read_study(headers)
    assert classify(remote)[1] == selection
    series, unreadable = for_analysis(remote, selection, {**headers, **{uid: files[uid] for uid in chosen}})
    assert unreadable == {}
    assert all("PixelData" in ds for uid in chosen for ds in series[uid])
    assert all(len(series[uid]) == len(files[uid]) for uid in files)
