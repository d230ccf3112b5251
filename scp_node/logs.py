"""Logging policy of every spinenode process (node, SCP workers, Celery workers).

Library modules only call ``logging.getLogger(__name__)``; entry points call
:func:`configure_logging` once. Logs carry UIDs, AE titles and states, never
patient names, IDs or birth dates.
"""

from __future__ import annotations

import logging
import sys

from scp_node.settings import Settings


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every PDU at INFO, including patient-level identifiers in
    # debug dumps: keep it at WARNING unless the operator asks for DEBUG.
    # highdicom narrates every object it builds at INFO: keep the node's log about the node.
    if settings.log_level != "DEBUG":
        for name in ("pynetdicom", "alembic", "highdicom"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # pydicom's value-validation warnings quote the offending value, which may be a
    # patient name: values are never validated on read (the node stores bytes as sent).
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def log_failure(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """Log an unexpected failure with the exception type and the stack frames, but not the
    exception's message: messages from pydicom and friends can quote element values,
    which may be patient data. The frames (file, line, code) are enough to find a bug."""
    import traceback

    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error(message + " (%s)\n%s", *args, type(exc).__name__, frames.rstrip())
