"""The durable spool: received bytes written atomically under DATA_DIR/incoming.

Layout: ``incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
A file appears under its final name only once its bytes are on disk (temp file,
fsync, rename, fsync of the directory), so a crash leaves at most a hidden
``.*.tmp`` file, which :meth:`Spool.remove_partials` deletes at start-up.

Data sets being received are written by the receiver to ``receiving/`` as they
arrive (same file system) and :meth:`Spool.adopt` renames a complete one into
place; whatever a crash leaves there is removed at start-up too.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from spinenode.core.errors import InvalidUIDError, StorageError

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
        #: Where the receiver writes data sets while they arrive (see :meth:`adopt`).
        self.receiving = data_dir / "receiving"
        self.receiving.mkdir(exist_ok=True)
        #: Directories this process created whose entry in their parent has not been
        #: fsynced yet (:meth:`place` adds them, :meth:`sync_dirs` clears them).
        self._unsynced: set[Path] = set()
        self._unsynced_lock = threading.Lock()

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

    def adopt(self, study_uid: str, series_uid: str, sop_uid: str, source: Path) -> Path:
        """Move a complete received file into place, durably; return its relative path.

        ``source`` should lie on the spool's file system (``receiving/``): it is
        fsynced and renamed, not copied. From elsewhere it is copied atomically.

        Raises
        ------
        StorageError
            On any OS error; nothing is left under the final name.
        """
        rel = self.relative_path(study_uid, series_uid, sop_uid)
        atomic_move(source, self.data_dir / rel)
        return rel

    def place(self, study_uid: str, series_uid: str, sop_uid: str, source: Path) -> Path:
        """fsync ``source`` and rename it into place; return its relative path.

        The first half of :meth:`adopt` for group commit: the rename is atomic but not
        yet durable. Before the instance is acknowledged, :meth:`sync_dirs` must have
        fsynced its directory (one fsync for every instance of a round in that directory).

        Raises
        ------
        StorageError
            On any OS error; ``source`` is left where it was.
        """
        rel = self.relative_path(study_uid, series_uid, sop_uid)
        final = self.data_dir / rel
        try:
            if not final.parent.is_dir():
                # Registered before mkdir: a thread that finds the directory made also
                # finds it here, so its round fsyncs the parents too.
                with self._unsynced_lock:
                    self._unsynced.update((final.parent, final.parent.parent))
                final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_file(source)
            try:
                os.rename(source, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_atomically(source, final)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, "OSError")
            raise StorageError(f"cannot write {final.name} ({name}: {exc.strerror})") from exc
        return rel

    def sync_dirs(self, rels: Sequence[Path]) -> list[OSError | None]:
        """fsync, once each, the directories the files ``rels`` were placed in (and the
        parents of directories :meth:`place` created); one outcome per file: None when
        its rename is durable, else the OSError of a directory it needs."""
        with self._unsynced_lock:
            unsynced = set(self._unsynced)
        needs: list[list[Path]] = []
        for rel in rels:
            chain = [self.data_dir / rel.parent]
            while chain[-1] in unsynced:  # a new directory: its parent's entry too
                chain.append(chain[-1].parent)
            needs.append(chain)
        outcome: dict[Path, OSError | None] = {}
        for chain in needs:
            for directory in chain:
                if directory not in outcome:
                    try:
                        fsync_dir(directory)
                        outcome[directory] = None
                    except OSError as exc:
                        outcome[directory] = exc
        # A directory of a chain existed before its parent's fsync (a file was renamed
        # into it or below it): once that fsync succeeded, its entry is durable.
        durable = {d for chain in needs for d in chain[:-1] if outcome[d.parent] is None}
        with self._unsynced_lock:
            self._unsynced -= durable
        return [next((e for d in chain if (e := outcome[d]) is not None), None) for chain in needs]

    def absolute(self, rel: str | Path) -> Path:
        return self.data_dir / rel

    def remove_partials(self) -> int:
        """Delete temp files left by a crash; returns how many were removed."""
        removed = 0
        for path in self.root.rglob(f".*{TMP_SUFFIX}"):
            _unlink_quietly(path)
            removed += 1
        for path in self.receiving.iterdir():
            if path.is_file():
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
        fsync_dir(directory)
        if new_dir:
            fsync_dir(directory.parent)
            fsync_dir(directory.parent.parent)
    except OSError as exc:
        _unlink_quietly(tmp)
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        raise StorageError(f"cannot write {final.name} ({name}: {exc.strerror})") from exc


def atomic_move(source: Path, final: Path) -> None:
    """fsync ``source``, rename it over ``final``, fsync the directory (copy across file systems).

    Raises
    ------
    StorageError
        On any OS error; ``source`` is left where it was.
    """
    directory = final.parent
    try:
        new_dir = not directory.is_dir()
        if new_dir:
            directory.mkdir(parents=True, exist_ok=True)
        _fsync_file(source)
        try:
            os.rename(source, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_atomically(source, final)
            return
        fsync_dir(directory)
        if new_dir:
            fsync_dir(directory.parent)
            fsync_dir(directory.parent.parent)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        raise StorageError(f"cannot write {final.name} ({name}: {exc.strerror})") from exc


def _copy_atomically(source: Path, final: Path) -> None:
    tmp = final.parent / f".{final.stem}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        with source.open("rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                                    0o640), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError:
        _unlink_quietly(tmp)
        raise


def _fsync(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    _fsync(path)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename into it survives a power cut."""
    _fsync(path, os.O_DIRECTORY)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot remove %s: %s", path.name, exc.strerror)
