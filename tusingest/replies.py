"""Replies of the HTTP services we call (SEs, Admin Module): status and JSON body, if any."""

from __future__ import annotations

from typing import Any

import aiohttp

Reply = tuple[int, Any]  # HTTP status, parsed JSON body (None when empty or not JSON)


async def read_reply(response: aiohttp.ClientResponse) -> Reply:
    raw = await response.read()
    try:
        body = await response.json(content_type=None) if raw.strip() else None
    except ValueError:
        body = None
    return response.status, body


def failure(exc: BaseException) -> str:
    """Why a call got no reply. A refused TLS handshake says so and why (an untrusted or
    mismatched certificate, a protocol version, a missing client certificate); anything else
    is its repr."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS to {exc.host}:{exc.port} refused: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS to {exc.host}:{exc.port} failed: {exc.os_error}"
    return repr(exc)


def detail(body: Any) -> str:
    """The `{"detail": ...}` of an error reply (both services answer errors that way)."""
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return "" if body is None else str(body)[:200]
