"""The component schemas (`#/components/schemas`): files, sessions, transfers, status, audit."""

from __future__ import annotations

from tusingest.api.openapi.primitives import Json, integer, object_, ref, string, timestamp
from tusingest.domain import Retention, UploadStatus


def _retention() -> Json:
    return string(enum=[policy.value for policy in Retention])


def component_schemas() -> Json:
    file_fields = {
        "file_id": string(),
        "storage_element_id": string(),
        "storage_filename": string(),
        "size_bytes": integer(),
        "md5_hash": string(nullable=True),
        "sha256_hash": string(),
        "uploaded_at": timestamp(),
        "content_type": string(),
        "retention_policy": _retention(),
    }
    stored = object_(
        {**file_fields, "upload_session_id": string()},
        # A file deleted before the answer is written is only named.
        optional=[name for name in file_fields if name != "file_id"],
    )
    batch_item = object_(
        {
            "filename": string(),
            "status": string(enum=["success", "processing", "failed"]),
            "upload_session_id": string(),
            "error": string(),
            "message": string(),
            "retry_after_seconds": integer(),
            **file_fields,
            "size_bytes": integer(nullable=True),
        },
        optional=["upload_session_id", "error", "message", "retry_after_seconds", *file_fields],
    )
    return {
        "Error": object_({"error": string(), "message": string()}),
        "FileEntry": object_(
            {
                "file_id": string(),
                "upload_id": string(),
                "storage_element_id": string(),
                "storage_filename": string(),
                "storage_path": string(),
                "original_filename": string(),
                "content_type": string(),
                "declared_type": string(nullable=True),
                "size_bytes": integer(),
                "stored_size_bytes": integer(),
                "codec": string(nullable=True),
                "md5_hash": string(nullable=True),
                "sha256_hash": string(),
                "stored_sha256_hash": string(),
                "retention_policy": _retention(),
                "owner": string(),
                "uploaded_at": timestamp(),
            }
        ),
        "FileList": object_(
            {
                "files": {"type": "array", "items": ref("FileEntry")},
                "next_cursor": string(nullable=True),
            }
        ),
        "StoredFile": stored,
        "BatchResult": object_(
            {
                "results": {"type": "array", "items": batch_item},
                "summary": object_(
                    {
                        "total": integer(),
                        "succeeded": integer(),
                        "failed": integer(),
                        "processing": integer(),
                    }
                ),
            }
        ),
        "Transfer": object_(
            {
                "transfer_id": string(),
                "file_id": string(),
                "status": string(
                    enum=["queued", "in_progress", "verifying", "completed", "failed"]
                ),
                "source_storage_element_id": string(),
                "destination_storage_element_id": string(),
                "bytes_transferred": integer(),
                "bytes_total": integer(),
                "transfer_rate_mbps": {"type": ["number", "null"]},
                "started_at": timestamp(nullable=True),
                "completed_at": timestamp(nullable=True),
                "delete_source": {"type": "boolean"},
                "error": string(),
                "last_error": string(),
            },
            optional=["error", "last_error"],
        ),
        "UploadSession": object_(
            {
                "session_id": string(),
                "status": string(enum=["in_progress", "completed", "failed"]),
                "bytes_uploaded": integer(),
                "bytes_total": integer(nullable=True),
                "last_activity_at": timestamp(),
                "upload_id": string(),
                "upload_status": string(enum=[status.value for status in UploadStatus]),
                "offset": integer(),
                "length": integer(nullable=True),
                "metadata": {"type": "object", "additionalProperties": string()},
                "concat": string(nullable=True),
                "verdict": {
                    "oneOf": [
                        {"type": "null"},
                        object_({"error": string(), "message": string(nullable=True)}),
                    ]
                },
                "file_id": string(nullable=True),
                "md5": string(nullable=True),
                "sha256": string(nullable=True),
                "created_at": timestamp(),
                "updated_at": timestamp(),
                "expires_at": timestamp(nullable=True),
                "file": {"oneOf": [{"type": "null"}, ref("SessionFile")]},
            }
        ),
        "SessionFile": object_(
            {
                "file_id": string(),
                "element_id": string(),
                "storage_path": string(),
                "storage_filename": string(),
                "original_filename": string(),
                "content_type": string(),
                "declared_type": string(nullable=True),
                "size": integer(),
                "stored_size": integer(),
                "codec": string(nullable=True),
                "md5": string(nullable=True),
                "sha256": string(),
                "stored_sha256": string(),
                "retention_policy": string(),
            }
        ),
        "StatusDocument": _status_document(),
        "AuditPage": object_(
            {
                "events": {"type": "array", "items": ref("AuditEvent")},
                "next_before": integer(nullable=True),
            }
        ),
        "AuditEvent": object_(
            {
                "id": integer(),
                "at": timestamp(),
                "user": string(),
                "action": string(),
                "subject": string(description="The file id (an upload id for a rejection)"),
                "address": string(nullable=True),
                "outcome": string(nullable=True),
                "detail": {"type": "object"},
            }
        ),
    }


def _status_document() -> Json:
    """`GET /api/status`; a section that could not be read is `{"error": ...}` instead."""
    number = {"type": ["number", "null"]}
    failed = object_({"error": string()})

    def section(schema: Json) -> Json:
        return {"oneOf": [schema, failed]}

    in_flight = object_(
        {
            "upload_id": string(),
            "owner": string(),
            "filename": string(nullable=True),
            "offset": integer(),
            "length": integer(nullable=True),
            "percent": number,
            "bytes_per_second": integer(nullable=True),
            "eta_seconds": number,
            "node": string(nullable=True),
            "created_at": string(format="date-time"),
            "updated_at": string(format="date-time"),
        }
    )
    verdict = {
        "type": "object",
        "required": ["at", "owner", "outcome", "upload_id"],
        "properties": {
            "at": string(format="date-time"),
            "owner": string(),
            "outcome": string(enum=["stored", "rejected", "failed"]),
            "upload_id": string(nullable=True),
            "file_id": string(),
            "filename": string(nullable=True),
            "size": integer(nullable=True),
            "element_id": string(nullable=True),
            "reason": string(nullable=True),
            "message": string(),
        },
    }
    work = object_(
        {
            "id": string(),
            "kind": string(),
            "subject": string(),
            "status": string(enum=["queued", "retrying", "running", "failed"]),
            "step": string(nullable=True),
            "attempts": integer(),
            "next_attempt_at": string(format="date-time"),
            "last_error": string(nullable=True),
            "updated_at": string(format="date-time"),
        }
    )
    element = object_(
        {
            "element_id": string(),
            "mode": string(),
            "priority": integer(),
            "endpoint": string(),
            "capacity_total": integer(),
            "capacity_used": integer(),
            "capacity_free": integer(),
            "used_percent": number,
            "capacity_status": string(),
            "healthy": {"type": "boolean"},
            "breaker": string(enum=["closed", "half_open", "open"]),
            "usable": {"type": "boolean"},
        }
    )
    return object_(
        {
            "generated_at": string(format="date-time"),
            "node": object_(
                {
                    "id": string(),
                    "hostname": string(),
                    "pid": integer(),
                    "version": string(),
                    "database": string(enum=["sqlite", "postgresql"]),
                    "started_at": string(format="date-time"),
                    "uptime_seconds": {"type": "number"},
                    "window_seconds": integer(),
                    "uploads_per_second": {"type": "number"},
                    "bytes_per_second": integer(),
                    "receiving_here": integer(),
                }
            ),
            "uploads": object_(
                {
                    "in_progress": section({"type": "array", "items": in_flight}),
                    "recent": section({"type": "array", "items": verdict}),
                }
            ),
            "operations": section(
                object_(
                    {
                        "counts": {"type": "object", "additionalProperties": integer()},
                        "items": {"type": "array", "items": work},
                    }
                )
            ),
            "storage": section(
                object_(
                    {
                        "registry": object_(
                            {
                                "sources": {"type": "array", "items": string()},
                                "answered_by": {
                                    "type": "object",
                                    "additionalProperties": string(),
                                },
                                "reloaded_at": string(nullable=True, format="date-time"),
                            }
                        ),
                        "elements": {"type": "array", "items": element},
                    }
                )
            ),
        }
    )
