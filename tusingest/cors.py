"""CORS for browser clients: preflights on every route, headers on every response (errors too)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

ALLOW_METHODS = "POST, HEAD, PATCH, OPTIONS, GET, DELETE"
ALLOW_HEADERS = ", ".join(
    [
        "Authorization",
        "Content-Type",
        "Tus-Resumable",
        "Upload-Length",
        "Upload-Offset",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Concat",
        "Upload-Checksum",
        "X-HTTP-Method-Override",
        "X-Requested-With",
        "X-Request-ID",
        "Upload-Complete",
        "Upload-Incomplete",
        "Upload-Draft-Interop-Version",
    ]
)
EXPOSE_HEADERS = ", ".join(
    [
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Concat",
        "Upload-Expires",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
        "Upload-Complete",
        "Upload-Limit",
        "Upload-Draft-Interop-Version",
        "Retry-After",
        "WWW-Authenticate",
        "X-Request-ID",
        "X-Upload-Status",
        "X-Upload-Error",
        "X-File-Id",
    ]
)


def cors_middleware(allowed_origins: tuple[str, ...]) -> Middleware:
    """Echo allowed origins (`*` allows any, without credentials); refuse others with 403."""
    allow_any = "*" in allowed_origins
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            response = await handler(request)
            _vary_origin(response)
            return response
        if not (allow_any or origin.rstrip("/") in allowed):
            refused = web.json_response(
                {"error": "origin_not_allowed", "message": f"origin {origin} is not allowed"},
                status=403,
            )
            _vary_origin(refused)
            return refused
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "86400"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        _vary_origin(response)
        return response

    return middleware


def _vary_origin(response: web.StreamResponse) -> None:
    """Responses differ by Origin, so shared caches must key on it (kept with any other Vary)."""
    current = [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]
    if "origin" not in (v.lower() for v in current):
        response.headers["Vary"] = ", ".join([*current, "Origin"])
