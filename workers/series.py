"""Read a study's files once, classify its series, and hand the selection on with pixels.

The analyze stage reads every file of the study once (:func:`read_study`): the header
is parsed, the pixel data left in the file (read when the analyzer asks for it) and
set aside, so that classification (``models/series.py``) sees headers only and never
decodes pixels. :func:`for_analysis` gives the selected series their pixel data back
and the others none. Only a remote worker reads a selected file twice: its first read
was the header-only file from the node, and the full file is fetched after
the classification chose its series.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from celery.exceptions import SoftTimeLimitExceeded
from pydicom import dcmread
from pydicom.dataset import Dataset

from models.series import (
    SeriesClass,
    SeriesSelection,
    classify_series,
    header_from_datasets,
    select_series,
)

log = logging.getLogger(__name__)

#: Values longer than this (bytes) stay in the file until used (pydicom ``defer_size``).
DEFER_SIZE: Final = 65536
#: The pixel data elements set aside while the series are classified.
PIXEL_TAGS: Final = (0x7FE00008, 0x7FE00009, 0x7FE00010)


@dataclass(frozen=True, slots=True)
class StudyRead:
    """Every readable file of a study, read once, its pixel data set aside."""

    #: series UID -> the files asked for (in instance order)
    files: dict[str, list[Path]]
    #: series UID -> the datasets read (headers; no pixel data element)
    datasets: dict[str, list[Dataset]]
    #: series UID -> files that could not be read (left out)
    unreadable: dict[str, int]
    #: id(dataset) -> its pixel data elements, still in the file where pydicom deferred them
    pixels: dict[int, list[Any]] = field(default_factory=dict)


def _read(path: Path, series_uid: str) -> Dataset | None:
    try:
        return dcmread(path, defer_size=DEFER_SIZE)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # one unreadable file costs that image, not the series
        log.warning("series %s: a file is unreadable (%s): left out", series_uid, type(exc).__name__)
        return None


def read_study(files: Mapping[str, Sequence[Path]]) -> StudyRead:
    """Read each file once; the pixel data elements are set aside (not loaded)."""
    read = StudyRead({uid: list(paths) for uid, paths in files.items()}, {}, {})
    for uid, paths in files.items():
        datasets = []
        for path in paths:
            ds = _read(path, uid)
            if ds is None:
                read.unreadable[uid] = read.unreadable.get(uid, 0) + 1
                continue
            held = [ds.get_item(tag, keep_deferred=True) for tag in PIXEL_TAGS if tag in ds]
            for tag in PIXEL_TAGS:
                if tag in ds:
                    del ds[tag]
            read.pixels[id(ds)] = held
            datasets.append(ds)
        if datasets:
            read.datasets[uid] = datasets
    return read


def classify(read: StudyRead) -> tuple[list[SeriesClass], SeriesSelection]:
    """Classify every series once from the headers read, and select the analyzer's inputs."""
    classes = [classify_series(header_from_datasets(datasets)) for datasets in read.datasets.values()]
    return classes, select_series(classes)


def for_analysis(read: StudyRead, selection: SeriesSelection,
                 files_now: Mapping[str, Sequence[Path]]) -> tuple[dict[str, list[Dataset]], dict[str, int]]:
    """The study as the analyzer gets it: the selected series with their pixel data, the
    others as headers; and the unreadable files per series.

    ``files_now`` are the study's files as this host reads them after the selected series
    were fetched: a selected series read from other files (header-only files of a remote
    worker) is read again, in full, from these."""
    selected = selection.series_uids()
    datasets: dict[str, list[Dataset]] = {}
    unreadable = dict(read.unreadable)
    for uid, dss in read.datasets.items():
        if uid in selected and [Path(p) for p in files_now.get(uid, ())] != read.files[uid]:
            fresh = [ds for p in files_now[uid] if (ds := _read(Path(p), uid)) is not None]
            unreadable.pop(uid, None)
            if len(fresh) < len(files_now[uid]):
                unreadable[uid] = len(files_now[uid]) - len(fresh)
            if fresh:
                datasets[uid] = fresh
            continue
        if uid in selected:
            for ds in dss:
                for elem in read.pixels.get(id(ds), ()):
                    ds[elem.tag] = elem
        datasets[uid] = dss
    return datasets, unreadable
