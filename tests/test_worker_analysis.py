"""The analyze stage reads pixels only for the series it selected; the rest as headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
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


def test_pixels_are_read_for_the_selected_series_only(study_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    study = study_dir(seed=31)
    recorder = _Recorder()
    monkeypatch.setattr(analysis, "load_analyzer", lambda settings: recorder)
    chosen = study.series_uids[0]
    out = analysis.run_analysis(SimpleNamespace(), study.study_uid, study.series_paths,  # type: ignore[arg-type]
                                "lumbar", {chosen})
    assert out == f"analysed {study.study_uid}"
    assert set(recorder.series) == set(study.series_uids)  # every series, for classification
    assert all("PixelData" in ds for ds in recorder.series[chosen])
    others = [ds for uid in study.series_uids if uid != chosen for ds in recorder.series[uid]]
    assert others and all("PixelData" not in ds for ds in others)
    # without a selection (callers that do not classify first) everything is read in full
    analysis.run_analysis(SimpleNamespace(), study.study_uid, study.series_paths, "lumbar")  # type: ignore[arg-type]
    assert all("PixelData" in ds for v in recorder.series.values() for ds in v)
