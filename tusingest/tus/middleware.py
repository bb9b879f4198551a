"""The tus edge: the effective method (X-HTTP-Method-Override), 405 and the Tus-Resumable gate
before anything else, `Tus-Resumable` on every response, errors rendered as plain text."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import AbstractResource

from tusingest.errors import BadRequest, BodyInterrupted, PreconditionFailed, TusingestError
from tusingest.tus.protocol import TUS_VERSION

log = logging.getLogger(__name__)

METHOD = web.RequestKey("tus_method", str)

# Headers that carry one value: sent twice, a proxy reading the last copy would see another
# request than this server does, so neither copy is trusted.
SINGLE_VALUED = (
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Metadata",
    "X-HTTP-Method-Override",
)


def effective_method(request: web.Request) -> str:
    override = request.headers.get("X-HTTP-Method-Override", "").strip()
    return override.upper() if override else request.method


def is_options(request: web.Request) -> bool:
    """OPTIONS (possibly by override) is discovery: no version check, no authentication."""
    return request.get(METHOD) == "OPTIONS"


def error_response(error: TusingestError) -> web.Response:
    reason = "Checksum Mismatch" if error.status == 460 else None
    response = web.Response(
        status=error.status,
        reason=reason,
        text=f"{error.code}: {error.message}\n",
        headers=error.headers,
    )
    if isinstance(error, PreconditionFailed):
        response.headers["Tus-Version"] = TUS_VERSION
    return response


def tus_middleware(allowed: Mapping[AbstractResource, tuple[str, ...]]) -> Middleware:
    """The outermost middleware of the tus sub-application; `allowed` lists the methods of
    each of its resources (the others are 405 before the version is even looked at)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resource = request.match_info.route.resource
            _admit(request, None if resource is None else allowed.get(resource))
            response = await handler(request)
        except BodyInterrupted as exc:
            return await _answer_and_close(request, exc)
        except TusingestError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            code = exc.reason.lower().replace(" ", "_")
            response = web.Response(
                status=exc.status, text=f"{code}: {exc.reason}\n", headers=allow
            )
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = web.Response(status=500, text="internal_error: unexpected server error\n")
        response.headers["Tus-Resumable"] = TUS_VERSION
        return response

    return middleware


def _admit(request: web.Request, methods: tuple[str, ...] | None) -> None:
    for name in SINGLE_VALUED:
        if len(request.headers.getall(name, ())) > 1:
            raise BadRequest(f"{name} is sent more than once", code="duplicate_header")
    method = request[METHOD] = effective_method(request)
    if methods is None:
        return  # no such resource: the router's 404 follows
    if method not in methods:
        raise web.HTTPMethodNotAllowed(method, methods)
    if method != "OPTIONS" and request.headers.get("Tus-Resumable", "").strip() != TUS_VERSION:
        raise PreconditionFailed(
            f"Tus-Resumable must be {TUS_VERSION}", headers={"Tus-Version": TUS_VERSION}
        )


async def _answer_and_close(request: web.Request, error: BodyInterrupted) -> web.StreamResponse:
    """Tell an interrupted request why, then drop its connection: the rest of its body is
    not wanted (a newer request took over, or the client went silent), and draining it would
    only hold the connection."""
    response = error_response(error)
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    finally:
        request.protocol.force_close()
    return response
