"""Errors in the element's own words: `{"detail": ...}` as FastAPI answers them, validation
errors included."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


class SEError(Exception):
    """An error answered as `{"detail": ...}` the way the SE (FastAPI) does."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


@web.middleware
async def detail_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SEError as exc:
        return web.json_response({"detail": exc.detail}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response({"detail": exc.reason}, status=exc.status, headers=allow)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response({"detail": "Internal Server Error"}, status=500)


def parse_file_id(request: web.Request) -> str:
    """The path's `file_id` in canonical form; a non-UUID is FastAPI's 422."""
    raw = request.match_info["file_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise SEError(422, [validation_error("path", "file_id", raw, "a valid UUID")]) from None


def validation_error(where: str, name: str, value: Any, expected: str) -> dict[str, Any]:
    return {
        "type": "value_error",
        "loc": [where, name],
        "msg": f"Input should be {expected}",
        "input": value,
    }
