"""The reference element's file endpoints: upload, metadata, list, PATCH, download, delete and
gc delete; with the real SE's quirks a client must survive: names too long for its disk fail
with 500, and (when a test asks for it) a stalled lookup reports a file as absent."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web

from tusingest.artstore import METADATA_KEYS, se_name_fits
from tusingest.diskio import write_hashed
from tusingest.domain import WRITABLE_MODES, ElementMode, FileToStore
from tusingest.refelement.auth import Caller, authenticate
from tusingest.refelement.replies import SEError, parse_file_id, validation_error
from tusingest.refelement.state import ELEMENT, ElementState, now

_CHUNK = 1 << 20
_MAX_FIELD = 1 << 20  # bytes of one non-file form field
_MAX_VERSION = 50
_CACHE_TTL_HOURS = 24


@dataclass(frozen=True)
class _Spooled:
    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str


def metadata_body(attr: dict[str, Any]) -> dict[str, Any]:
    """The metadata object of a file, from its attr.json (our "cache" never expires)."""
    body = {key: attr.get(key) for key in METADATA_KEYS}
    body["cache_updated_at"] = now().isoformat()
    body["cache_ttl_hours"] = _CACHE_TTL_HOURS
    body["cache_expired"] = False
    return body


def _not_found(file_id: str) -> SEError:
    return SEError(404, f"File {file_id} not found")


async def _lookup(state: ElementState, endpoint: str, file_id: str) -> dict[str, Any] | None:
    """`file_id`'s attr.json; None after the stall of a stalled endpoint, whatever is stored."""
    stall = state.stalls.get(endpoint)
    if stall is not None:
        await asyncio.sleep(stall)
        return None
    return await state.element.read_attr(file_id)


def _refuse_mode(state: ElementState, action: str) -> None:
    mode = state.settings.mode
    if mode not in WRITABLE_MODES:
        raise SEError(400, f"File {action} not allowed in {mode.value} mode")


async def upload(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    caller = authenticate(request)
    _refuse_mode(state, "upload")
    fields, spooled = await _receive(request, state.incoming)
    try:
        return await _store(state, caller, fields, spooled)
    finally:
        await asyncio.to_thread(_discard, spooled.path)


async def _store(
    state: ElementState, caller: Caller, fields: dict[str, str], spooled: _Spooled
) -> web.StreamResponse:
    raw_id = fields.get("file_id") or ""
    if raw_id:
        try:
            file_id = str(uuid.UUID(raw_id))
        except ValueError:
            raise SEError(400, f"Invalid file_id format: {raw_id}") from None
    else:
        file_id = str(uuid.uuid4())
    version = fields.get("version")
    if version is not None and len(version) > _MAX_VERSION:
        raise SEError(422, [validation_error("body", "version", version, "at most 50 chars")])
    transaction = fields.get("finalize_transaction_id")
    if transaction:
        try:
            uuid.UUID(transaction)
        except ValueError:
            raise SEError(500, f"Invalid finalize_transaction_id: {transaction}") from None
    if file_id in state.busy or await state.element.read_attr(file_id) is not None:
        raise SEError(500, f"File with ID {file_id} already exists")
    if spooled.size == 0:
        raise SEError(500, "File upload failed: file_size must be greater than 0")
    if not se_name_fits(spooled.filename, caller.name):
        # The real SE cuts names to 200 characters, not to the 255 bytes its disk takes.
        raise SEError(500, "File upload failed: [Errno 36] File name too long")
    state.busy.add(file_id)
    try:
        item = FileToStore(
            file_id=file_id,
            source=spooled.path,
            original_filename=spooled.filename,
            content_type=spooled.content_type,
            size=spooled.size,
            sha256=spooled.sha256,
            owner_sub=caller.sub,
            owner_name=caller.name,
            uploaded_at=now(),
            metadata={},
        )
        extra: dict[str, Any] = {k: fields[k] for k in ("description", "version") if k in fields}
        try:
            stored = await state.element.store(item)
            if extra:
                await state.element.update_attr(file_id, extra)
        except Exception as exc:
            await state.element.delete(file_id)  # roll back data and attr.json
            raise SEError(500, f"File upload failed: {exc}") from exc
    finally:
        state.busy.discard(file_id)
    return web.json_response(
        {
            "file_id": file_id,
            "original_filename": spooled.filename,
            "file_size": stored.size,
            "checksum": stored.sha256,
            "message": "File uploaded successfully",
        },
        status=201,
    )


async def _receive(request: web.Request, incoming: Path) -> tuple[dict[str, str], _Spooled]:
    """Text fields, and the `file` part streamed to a temporary file (removed on error)."""
    fields: dict[str, str] = {}
    spooled: _Spooled | None = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file" and spooled is None:
                if part.filename is None:
                    raise _missing("file", "an upload with a filename")
                spooled = await _spool(part, incoming)
            elif part.name and part.name not in fields:
                fields[part.name] = await _read_field(part)
            else:
                await part.release()
    except (ValueError, AssertionError, KeyError, RuntimeError) as exc:
        if spooled is not None:
            _discard(spooled.path)
        raise SEError(422, [validation_error("body", "file", None, f"multipart: {exc}")]) from exc
    except BaseException:
        if spooled is not None:
            _discard(spooled.path)
        raise
    if spooled is None:
        raise _missing("file", "an upload with a filename")
    return fields, spooled


def _missing(name: str, expected: str) -> SEError:
    return SEError(422, [validation_error("body", name, None, expected)])


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK):
        data += chunk
        if len(data) > _MAX_FIELD:
            raise SEError(422, [validation_error("body", part.name or "", None, "a shorter value")])
    return data.decode(part.get_charset("utf-8"), "replace")


async def _spool(part: BodyPartReader, incoming: Path) -> _Spooled:
    fd, name = await asyncio.to_thread(_mkstemp, incoming)
    path = Path(name)
    hasher = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await part.read_chunk(_CHUNK):
                await asyncio.to_thread(write_hashed, out, hasher, chunk)
                size += len(chunk)
    except BaseException:
        _discard(path)
        raise
    content_type = part.headers.get(hdrs.CONTENT_TYPE) or "application/octet-stream"
    return _Spooled(path, part.filename or "", content_type, size, hasher.hexdigest())


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _mkstemp(directory: Path) -> tuple[int, str]:
    directory.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=".upload_", dir=directory)


async def list_files(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    authenticate(request)
    try:
        skip = int(request.query.get("skip", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise _missing("skip/limit", "an integer") from None
    if skip < 0 or not 1 <= limit <= 100:
        raise _missing("skip/limit", "skip >= 0 and 1 <= limit <= 100")
    attrs = await state.element.list_attrs()
    attrs.sort(key=lambda a: str(a.get("created_at", "")), reverse=True)
    page = [metadata_body(a) for a in attrs[skip : skip + limit]]
    return web.json_response({"total": len(attrs), "files": page})


async def metadata(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    authenticate(request)
    file_id = parse_file_id(request)
    attr = await _lookup(state, "metadata", file_id)
    if attr is None:
        raise _not_found(file_id)
    return web.json_response(metadata_body(attr))


async def update(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    authenticate(request)
    file_id = parse_file_id(request)
    _refuse_mode(state, "update")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _missing("body", "a JSON object")
    changes: dict[str, Any] = {}
    for key in ("description", "version"):
        if key in body:
            value = body[key]
            if value is not None and not isinstance(value, str):
                raise SEError(422, [validation_error("body", key, value, "a valid string")])
            if key == "version" and value is not None and len(value) > _MAX_VERSION:
                raise SEError(422, [validation_error("body", key, value, "at most 50 chars")])
            changes[key] = value
    if body.get("metadata") is not None:
        if not isinstance(body["metadata"], dict):
            raise SEError(422, [validation_error("body", "metadata", body["metadata"], "a dict")])
        changes["metadata"] = body["metadata"]
    changes["updated_at"] = now().isoformat(timespec="microseconds")
    async with state.attr_lock:
        attr = await state.element.update_attr(file_id, changes)
    if attr is None:
        raise _not_found(file_id)
    return web.json_response(metadata_body(attr))


async def download(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    authenticate(request)
    file_id = parse_file_id(request)
    attr = await _lookup(state, "download", file_id)
    stored = None if attr is None else await state.element.find(file_id)
    if attr is None or stored is None:
        raise _not_found(file_id)
    disposition = f'attachment; filename="{attr["original_filename"]}"'
    try:
        disposition.encode("latin-1")  # the SE's headers are Latin-1: others answer 500
    except UnicodeEncodeError:
        raise SEError(500, "Internal Server Error") from None
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: str(attr.get("content_type") or "application/octet-stream"),
            hdrs.CONTENT_DISPOSITION: disposition,
        }
    )
    response.content_length = stored.size
    path = state.settings.root / stored.storage_path / stored.storage_filename
    source = await asyncio.to_thread(open, path, "rb")
    try:
        await response.prepare(request)
        while chunk := await asyncio.to_thread(source.read, _CHUNK):
            await response.write(chunk)
    finally:
        await asyncio.to_thread(source.close)
    await response.write_eof()
    return response


async def delete(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    caller = authenticate(request)
    file_id = parse_file_id(request)
    if caller.role not in ("admin", "operator"):  # the SE checks the role before the mode
        raise SEError(403, "Operator or admin access required")
    mode = state.settings.mode
    if mode is not ElementMode.EDIT:
        raise SEError(
            400, f"File deletion not allowed in {mode.value} mode. Only EDIT mode allows deletion."
        )
    if await _lookup(state, "delete", file_id) is None:
        raise _not_found(file_id)
    await state.element.delete(file_id)
    return web.Response(status=204)


def _require_service_account(caller: Caller) -> None:
    if not caller.service_account:
        raise SEError(403, "Service account access required")


async def gc_delete(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    caller = authenticate(request)
    _require_service_account(caller)
    file_id = parse_file_id(request)
    reason = "gc_cleanup"
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise _missing("body", "a JSON object") from None
        if isinstance(body, dict) and isinstance(body.get("reason"), str):
            reason = body["reason"]
    exists = await _lookup(state, "gc_delete", file_id) is not None
    if exists:
        await state.element.delete(file_id)
    return web.json_response(
        {
            "status": "deleted" if exists else "already_deleted",
            "file_id": file_id,
            "deleted_at": now().isoformat(),
            "deleted_by": caller.sub,
            "reason": reason,
        }
    )


async def gc_exists(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    caller = authenticate(request)
    _require_service_account(caller)
    file_id = parse_file_id(request)
    exists = await _lookup(state, "gc_exists", file_id) is not None
    return web.json_response({"exists": exists, "file_id": file_id})
