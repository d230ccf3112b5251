"""Who may do what on the dashboard.

* Writes (retry) need ``ADMIN_TOKEN``: typed into the form, or a session cookie
  set by ``/login``. With no admin token configured, writes are refused (403).
* Reads are open, like the REST API, unless a viewer token is configured
  (``VIEWER_TOKEN``); then a session (viewer or admin) is needed.

The cookie never holds a token: it holds an HMAC of a fixed label keyed by the
token, so it is only valid while that token is configured (changing the token
logs everyone out). It is ``HttpOnly`` and ``SameSite=Strict``; a POST whose
``Origin`` is another site is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum
from urllib.parse import urlsplit

from fastapi import Request

from scp_node.settings import Settings

COOKIE = "spinenode_session"
SESSION_MAX_AGE_S = 12 * 3600


class DashboardError(Exception):
    """An error shown to the browser as an HTML page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


def viewer_token(settings: Settings) -> str:
    return str(getattr(settings, "viewer_token", "") or "")


def _token_for(settings: Settings, role: Role) -> str:
    return settings.admin_token if role is Role.ADMIN else viewer_token(settings)


def session_value(settings: Settings, role: Role) -> str:
    token = _token_for(settings, role)
    digest = hmac.new(token.encode(), f"spinenode-dashboard:{role}".encode(), hashlib.sha256).hexdigest()
    return f"{role}:{digest}"


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def role_of_token(settings: Settings, token: str) -> Role | None:
    """The role a typed token grants, if any."""
    if not token:
        return None
    if settings.admin_token and _same(token, settings.admin_token):
        return Role.ADMIN
    viewer = viewer_token(settings)
    if viewer and _same(token, viewer):
        return Role.VIEWER
    return None


def session_role(request: Request, settings: Settings) -> Role | None:
    cookie = request.cookies.get(COOKIE, "")
    name = cookie.partition(":")[0]
    if name not in (Role.ADMIN, Role.VIEWER):
        return None
    role = Role(name)
    if not _token_for(settings, role):
        return None
    return role if _same(cookie, session_value(settings, role)) else None


def may_read(request: Request, settings: Settings) -> bool:
    return not viewer_token(settings) or session_role(request, settings) is not None


def check_same_origin(request: Request) -> None:
    """Refuse a cross-site form post (defence in depth besides SameSite=Strict)."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser form (curl, scripts)
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise DashboardError(403, "cross-site request refused")


def require_admin(request: Request, settings: Settings, form_token: str) -> None:
    """Raise 403 when writes are disabled, 401 without a valid admin token or session."""
    check_same_origin(request)
    if not settings.admin_token:
        raise DashboardError(403, "retry is disabled: SPINENODE_ADMIN_TOKEN is not set on the node")
    if form_token:
        if role_of_token(settings, form_token) is Role.ADMIN:
            return
        raise DashboardError(401, "wrong admin token")
    if session_role(request, settings) is Role.ADMIN:
        return
    raise DashboardError(401, "the admin token is needed: type it in, or log in as admin")


def safe_next(target: str) -> str:
    """A local path to go back to after login (never another site)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
