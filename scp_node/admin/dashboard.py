"""The admin dashboard: server-rendered pages for "where is my study?".

Pages: overview ``/``, studies ``/studies``, one study ``/studies/{uid}``,
failures ``/failures``, and ``/login``. Retry posts go through
:func:`scp_node.scheduler.requeue_studies` and need the admin token
(see :mod:`scp_node.admin.dashboard_auth`). Nothing here logs patient data:
the search text is never logged, retries log the Study Instance UID only.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from scp_node import __version__
from scp_node.admin import dashboard_format as fmt
from scp_node.admin.access import COOKIE, Role, client_address
from scp_node.admin.context import AdminContext
from scp_node.admin.dashboard_auth import DashboardError, check_same_origin, require_admin, safe_next, token_role
from scp_node.admin.dashboard_charts import latency_chart, throughput_chart
from scp_node.admin.dashboard_queries import list_studies, overview, studies_in_state, study_detail
from spinenode.core.db.models import StudyState, utcnow
from spinenode.core.errors import StudyNotFoundError
from scp_node.queue_status import state_counts
from scp_node.scheduler import requeue_studies

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
PAGE_SIZE = 100
MAX_FORM_BYTES = 4096
#: Seconds between refreshes of the live part of a page.
REFRESH_S = 5


def make_environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        duration=fmt.fmt_duration, time=fmt.fmt_time, short_uid=fmt.short_uid, status_text=fmt.status_text,
        sop_class=fmt.sop_class_name, grade=fmt.grade_label,
    )
    env.globals.update(STATE_HELP=fmt.STATE_HELP, ROLE_LABELS=fmt.ROLE_LABELS, STATES=[str(s) for s in StudyState],
                       version=__version__, age=fmt.fmt_age, quote=quote)
    return env


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the app has no multipart parser)."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise DashboardError(413, "form too large")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise DashboardError(413, "form too large")
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise DashboardError(415, "expected a form post")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    return {k: v[0] for k, v in parsed.items()}


def register_dashboard(app: FastAPI, ctx: AdminContext) -> None:
    """Add the dashboard pages and their form routes to the admin app."""
    env = make_environment()
    settings = ctx.settings
    access = ctx.access

    def render(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        role = access.session_role(request)
        html = env.get_template(template).render(
            request_path=request.url.path, nonce=nonce, now=utcnow(), role=str(role) if role else "",
            admin_enabled=bool(settings.admin_token), viewer_enabled=access.reads_gated,
            ae_title=settings.ae_title, session_max_age=settings.session_max_age, failed_count=values.pop("failed_count", None), refresh_s=REFRESH_S,
            **values,
        )
        response = HTMLResponse(html, status_code=status_code)
        # the other security headers come from SecurityMiddleware, on every response
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'"
        )
        return response

    def failed_count() -> int:
        return state_counts(ctx.db).get(str(StudyState.FAILED), 0)

    @app.exception_handler(DashboardError)
    async def dashboard_error(request: Request, exc: DashboardError) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="spinenode"'} if exc.status == 401 else {}
        if exc.status == 429:
            headers["Retry-After"] = str(int(access.limiter.retry_after(client_address(request))) or 1)
        response = render(request, "error.html", exc.status, status=exc.status, message=exc.message)
        response.headers.update(headers)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_overview(request: Request) -> Response:
        now = utcnow()
        data = overview(ctx.db, ctx.depths(), now)
        return render(request, "overview.html", data=data, failed_count=data.states.get("FAILED", 0),
                      throughput=throughput_chart(data.hours), latency=latency_chart(data.hours, fmt.fmt_duration))

    @app.get("/studies", response_class=HTMLResponse, include_in_schema=False)
    def page_studies(
        request: Request,
        state: Annotated[str, Query(max_length=16)] = "",
        q: Annotated[str, Query(max_length=64)] = "",
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    ) -> Response:
        chosen = StudyState(state) if state in StudyState.__members__ else None
        q = q.strip()
        result = list_studies(ctx.db, state=chosen, q=q, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)

        def page_link(n: int) -> str:
            return "/studies?" + urlencode({k: v for k, v in (("state", state), ("q", q), ("page", n)) if v})

        return render(request, "studies.html", result=result, state=str(chosen or ""), q=q, page=page,
                      prev_link=page_link(page - 1) if page > 1 else "",
                      next_link=page_link(page + 1) if result.offset + len(result.rows) < result.total else "",
                      failed_count=failed_count())

    @app.get("/studies/{study_uid}", response_class=HTMLResponse, include_in_schema=False)
    def page_study(request: Request, study_uid: str, requeued: int = 0) -> Response:
        detail = study_detail(ctx.db, study_uid)
        if detail is None:
            raise DashboardError(404, "no study with this Study Instance UID on this node")
        return render(request, "study.html", d=detail, grid=fmt.findings_grid(detail.findings),
                      requeued=requeued, failed_count=failed_count())

    @app.get("/failures", response_class=HTMLResponse, include_in_schema=False)
    def page_failures(request: Request, requeued: int = -1) -> Response:
        failed = studies_in_state(ctx.db, StudyState.FAILED, 500)
        skipped = studies_in_state(ctx.db, StudyState.SKIPPED, 50)
        by_stage: dict[str, int] = {}
        for row in failed:
            by_stage[row.failed_stage or "?"] = by_stage.get(row.failed_stage or "?", 0) + 1
        return render(request, "failures.html", failed=failed, skipped=skipped, by_stage=sorted(by_stage.items()),
                      requeued=requeued, failed_count=len(failed))

    def requeue(study_uid: str | None) -> list[str]:
        try:
            return requeue_studies(ctx.db, ctx.enqueue, study_uid=study_uid, all_failed=study_uid is None)
        except StudyNotFoundError:
            raise DashboardError(404, "no study with this Study Instance UID on this node") from None
        except Exception as exc:  # committed as QUEUED; the broker refused the message
            log.warning("dashboard retry: enqueue failed (%s); the sweep will send it again", type(exc).__name__)
            raise DashboardError(503, "the study was requeued but the broker could not be reached; "
                                      "the scheduler will send it again") from None

    @app.post("/studies/{study_uid}/retry", include_in_schema=False)
    async def post_retry(request: Request, study_uid: str) -> Response:
        form = await _form(request)
        require_admin(request, access, form.get("token", ""))
        uids = await run_in_threadpool(requeue, study_uid)
        if not uids:
            raise DashboardError(409, "the study is still receiving; it is queued by itself after the quiet period")
        log.info("dashboard retry: study %s requeued", study_uid)
        return RedirectResponse(f"/studies/{quote(study_uid)}?requeued=1", status_code=303)

    @app.post("/failures/retry", include_in_schema=False)
    async def post_retry_failed(request: Request) -> Response:
        form = await _form(request)
        require_admin(request, access, form.get("token", ""))
        uids = await run_in_threadpool(requeue, None)
        log.info("dashboard retry: %d failed studies requeued", len(uids))
        return RedirectResponse(f"/failures?requeued={len(uids)}", status_code=303)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def page_login(request: Request, next_path: Annotated[str, Query(alias="next", max_length=512)] = "/") -> Response:
        return render(request, "login.html", next_path=safe_next(next_path), error="")

    @app.post("/login", include_in_schema=False)
    async def post_login(request: Request) -> Response:
        check_same_origin(request)
        form = await _form(request)
        target = safe_next(form.get("next", "/"))
        role = token_role(request, access, form.get("token", ""), "dashboard login")
        if role not in (Role.ADMIN, Role.VIEWER):
            return render(request, "login.html", 401, next_path=target, error="That token is not valid here.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, access.sessions.create(role), max_age=int(settings.session_max_age), path="/",
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        log.info("dashboard login as %s from %s", role, client_address(request))
        return response

    @app.post("/logout", include_in_schema=False)
    async def post_logout(request: Request) -> Response:
        check_same_origin(request)
        access.sessions.revoke(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login" if access.reads_gated else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response
