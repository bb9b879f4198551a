"""The operators' status page at `/status` (aiohttp-jinja2, `templates/status.html`): a sign-in
form that keeps an admin's token in an HttpOnly, SameSite=Strict cookie, and a page that polls
`/api/status` and redraws itself without a reload."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import jwt
from aiohttp import web

from tusingest.auth import AUTHENTICATOR, STATUS_COOKIE, authenticate_with_cookie
from tusingest.errors import TusingestError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
_MAX_TOKEN = 16 * 1024  # bytes of a pasted token
_MAX_SESSION_SECONDS = 8 * 3600  # the cookie lives no longer than this (nor than the token)
_POLL_SECONDS = 2


def install(app: web.Application) -> None:
    """The page's routes and its template environment (autoescaping every value)."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/status", page)
    app.router.add_post("/status/login", login)
    app.router.add_post("/status/logout", logout)


async def page(request: web.Request) -> web.StreamResponse:
    try:
        principal = authenticate_with_cookie(request)
    except TusingestError as exc:
        signed_in = STATUS_COOKIE in request.cookies
        message = f"Your session ended ({exc.message}): sign in again." if signed_in else None
        return _render(request, "login", status=401, message=message)
    if not principal.is_admin:
        return _render(request, "login", status=403, message="The status page is for admins.")
    return _render(request, "page", status=200, user=principal.name)


async def login(request: web.Request) -> web.StreamResponse:
    """`token` from the form → the cookie, when it is an admin's valid token."""
    if (request.content_length or 0) > _MAX_TOKEN + 1024:
        return _render(request, "login", status=413, message="That token is too long.")
    form = await request.post()
    token = form.get("token")
    if not isinstance(token, str) or not token.strip() or len(token) > _MAX_TOKEN:
        return _render(request, "login", status=400, message="Paste an admin's bearer token.")
    token = token.strip().removeprefix("Bearer ").strip()
    authenticator = request.config_dict[AUTHENTICATOR]
    try:
        principal = authenticator.authenticate(f"Bearer {token}")
    except TusingestError as exc:
        return _render(request, "login", status=401, message=f"Not signed in: {exc.message}")
    if not principal.is_admin:
        return _render(request, "login", status=403, message="The status page is for admins.")
    response = _see_page()
    response.set_cookie(
        STATUS_COOKIE,
        token,
        max_age=_session_seconds(token),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_over_https(request),
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = _see_page()
    response.del_cookie(STATUS_COOKIE, path="/")
    return response


def _over_https(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS: the connection is TLS, or a proxy ended TLS
    and says so in `X-Forwarded-Proto` (its first value is the browser's side). A client that
    forges the header only makes its own cookie stricter (a browser drops a `Secure` cookie
    set over plain HTTP)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.secure or forwarded.split(",")[0].strip().lower() == "https"


def _see_page() -> web.Response:
    return web.Response(status=303, headers={"Location": "/status", "Cache-Control": "no-store"})


def _session_seconds(token: str) -> int:
    """Until the token expires (an unsigned read: it was verified just before), at most
    `_MAX_SESSION_SECONDS`."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        left = int(float(claims["exp"]) - time.time())
    except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
        left = _MAX_SESSION_SECONDS
    return max(1, min(left, _MAX_SESSION_SECONDS))


def _render(request: web.Request, view: str, *, status: int, **context: Any) -> web.Response:
    nonce = base64.b64encode(secrets.token_bytes(16)).decode()
    context.setdefault("message", None)
    context.setdefault("user", None)
    response = aiohttp_jinja2.render_template(
        "status.html",
        request,
        {"view": view, "nonce": nonce, "poll_seconds": _POLL_SECONDS, **context},
        status=status,
    )
    response.headers.update(
        {
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                "frame-ancestors 'none'; base-uri 'none'"
            ),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        }
    )
    return response
