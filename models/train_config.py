"""What a training run is given (:class:`TrainConfig`) and the progress bar the trainers share.

Both trainers (``models.train`` for the detector and the grader's data,
``models.train_grader`` for the grading network) depend on this module and not
on each other's, so the two import one way: ``train`` -> ``train_grader`` -> here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """One training run; ``data`` may name several datasets (e.g. lumbar MR, cervical MR, cervical CT)."""

    data: tuple[Path, ...]
    out: Path
    epochs: int
    device: str = "cpu"
    seed: int = 0
    val_fraction: float = 0.15
    workers: int = 1
    batch: int = 0  # 0: a default per trainer
    imgsz: int = 384
    version: str = "0.1.0"
    max_studies: int | None = None
    max_hours: float | None = None  # detector: stop after this much training time (ultralytics ``time``)
    copies: int = 3  # grader: crops per level and series, the first unjittered
    #: herniation: datasets of ``data`` made with enriched label frequencies (trained on; the
    #: calibration reweights them to the label frequencies of the others)
    enriched: tuple[Path, ...] = ()


def progress_bar() -> Any:
    """A rich progress bar (rich is imported only when a bar is shown)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=False)
