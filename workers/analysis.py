"""The worker's side of the analyzer: load it once per process, convert outcomes.

``models`` raises its own errors; here they become the node's: a missing or
altered weights file is an operational failure (``AnalyzerUnavailableError`` ->
FAILED(analyze)); a study the models say they cannot read (``AnalyzerError``,
``VolumeError``) is a clinical outcome (a "not analysed" SR with the reason); any
other exception from the analyzer is a bug (``AnalyzerFailedError`` ->
FAILED(analyze) with the exception's type and where it was raised, retryable), never a
"not analysed" SR sent to the PACS.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from pydicom import dcmread

from spinenode.core.errors import AnalysisError, AnalyzerUnavailableError
from spinenode.core.logs import log_failure
from spinenode.core.settings import Settings

log = logging.getLogger(__name__)

#: Builds an analyzer for the settings and a weights directory (None: the shipped weights).
AnalyzerLoader = Callable[[Settings, Path | None], Any]


class AnalyzerFailedError(AnalysisError):
    """The analyzer raised something it does not raise on purpose: a bug, not the study."""


@dataclass(frozen=True, slots=True)
class SeriesRead:
    """The study's series as the analyzer gets them, and how many files each lost."""

    datasets: dict[str, list[Any]]
    #: series UID -> files that could not be read (left out of the analysis)
    unreadable: dict[str, int]


@dataclass(frozen=True, slots=True)
class NotAnalysed:
    """The study was triggered but cannot be analysed; ``reason`` is for the radiologist."""

    reason: str


def load_analyzer(settings: Settings, weights_dir: Path | None = None) -> Any:
    """A new SpineAnalyzer (sha256-checked weights, never downloaded); the worker keeps
    the one it uses in its :class:`AnalyzerCache`."""
    try:
        from models.analyzer import SpineAnalyzer
        from models.registry import WeightsError
    except ImportError as exc:
        raise AnalyzerUnavailableError(f"analyzer not installed: {exc}") from exc
    try:
        analyzer = SpineAnalyzer.from_registry(weights_dir, device=settings.device,
                                               herniation=settings.herniation_model)
    except WeightsError as exc:
        raise AnalyzerUnavailableError(f"analyzer weights unavailable: {exc}") from exc
    log.info("analyzer %s %s loaded on %s", analyzer.model_id.name, analyzer.model_id.version, settings.device)
    return analyzer


class AnalyzerCache:
    """The analyzers a worker process has loaded, one per (weights, device, herniation
    model), each loaded once. Held by the worker's resources (``workers/resources.py``)
    and handed to the stages in their context: no module-level state. ``load`` is the
    loader (:func:`load_analyzer`; a stand-in in tests)."""

    def __init__(self, load: AnalyzerLoader | None = None) -> None:
        self._load: AnalyzerLoader = load or load_analyzer
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str, bool], Any] = {}

    def get(self, settings: Settings, weights_dir: Path | None = None) -> Any:
        """The analyzer for these settings, loaded on first use."""
        key = (str(weights_dir or ""), settings.device, bool(settings.herniation_model))
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = self._load(settings, weights_dir)
            return self._loaded[key]

    def __len__(self) -> int:
        return len(self._loaded)


def read_series(series_files: Mapping[str, Sequence[Path]], selected: Collection[str] | None = None) -> SeriesRead:
    """Pixels for the ``selected`` series only (all when None); the others as headers, so
    that the analyzer's own classification (and what it reports missing) sees the whole
    study without loading localisers and unused sequences."""
    series: dict[str, list[Any]] = {}
    unreadable: dict[str, int] = {}
    for uid, files in series_files.items():
        headers_only = selected is not None and uid not in selected
        datasets = []
        for f in files:
            try:
                datasets.append(dcmread(f, stop_before_pixels=headers_only))
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:  # one unreadable file costs that image, not the series
                log.warning("series %s: a file is unreadable (%s): left out of the analysis", uid,
                            type(exc).__name__)
                unreadable[uid] = unreadable.get(uid, 0) + 1
        if datasets:
            series[uid] = datasets
    return SeriesRead(series, unreadable)


def analyse(analyzer: Any, study_uid: str, series: Mapping[str, Sequence[Any]], region: str | None,
            selection: Any | None = None) -> Any:
    """AnalysisResult, or NotAnalysed(reason) when the models say they cannot read this study.

    With the ``selection`` (``models.series.SeriesSelection``) the caller classified and
    selected the series already: the analyzer uses it and does not classify again.

    A series the analyzer cannot read costs only the conditions it serves (the findings'
    ``missing`` lines say which and why; models/analyzer.py); the study is "not analysed"
    only when no level can be located at all (the analyze stage decides) or the models
    refuse it (``AnalyzerError``, ``VolumeError``). Anything else raised inside the
    analyzer is a bug: :class:`AnalyzerFailedError`, and the stage fails.
    """
    from models.analyzer import AnalyzerError
    from models.volume import VolumeError

    try:
        if selection is None:
            return analyzer.analyze(study_uid, series, region)
        return analyzer.analyze_selected(study_uid, series, selection, region)
    except (AnalyzerError, VolumeError) as exc:
        return NotAnalysed(str(exc))
    except SoftTimeLimitExceeded:
        raise  # the stage's time is up (workers/timelimit.py): not the analyzer's fault
    except Exception as exc:
        # The traceback goes to the log (frames only: no patient data); the stage records
        # the type and the place, and the study can be retried once the bug is fixed.
        log_failure(log, "study %s: the analyzer failed unexpectedly", study_uid, exc=exc)
        raise AnalyzerFailedError(
            f"the analyzer failed unexpectedly: {type(exc).__name__}{_raised_at(exc)} "
            "(a bug, not the study; details in the worker log)"
        ) from exc


def analyse_many(analyzer: Any, studies: Sequence[tuple[str, Mapping[str, Sequence[Any]], str | None]],
                 selections: Sequence[Any] | None = None) -> list[Any]:
    """:func:`analyse` for several studies in one batched analyzer pass
    (``SpineAnalyzer.analyze_batch``): per study, in order, its AnalysisResult, NotAnalysed,
    or the AnalyzerFailedError :func:`analyse` would raise for it. A study's outcome does
    not depend on the others. An analyzer without ``analyze_batch`` (a stand-in) is called
    study by study. ``selections``: each study's ``models.series.SeriesSelection`` when the
    caller classified already (the analyzer does not classify again)."""
    from models.analyzer import AnalyzerError
    from models.volume import VolumeError

    chosen = list(selections) if selections is not None else [None] * len(studies)
    if hasattr(analyzer, "analyze_batch"):
        results = list(analyzer.analyze_batch(list(studies), chosen))
    else:
        results = []
        for (uid, series, region), selection in zip(studies, chosen, strict=True):
            try:
                results.append(analyzer.analyze(uid, series, region) if selection is None
                               else analyzer.analyze_selected(uid, series, selection, region))
            except Exception as exc:  # noqa: BLE001 - kept in the study's slot, as analyze_batch does
                results.append(exc)
    for result in results:
        if isinstance(result, SoftTimeLimitExceeded):
            raise result  # the stage's time is up (workers/timelimit.py): not the analyzer's fault
    out: list[Any] = []
    for (study_uid, _, _), result in zip(studies, results):
        if isinstance(result, (AnalyzerError, VolumeError)):
            out.append(NotAnalysed(str(result)))
        elif isinstance(result, Exception):
            log_failure(log, "study %s: the analyzer failed unexpectedly", study_uid, exc=result)
            out.append(AnalyzerFailedError(
                f"the analyzer failed unexpectedly: {type(result).__name__}{_raised_at(result)} "
                "(a bug, not the study; details in the worker log)"))
        else:
            out.append(result)
    return out


def _raised_at(exc: BaseException) -> str:
    """' at models/x.py:12', the innermost frame in the project's packages ('' if none)."""
    import traceback

    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        parts = Path(frame.filename).parts
        for pkg in ("models", "workers", "scp_node", "spinenode"):
            if pkg in parts:
                rel = "/".join(parts[len(parts) - 1 - parts[::-1].index(pkg):])
                where = f" at {rel}:{frame.lineno}"
                break
    return where


def run_analysis(
    analyzer: Any, study_uid: str, series_files: Mapping[str, Sequence[Path]], region: str | None,
    selected: Collection[str] | None = None,
) -> Any:
    """:func:`read_series` then :func:`analyse` with ``analyzer`` (an
    :class:`AnalyzerCache`'s, or :func:`load_analyzer`'s): AnalysisResult or NotAnalysed."""
    return analyse(analyzer, study_uid, read_series(series_files, selected).datasets, region)


def model_identity() -> tuple[str, str]:
    """(name, version) to label results when no analyzer ran."""
    try:
        from models.analyzer import ALGORITHM_NAME
    except ImportError:
        return "spinenode-spine", "unavailable"
    return ALGORITHM_NAME, "not-run"
