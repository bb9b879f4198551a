"""Reading a multipart form from a client that may be hostile: its reader and parts, small
fields of bounded size, and chunks under a limit on silence; anything unreadable is a 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web

from tusingest.errors import BadRequest, BodyInterrupted, PayloadTooLarge, UnsupportedMediaType

CHUNK = 256 * 1024
FIELD_SILENCE = 60.0  # small fields and skipped parts: a silent client is not waited for longer


def refuse_length(request: web.Request, limit: int, code: str, what: str) -> None:
    """413 before reading a byte when the declared body cannot fit."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"{what} ({length} bytes) passes the limit of {limit} bytes", code=code
        )


async def multipart(request: web.Request) -> MultipartReader:
    if not request.content_type.startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            "send the file as multipart/form-data", code="unsupported_media_type"
        )
    try:
        return await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:
        raise BadRequest(f"not a readable multipart form: {exc}", code="invalid_form") from None


async def next_part(reader: MultipartReader) -> Any:
    try:
        return await reader.next()
    except (AssertionError, ValueError, KeyError) as exc:
        raise BadRequest(f"not a readable multipart form: {exc}", code="invalid_form") from None
    except Exception as exc:
        raise BodyInterrupted(f"the request body ended early: {exc!r}") from None


async def metadata_field(part: BodyPartReader, limit: int) -> str:
    """The form's `metadata` field as text: at most `limit` bytes of UTF-8."""
    data = bytearray()
    while chunk := await read_chunk(part, FIELD_SILENCE):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(
                f"the metadata field passes {limit} bytes", code="metadata_too_large"
            )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BadRequest("metadata is not UTF-8 text", code="invalid_metadata") from None


async def drain(part: BodyPartReader) -> None:
    while await read_chunk(part, FIELD_SILENCE):
        pass


async def read_chunk(part: BodyPartReader, silence: float) -> bytes:
    """The next chunk of `part`; a client silent for `silence` seconds, or gone, ends the
    body (`BodyInterrupted`)."""
    try:
        async with asyncio.timeout(silence):
            return await part.read_chunk(CHUNK)
    except TimeoutError:
        raise BodyInterrupted(
            f"the client sent nothing for {silence:g} s", code="body_timeout"
        ) from None
    except Exception as exc:
        raise BodyInterrupted(f"the request body ended early: {exc!r}") from None
