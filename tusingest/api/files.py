"""`/api/files`: one stored file, the caller's files (everyone's for admins), and deletion."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from aiohttp import web

from tusingest.auth import PRINCIPAL, client_address
from tusingest.domain import CatalogEntry
from tusingest.errors import BadRequest
from tusingest.pipeline.files import find_live
from tusingest.services import SERVICES

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def get_file(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    entry = await find_live(services.catalog, request[PRINCIPAL], request.match_info["file_id"])
    return web.json_response(describe(entry))


async def list_files(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    principal = request[PRINCIPAL]
    limit = parse_limit(request.query.get("limit"))
    after = _parse_cursor(request.query.get("cursor"))
    owner = None if principal.is_admin else principal.sub
    # One more than asked: whether another page follows, without a count.
    entries = await services.catalog.page(owner, limit + 1, after)
    page, more = entries[:limit], len(entries) > limit
    return web.json_response(
        {
            "files": [describe(entry) for entry in page],
            "next_cursor": _cursor(page[-1]) if more else None,
        }
    )


async def delete_file(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    file_id = request.match_info["file_id"]
    done = await services.deletions.delete(request[PRINCIPAL], file_id, client_address(request))
    if done:
        return web.Response(status=204)
    # The element is slow or down: the deletion goes on durably; the file is no longer listed
    # once it is gone.
    return web.json_response({"file_id": file_id.lower(), "status": "deleting"}, status=202)


def describe(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "file_id": entry.file_id,
        "upload_id": entry.upload_id,
        "storage_element_id": entry.element_id,
        "storage_filename": entry.storage_filename,
        "storage_path": entry.storage_path,
        "original_filename": entry.original_filename,
        "content_type": entry.content_type,
        "declared_type": entry.declared_type,
        "size_bytes": entry.size,
        "stored_size_bytes": entry.stored_size,
        "codec": entry.codec,
        "md5_hash": entry.md5,
        "sha256_hash": entry.sha256,
        "stored_sha256_hash": entry.stored_sha256,
        "retention_policy": entry.retention_policy,
        "owner": entry.owner,
        "uploaded_at": entry.created_at.isoformat(),
    }


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", code="invalid_limit")
    return int(raw)


def _cursor(entry: CatalogEntry) -> str:
    raw = f"{entry.created_at.isoformat()}|{entry.file_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        moment, file_id = text.split("|", 1)
        at = datetime.fromisoformat(moment)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not one this server gave out", code="invalid_cursor") from None
    if at.tzinfo is None:
        raise BadRequest("cursor is not one this server gave out", code="invalid_cursor")
    return at, file_id
