"""Radiology reports written from phantom ground truth, for measuring the report reader.

``write_phantom_reports(out, n, seed, phrasings)`` draws the truth of phantom studies
``0 .. n-1`` of ``seed`` (:func:`models.phantom.pathology.sample_truth`, no images: the same
truth ``spinenode phantom`` renders for that seed) and writes:

``reports.csv``
    ``study_id,AccessionNumber,report``: one report per study in the chosen phrasings.
``train.csv``
    the true labels (RSNA layout), to compare with ``spinenode labels-from-reports --truth``.
``phantom_herniation.csv``
    the true disc herniation and HIZ of every level (``herniation``: the phantom preset the
    truth is drawn with, ``realistic`` by default; the stenosis truth is the same either
    way).

``phrasings``: ``dev`` (:mod:`.templates_dev`, what the reader was tuned on) or ``heldout``
(:mod:`.templates_heldout`, kept apart to measure how the reader does on phrasings it was not
tuned on).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from models import rsna
from models.phantom.config import HerniationFrequencies, PhantomConfig
from models.phantom.generate import study_id_for
from models.phantom.pathology import StudyTruth, sample_truth
from models.reports import templates_dev, templates_heldout

PHRASINGS = {"dev": templates_dev.write_report, "heldout": templates_heldout.write_report}
#: Random stream of the wording (the phantom uses streams 1-3).
_STREAM = 7


def report_for(truth: StudyTruth, seed: int, index: int, phrasings: str) -> str:
    rng = np.random.default_rng([int(seed), int(index), _STREAM, 0 if phrasings == "dev" else 1])
    return PHRASINGS[phrasings](truth, rng)


def write_phantom_reports(
    out: Path | str,
    n_studies: int,
    seed: int = 0,
    phrasings: str = "dev",
    start: int = 0,
    herniation: str = "realistic",
) -> Path:
    """Write ``reports.csv`` and the true ``train.csv`` for ``n_studies`` lumbar phantoms."""
    if phrasings not in PHRASINGS:
        raise ValueError(f"phrasings must be one of {sorted(PHRASINGS)}, not {phrasings!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = PhantomConfig(
        region="lumbar",
        modality="MR",
        herniation=HerniationFrequencies.preset(herniation, "lumbar"),
    )
    labels = []
    discs = []
    tmp = out / "reports.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["study_id", "AccessionNumber", "report"])
        for index in range(start, start + n_studies):
            truth = sample_truth(seed, index, config)
            sid = study_id_for(seed, index, "lumbar", "MR")
            w.writerow([sid, f"PH{sid}", report_for(truth, seed, index, phrasings)])
            labels.append(rsna.StudyLabels(sid, truth.grades()))
            discs += [
                rsna.HerniationLabel(
                    sid, lv, h.kind, h.position, h.migration, h.migration_mm, h.hiz
                )
                for lv, h in truth.herniation.items()
            ]
    tmp.replace(out / "reports.csv")
    rsna.write_labels(out, labels, region="lumbar")
    rsna.write_herniation(out, discs)
    return out / "reports.csv"
