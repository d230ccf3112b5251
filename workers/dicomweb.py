"""A small DICOMweb client: WADO-RS retrieve (streamed to files, or in memory), STOW-RS.

Used by the workers against the node (``scp_node.admin.dicomweb``, with the worker
token) and by the DICOMweb exporter against a PACS or archive. Bodies stream both
ways: a retrieved series goes to disk part by part, a store reads its files in chunks.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

from spinenode.core.multipart import (
    DICOM,
    MultipartError,
    MultipartSplitter,
    boundary_of,
    content_type,
    iter_multipart,
    new_boundary,
)

log = logging.getLogger(__name__)

_REFERENCED_SOP = "00081199"
_FAILED_SOP = "00081198"
_FAILURE_REASON = "00081197"
_SOP_INSTANCE = "00081155"


class DicomWebError(Exception):
    """A DICOMweb request failed; ``transient`` when a retry can help (network, 5xx, 429)."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    sop_instance_uid: str
    ok: bool
    #: FailureReason (0008,1197) when the server gave one.
    reason: int | None = None


class _TempFile:
    def __init__(self, directory: Path) -> None:
        self.path = directory / f".wado-{uuid.uuid4().hex}.tmp"
        self.fh = self.path.open("wb")

    def write(self, data: bytes) -> None:
        self.fh.write(data)


class DicomWebClient:
    """One base URL (``.../dicom-web`` or the node's root), optional bearer token."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60.0,
                 verify: ssl.SSLContext | bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- errors -----------------------------------------------------------------------
    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 300:
            return
        try:
            detail = str(response.json().get("detail", ""))[:200]
        except (ValueError, AttributeError):
            detail = ""
        transient = response.status_code >= 500 or response.status_code in (408, 429)
        raise DicomWebError(f"{what}: {self.base_url} answered {response.status_code}"
                            + (f" ({detail})" if detail else ""), status=response.status_code, transient=transient)

    def _network(self, exc: httpx.HTTPError, what: str) -> DicomWebError:
        return DicomWebError(f"{what}: {self.base_url} unreachable ({type(exc).__name__})", transient=True)

    # --- WADO-RS ----------------------------------------------------------------------
    def retrieve(self, path: str, tmp_dir: Path, on_file: Callable[[Path], None]) -> int:
        """GET ``path`` as multipart/related; each part is written to a temp file in
        ``tmp_dir`` and handed to ``on_file`` (which must move or delete it). Returns the
        number of parts."""
        tmp_dir.mkdir(parents=True, exist_ok=True)
        what = f"WADO-RS {path}"
        current: list[_TempFile] = []

        def open_part(headers: dict[str, str]) -> _TempFile:
            part = _TempFile(tmp_dir)
            current.append(part)
            return part

        def close_part(sink: Any) -> None:
            sink.fh.close()
            on_file(sink.path)

        try:
            return self._split(path, what, open_part, close_part)
        finally:
            for part in current:
                part.fh.close()
                if part.path.exists():
                    part.path.unlink()

    def retrieve_in_memory(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        """GET ``path`` as multipart/related: each part's headers (lower-case names) and
        bytes, held in memory (for small parts, such as header-only files)."""
        what = f"GET {path}"
        parts: list[tuple[dict[str, str], BytesIO]] = []

        def open_part(headers: dict[str, str]) -> BytesIO:
            buf = BytesIO()
            parts.append((headers, buf))
            return buf

        self._split(path, what, open_part, lambda sink: None)
        return [(headers, buf.getvalue()) for headers, buf in parts]

    def _split(self, path: str, what: str, open_part: Callable[[dict[str, str]], Any],
               close_part: Callable[[Any], None]) -> int:
        """GET ``path`` as multipart/related and split the body part by part into the sinks
        ``open_part`` gives; the number of parts. Network and framing errors are transient."""
        try:
            with self._http.stream("GET", path, headers={"Accept": f'multipart/related; type="{DICOM}"'}) as rsp:
                if rsp.status_code >= 300:
                    rsp.read()
                self._check(rsp, what)
                splitter = MultipartSplitter(boundary_of(rsp.headers.get("content-type")), open_part, close_part)
                for chunk in rsp.iter_bytes():
                    splitter.feed(chunk)
                splitter.finish()
                return splitter.parts
        except httpx.HTTPError as exc:
            raise self._network(exc, what) from None
        except MultipartError as exc:
            raise DicomWebError(f"{what}: {exc}", transient=True) from None

    # --- STOW-RS ----------------------------------------------------------------------
    def store(self, files: Sequence[Path], study_uid: str | None = None, root: str = "") -> list[StoreOutcome]:
        """POST the files to ``{root}/studies[/{study_uid}]`` in one multipart request; one
        outcome per SOP Instance UID the response names."""
        boundary = new_boundary()
        path = f"{root}/studies/{study_uid}" if study_uid else f"{root}/studies"
        what = f"STOW-RS {path}"
        try:
            rsp = self._http.post(path, content=iter_multipart(files, boundary),
                                  headers={"Content-Type": content_type(boundary), "Accept": "application/dicom+json"})
        except httpx.HTTPError as exc:
            raise self._network(exc, what) from None
        if rsp.status_code not in (200, 202, 409):
            self._check(rsp, what)
        try:
            body = rsp.json() if rsp.content else {}
        except json.JSONDecodeError:
            body = {}
        outcomes = [StoreOutcome(_sop(item), True) for item in _seq(body, _REFERENCED_SOP)]
        outcomes += [StoreOutcome(_sop(item), False, _reason(item)) for item in _seq(body, _FAILED_SOP)]
        if rsp.status_code == 409 and not outcomes:
            raise DicomWebError(f"{what}: {self.base_url} answered 409", status=409)
        return outcomes

    # --- the node's masks route -------------------------------------------------------
    def put_file(self, path: str, file: Path) -> None:
        what = f"PUT {path}"

        def body() -> Any:
            with file.open("rb") as fh:
                while block := fh.read(256 * 1024):
                    yield block

        try:
            rsp = self._http.put(path, content=body(), headers={"Content-Type": "application/octet-stream"})
        except httpx.HTTPError as exc:
            raise self._network(exc, what) from None
        self._check(rsp, what)

    def get_file(self, path: str, dest: Path) -> bool:
        """Download ``path`` to ``dest`` atomically; False when the server answers 404."""
        what = f"GET {path}"
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._http.stream("GET", path) as rsp:
                if rsp.status_code == 404:
                    return False
                if rsp.status_code >= 300:
                    rsp.read()
                self._check(rsp, what)
                with tmp.open("wb") as fh:
                    for chunk in rsp.iter_bytes():
                        fh.write(chunk)
            os.replace(tmp, dest)
            return True
        except httpx.HTTPError as exc:
            raise self._network(exc, what) from None
        finally:
            tmp.unlink(missing_ok=True)


def _seq(body: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return [x for x in (body.get(tag) or {}).get("Value", []) if isinstance(x, dict)]


def _sop(item: dict[str, Any]) -> str:
    values = (item.get(_SOP_INSTANCE) or {}).get("Value") or [""]
    return str(values[0])


def _reason(item: dict[str, Any]) -> int | None:
    values = (item.get(_FAILURE_REASON) or {}).get("Value") or [None]
    return int(values[0]) if values[0] is not None else None
