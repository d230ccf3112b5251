"""How a worker gets at the node's files: its own (or a shared) DATA_DIR first, the
node's DICOMweb routes second.

A file found under this host's DATA_DIR is used as is (one host, or a shared
filesystem). Otherwise, with NODE_URL set, the worker fetches what a stage needs into a
bounded cache under ``DATA_DIR/cache``: the headers of a study (header-only files from the node), the
full instances of the series it analyses (WADO-RS series retrieve), a result object or
the masks. Results go back to the node by STOW-RS and masks by PUT, before the stage
commits, so the next stage finds them whatever host it runs on. A file that cannot be
had raises :class:`~spinenode.core.errors.InstanceUnavailableError` naming it and this host.

The cache is least-recently-used by bytes (WORKER_CACHE_MB): entries are series
directories, touched on use, evicted oldest first but never while a stage is using them.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from spinenode.core import repository
from spinenode.core.db.session import Database
from spinenode.core.errors import InstanceUnavailableError, NodeUnreachableError
from spinenode.core.settings import Settings
from spinenode.core.storage import atomic_write, check_uid
from workers.dicomweb import DicomWebClient, DicomWebError

log = logging.getLogger(__name__)

#: A fetch's temp file untouched for this long belongs to a worker that died.
STALE_TEMP_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class SpoolFile:
    """One received instance as the index knows it."""

    series_uid: str
    sop_uid: str
    rel: Path


class SpoolAccess:
    """The files of the node's spool as this worker can read them (see the module doc)."""

    def __init__(self, settings: Settings, db: Database, host: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.data_dir = settings.data_dir
        self.host = host or socket.gethostname()
        self.cache = self.data_dir / "cache"
        self._lock = threading.Lock()
        #: Studies a stage is working on (their cache entries are not evicted).
        self._in_use: dict[str, int] = defaultdict(int)
        self._client: DicomWebClient | None = None
        self._remove_stale_temp_files()

    def _remove_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> None:
        """Temp files of fetches a killed worker left behind (another live process on the
        same DATA_DIR may be writing its own: only old ones go)."""
        import time

        cutoff = time.time() - older_than
        for path in (self.cache / "tmp").glob("*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    # --- paths ------------------------------------------------------------------------
    def absolute(self, rel: str | Path) -> Path:
        """Where ``rel`` (relative to DATA_DIR) can be read on this host: the DATA_DIR,
        else the cached full file, else the cached header; no network."""
        for root in (self.data_dir, self.cache / "full", self.cache / "headers"):
            path = root / rel
            if path.exists():
                return path
        return self.data_dir / rel

    @property
    def remote(self) -> bool:
        return bool(self.settings.node_url)

    def client(self) -> DicomWebClient:
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if self.settings.tls_ca:
                verify = ssl.create_default_context(cafile=str(self.settings.tls_ca))
            self._client = DicomWebClient(self.settings.node_url, token=self.settings.worker_token,
                                          timeout=self.settings.export_timeout * 4, verify=verify)
        return self._client

    def files(self, study_uid: str) -> list[SpoolFile]:
        return [SpoolFile(se, sop, Path(rel)) for se, sop, rel in repository.instances(self.db, study_uid)]

    def unavailable(self, what: str, detail: str = "") -> InstanceUnavailableError:
        where = f"on host {self.host} (DATA_DIR {self.data_dir})"
        how = f"; {detail}" if detail else "; SPINENODE_NODE_URL is not set, so it cannot be fetched"
        return InstanceUnavailableError(f"{what} is not {where}{how}")

    def _fetch_error(self, what: str, exc: DicomWebError) -> Exception:
        message = f"{what}: host {self.host} could not get it through the node: {exc}"
        return NodeUnreachableError(message) if exc.transient else InstanceUnavailableError(message)

    # --- instances --------------------------------------------------------------------
    def require_headers(self, study_uid: str) -> list[SpoolFile]:
        """Make every instance's header readable through :meth:`absolute`."""
        files = self.files(study_uid)
        absent = [f for f in files if not self.absolute(f.rel).exists()]
        if not absent:
            return files
        for f, data in self._fetch_headers(study_uid, absent):
            atomic_write(self.cache / "headers" / f.rel, data)
        return files

    def headers(self, study_uid: str) -> dict[str, Dataset]:
        """The header (no pixel data) of every instance of the study by its path relative
        to DATA_DIR (as the index has it): read from this host's files where they are, the
        others fetched from the node in one request and kept in memory only (a stage that
        reads each header once saves writing them as files and reading them back)."""
        files = self.files(study_uid)
        absent = [f for f in files if not self.absolute(f.rel).exists()]
        fetched = ({f.sop_uid: dcmread(BytesIO(data)) for f, data in self._fetch_headers(study_uid, absent)}
                   if absent else {})
        return {str(f.rel): fetched[f.sop_uid] if f.sop_uid in fetched
                else dcmread(self.absolute(f.rel), stop_before_pixels=True) for f in files}

    def _fetch_headers(self, study_uid: str, absent: list[SpoolFile]) -> list[tuple[SpoolFile, bytes]]:
        """These instances as header-only Part 10 files, from the node's
        ``/worker/studies/{study}/headers`` (the stored bytes cut before the pixel data: the
        headers the node holds, at a fifth of the CPU of WADO-RS metadata's DICOM JSON)."""
        if not self.remote:
            raise self.unavailable(f"instance {absent[0].sop_uid}", "")
        uid = check_uid(study_uid, "StudyInstanceUID")
        try:
            parts = self.client().retrieve_in_memory(f"/worker/studies/{uid}/headers")
        except DicomWebError as exc:
            raise self._fetch_error(f"the headers of study {uid}", exc) from None
        wanted = {f.sop_uid: f for f in absent}
        out: list[tuple[SpoolFile, bytes]] = []
        for headers, data in parts:
            # Content-Location ends in the instance's SOP Instance UID: only those asked for are kept
            f = wanted.pop(headers.get("content-location", "").rsplit("/", 1)[-1], None)
            if f is not None:
                out.append((f, data))
        if wanted:
            sop = next(iter(wanted))
            raise self.unavailable(f"instance {sop}", f"the node at {self.settings.node_url} does not have it either")
        return out

    def require_series(self, study_uid: str, series_uids: Iterable[str]) -> None:
        """Make the full files (pixels) of these series readable through :meth:`absolute`."""
        files = self.files(study_uid)
        for series_uid in sorted(set(series_uids)):
            mine = [f for f in files if f.series_uid == series_uid]
            absent = [f for f in mine if not (self.data_dir / f.rel).exists()
                      and not (self.cache / "full" / f.rel).exists()]
            if mine:
                self._touch(self.cache / "full" / mine[0].rel.parent)
            if not absent:
                continue
            if not self.remote:
                raise self.unavailable(f"instance {absent[0].sop_uid}", "")
            self._retrieve(study_uid, series_uid, {f.sop_uid: f for f in absent})

    def _retrieve(self, study_uid: str, series_uid: str, wanted: dict[str, SpoolFile]) -> None:
        study = check_uid(study_uid, "StudyInstanceUID")
        series = check_uid(series_uid, "SeriesInstanceUID")
        target = self.cache / "full"
        got: set[str] = set()

        def place(tmp: Path) -> None:
            sop = str(dcmread(tmp, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            f = wanted.get(sop)
            if f is None:
                tmp.unlink()
                return
            final = target / f.rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            got.add(sop)

        try:
            n = self.client().retrieve(f"/dicom-web/studies/{study}/series/{series}", self.cache / "tmp", place)
        except DicomWebError as exc:
            raise self._fetch_error(f"series {series}", exc) from None
        missing = set(wanted) - got
        if missing:
            raise self.unavailable(f"instance {sorted(missing)[0]}",
                                f"the node at {self.settings.node_url} sent {n} instance(s) without it")
        log.info("fetched %d instance(s) of series %s from the node", len(got), series)

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        """The full file of one instance (WADO-RS of that instance alone when it is not here)."""
        rel = Path("incoming") / study_uid / series_uid / f"{sop_uid}.dcm"
        for root in (self.data_dir, self.cache / "full"):
            if (root / rel).exists():
                return root / rel
        if not self.remote:
            raise self.unavailable(f"instance {sop_uid}", "")
        return self._retrieve_one(f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
                                  self.cache / "full" / rel, f"instance {sop_uid}")

    def _retrieve_one(self, path: str, dest: Path, what: str) -> Path:
        def place(tmp: Path) -> None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)

        try:
            self.client().retrieve(path, self.cache / "tmp", place)
        except DicomWebError as exc:
            raise self._fetch_error(what, exc) from None
        if not dest.exists():
            raise self.unavailable(what, f"the node at {self.settings.node_url} did not send it")
        return dest

    # --- results ----------------------------------------------------------------------
    def publish_result(self, study_uid: str, rel: Path, data: bytes) -> None:
        """Write a result object under DATA_DIR, and store it on the node when remote."""
        if not self.remote:
            atomic_write(self.data_dir / rel, data)
            return
        path = self.cache / "full" / rel
        atomic_write(path, data)
        try:
            outcomes = self.client().store([path], study_uid, root="/dicom-web")
        except DicomWebError as exc:
            raise self._fetch_error(f"result {path.stem} (STOW-RS to the node)", exc) from None
        if not any(o.ok and o.sop_instance_uid == path.stem for o in outcomes):
            reason = next((o.reason for o in outcomes if not o.ok), None)
            raise InstanceUnavailableError(f"the node refused result {path.stem} from host {self.host}"
                                           + (f" (failure reason 0x{reason:04X})" if reason is not None else ""))

    def result_path(self, study_uid: str, series_uid: str, rel: str | Path) -> Path:
        """A result object's file on this host, fetched from the node when remote."""
        local = self.absolute(rel)
        if local.exists():
            return local
        if not self.remote:
            raise self.unavailable(f"result {Path(rel).stem}", "")
        sop = Path(rel).stem
        return self._retrieve_one(f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop}",
                                  self.cache / "full" / rel, f"result {sop}")

    # --- masks ------------------------------------------------------------------------
    def masks_rel(self, study_uid: str, generation: int) -> Path:
        return Path("results") / study_uid / f"masks-g{generation}.npz"

    def publish_masks(self, study_uid: str, generation: int, path: Path) -> None:
        """Send the masks file to the node (when remote), before the study leaves ANALYZING."""
        if not self.remote:
            return
        try:
            self.client().put_file(f"/worker/studies/{study_uid}/masks/{generation}", path)
        except DicomWebError as exc:
            raise self._fetch_error(f"the masks of study {study_uid} (upload to the node)", exc) from None

    def masks_path(self, study_uid: str, generation: int) -> Path | None:
        """The masks file on this host (fetched when remote), None when none were made."""
        rel = self.masks_rel(study_uid, generation)
        local = self.absolute(rel)
        if local.exists() or not self.remote:
            return local if local.exists() else None
        dest = self.cache / "full" / rel
        try:
            found = self.client().get_file(f"/worker/studies/{study_uid}/masks/{generation}", dest)
        except DicomWebError as exc:
            raise self._fetch_error(f"the masks of study {study_uid}", exc) from None
        return dest if found else None

    # --- cache ------------------------------------------------------------------------
    def _touch(self, entry: Path) -> None:
        if entry.is_dir():
            os.utime(entry)

    @contextmanager
    def study(self, study_uid: str) -> Iterator[None]:
        """While a stage works on a study, its cache entries are not evicted; on the way
        out the cache is trimmed to its budget."""
        with self._lock:
            self._in_use[study_uid] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use[study_uid] -= 1
            self._evict()

    def cache_entries(self) -> list[tuple[str, Path]]:
        """(study UID, directory) of every cache entry: a series of instances or headers,
        or a study's results."""
        out: list[tuple[str, Path]] = []
        for tree in ("full", "headers"):
            out += [(e.parent.name, e) for e in (self.cache / tree / "incoming").glob("*/*") if e.is_dir()]
        out += [(e.name, e) for e in (self.cache / "full" / "results").glob("*") if e.is_dir()]
        return out

    def _evict(self) -> None:
        """Remove least recently used entries until the cache fits WORKER_CACHE_MB."""
        budget = int(self.settings.worker_cache_mb * 2**20)
        with self._lock:
            busy = {uid for uid, n in self._in_use.items() if n > 0}
        entries: list[tuple[float, int, str, Path]] = []
        for study_uid, entry in self.cache_entries():
            try:
                size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
                entries.append((entry.stat().st_mtime, size, study_uid, entry))
            except FileNotFoundError:  # evicted by another thread meanwhile
                continue
        total = sum(size for _, size, _, _ in entries)
        for _, size, study_uid, entry in sorted(entries):
            if total <= budget:
                break
            if study_uid in busy:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
            log.info("cache: evicted %s of study %s (%d bytes)", entry.name, study_uid, size)

