"""The gpu-queue worker warms the analyzer at start: weights loaded into the process cache
and one real pass over a phantom study, so the first study's task does neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinenode.core.settings import load_settings
from workers import analysis
from workers.warmup import warm_analyzer


@pytest.mark.timeout(600)
def test_warm_analyzer_loads_and_runs_the_models_once(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, device="cpu")
    analysis._cache.clear()
    done = warm_analyzer(settings)
    assert done is not None and done.levels >= 4  # the phantom's discs were found and graded
    cached = dict(analysis._cache)
    assert len(cached) == 1
    assert analysis.load_analyzer(settings) is next(iter(cached.values()))  # the stage reuses it


def test_warm_up_without_weights_is_logged_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from spinenode.core.errors import AnalyzerUnavailableError

    def unavailable(settings: object, weights_dir: object = None) -> object:
        raise AnalyzerUnavailableError("analyzer weights unavailable: no manifest")

    monkeypatch.setattr(analysis, "load_analyzer", unavailable)
    assert warm_analyzer(load_settings(data_dir=tmp_path, device="cpu")) is None
    assert "not warmed up" in caplog.text
