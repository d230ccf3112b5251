"""Warm the analyzer when a gpu-queue worker starts, so the first study is not the slow one.

Loading the weights is only part of a cold start: the first forward passes also pay for
torch's and ultralytics' lazy set-up (predictor, kernels, allocator). The warm-up loads
the analyzer into the worker's cache (``workers.analysis.AnalyzerCache``, held by the
worker's resources) and analyses
one small synthetic lumbar MR study (``models.phantom``), rendered in a temp dir, through
the same entry point the analyze stage uses. Failure to warm up is logged, never fatal:
the first task then fails or succeeds exactly as it would have.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from spinenode.core.errors import SpinenodeError
from spinenode.core.logs import log_failure
from spinenode.core.settings import Settings
from workers.analysis import AnalyzerCache

log = logging.getLogger(__name__)

#: In-plane matrix of the warm-up study: small, but through every stage of the analyzer.
WARMUP_MATRIX = 256


@dataclass(frozen=True, slots=True)
class Warmup:
    load_seconds: float
    first_pass_seconds: float
    levels: int


def warm_analyzer(settings: Settings, analyzers: AnalyzerCache) -> Warmup | None:
    """Load the analyzer into ``analyzers`` and run it once on a phantom; None when it
    could not be warmed."""
    t0 = time.perf_counter()
    try:
        analyzer = analyzers.get(settings)
    except SpinenodeError as exc:
        log.warning("analyzer not warmed up: %s", exc)
        return None
    t1 = time.perf_counter()
    try:
        from models.phantom.config import PhantomConfig
        from models.phantom.generate import generate_study

        with tempfile.TemporaryDirectory(prefix="spinenode-warmup-") as tmp:
            config = PhantomConfig(region="lumbar", modality="MR", matrix=WARMUP_MATRIX, thickness_blur=False)
            generate_study(tmp, seed=0, index=0, config=config, write_masks=False)
            t1 = time.perf_counter()
            result = analyzer.analyze_dir(Path(tmp) / "train_images")
    except Exception as exc:
        log_failure(log, "analyzer warm-up failed; the first study will load lazily", exc=exc)
        return None
    done = Warmup(t1 - t0, time.perf_counter() - t1, len(result.findings.levels))
    log.info("analyzer warmed up: loaded in %.1f s, first pass %.1f s (%d levels on the phantom)",
             done.load_seconds, done.first_pass_seconds, done.levels)
    return done
