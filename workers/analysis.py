"""The worker's side of the analyzer: load it once per process, convert outcomes.

``models`` raises its own errors; here they become the node's: a missing or
altered weights file is an operational failure (``AnalyzerUnavailableError`` ->
FAILED(analyze)), a study the models cannot read is a clinical outcome (a
"not analysed" SR with the reason).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread

from spinenode.core.logs import log_failure
from spinenode.core.errors import AnalyzerUnavailableError
from spinenode.core.settings import Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True, slots=True)
class NotAnalysed:
    """The study was triggered but cannot be analysed; ``reason`` is for the radiologist."""

    reason: str


def load_analyzer(settings: Settings, weights_dir: Path | None = None) -> Any:
    """The process's SpineAnalyzer (loaded once; sha256-checked weights, never downloaded)."""
    key = (str(weights_dir or ""), settings.device)
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            from models.analyzer import SpineAnalyzer
            from models.registry import WeightsError
        except ImportError as exc:
            raise AnalyzerUnavailableError(f"analyzer not installed: {exc}") from exc
        try:
            analyzer = SpineAnalyzer.from_registry(weights_dir, device=settings.device)
        except WeightsError as exc:
            raise AnalyzerUnavailableError(f"analyzer weights unavailable: {exc}") from exc
        log.info("analyzer %s %s loaded on %s", analyzer.model_id.name, analyzer.model_id.version, settings.device)
        _cache[key] = analyzer
        return analyzer


def run_analysis(
    settings: Settings, study_uid: str, series_files: Mapping[str, Sequence[Path]], region: str | None,
    selected: Collection[str] | None = None,
) -> Any:
    """AnalysisResult, or NotAnalysed(reason) when the models cannot read this study.

    Pixels are read for the ``selected`` series only (all when None); the others are
    read as headers, so that the analyzer's own classification (and what it reports
    missing) sees the whole study without loading localisers and unused sequences.
    A series the analyzer cannot read costs only the conditions it serves (the
    findings' ``missing`` lines say which and why); the study is "not analysed" only
    when no level can be located at all.
    """
    from models.analyzer import AnalyzerError

    analyzer = load_analyzer(settings)
    series: dict[str, list[Any]] = {}
    for uid, files in series_files.items():
        headers_only = selected is not None and uid not in selected
        datasets = []
        for f in files:
            try:
                datasets.append(dcmread(f, stop_before_pixels=headers_only))
            except Exception as exc:  # one unreadable file costs that image, not the series
                log.warning("series %s: a file is unreadable (%s): left out of the analysis", uid,
                            type(exc).__name__)
        if datasets:
            series[uid] = datasets
    try:
        return analyzer.analyze(study_uid, series, region)
    except AnalyzerError as exc:
        return NotAnalysed(str(exc))
    except Exception as exc:
        # Undecodable or missing pixels, a transfer syntax that lies about its data, absurd
        # geometry: the study is not analysable as sent, and the radiologist is told so.
        # The traceback goes to the log (no patient data in it) in case it is our bug.
        log_failure(log, "study %s: the analyzer could not read the images", study_uid, exc=exc)
        return NotAnalysed(f"images could not be read ({type(exc).__name__})")


def model_identity() -> tuple[str, str]:
    """(name, version) to label results when no analyzer ran."""
    try:
        from models.analyzer import ALGORITHM_NAME
    except ImportError:
        return "spinenode-spine", "unavailable"
    return ALGORITHM_NAME, "not-run"
