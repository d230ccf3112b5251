"""The durable spool: received bytes written atomically under DATA_DIR/incoming.

Layout: ``incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
A file appears under its final name only once its bytes are on disk (temp file,
fsync, rename, fsync of the directory), so a crash leaves at most a hidden
``.*.tmp`` file, which :meth:`Spool.remove_partials` deletes at start-up.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from scp_node.errors import InvalidUIDError, StorageError

log = logging.getLogger(__name__)

#: Digits and single dots, at most 64 characters (PS3.5 9.1). Leading zeros in a
#: component are tolerated: PACS send them, and they are harmless in a path.
_UID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")
TMP_SUFFIX = ".tmp"


def check_uid(value: object, attribute: str) -> str:
    """Return ``value`` as a UID safe to use as a path component.

    Raises
    ------
    InvalidUIDError
        If the value is missing, longer than 64 characters, or has anything
        but digits and single dots (so ``..``, ``/`` and NUL can never reach a path).
    """
    if value is None:
        raise InvalidUIDError(f"{attribute} missing")
    text = str(value).strip().rstrip("\x00").strip()
    if not text:
        raise InvalidUIDError(f"{attribute} empty")
    if len(text) > 64 or not _UID_RE.match(text):
        raise InvalidUIDError(f"{attribute} is not a valid UID ({len(text)} chars)")
    return text


class Spool:
    """Atomic writes of received instances below ``root``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "incoming"
        self.root.mkdir(parents=True, exist_ok=True)

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return Path("incoming") / study_uid / series_uid / f"{sop_uid}.dcm"

    def write(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write ``data`` atomically and durably; return the path relative to DATA_DIR.

        The UIDs must already have passed :func:`check_uid`.

        Raises
        ------
        StorageError
            On any OS error (ENOSPC, EIO, EACCES...); the temp file is removed.
        """
        rel = self.relative_path(study_uid, series_uid, sop_uid)
        atomic_write(self.data_dir / rel, data)
        return rel

    def absolute(self, rel: str | Path) -> Path:
        return self.data_dir / rel

    def remove_partials(self) -> int:
        """Delete temp files left by a crash; returns how many were removed."""
        removed = 0
        for path in self.root.rglob(f".*{TMP_SUFFIX}"):
            _unlink_quietly(path)
            removed += 1
        if removed:
            log.warning("removed %d partial spool files left by an interrupted write", removed)
        return removed

    def iter_instances(self) -> Iterator[Path]:
        """Every completed instance file in the spool."""
        for path in self.root.glob("*/*/*.dcm"):
            if not path.name.startswith("."):
                yield path


def atomic_write(final: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over ``final``, fsync the directory.

    Raises
    ------
    StorageError
        On any OS error (ENOSPC, EIO, EACCES...); the temp file is removed.
    """
    directory = final.parent
    tmp = directory / f".{final.stem}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        new_dir = not directory.is_dir()
        if new_dir:
            directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(directory)
        if new_dir:
            _fsync_dir(directory.parent)
            _fsync_dir(directory.parent.parent)
    except OSError as exc:
        _unlink_quietly(tmp)
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        raise StorageError(f"cannot write {final.name} ({name}: {exc.strerror})") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot remove %s: %s", path.name, exc.strerror)
