"""Load the headers of a study's series from the spool and classify them."""

from __future__ import annotations

import logging
from collections import defaultdict

from pydicom import dcmread
from sqlalchemy import select

from models.series import SeriesClass, SeriesSelection, classify_series, header_from_datasets, select_series
from spinenode.core.db.models import Instance, Series, Study, utcnow
from spinenode.core.db.session import Database
from spinenode.core.storage import Spool

log = logging.getLogger(__name__)


def classify_study(db: Database, spool: Spool, study_uid: str) -> tuple[list[SeriesClass], SeriesSelection]:
    """Read every series' headers (no pixels), classify, store on the series rows."""
    with db.session() as s:
        rows = s.execute(
            select(Series.series_uid, Instance.path)
            .join(Instance, Instance.series_id == Series.id)
            .join(Study, Study.id == Series.study_id)
            .where(Study.study_uid == study_uid)
        ).all()
    paths: dict[str, list[str]] = defaultdict(list)
    for series_uid, path in rows:
        paths[series_uid].append(path)
    classes: list[SeriesClass] = []
    for series_uid, files in paths.items():
        datasets = []
        for rel in files:
            try:
                datasets.append(dcmread(spool.absolute(rel), stop_before_pixels=True))
            except Exception as exc:  # an unreadable file is reported, the rest classified
                log.warning("series %s: header unreadable (%s)", series_uid, type(exc).__name__)
        if not datasets:
            continue
        classes.append(classify_series(header_from_datasets(datasets)))
    selection = select_series(classes)
    now = utcnow()
    with db.session() as s:
        for c in classes:
            row = s.execute(select(Series).where(Series.series_uid == c.series_uid)).scalar_one()
            row.classification = {**c.as_dict(), "role": selection.role_of(c.series_uid)}
            row.classified_at = now
    return classes, selection
