"""The admin app's outermost layer (pure ASGI), applied to every response it sends.

1. Security headers and ``Cache-Control: no-store`` on every response: pages, API,
   ``/metrics``, 404 and 500 alike (a page's own nonce CSP is kept).
2. Control characters (NUL and the other C0 codes, DEL) anywhere in the path or the
   query: 400 before any route or database sees them (PostgreSQL refuses NUL with an
   error, which was a 500 that logged the query).
3. The read policy of :mod:`scp_node.admin.access`: a page without a session redirects
   to ``/login``, an API call gets 401, an address over the wrong-token limit 429.
4. An unhandled exception: a plain 500 with the headers, logged with its type and stack
   frames only (:func:`spinenode.core.logs.log_failure`), never its message.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import unquote, urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scp_node.admin.access import READ_METHODS, Access, Decision
from spinenode.core.logs import log_failure

log = logging.getLogger(__name__)

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _is_page(path: str) -> bool:
    return not (path.startswith("/api/") or path == "/metrics")


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                headers["Cache-Control"] = "no-store"
            await send(message)

        conn = HTTPConnection(scope)
        refusal = self._refusal(conn)
        if refusal is not None:
            await self._respond(send_with_headers, *refusal)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            log_failure(log, "admin HTTP %s %s failed", scope.get("method", "?"), scope.get("path", "?"), exc=exc)
            if not started:
                await self._respond(send_with_headers, 500, {"detail": "internal error; see the node log"}, {})

    def _refusal(self, conn: HTTPConnection) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        query = conn.scope.get("query_string", b"").decode("latin-1")
        # scope["path"] as decoded by the server: URL parsing (conn.url) drops tabs and newlines
        if has_control_characters(conn.scope.get("path", "")) or has_control_characters(unquote(query)):
            return 400, {"detail": "control characters are not allowed in a request"}, {}
        if conn.scope.get("method") not in READ_METHODS:
            return None  # writes: the routes check the admin token
        decision = self.access.decide_read(conn)
        if decision is Decision.ALLOW:
            return None
        if decision is Decision.LIMITED:
            wait = int(self.access.limiter.retry_after(conn.client.host if conn.client else "unknown")) or 1
            return 429, {"detail": "too many wrong tokens from this address; try again later"}, {
                "Retry-After": str(wait)}
        path = conn.url.path
        if _is_page(path):
            target = path + (f"?{conn.url.query}" if conn.url.query else "")
            return 303, {}, {"Location": f"/login?{urlencode({'next': target})}"}
        return 401, {"detail": "a viewer, admin or metrics token is needed (Authorization: Bearer)"}, {
            "WWW-Authenticate": 'Bearer realm="spinenode"'}

    @staticmethod
    async def _respond(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        payload = json.dumps(body).encode() if body else b""
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})
