"""The gpu-queue worker warms the analyzer at start: weights loaded into the worker's
analyzer cache and one real pass over a phantom study, so the first study's task does
neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinenode.core.settings import load_settings
from workers import analysis
from workers.warmup import warm_analyzer


@pytest.mark.timeout(600)
def test_warm_analyzer_loads_and_runs_the_models_once(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, device="cpu")
    loads: list[object] = []

    def load(s: object, weights_dir: object) -> object:
        loads.append(analysis.load_analyzer(s, weights_dir))  # type: ignore[arg-type]
        return loads[-1]

    cache = analysis.AnalyzerCache(load)
    done = warm_analyzer(settings, cache)
    assert done is not None and done.levels >= 4  # the phantom's discs were found and graded
    assert len(cache) == 1 and len(loads) == 1
    assert cache.get(settings) is loads[0] and len(loads) == 1  # the stage reuses it, not loaded again


def test_warm_up_without_weights_is_logged_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from spinenode.core.errors import AnalyzerUnavailableError

    def unavailable(settings: object, weights_dir: object = None) -> object:
        raise AnalyzerUnavailableError("analyzer weights unavailable: no manifest")

    cache = analysis.AnalyzerCache(unavailable)
    assert warm_analyzer(load_settings(data_dir=tmp_path, device="cpu"), cache) is None
    assert len(cache) == 0
    assert "not warmed up" in caplog.text
