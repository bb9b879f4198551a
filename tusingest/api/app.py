"""The JSON API sub-application at `/api`: its routes, every one authenticated but the OpenAPI
document (the status feed also takes the status page's cookie)."""

from __future__ import annotations

from aiohttp import web

from tusingest.api import audit, files, openapi, sessions, status, transfers, uploads
from tusingest.auth import auth_middleware

PREFIX = "/api"


def create_api_app() -> web.Application:
    app = web.Application()
    spec = app.router.add_get("/openapi.json", openapi.openapi).resource
    # The status feed authenticates itself: by bearer token or the status page's cookie.
    feed = app.router.add_get("/status", status.status).resource

    def public(request: web.Request) -> bool:
        return request.match_info.route.resource in (spec, feed)

    app.middlewares.append(auth_middleware(exempt=public))
    app.router.add_get("/files/upload/session/{upload_id}", sessions.session)
    app.router.add_post("/files/upload", uploads.upload)
    app.router.add_post("/files/batch/upload", uploads.batch)
    app.router.add_post("/files/{file_id}/transfer", transfers.start)
    app.router.add_get("/files/transfer/{transfer_id}", transfers.status)
    app.router.add_get("/files", files.list_files)
    app.router.add_get("/files/{file_id}", files.get_file)
    app.router.add_delete("/files/{file_id}", files.delete_file)
    app.router.add_get("/audit", audit.audit)
    return app
