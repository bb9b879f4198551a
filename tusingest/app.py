"""HTTP assembly: the root application with CORS and JSON errors, the tus and API
sub-applications, the service graph's lifetime, probes and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from tusingest.api.app import PREFIX as API_PREFIX
from tusingest.api.app import create_api_app
from tusingest.auth import AUTHENTICATOR
from tusingest.cors import cors_middleware
from tusingest.errors import TusingestError
from tusingest.services import SERVICES, open_services
from tusingest.settings.app import Settings
from tusingest.tus.app import PREFIX as TUS_PREFIX
from tusingest.tus.app import create_tus_app

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[
            cors_middleware(settings.server.cors_allowed_origins),
            json_errors,
            refuse_while_draining,
        ]
    )

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app[SERVICES] = services
            app[AUTHENTICATOR] = services.authenticator
            yield

    app.cleanup_ctx.append(services_ctx)
    app.add_subapp(TUS_PREFIX, create_tus_app())
    app.add_subapp(API_PREFIX, create_api_app())
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors outside the tus surface as JSON `{"error": code, "message": ...}`."""
    try:
        return await handler(request)
    except TusingestError as exc:
        return web.json_response(
            {"error": exc.code, "message": exc.message}, status=exc.status, headers=exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # 405 must keep its Allow header.
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response(
            {"error": exc.reason.lower().replace(" ", "_"), "message": exc.reason},
            status=exc.status,
            headers=allow,
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal_error", "message": "unexpected server error"}, status=500
        )


@web.middleware
async def refuse_while_draining(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A draining node takes no new work: 503 and the connection closed, so the client (or the
    load balancer) goes to another node. The probes still answer."""
    services = request.config_dict.get(SERVICES)
    draining = services is not None and services.lifecycle.draining
    if draining and not request.path.startswith("/health/"):
        response = web.json_response(
            {"error": "shutting_down", "message": "this node is shutting down: retry"},
            status=503,
            headers={"Retry-After": "1", "Connection": "close"},
        )
        response.force_close()
        return response
    return await handler(request)


async def live(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    if services.lifecycle.draining:
        return web.json_response(
            {"status": "draining", "checks": {"node": "shutting down"}}, status=503
        )
    try:
        await services.sessions.ping()
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "checks": {"database": f"error: {exc.__class__.__name__}"}},
            status=503,
        )
    return web.json_response({"status": "ok", "checks": {"database": "ok"}})


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text format (breaker states as of now)."""
    storage = request.app[SERVICES].storage
    for element_id, state in storage.elements.states().items():
        storage.metrics.breaker(element_id, state)
    return web.Response(
        body=storage.metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
