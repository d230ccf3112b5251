"""Logging policy of every spinenode process (node, SCP workers, Celery workers).

Library modules only call ``logging.getLogger(__name__)``; entry points call
:func:`configure_logging` once. Logs carry UIDs, AE titles and states, never
patient names, IDs or birth dates.

Libraries do not know that rule: highdicom warns ``The string "DOE JOHN" is
unlikely to represent the intended person name``, pydicom's warnings and log
lines quote element values. :func:`install_redaction` (called by
:func:`configure_logging`, so every process gets it) reduces every Python
warning to its category and source location, and every record of the DICOM
libraries' loggers to its level and location; the location is enough to look
the message up in the library's source.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from spinenode.core.settings import Settings

#: Loggers whose messages may quote DICOM element values; their text is withheld.
VALUE_QUOTING_LOGGERS = ("pydicom", "highdicom")
WITHHELD = "message withheld: it may quote DICOM values"


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
    install_redaction()


def _short_path(filename: str) -> str:
    """``highdicom/valuerep.py`` rather than the absolute path into site-packages."""
    marker = "site-packages/"
    return filename.rsplit(marker, 1)[-1] if marker in filename else filename


def redacted_formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                           line: str | None = None) -> str:
    """What :func:`warnings.formatwarning` would say, without the warning's text."""
    return f"{_short_path(filename)}:{lineno}: {category.__name__} ({WITHHELD})\n"


def _redact_record(record: logging.LogRecord) -> None:
    record.msg = "%s at %s:%d (%s)"
    record.args = (record.levelname.lower(), _short_path(record.pathname), record.lineno, WITHHELD)
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None


def install_redaction() -> None:
    """Withhold the text of warnings and of DICOM-library log records in this process.

    Idempotent. Warnings go to the ``py.warnings`` logger (Celery does the same when it
    starts a worker) in the redacted form of :func:`redacted_formatwarning`; a record
    factory rewrites records of :data:`VALUE_QUOTING_LOGGERS` and their children however
    the handlers are set up later (Celery, uvicorn).
    """
    warnings.formatwarning = redacted_formatwarning
    logging.captureWarnings(True)
    base = logging.getLogRecordFactory()
    if getattr(base, "redacts_dicom_values", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        name = record.name
        if any(name == n or name.startswith(n + ".") for n in VALUE_QUOTING_LOGGERS):
            _redact_record(record)
        return record

    factory.redacts_dicom_values = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def log_failure(logger: logging.Logger, message: str, *args: object, exc: BaseException) -> None:
    """Log an unexpected failure with the exception type and the stack frames, but not the
    exception's message: messages from pydicom and friends can quote element values,
    which may be patient data. The frames (file, line, code) are enough to find a bug."""
    import traceback

    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error(message + " (%s)\n%s", *args, type(exc).__name__, frames.rstrip())
