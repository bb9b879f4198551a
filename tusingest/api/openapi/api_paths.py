"""The JSON sub-app's paths (`/api/...`): files, uploads, transfers, sessions, audit, status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tusingest.api.files import DEFAULT_LIMIT, MAX_LIMIT
from tusingest.api.openapi.error_responses import (
    AUTH_CODES,
    challenge,
    json_error,
    retry_after,
    verdict_errors,
)
from tusingest.api.openapi.primitives import (
    Json,
    integer,
    json_content,
    object_,
    operation,
    param,
    ref,
    response,
    string,
    timestamp,
)
from tusingest.api.openapi.tus_paths import UPLOAD_ID
from tusingest.api.uploads import METADATA_LIMIT
from tusingest.errors import BodyInterrupted, Gone, NotFound, RateLimited, UnsupportedMediaType

_FILE_ID = param("path", "file_id", "The stored file's id (a UUID)", string())
_LIMIT = param(
    "query",
    "limit",
    f"Page size (default {DEFAULT_LIMIT})",
    integer(minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
)


def _api_operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: Mapping[int, Json],
    **kwargs: Any,
) -> Json:
    """An operation of the JSON sub-app: every one authenticated (401 as JSON)."""
    if not kwargs.get("public"):
        responses = {**responses, 401: json_error(401, AUTH_CODES, headers=challenge())}
    return operation(operation_id, tag, summary, responses, **kwargs)


def _form(*, batch: bool) -> Json:
    binary = string(format="binary")
    field = "files" if batch else "file"
    properties: Json = {
        field: {"type": "array", "items": binary} if batch else binary,
        "metadata": string(
            description=(
                "A JSON object of metadata for the file(s) (at most "
                f"{METADATA_LIMIT} bytes), e.g. `retention_policy`, `checksum`"
            ),
        ),
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": [field], "properties": properties}
            }
        },
    }


def _form_errors(*, batch: bool) -> dict[int, Json]:
    bad = [
        "resumable_multipart_unsupported",
        "missing_file",
        "invalid_form",
        "invalid_metadata",
        BodyInterrupted.code,
    ]
    too_large = ["too_many_files", "metadata_too_large"]
    too_large.insert(0, "batch_too_large" if batch else "file_too_large")
    return {
        400: json_error(400, bad),
        413: json_error(413, too_large),
        415: json_error(415, [UnsupportedMediaType.code]),
    }


def api_paths() -> Json:
    session_id = {"upload_session_id": string()}
    return {
        "/api/openapi.json": {
            "get": _api_operation(
                "openapi",
                "meta",
                "This document",
                {200: response("The OpenAPI document", json_content({"type": "object"}))},
                public=True,
            )
        },
        "/api/files": {
            "get": _api_operation(
                "listFiles",
                "files",
                "The caller's stored files (everyone's for admins), newest first",
                {
                    200: response("A page of files", json_content(ref("FileList"))),
                    400: json_error(400, ["invalid_limit", "invalid_cursor"]),
                },
                parameters=[
                    _LIMIT,
                    param("query", "cursor", "`next_cursor` of the previous page", string()),
                ],
            )
        },
        "/api/files/{file_id}": {
            "parameters": [_FILE_ID],
            "get": _api_operation(
                "getFile",
                "files",
                "One stored file",
                {
                    200: response("The file", json_content(ref("FileEntry"))),
                    404: json_error(404, ["file_not_found"]),
                },
            ),
            "delete": _api_operation(
                "deleteFile",
                "files",
                "Delete a stored file from its storage element and the catalog",
                {
                    202: response(
                        "The deletion goes on in the background (the element is slow or down)",
                        json_content(
                            object_({"file_id": string(), "status": string(enum=["deleting"])})
                        ),
                    ),
                    204: response("Deleted"),
                    400: json_error(400, ["file_in_readonly_storage"]),
                    404: json_error(404, ["file_not_found"]),
                    503: json_error(
                        503, ["element_unavailable"], headers={"Retry-After": retry_after()}
                    ),
                },
            ),
        },
        "/api/files/upload": {
            "post": _api_operation(
                "uploadFile",
                "uploads",
                "Upload one whole file in a multipart form (not resumable: use tus for that)",
                {
                    201: response("Stored", json_content(ref("StoredFile"))),
                    202: response(
                        "Received, still being checked (see the upload session)",
                        json_content(
                            object_(
                                {
                                    **session_id,
                                    "status": string(enum=["processing"]),
                                    "bytes_uploaded": integer(),
                                    "bytes_total": integer(nullable=True),
                                    "percent_complete": {"type": "number"},
                                }
                            )
                        ),
                    ),
                    **_form_errors(batch=False),
                    429: json_error(
                        429, [RateLimited.code], headers={"Retry-After": retry_after()}
                    ),
                    **verdict_errors(
                        unstored="The file cannot be stored now",
                        unstored_headers={"Retry-After": retry_after()},
                        extra=session_id,
                    ),
                },
                description="The `file` part (one), optionally a `metadata` field. A request "
                "with `X-Upload-Session-ID` is refused (`resumable_multipart_unsupported`).",
                body=_form(batch=False),
            )
        },
        "/api/files/batch/upload": {
            "post": _api_operation(
                "uploadBatch",
                "uploads",
                "Upload several whole files in one multipart form",
                {
                    207: response(
                        "One result per file",
                        json_content(ref("BatchResult")),
                        headers={"Retry-After": retry_after(required=False)},
                    ),
                    **_form_errors(batch=True),
                },
                description="`files` parts, optionally a `metadata` field applying to each. A "
                "file too large, or past the user's rate limit (`rate_limited`, with "
                "`retry_after_seconds`; the 207 then has `Retry-After`), fails alone; a form past "
                "the batch limits stores nothing.",
                body=_form(batch=True),
            )
        },
        "/api/files/{file_id}/transfer": {
            "parameters": [_FILE_ID],
            "post": _api_operation(
                "startTransfer",
                "transfers",
                "Move a stored file to another storage element",
                {
                    202: response(
                        "Queued",
                        json_content(
                            object_(
                                {
                                    "transfer_id": string(format="uuid"),
                                    "status": string(enum=["in_progress"]),
                                    "estimated_time_seconds": integer(),
                                }
                            )
                        ),
                    ),
                    400: json_error(
                        400,
                        [
                            "invalid_request",
                            "invalid_destination",
                            "unknown_destination",
                            "destination_not_writable",
                        ],
                    ),
                    413: json_error(413, ["body_too_large"]),
                    404: json_error(404, ["file_not_found"]),
                    409: json_error(
                        409, ["same_element", "destination_full", "destination_unavailable"]
                    ),
                    503: json_error(
                        503, ["element_unavailable"], headers={"Retry-After": retry_after()}
                    ),
                },
                body={
                    "required": True,
                    "content": json_content(
                        object_(
                            {
                                "destination_storage_element_id": string(minLength=1, maxLength=64),
                                "delete_source": {"type": "boolean", "default": False},
                                "verify_checksum": {"type": "boolean", "default": True},
                            },
                            optional=["delete_source", "verify_checksum"],
                        )
                    ),
                },
            ),
        },
        "/api/files/transfer/{transfer_id}": {
            "parameters": [param("path", "transfer_id", "The transfer's id", string())],
            "get": _api_operation(
                "getTransfer",
                "transfers",
                "A transfer's progress",
                {
                    200: response("The transfer", json_content(ref("Transfer"))),
                    404: json_error(404, ["transfer_not_found"]),
                },
            ),
        },
        "/api/files/upload/session/{upload_id}": {
            "parameters": [UPLOAD_ID],
            "get": _api_operation(
                "getUploadSession",
                "uploads",
                "An upload's state and the pipeline's verdict",
                {
                    200: response("The upload session", json_content(ref("UploadSession"))),
                    404: json_error(404, [NotFound.code]),
                    410: json_error(410, [Gone.code]),
                },
            ),
        },
        "/api/audit": {
            "get": _api_operation(
                "listAudit",
                "audit",
                "The audit trail of file operations, newest first (admins only)",
                {
                    200: response("A page of events", json_content(ref("AuditPage"))),
                    400: json_error(
                        400,
                        [
                            "invalid_limit",
                            "invalid_file_id",
                            "invalid_user",
                            "invalid_since",
                            "invalid_before",
                        ],
                    ),
                    403: json_error(403, ["admin_required"]),
                },
                parameters=[
                    _LIMIT,
                    param("query", "file_id", "Only events about this file (or upload)", string()),
                    param("query", "user", "Only events by this user (`sub`)", string()),
                    param(
                        "query",
                        "since",
                        "Only events at or after (ISO 8601 with a zone)",
                        timestamp(),
                    ),
                    param(
                        "query",
                        "before",
                        "Only events older than this id (`next_before`)",
                        integer(),
                    ),
                ],
            )
        },
        "/api/status": {
            "get": _api_operation(
                "status",
                "operators",
                "The operators' live view (admins only; also with the status page's cookie)",
                {
                    200: response("The status document", json_content(ref("StatusDocument"))),
                    403: json_error(403, ["admin_required"]),
                },
            )
        },
    }
