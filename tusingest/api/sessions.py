"""`GET /api/files/upload/session/{id}`: an upload's state and the pipeline's verdict."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tusingest.auth import PRINCIPAL
from tusingest.domain import CatalogEntry, Upload, UploadStatus
from tusingest.metadata import metadata_text
from tusingest.services import SERVICES


async def session(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    upload = await services.uploads.find(request[PRINCIPAL], request.match_info["upload_id"])
    entry = await services.catalog.by_upload(upload.id) if upload.file_id else None
    return web.json_response(describe(upload, entry))


# The seed's three states; `upload_status` keeps the detailed one.
_SEED_STATUS = {
    UploadStatus.RECEIVING: "in_progress",
    UploadStatus.COMPLETE: "in_progress",
    UploadStatus.PROCESSING: "in_progress",
    UploadStatus.STORED: "completed",
}


def describe(upload: Upload, entry: CatalogEntry | None) -> dict[str, Any]:
    return {
        "session_id": upload.id,
        "status": _SEED_STATUS.get(upload.status, "failed"),
        "bytes_uploaded": upload.offset,
        "bytes_total": upload.length,
        "last_activity_at": upload.updated_at.isoformat(),
        "upload_id": upload.id,
        "upload_status": upload.status.value,
        "offset": upload.offset,
        "length": upload.length,
        "metadata": metadata_text(upload.metadata_raw),
        "concat": upload.concat,
        "verdict": (
            {"error": upload.error, "message": upload.error_detail} if upload.error else None
        ),
        "file_id": upload.file_id,
        "md5": upload.md5,
        "sha256": upload.sha256,
        "created_at": upload.created_at.isoformat(),
        "updated_at": upload.updated_at.isoformat(),
        "expires_at": upload.expires_at.isoformat() if upload.expires_at else None,
        "file": None if entry is None or entry.deleted_at else _file(entry),
    }


def _file(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "file_id": entry.file_id,
        "element_id": entry.element_id,
        "storage_path": entry.storage_path,
        "storage_filename": entry.storage_filename,
        "original_filename": entry.original_filename,
        "content_type": entry.content_type,
        "declared_type": entry.declared_type,
        "size": entry.size,
        "stored_size": entry.stored_size,
        "codec": entry.codec,
        "md5": entry.md5,
        "sha256": entry.sha256,
        "stored_sha256": entry.stored_sha256,
        "retention_policy": entry.retention_policy,
    }
