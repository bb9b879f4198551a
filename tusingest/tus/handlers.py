"""tus 1.0 handlers: one per verb, dispatched on the effective (overridable) method."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import StreamReader, web

from tusingest.domain import Principal, Upload
from tusingest.errors import (
    BadRequest,
    BodyInterrupted,
    PayloadTooLarge,
    PreconditionFailed,
    TusingestError,
    UnsupportedMediaType,
)
from tusingest.services import SERVICES, Services
from tusingest.tus.protocol import (
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    format_http_date,
    parse_metadata,
    parse_non_negative,
)

log = logging.getLogger(__name__)

_READ_SIZE = 1 << 20
_COLLECTION_METHODS = ("OPTIONS", "POST")
_RESOURCE_METHODS = ("OPTIONS", "HEAD", "PATCH", "DELETE")


def effective_method(request: web.Request) -> str:
    override = request.headers.get("X-HTTP-Method-Override", "").strip()
    return override.upper() if override else request.method


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable", "").strip() != TUS_VERSION:
        raise PreconditionFailed(
            f"Tus-Resumable must be {TUS_VERSION}", headers={"Tus-Version": TUS_VERSION}
        )


def _principal(request: web.Request, services: Services) -> Principal:
    return services.authenticator.authenticate(request.headers.get("Authorization"))


def _not_allowed(method: str, allowed: tuple[str, ...]) -> web.HTTPMethodNotAllowed:
    return web.HTTPMethodNotAllowed(method, allowed)


async def collection(request: web.Request) -> web.StreamResponse:
    """`/files/`: OPTIONS and POST (creation)."""
    method = effective_method(request)
    services = request.app[SERVICES]
    if method == "OPTIONS":
        return _options(services)
    if method != "POST":
        raise _not_allowed(method, _COLLECTION_METHODS)
    _check_version(request)
    return await _create(request, services, _principal(request, services))


async def resource(request: web.Request) -> web.StreamResponse:
    """`/files/{id}`: OPTIONS, HEAD, PATCH, DELETE."""
    method = effective_method(request)
    services = request.app[SERVICES]
    if method == "OPTIONS":
        return _options(services)
    if method not in _RESOURCE_METHODS:
        raise _not_allowed(method, _RESOURCE_METHODS)
    _check_version(request)
    principal = _principal(request, services)
    upload_id = request.match_info["upload_id"]
    if method == "HEAD":
        return await _head(services, principal, upload_id)
    if method == "PATCH":
        return await _patch(request, services, principal, upload_id)
    await services.uploads.terminate(principal, upload_id)
    return web.Response(status=204)


def _options(services: Services) -> web.StreamResponse:
    return web.Response(
        status=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(services.settings.max_file_size),
        },
    )


def _state_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset)}
    if upload.expires_at is not None:
        headers["Upload-Expires"] = format_http_date(upload.expires_at)
    return headers


async def _create(
    request: web.Request, services: Services, principal: Principal
) -> web.StreamResponse:
    if "Upload-Concat" in request.headers:
        raise BadRequest("concatenation is not supported", code="concatenation_unsupported")
    length = parse_non_negative("Upload-Length", request.headers.get("Upload-Length"))
    defer = request.headers.get("Upload-Defer-Length")
    if (length is None) == (defer is None):
        raise BadRequest(
            "send exactly one of Upload-Length and Upload-Defer-Length", code="invalid_length"
        )
    if defer is not None and defer.strip() != "1":
        raise BadRequest("Upload-Defer-Length must be 1", code="invalid_upload_defer_length")
    raw_metadata = request.headers.get("Upload-Metadata")
    metadata = parse_metadata(raw_metadata)
    with_body = request.body_exists
    if with_body and request.content_type != OFFSET_CONTENT_TYPE:
        # Some HTTP stacks force a content type even on an empty (chunked) body.
        async for chunk in _body(request):
            if chunk:
                raise UnsupportedMediaType(
                    f"a creation body must be {OFFSET_CONTENT_TYPE}", code="unsupported_media_type"
                )
        with_body = False
    content_length = request.content_length
    if with_body and length is not None and content_length is not None and content_length > length:
        raise PayloadTooLarge(f"the body ({content_length} bytes) is longer than Upload-Length")
    upload = await services.uploads.create(
        principal, length=length, metadata_raw=raw_metadata if metadata else None
    )
    if with_body:
        try:
            upload = await services.uploads.append(
                principal,
                upload.id,
                offset=0,
                length=None,
                content_length=content_length,
                body=_body(request),
            )
        except Exception:
            # Without a 201 the client never learns the Location: nobody could resume it.
            await _discard(services, principal, upload.id)
            raise
    headers = _state_headers(upload)
    headers["Location"] = f"{request.path.rstrip('/')}/{upload.id}"
    return web.Response(status=201, headers=headers)


async def _discard(services: Services, principal: Principal, upload_id: str) -> None:
    try:
        await services.uploads.terminate(principal, upload_id)
    except Exception:
        log.exception("could not discard the failed creation %s", upload_id)


async def _head(services: Services, principal: Principal, upload_id: str) -> web.StreamResponse:
    upload = await services.uploads.find(principal, upload_id)
    headers = _state_headers(upload)
    headers["Cache-Control"] = "no-store"
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.metadata_raw:
        headers["Upload-Metadata"] = upload.metadata_raw
    return web.Response(status=200, headers=headers)


async def _patch(
    request: web.Request, services: Services, principal: Principal, upload_id: str
) -> web.StreamResponse:
    await services.uploads.find(principal, upload_id)
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
    offset = parse_non_negative("Upload-Offset", request.headers.get("Upload-Offset"))
    if offset is None:
        raise BadRequest("Upload-Offset is required", code="missing_upload_offset")
    length = parse_non_negative("Upload-Length", request.headers.get("Upload-Length"))
    upload = await services.uploads.append(
        principal,
        upload_id,
        offset=offset,
        length=length,
        content_length=request.content_length,
        body=_body(request),
    )
    return web.Response(status=204, headers=_state_headers(upload))


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in large reads; a lost connection becomes `BodyInterrupted`."""
    content = request.content
    while True:
        try:
            chunk = await content.read(_READ_SIZE)
        except TusingestError:
            raise
        except Exception as exc:
            rest = _buffered(content)
            if rest:
                yield rest
            raise BodyInterrupted(f"the request body ended early: {exc!r}") from None
        if not chunk:
            return
        yield chunk


def _buffered(content: StreamReader) -> bytes:
    """Bytes that arrived before the connection dropped but were not read yet.

    aiohttp's `read()` raises the connection error even while data is still buffered; an
    interrupted PATCH should keep everything that arrived (tus-protocol.md §2.4), so drain the
    buffer directly. `_read_nowait` is aiohttp-internal (checked with 3.14): on any surprise
    keep only what was read before.
    """
    try:
        return content._read_nowait(-1)
    except Exception:
        return b""
