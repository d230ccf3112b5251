"""The node's spool for workers on other hosts: a DICOMweb subset behind WORKER_TOKEN.

- WADO-RS retrieve (PS3.18 10.4): ``GET /dicom-web/studies/{study}[/series/{series}[/instances/{sop}]]``
  answers ``multipart/related; type="application/dicom"``, one part per instance, streamed
  from the files (received instances and the node's own results of that study);
  ``.../metadata`` answers the headers as DICOM JSON (no pixel data).
- STOW-RS store (PS3.18 10.5): ``POST /dicom-web/studies[/{study}]`` takes the node's own
  result objects (Manufacturer and series number of ``scp_node.dicomio``) for a study it
  holds, streams each part to disk and moves it to ``results/<study>/<sop>.dcm``, the path
  the encode stage records in ``results.path``, so export finds it on the node.
- ``GET /worker/studies/{study}/headers``: every received instance of the study as a
  header-only Part 10 file (the stored bytes cut before the pixel data), one
  ``multipart/related; type="application/dicom"`` part each with its WADO-RS URL as
  ``Content-Location``. What the workers classify and encode from: the same headers as
  ``.../metadata`` at about a fifth of the CPU on both sides, and no DICOM JSON round trip.
- ``PUT|GET /worker/studies/{study}/masks/{generation}``: the analyzer's masks (an .npz the
  analyze stage uploads before the study leaves ANALYZING), which the SEG is built from.

Every route needs ``Authorization: Bearer <WORKER_TOKEN>``; with WORKER_TOKEN unset they
answer 403. Over TLS when HTTP_TLS is set (the admin listener's setting).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from scp_node.dicomio import header_only, parse_header
from spinenode.core.db.models import Instance, Result, Series, Study
from spinenode.core.errors import SpinenodeError
from spinenode.core.multipart import (
    MultipartError,
    MultipartSplitter,
    boundary_of,
    content_type,
    iter_multipart,
    iter_multipart_bytes,
    new_boundary,
)
from spinenode.core.storage import TMP_SUFFIX, check_uid, fsync_dir

log = logging.getLogger(__name__)

#: The largest object a worker may store (a SEG of a long series is a few MB).
MAX_OBJECT_BYTES = 512 * 2**20
#: DICOM JSON tags of the STOW-RS response (PS3.18 10.5.3).
_REFERENCED_SOP = "00081199"
_FAILED_SOP = "00081198"
_FAILURE_REASON = "00081197"
_SOP_CLASS = "00081150"
_SOP_INSTANCE = "00081155"
#: FailureReason values (PS3.4 GG.4-1 / C-STORE statuses).
_REFUSED_NOT_AUTHORIZED = 0x0124
_CANNOT_UNDERSTAND = 0xC000
_PROCESSING_FAILURE = 0x0110
_GEN_RE = re.compile(r"^\d{1,9}$")


def _uid(value: str, attribute: str) -> str:
    try:
        return check_uid(value, attribute)
    except SpinenodeError:
        raise HTTPException(400, f"{attribute} is not a valid UID") from None


class _Part:
    """One STOW-RS part on its way to disk: a temp file in the results directory."""

    def __init__(self, tmp_dir: Path) -> None:
        self.path = tmp_dir / f".stow-{uuid.uuid4().hex}{TMP_SUFFIX}"
        self.fh = self.path.open("wb")
        self.size = 0
        self.too_big = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_OBJECT_BYTES:
            self.too_big = True
            return
        self.fh.write(data)

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()


def _remove_partials(results: Path) -> None:
    """STOW-RS and masks uploads cut short by a crash of the node (called at start-up)."""
    for path in [*results.glob(f".stow-*{TMP_SUFFIX}"), *results.glob(f"*/.stow-*{TMP_SUFFIX}")]:
        path.unlink(missing_ok=True)
        log.warning("removed an upload cut short by a restart: %s", path.name)


def metadata_json(paths: list[Path]) -> Iterator[bytes]:
    """The WADO-RS metadata body of these files: a DICOM JSON array, one object per
    instance (headers only), streamed instance by instance."""
    import json

    from pydicom import dcmread

    yield b"["
    for i, path in enumerate(paths):
        ds = dcmread(path, stop_before_pixels=True)
        yield (b"," if i else b"") + json.dumps(ds.to_json_dict()).encode()
    yield b"]"


def register_dicomweb(app: FastAPI, ctx: Any) -> None:
    """Add the worker-facing DICOMweb routes; ``ctx`` is the admin context (settings, db)."""
    settings = ctx.settings
    data_dir: Path = settings.data_dir
    _remove_partials(data_dir / "results")

    access = getattr(ctx, "access", None)  # the admin app's policy: its wrong-token limiter

    def require_worker(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        token = settings.worker_token
        if not token:
            raise HTTPException(403, "worker access is disabled: SPINENODE_WORKER_TOKEN is not set")
        address = request.client.host if request.client else "unknown"
        if access is not None and access.limiter.retry_after(address):
            raise HTTPException(429, "too many wrong tokens from this address; try again later")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), token.encode()):
            if access is not None:
                access.limiter.failed(address, f"worker token on {request.url.path}")
            raise HTTPException(401, "missing or wrong worker token", headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(dependencies=[Depends(require_worker)], include_in_schema=False)

    def _files(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[Path]:
        with ctx.db.session() as s:
            study_id = s.execute(select(Study.id).where(Study.study_uid == study_uid)).scalar_one_or_none()
            if study_id is None:
                raise HTTPException(404, "unknown study")
            q = (select(Instance.sop_instance_uid, Instance.path).join(Series, Series.id == Instance.series_id)
                 .where(Instance.study_id == study_id).order_by(Series.id, Instance.instance_number, Instance.id))
            r = (select(Result.sop_instance_uid, Result.path).where(Result.study_id == study_id)
                 .order_by(Result.id))
            if series_uid is not None:
                q = q.where(Series.series_uid == series_uid)
                r = r.where(Result.series_instance_uid == series_uid)
            if sop_uid is not None:
                q = q.where(Instance.sop_instance_uid == sop_uid)
                r = r.where(Result.sop_instance_uid == sop_uid)
            rows = [*s.execute(q).all(), *s.execute(r).all()]
        if not rows:
            raise HTTPException(404, "no such series or instance in the study")
        paths = []
        for sop, rel in rows:
            path = data_dir / rel
            if not path.is_file():
                raise HTTPException(404, f"instance {sop} is not in the node's spool any more")
            paths.append(path)
        return paths

    def _multipart(paths: list[Path]) -> StreamingResponse:
        boundary = new_boundary()
        return StreamingResponse(iter_multipart(paths, boundary), media_type=content_type(boundary))

    def _metadata(paths: list[Path]) -> StreamingResponse:
        return StreamingResponse(metadata_json(paths), media_type="application/dicom+json")

    @router.get("/dicom-web/studies/{study_uid}")
    def retrieve_study(study_uid: str) -> StreamingResponse:
        return _multipart(_files(_uid(study_uid, "StudyInstanceUID")))

    @router.get("/dicom-web/studies/{study_uid}/metadata")
    def study_metadata(study_uid: str) -> StreamingResponse:
        return _metadata(_files(_uid(study_uid, "StudyInstanceUID")))

    @router.get("/dicom-web/studies/{study_uid}/series/{series_uid}")
    def retrieve_series(study_uid: str, series_uid: str) -> StreamingResponse:
        return _multipart(_files(_uid(study_uid, "StudyInstanceUID"), _uid(series_uid, "SeriesInstanceUID")))

    @router.get("/dicom-web/studies/{study_uid}/series/{series_uid}/metadata")
    def series_metadata(study_uid: str, series_uid: str) -> StreamingResponse:
        return _metadata(_files(_uid(study_uid, "StudyInstanceUID"), _uid(series_uid, "SeriesInstanceUID")))

    @router.get("/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    def retrieve_instance(study_uid: str, series_uid: str, sop_uid: str) -> StreamingResponse:
        return _multipart(_files(_uid(study_uid, "StudyInstanceUID"), _uid(series_uid, "SeriesInstanceUID"),
                                 _uid(sop_uid, "SOPInstanceUID")))

    @router.get("/worker/studies/{study_uid}/headers")
    def study_headers(study_uid: str) -> StreamingResponse:
        uid = _uid(study_uid, "StudyInstanceUID")
        with ctx.db.session() as s:
            study_id = s.execute(select(Study.id).where(Study.study_uid == uid)).scalar_one_or_none()
            if study_id is None:
                raise HTTPException(404, "unknown study")
            rows = s.execute(
                select(Series.series_uid, Instance.sop_instance_uid, Instance.path)
                .join(Series, Series.id == Instance.series_id).where(Instance.study_id == study_id)
                .order_by(Series.id, Instance.instance_number, Instance.id)).all()
        found = [(se, sop, data_dir / rel) for se, sop, rel in rows]
        gone = next((sop for _, sop, path in found if not path.is_file()), None)
        if gone is not None:
            raise HTTPException(404, f"instance {gone} is not in the node's spool any more")

        def parts() -> Iterator[tuple[dict[str, str], bytes]]:
            for se, sop, path in found:
                location = f"/dicom-web/studies/{uid}/series/{se}/instances/{sop}"
                yield {"Content-Location": location}, header_only(path)

        boundary = new_boundary()
        return StreamingResponse(iter_multipart_bytes(parts(), boundary), media_type=content_type(boundary))

    def _accept(part: _Part, study_filter: str | None) -> tuple[dict[str, Any], bool]:
        """Move one received part into the results area; (response item, stored?)."""
        try:
            if part.too_big:
                return {_FAILURE_REASON: {"vr": "US", "Value": [_PROCESSING_FAILURE]}}, False
            meta = parse_header(part.path.read_bytes())
        except SpinenodeError:
            return {_FAILURE_REASON: {"vr": "US", "Value": [_CANNOT_UNDERSTAND]}}, False
        item: dict[str, Any] = {_SOP_CLASS: {"vr": "UI", "Value": [meta.sop_class_uid]},
                                _SOP_INSTANCE: {"vr": "UI", "Value": [meta.sop_instance_uid]}}
        with ctx.db.session() as s:
            known = s.execute(select(Study.id).where(Study.study_uid == meta.study_uid)).scalar_one_or_none()
        wrong_study = study_filter is not None and meta.study_uid != study_filter
        if known is None or wrong_study or not meta.is_own_result:
            # Workers store results of studies the node holds; nothing else comes in this way.
            log.warning("STOW-RS: refused instance %s (%s)", meta.sop_instance_uid,
                        "not a result object of this node" if not meta.is_own_result else "unknown study")
            item[_FAILURE_REASON] = {"vr": "US", "Value": [_REFUSED_NOT_AUTHORIZED]}
            return item, False
        final = data_dir / "results" / meta.study_uid / f"{meta.sop_instance_uid}.dcm"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part.path, final)
        fsync_dir(final.parent)
        log.info("STOW-RS: stored result %s of study %s", meta.sop_instance_uid, meta.study_uid)
        return item, True

    async def _store(request: Request, study_filter: str | None) -> Response:
        try:
            boundary = boundary_of(request.headers.get("content-type"))
        except MultipartError as exc:
            raise HTTPException(415, str(exc)) from None
        tmp_dir = data_dir / "results"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        parts: list[_Part] = []

        def open_part(headers: dict[str, str]) -> _Part:
            part = _Part(tmp_dir)
            parts.append(part)
            return part

        def close_part(sink: Any) -> None:
            sink.close()

        splitter = MultipartSplitter(boundary, open_part, close_part)
        try:
            async for chunk in request.stream():
                await run_in_threadpool(splitter.feed, chunk)
            splitter.finish()
            done = [await run_in_threadpool(_accept, part, study_filter) for part in parts]
        except MultipartError as exc:
            raise HTTPException(400, str(exc)) from None
        finally:
            for part in parts:
                part.fh.close()
                part.path.unlink(missing_ok=True)
        stored = [item for item, ok in done if ok]
        failed = [item for item, ok in done if not ok]
        body: dict[str, Any] = {}
        if stored:
            body[_REFERENCED_SOP] = {"vr": "SQ", "Value": stored}
        if failed:
            body[_FAILED_SOP] = {"vr": "SQ", "Value": failed}
        code = 200 if stored and not failed else 202 if stored else 409
        import json

        return Response(json.dumps(body), status_code=code, media_type="application/dicom+json")

    @router.post("/dicom-web/studies")
    async def store(request: Request) -> Response:
        return await _store(request, None)

    @router.post("/dicom-web/studies/{study_uid}")
    async def store_study(request: Request, study_uid: str) -> Response:
        return await _store(request, _uid(study_uid, "StudyInstanceUID"))

    def _masks_file(study_uid: str, generation: str) -> Path:
        if not _GEN_RE.match(generation):
            raise HTTPException(400, "generation is not a number")
        uid = _uid(study_uid, "StudyInstanceUID")
        with ctx.db.session() as s:
            if s.execute(select(Study.id).where(Study.study_uid == uid)).scalar_one_or_none() is None:
                raise HTTPException(404, "unknown study")
        return data_dir / "results" / uid / f"masks-g{int(generation)}.npz"

    @router.put("/worker/studies/{study_uid}/masks/{generation}")
    async def put_masks(request: Request, study_uid: str, generation: str) -> dict[str, int]:
        final = _masks_file(study_uid, generation)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = _Part(final.parent)
        try:
            async for chunk in request.stream():
                await run_in_threadpool(part.write, chunk)
            if part.too_big:
                raise HTTPException(413, "masks larger than the node accepts")
            await run_in_threadpool(part.close)
            os.replace(part.path, final)
            await run_in_threadpool(fsync_dir, final.parent)
        finally:
            part.fh.close()
            part.path.unlink(missing_ok=True)
        return {"bytes": part.size}

    @router.get("/worker/studies/{study_uid}/masks/{generation}")
    def get_masks(study_uid: str, generation: str) -> StreamingResponse:
        path = _masks_file(study_uid, generation)
        if not path.is_file():
            raise HTTPException(404, "no masks for this study and generation")

        def body() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while block := fh.read(256 * 1024):
                    yield block

        return StreamingResponse(body(), media_type="application/octet-stream")

    app.include_router(router)
