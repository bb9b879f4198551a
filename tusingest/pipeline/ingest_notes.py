"""The audit notes an ingest leaves: the file stored, the upload rejected, the upload failed."""

from __future__ import annotations

from tusingest.domain import AuditNote, CatalogEntry, Upload
from tusingest.pipeline.validate import Rejection


def stored_note(upload: Upload, entry: CatalogEntry) -> AuditNote:
    return AuditNote(
        upload.owner,
        "file_stored",
        entry.file_id,
        {
            "upload_id": upload.id,
            "element_id": entry.element_id,
            "filename": entry.original_filename,
            "size": entry.size,
            "sha256": entry.sha256,
            "md5": entry.md5,
            "content_type": entry.content_type,
            "retention_policy": entry.retention_policy,
        },
        address=upload.client_address,
    )


def rejected_note(upload: Upload, meta: dict[str, str], rejection: Rejection) -> AuditNote:
    return AuditNote(
        upload.owner,
        "upload_rejected",
        upload.id,
        {"code": rejection.code, "message": rejection.message,
         "filename": meta.get("filename") or meta.get("name"), "size": upload.length},
        address=upload.client_address,
        outcome="rejected",
    )  # fmt: skip


def failed_note(upload: Upload, error: str) -> AuditNote:
    return AuditNote(
        upload.owner,
        "upload_failed",
        upload.id,
        {"error": error},
        address=upload.client_address,
        outcome="failed",
    )
