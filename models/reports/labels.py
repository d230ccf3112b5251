"""Reports CSV in, RSNA 2024 layout out.

Input: a CSV with one report per row, a text column (``report``, ``text``,
``report_text``, ``findings`` or ``impression``; the first found) and a key column: ``study_id``
(an RSNA-style integer), ``StudyInstanceUID``/``study_uid`` or ``AccessionNumber``/``accession``/
``accession_number`` (header names are matched case-insensitively).

Output in ``OUT``:

``train.csv``
    ``study_id`` + the region's target columns (``models.rsna``), empty where the report
    says nothing about that condition at that level.
``report_labels.csv``
    ``study_id,key,condition,level,grade,confidence,sentence``: one row per label with the
    sentence it was read from.
``report_discs.csv``
    ``study_id,key,level,herniation,position,migration,hiz,confidence,sentence``: disc
    herniation (``none``/``bulge``/``protrusion``/``extrusion``, empty: not said), position,
    migration and high-intensity zone (1/0, empty: not said) of every level the report
    describes (:mod:`models.reports.discs`).
``report_studies.csv``
    ``study_id,key,key_column,labels``: which report became which integer study id
    (``study_id`` as given; else the key itself when it is all digits; else the first
    12 decimal digits of the key's SHA-256, so reruns give the same ids).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from models import rsna
from models.reports.discs import DiscLabel, read_discs
from models.reports.parser import Label, read_report

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("report", "text", "report_text", "findings", "impression")
KEY_COLUMNS = (
    "study_id",
    "studyinstanceuid",
    "study_uid",
    "study_instance_uid",
    "accessionnumber",
    "accession_number",
    "accession",
)

csv.field_size_limit(16 * 1024 * 1024)


class ReportsFileError(ValueError):
    """The reports CSV lacks a text or key column, or repeats a key."""


@dataclass(frozen=True)
class Report:
    study_id: int
    key: str
    key_column: str
    text: str


@dataclass(frozen=True)
class ReportLabels:
    report: Report
    labels: tuple[Label, ...]
    discs: tuple[DiscLabel, ...] = ()


def study_id_of(key: str) -> int:
    """Integer study id of a report key: the key when it is all digits (<= 18 of them),
    else 12 digits of its SHA-256."""
    k = key.strip()
    if k.isdigit() and len(k) <= 18:
        return int(k)
    return int(hashlib.sha256(k.encode()).hexdigest(), 16) % 10**12


def read_reports(path: Path | str) -> list[Report]:
    """Read the reports CSV (see module doc); raises :class:`ReportsFileError`."""
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
        text_col = next((header[c] for c in TEXT_COLUMNS if c in header), None)
        key_col = next((header[c] for c in KEY_COLUMNS if c in header), None)
        if text_col is None or key_col is None:
            raise ReportsFileError(
                f"{Path(path).name}: needs a text column ({', '.join(TEXT_COLUMNS)}) and a key "
                f"column (study_id, StudyInstanceUID or AccessionNumber)"
            )
        out: list[Report] = []
        seen: dict[int, str] = {}
        for n, row in enumerate(reader, start=2):
            key = (row.get(key_col) or "").strip()
            if not key:
                raise ReportsFileError(f"{Path(path).name} line {n}: empty {key_col}")
            sid = study_id_of(key)
            if sid in seen:
                raise ReportsFileError(
                    f"{Path(path).name} line {n}: {key_col} repeats an "
                    f"earlier report (study id {sid})"
                )
            seen[sid] = key
            out.append(Report(sid, key, key_col, row.get(text_col) or ""))
    return out


def extract(reports: Iterable[Report], region: str = "lumbar") -> list[ReportLabels]:
    return [
        ReportLabels(r, tuple(read_report(r.text, region)), tuple(read_discs(r.text, region)))
        for r in reports
    ]


def grades_of(labels: Sequence[Label]) -> dict[str, str | None]:
    return {rsna.target_column(lb.condition, lb.level): lb.grade for lb in labels}


def write_outputs(out: Path | str, results: Sequence[ReportLabels], region: str = "lumbar") -> None:
    """Write train.csv, report_labels.csv, report_discs.csv and report_studies.csv (see
    module doc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rsna.write_labels(
        out,
        [rsna.StudyLabels(r.report.study_id, grades_of(r.labels)) for r in results],
        region=region,
    )
    _write(
        out / "report_labels.csv",
        ["study_id", "key", "condition", "level", "grade", "confidence", "sentence"],
        (
            [
                r.report.study_id,
                r.report.key,
                lb.condition,
                lb.level,
                lb.grade,
                f"{lb.confidence:.3f}",
                lb.sentence,
            ]
            for r in results
            for lb in r.labels
        ),
    )
    _write(
        out / "report_discs.csv",
        [
            "study_id",
            "key",
            "level",
            "herniation",
            "position",
            "migration",
            "hiz",
            "confidence",
            "sentence",
        ],
        (
            [
                r.report.study_id,
                r.report.key,
                d.level,
                d.herniation or "",
                d.position,
                d.migration,
                "" if d.hiz is None else int(d.hiz),
                f"{d.confidence:.3f}",
                d.sentence,
            ]
            for r in results
            for d in r.discs
        ),
    )
    _write(
        out / "report_studies.csv",
        ["study_id", "key", "key_column", "labels"],
        ([r.report.study_id, r.report.key, r.report.key_column, len(r.labels)] for r in results),
    )
    log.info("labels from %d reports written to %s", len(results), out)


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def read_truth(root: Path | str) -> dict[int, Mapping[str, str | None]]:
    """``train.csv`` of a dataset root as study id -> target column -> grade."""
    return {sid: s.grades for sid, s in rsna.read_labels(Path(root) / "train.csv").items()}
