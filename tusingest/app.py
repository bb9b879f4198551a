"""HTTP assembly: the root application with CORS and JSON errors, the tus and API
sub-applications, the service graph's lifetime, probes and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tusingest import status as status_page
from tusingest.api.app import PREFIX as API_PREFIX
from tusingest.api.app import create_api_app
from tusingest.auth import AUTHENTICATOR
from tusingest.cors import cors_middleware
from tusingest.errors import TusingestError
from tusingest.intake import INTAKE, Intake
from tusingest.logcontext import FILE_ID, REQUEST_ID, UPLOAD_ID, USER, about, request_id
from tusingest.services import SERVICES, open_services
from tusingest.settings.app import Settings
from tusingest.statusreport import element_view, writable_elements
from tusingest.tus.app import PREFIX as TUS_PREFIX
from tusingest.tus.app import create_tus_app

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from tusingest.tracing import Tracing

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, span_exporter: SpanExporter | None = None) -> web.Application:
    """The ingester; with tracing on, `span_exporter` (tests) receives the spans instead of the
    configured exporters."""
    middlewares: list[Middleware] = [
        request_context,
        cors_middleware(settings.server.cors_allowed_origins),
        json_errors,
        refuse_while_draining,
    ]
    tracing: Tracing | None = None
    if settings.tracing.enabled:
        # The SDK's tracing, exporter and instrumentations load only when tracing is on.
        from tusingest.tracing import Tracing

        tracing = Tracing(settings.tracing, span_exporter)
        middlewares.insert(0, tracing.middleware())  # outermost: the whole request is its span
    app = web.Application(middlewares=middlewares)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if tracing is not None:
                await stack.enter_async_context(tracing.exporting())
            services = await stack.enter_async_context(open_services(settings, tracing))
            app[SERVICES] = services
            app[AUTHENTICATOR] = services.authenticator
            yield

    app[INTAKE] = Intake()
    app[PROBES] = ProbeLog()
    app.cleanup_ctx.append(services_ctx)
    app.on_response_prepare.append(_echo_request_id)
    app.add_subapp(TUS_PREFIX, create_tus_app())
    app.add_subapp(API_PREFIX, create_api_app())
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    if settings.server.metrics_enabled:
        app.router.add_get("/metrics", metrics)
    status_page.install(app)
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


REQUEST_ID_KEY = web.RequestKey("request_id", str)
# Metric labels take only these (a client chooses the method: no unbounded label values).
_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"})


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request gets an id (the client's `X-Request-ID` when it is a plain token), on each
    log line it causes and echoed in the response."""
    rid = request[REQUEST_ID_KEY] = request_id(request.headers.get("X-Request-ID"))
    REQUEST_ID.set(rid)
    USER.set("-")
    UPLOAD_ID.set(None)
    FILE_ID.set(None)
    about(request.match_info.get("upload_id"), request.match_info.get("file_id"))
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        services = request.config_dict.get(SERVICES)
        if services is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            method = request.method if request.method in _METHODS else "other"
            services.storage.metrics.http_request(route, method, status, time.monotonic() - started)


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None:
        response.headers["X-Request-ID"] = rid


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


_PROBE_SECONDS = 3.0
_ORDER = ("ok", "degraded", "fail")


class ProbeLog:
    """The log side of readiness. The probe's answer names only the kind of error (anyone may
    ask, and a message may name hosts); the log says what the component answered, once when
    it starts failing (or fails differently) and once when it is back, not at every probe."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def saw(self, component: str, outcome: str, error: BaseException | None) -> None:
        if self._last.get(component, "ok") == outcome:
            return
        self._last[component] = outcome
        if error is None:
            log.info("readiness: %s answers again", component)
            return
        if isinstance(error, TimeoutError):
            reason = f"no answer within {_PROBE_SECONDS:g} s"
        else:
            # One line, bounded, and no credentials a URL in the message may carry.
            reason = _USERINFO.sub("://", " ".join(str(error).split()))[:300] or "(no message)"
        log.warning("readiness: %s fails: %s: %s", component, type(error).__name__, reason)


PROBES = web.AppKey("probes", ProbeLog)
_USERINFO = re.compile(r"://[^/@\s]*@")


async def _probe(component: str, ping: Callable[[], Awaitable[object]], seen: ProbeLog) -> str:
    """`ok`, or `error: <kind>` when `ping` fails or takes longer than the probe may."""
    try:
        async with asyncio.timeout(_PROBE_SECONDS):
            await ping()
    except Exception as exc:
        outcome = f"error: {exc.__class__.__name__}"
        seen.saw(component, outcome, exc)
        return outcome
    seen.saw(component, "ok", None)
    return "ok"


async def ready(request: web.Request) -> web.StreamResponse:
    """`ok` (200), `degraded` (200: Redis, the Admin Module or some element is down, uploads
    can still be stored) or `fail` (503: no database, no element to store on, or shutting
    down), with what each component said."""
    services = request.app[SERVICES]
    if services.lifecycle.draining:
        return web.json_response({"status": "fail", "checks": {"node": "draining"}}, status=503)
    status = "ok"

    def worse(level: str) -> None:
        nonlocal status
        status = max(status, level, key=_ORDER.index)

    seen = request.app[PROBES]
    checks: dict[str, Any] = {"database": await _probe("database", services.sessions.ping, seen)}
    if checks["database"] != "ok":
        worse("fail")
    storage = services.storage
    # Redis and the Admin Module, when configured: down, uploads can still be stored.
    for name, ping in (("redis", storage.redis), ("admin_module", storage.admin)):
        if ping is not None:
            checks[name] = await _probe(name, ping.ping, seen)
            if checks[name] != "ok":
                worse("degraded")
    found, sources = await writable_elements(storage.chain)
    elements: dict[str, Any] = {}
    for element_id, info in sorted(found.items()):
        view = element_view(info, storage.elements)
        elements[element_id] = {
            key: view[key] for key in ("mode", "capacity_status", "healthy", "breaker", "usable")
        }
        if not view["usable"]:
            worse("degraded")
    checks["elements"] = elements
    checks["registry"] = sources  # which source listed the elements of each mode
    if not any(e["usable"] for e in elements.values()):
        worse("fail")  # nothing could be stored
    return web.json_response(
        {"status": status, "checks": checks}, status=503 if status == "fail" else 200
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text format (breaker states as of now)."""
    storage = request.app[SERVICES].storage
    for element_id, state in storage.elements.states().items():
        storage.metrics.breaker(element_id, state)
    return web.Response(
        body=storage.metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
