"""tus 1.0 handlers, one per verb; the tus edge has resolved the method and authenticated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from aiohttp import StreamReader, web

from tusingest.auth import PRINCIPAL, client_address
from tusingest.domain import Principal, Upload, UploadStatus
from tusingest.errors import (
    BadRequest,
    BodyInterrupted,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TusingestError,
    UnsupportedMediaType,
    UploadInterrupted,
)
from tusingest.intake import INTAKE
from tusingest.metadata import metadata_text, parse_metadata
from tusingest.pipeline.validate import check_at_creation
from tusingest.services import SERVICES, Services
from tusingest.tus import verdict
from tusingest.tus.protocol import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    format_http_date,
    parse_checksum,
    parse_concat,
    parse_non_negative,
)

log = logging.getLogger(__name__)


async def options(request: web.Request) -> web.StreamResponse:
    """Discovery: what this server speaks (no version check, no token)."""
    services = request.config_dict[SERVICES]
    return web.Response(
        status=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(services.uploads.policy.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


async def terminate(request: web.Request) -> web.StreamResponse:
    """Termination; an upload already stored takes its file with it (the delete saga)."""
    services = request.config_dict[SERVICES]
    principal = request[PRINCIPAL]
    upload_id = request.match_info["upload_id"]
    upload = await services.uploads.find(principal, upload_id)
    if upload.status is UploadStatus.STORED and upload.file_id:
        with contextlib.suppress(NotFound):  # NotFound: deleted already, through the API
            await services.deletions.delete(principal, upload.file_id, client_address(request))
    await services.uploads.terminate(principal, upload_id)
    return web.Response(status=204)


def _state_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset)}
    if upload.expires_at is not None:
        headers["Upload-Expires"] = format_http_date(upload.expires_at)
    return headers


def _location(request: web.Request, upload: Upload) -> str:
    # Relative: right behind any proxy; clients resolve it against the endpoint.
    return f"{request.path.rstrip('/')}/{upload.id}"


def _interrupter(request: web.Request) -> Callable[[], None]:
    """Ends this request's body stream when a newer request wants the upload: what arrived is
    committed and the lease released (tusd's lock release request)."""

    def interrupt() -> None:
        if not request.content.is_eof():
            request.content.set_exception(
                UploadInterrupted(
                    "the upload was handed over (a newer request took it, or this node is "
                    "shutting down): resume it"
                )
            )

    return interrupt


async def create(request: web.Request) -> web.StreamResponse:
    """POST: creation, creation-with-upload, creation-defer-length, concatenation."""
    services = request.config_dict[SERVICES]
    principal = request[PRINCIPAL]
    concat_header = request.headers.get("Upload-Concat")
    concat = parse_concat(concat_header) if concat_header is not None else None
    raw_metadata = request.headers.get("Upload-Metadata")
    metadata_raw = raw_metadata if parse_metadata(raw_metadata) else None
    check_at_creation(metadata_text(metadata_raw), principal.sub, datetime.now(UTC))
    if concat is not None and concat[0] == "final":
        return await _create_final(request, services, principal, concat[1], metadata_raw)
    length = parse_non_negative("Upload-Length", request.headers.get("Upload-Length"))
    defer = request.headers.get("Upload-Defer-Length")
    if (length is None) == (defer is None):
        raise BadRequest(
            "send exactly one of Upload-Length and Upload-Defer-Length", code="invalid_length"
        )
    if defer is not None and defer.strip() != "1":
        raise BadRequest("Upload-Defer-Length must be 1", code="invalid_upload_defer_length")
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    with_body = await _has_offset_body(request)
    content_length = request.content_length
    if with_body and length is not None and content_length is not None and content_length > length:
        raise PayloadTooLarge(f"the body ({content_length} bytes) is longer than Upload-Length")
    await services.limits.start_upload(principal)
    upload = await services.uploads.create(
        principal,
        length=length,
        metadata_raw=metadata_raw,
        partial=concat is not None,
        address=client_address(request),
    )
    if with_body:
        try:
            with request.config_dict[INTAKE].streaming(request):
                upload = await services.uploads.append(
                    principal,
                    upload.id,
                    offset=0,
                    length=None,
                    content_length=content_length,
                    body=services.limits.paced(principal, _body(request)),
                    checksum=checksum,
                    on_release=_interrupter(request),
                )
        except Exception:
            # Without a 201 the client never learns the Location: nobody could resume it.
            await _discard(services, principal, upload.id)
            raise
    upload = await services.verdicts.settle(upload)
    headers = _state_headers(upload)
    headers["Location"] = _location(request, upload)
    return verdict.respond(upload, 201, headers, services.verdicts.retry_after)


async def _has_offset_body(request: web.Request) -> bool:
    """Whether a creation carries upload bytes (creation-with-upload)."""
    if not request.body_exists:
        return False
    if request.content_type == OFFSET_CONTENT_TYPE:
        return True
    # Some HTTP stacks force a content type even on an empty (chunked) body.
    async for chunk in _body(request):
        if chunk:
            raise UnsupportedMediaType(
                f"a creation body must be {OFFSET_CONTENT_TYPE}", code="unsupported_media_type"
            )
    return False


async def _create_final(
    request: web.Request,
    services: Services,
    principal: Principal,
    parts: list[tuple[str, str]],
    metadata_raw: str | None,
) -> web.StreamResponse:
    if "Upload-Length" in request.headers or "Upload-Defer-Length" in request.headers:
        raise BadRequest(
            "a final upload's length is the sum of its parts: send no Upload-Length",
            code="invalid_length",
        )
    if request.body_exists and await _has_data(request):
        raise Forbidden("a final upload cannot carry data", code="final_upload")
    # HEAD echoes the header as received: keep the URL list verbatim.
    header = request.headers["Upload-Concat"].strip()
    await services.limits.start_upload(principal)
    upload = await services.uploads.create_final(
        principal,
        concat=header.partition(";")[2],
        part_ids=parts,
        metadata_raw=metadata_raw,
        address=client_address(request),
    )
    upload = await services.verdicts.settle(upload)
    headers = _state_headers(upload)
    headers["Location"] = _location(request, upload)
    return verdict.respond(upload, 201, headers, services.verdicts.retry_after)


async def _has_data(request: web.Request) -> bool:
    async for chunk in _body(request):
        if chunk:
            return True
    return False


async def _discard(services: Services, principal: Principal, upload_id: str) -> None:
    try:
        await services.uploads.terminate(principal, upload_id)
    except Exception:
        log.exception("could not discard the failed creation %s", upload_id)


async def head(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    upload = await services.uploads.current(request[PRINCIPAL], request.match_info["upload_id"])
    refusal = verdict.head_refusal(upload, services.verdicts.retry_after)
    if refusal is not None:
        return refusal
    headers = _state_headers(upload)
    headers["Cache-Control"] = "no-store"
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.metadata_raw:
        headers["Upload-Metadata"] = upload.metadata_raw
    if upload.concat:
        headers["Upload-Concat"] = upload.concat
    headers.update(verdict.verdict_headers(upload))
    return web.Response(status=200, headers=headers)


async def patch(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    principal = request[PRINCIPAL]
    upload_id = request.match_info["upload_id"]
    try:
        if request.content_type != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
        offset = parse_non_negative("Upload-Offset", request.headers.get("Upload-Offset"))
        if offset is None:
            raise BadRequest("Upload-Offset is required", code="missing_upload_offset")
        length = parse_non_negative("Upload-Length", request.headers.get("Upload-Length"))
        checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    except TusingestError:
        # An unknown, expired or final upload outranks a bad header (404/410/403 before 400);
        # looked up only on this error path, so a good PATCH costs no extra query.
        upload = await services.uploads.find(principal, upload_id)
        if upload.is_final:
            raise Forbidden("a final upload cannot be patched", code="final_upload") from None
        raise
    with request.config_dict[INTAKE].streaming(request):
        upload = await services.uploads.append(
            principal,
            upload_id,
            offset=offset,
            length=length,
            content_length=request.content_length,
            body=services.limits.paced(principal, _body(request)),
            checksum=checksum,
            on_release=_interrupter(request),
        )
    upload = await services.verdicts.settle(upload)
    return verdict.respond(upload, 204, _state_headers(upload), services.verdicts.retry_after)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a lost connection, or one that sends nothing for the
    body timeout, becomes `BodyInterrupted` (what arrived before is kept)."""
    content = request.content
    timeout = request.config_dict[SERVICES].uploads.policy.body_timeout
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await content.readany()
        except TimeoutError:
            raise BodyInterrupted(
                f"the client sent nothing for {timeout:g} s", code="body_timeout"
            ) from None
        except Exception as exc:
            rest = _buffered(content)
            if rest:
                yield rest
            if isinstance(exc, BodyInterrupted):
                raise
            raise BodyInterrupted(f"the request body ended early: {exc!r}") from None
        if not chunk:
            return
        yield chunk


def _buffered(content: StreamReader) -> bytes:
    """Bytes that arrived before the connection dropped but were not read yet.

    aiohttp's `read()` raises the connection error even while data is still buffered; an
    interrupted PATCH keeps everything that arrived, so drain the buffer directly.
    `_read_nowait` is aiohttp-internal (checked with 3.14): on any surprise keep only what was
    read before.
    """
    try:
        return content._read_nowait(-1)
    except Exception:
        return b""
