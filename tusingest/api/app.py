"""The JSON API sub-application at `/api`: its routes, every one authenticated."""

from __future__ import annotations

from aiohttp import web

from tusingest.api import sessions
from tusingest.auth import auth_middleware

PREFIX = "/api"


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[auth_middleware()])
    app.router.add_get("/files/upload/session/{upload_id}", sessions.session)
    return app
