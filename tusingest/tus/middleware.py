"""tus edge: `Tus-Resumable` on every response and errors rendered as plain text."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from tusingest.errors import PreconditionFailed, TusingestError, UploadInterrupted
from tusingest.tus.protocol import TUS_VERSION

log = logging.getLogger(__name__)

PREFIX = "/files"


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


def _is_tus(request: web.Request) -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


@web.middleware
async def tus_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_tus(request):
        return await handler(request)
    try:
        response = await handler(request)
    except UploadInterrupted as exc:
        return await _answer_and_close(request, exc)
    except TusingestError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        code = exc.reason.lower().replace(" ", "_")
        response = web.Response(status=exc.status, text=f"{code}: {exc.reason}\n", headers=allow)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = web.Response(status=500, text="internal_error: unexpected server error\n")
    response.headers["Tus-Resumable"] = TUS_VERSION
    return response


async def _answer_and_close(request: web.Request, error: UploadInterrupted) -> web.StreamResponse:
    """Tell an interrupted request why, then drop its connection: the rest of its body is
    not wanted, and draining it would only delay the request that took over."""
    response = error_response(error)
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    finally:
        request.protocol.force_close()
    return response
