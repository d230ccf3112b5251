"""Who may write from the dashboard, and the form checks around it.

* Reads follow the one policy of :mod:`scp_node.admin.access` (applied to every request
  by :class:`scp_node.admin.security.SecurityMiddleware`).
* Writes (retry) need ``ADMIN_TOKEN``: typed into the form, or an admin session made by
  ``/login``. With no admin token configured, writes are refused (403).

The session cookie holds a random id only (never a token); it is ``HttpOnly`` and
``SameSite=Strict``, and a POST whose ``Origin`` is another site is refused as well.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from scp_node.admin.access import Access, Decision, Role


class DashboardError(Exception):
    """An error shown to the browser as an HTML page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_same_origin(request: Request) -> None:
    """Refuse a cross-site form post (defence in depth besides SameSite=Strict)."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser form (curl, scripts)
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise DashboardError(403, "cross-site request refused")


def token_role(request: Request, access: Access, token: str, what: str) -> Role | None:
    """The role of a typed token; 429 when this address has tried too many wrong ones."""
    role = access.check_token(request, token, what)
    if role is Decision.LIMITED:
        raise DashboardError(429, "too many wrong tokens from this address; wait a minute and try again")
    assert not isinstance(role, Decision)
    return role


def require_admin(request: Request, access: Access, form_token: str) -> None:
    """Raise 403 when writes are disabled, 401 without a valid admin token or session."""
    check_same_origin(request)
    if not access.settings.admin_token:
        raise DashboardError(403, "retry is disabled: SPINENODE_ADMIN_TOKEN is not set on the node")
    if form_token:
        if token_role(request, access, form_token, "retry form") is Role.ADMIN:
            return
        raise DashboardError(401, "wrong admin token")
    if access.session_role(request) is Role.ADMIN:
        return
    raise DashboardError(401, "the admin token is needed: type it in, or log in as admin")


def safe_next(target: str) -> str:
    """A local path to go back to after login (never another site)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
