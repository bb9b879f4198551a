"""Requests that aiohttp's HTTP parser refuses before any handler runs: a header field or
request line too long, too many header fields, a duplicate Content-Length, a malformed request
line. Their answer has the JSON shape of every other refusal, with a status that says why and
a fixed message that echoes none of the client's bytes; aiohttp's own answer is plain text
that quotes them. Logging stays aiohttp's, which the noise filter folds into one line per
interval (`observability.NoiseFilter`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

_TOKEN = re.compile(r"[A-Za-z0-9-]{1,64}")


def handler_class(headers: Mapping[str, str]) -> type[RequestHandler]:
    """aiohttp's connection handler, answering the parser's refusals as JSON with `headers`.
    A handler made by aiohttp's server takes this class in place (`adopt`): it only overrides
    `handle_error` and adds no state, so the layout is the same."""
    fixed = dict(headers)

    class JsonRefusals(RequestHandler):
        __slots__ = ()

        def handle_error(
            self,
            request: BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> web.StreamResponse:
            # aiohttp's own handling logs the refusal, and raises if a response has begun.
            super().handle_error(request, status, exc, message)
            status, code, text = refusal(
                exc,
                status=status,
                max_field_size=self.max_field_size,
                max_headers=self.max_headers,
            )
            response = web.json_response(
                {"error": code, "message": text}, status=status, headers=fixed
            )
            response.force_close()
            return response

    return JsonRefusals


def adopt(handler: RequestHandler, cls: type[RequestHandler]) -> RequestHandler:
    """`handler`, now of `cls` (a `handler_class`); as it was if a future aiohttp's handler
    cannot change class (its refusals are then aiohttp's plain text, nothing worse)."""
    with contextlib.suppress(TypeError):
        handler.__class__ = cls
    return handler


def refusal(
    exc: BaseException | None,
    *,
    status: int = 500,
    max_field_size: int = 8190,
    max_headers: int = 128,
) -> tuple[int, str, str]:
    """(status, code, message) for what the parser raised; anything else keeps aiohttp's
    `status`: a handler that timed out (504) or failed (500)."""
    if isinstance(exc, LineTooLong):
        return (
            431,
            "header_too_large",
            f"a header field or the request line is longer than {max_field_size} bytes",
        )
    if isinstance(exc, HttpProcessingError):
        text = exc.message if isinstance(exc.message, str) else ""
        if text.startswith("Too many headers"):
            return 431, "too_many_headers", f"more than {max_headers} header fields"
        if text.startswith("Duplicate "):
            # "Duplicate 'Host' header found." or llhttp's "Duplicate Content-Length:\n..."
            first = text.splitlines()[0][len("Duplicate ") :]
            name = first.split("'")[1] if first.startswith("'") else first.rstrip(":")
            named = name if _TOKEN.fullmatch(name) else "a"
            return 400, "duplicate_header", f"{named} header is sent more than once"
        return 400, "malformed_request", "the request is not valid HTTP/1.1"
    if status == 504:
        return 504, "timeout", "the request took too long to handle"
    return 500, "internal_error", "unexpected server error"
