"""FastAPI admin app: health, studies, queue, retry. Reads the database; never logs patient data.

Every request passes :class:`scp_node.admin.security.SecurityMiddleware` (headers, control
characters, the read policy of :mod:`scp_node.admin.access`)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from sqlalchemy import func, select

from scp_node import __version__
from scp_node.admin.access import Decision, Role
from scp_node.admin.context import AdminContext
from scp_node.admin.dashboard import register_dashboard
from scp_node.admin.dicomweb import register_dicomweb
from scp_node.admin.health import health_report
from scp_node.admin.security import SecurityMiddleware
from spinenode.core.db.models import Export, Instance, Result, Series, Study, StudyState
from spinenode.core.errors import StudyNotFoundError
from scp_node.queue_status import summary
from scp_node.scheduler import requeue_studies

__all__ = ["AdminContext", "create_app", "study_row"]

log = logging.getLogger(__name__)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def study_row(study: Study, n_series: int, n_instances: int) -> dict[str, Any]:
    return {
        "study_uid": study.study_uid,
        "state": study.state,
        "failed_stage": study.failed_stage,
        "reason": study.reason,
        "region": study.region,
        "modality": study.modality,
        "generation": study.generation,
        "series_count": n_series,
        "instance_count": n_instances,
        "first_received_at": _iso(study.first_received_at),
        "last_received_at": _iso(study.last_received_at),
        "state_changed_at": _iso(study.state_changed_at),
    }


def create_app(ctx: AdminContext) -> FastAPI:
    # The interactive /docs and /redoc pages load their scripts from a CDN, which an
    # offline hospital network cannot reach: only the OpenAPI document is served.
    app = FastAPI(title="spinenode admin", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")

    access = ctx.access
    app.add_middleware(SecurityMiddleware, access=access)

    def require_admin(request: Request) -> None:
        if not ctx.settings.admin_token:
            raise HTTPException(403, "write calls are disabled: SPINENODE_ADMIN_TOKEN is not set")
        token = access.bearer(request)
        if not token:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        role = access.check_token(request, token, f"Bearer on {request.url.path}")
        if role is Decision.LIMITED:
            raise HTTPException(429, "too many wrong tokens from this address; try again later")
        if role is not Role.ADMIN:
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/api/health")
    def health(response: Response) -> dict[str, Any]:
        report = health_report(ctx.settings, ctx.db, ctx.depths)
        if report["status"] == "unhealthy":
            response.status_code = 503
        return {**report, "version": __version__, "ae_title": ctx.settings.ae_title,
                "dicom_port": ctx.settings.dicom_port}

    @app.get("/api/studies")
    def studies(
        state: Annotated[StudyState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        with ctx.db.session() as s:
            n_series = (
                select(Series.study_id, func.count().label("n")).group_by(Series.study_id).subquery()
            )
            n_inst = (
                select(Instance.study_id, func.count().label("n")).group_by(Instance.study_id).subquery()
            )
            q = (
                select(Study, n_series.c.n, n_inst.c.n)
                .outerjoin(n_series, n_series.c.study_id == Study.id)
                .outerjoin(n_inst, n_inst.c.study_id == Study.id)
                .order_by(Study.last_received_at.desc())
                .limit(limit)
            )
            if state is not None:
                q = q.where(Study.state == state)
            return [study_row(st, a or 0, b or 0) for st, a, b in s.execute(q).all()]

    @app.get("/api/studies/{study_uid}")
    def study(study_uid: str) -> dict[str, Any]:
        with ctx.db.session() as s:
            st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
            if st is None:
                raise HTTPException(404, "unknown study")
            counts = dict(
                s.execute(
                    select(Instance.series_id, func.count()).where(Instance.study_id == st.id).group_by(Instance.series_id)
                ).all()
            )
            series = [
                {
                    "series_uid": se.series_uid,
                    "modality": se.modality,
                    "series_number": se.series_number,
                    "description": se.description,
                    "instance_count": int(counts.get(se.id, 0)),
                    "classification": se.classification,
                }
                for se in st.series
            ]
            events = [
                {"at": _iso(e.at), "state": e.state, "stage": e.stage, "generation": e.generation, "detail": e.detail}
                for e in st.events
            ]
            results = s.scalars(select(Result).where(Result.study_id == st.id).order_by(Result.id)).all()
            # each export with its result's UID in one statement: two reads under READ COMMITTED
            # can straddle an encode's commit (a dict of the first read answered 500, KeyError)
            exports = s.execute(
                select(Export, Result.sop_instance_uid).join(Result, Result.id == Export.result_id)
                .where(Export.study_id == st.id).order_by(Export.id)
            ).all()
            row = study_row(st, len(series), sum(x["instance_count"] for x in series))
            row.update({
                "selection": st.selection,
                "not_analysed_reason": st.not_analysed_reason,
                "series": series,
                "events": events,
                "results": [
                    {"kind": r.kind, "sop_class_uid": r.sop_class_uid, "sop_instance_uid": r.sop_instance_uid,
                     "series_instance_uid": r.series_instance_uid, "generation": r.generation,
                     "model": {"name": r.model_name, "version": r.model_version}, "created_at": _iso(r.created_at)}
                    for r in results
                ],
                "exports": [
                    {"destination": e.destination, "sop_instance_uid": sop_uid,
                     "state": e.state, "attempts": e.attempts, "last_status": e.last_status,
                     "last_error": e.last_error, "next_attempt_at": _iso(e.next_attempt_at),
                     "sent_at": _iso(e.sent_at)}
                    for e, sop_uid in exports
                ],
            })
            return row

    @app.get("/api/studies/{study_uid}/findings")
    def findings(study_uid: str) -> dict[str, Any]:
        with ctx.db.session() as s:
            st = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
            if st is None:
                raise HTTPException(404, "unknown study")
            if st.findings is None:
                detail = st.not_analysed_reason or f"no findings (state {st.state})"
                raise HTTPException(404, detail)
            return st.findings

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        from scp_node.admin.metrics import NodeCollector, metrics_text
        from scp_node.scp import ScpCounters

        collector = NodeCollector(ctx.db, ctx.counters or ScpCounters(), ctx.depths)
        return Response(metrics_text(collector), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/queue")
    def queue() -> dict[str, Any]:
        return summary(ctx.db, ctx.depths())

    @app.post("/api/studies/{study_uid}/retry", dependencies=[Depends(require_admin)])
    def retry(study_uid: str) -> dict[str, Any]:
        try:
            uids = requeue_studies(ctx.db, ctx.enqueue, study_uid=study_uid, all_failed=False)
        except StudyNotFoundError:
            raise HTTPException(404, "unknown study") from None
        except Exception as exc:  # committed as requeued; the broker refused the message
            log.warning("retry of %s: enqueue failed (%s); the sweep will send it again", study_uid,
                        type(exc).__name__)
            raise HTTPException(503, "the study was requeued but the broker could not be reached; "
                                     "the scheduler will send it again") from None
        if not uids:
            raise HTTPException(409, "study is still receiving")
        return {"requeued": uids}

    register_dashboard(app, ctx)
    register_dicomweb(app, ctx)
    return app
