"""`GET /api/openapi.json`: the OpenAPI 3.1 document of the whole HTTP surface (the root app's
probes and metrics, the tus sub-app at `/files`, the JSON sub-app at `/api`).

The document is written by hand from the handlers; `tests/api/test_openapi.py` keeps it true
(every route documented, every documented operation routed, answers checked against it).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from aiohttp import web

import tusingest
from tusingest.api.files import DEFAULT_LIMIT, MAX_LIMIT
from tusingest.api.uploads import METADATA_LIMIT
from tusingest.domain import Retention, UploadStatus
from tusingest.errors import (
    BodyInterrupted,
    ChecksumMismatch,
    Conflict,
    Gone,
    Locked,
    NoStorageAvailable,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    UnsupportedMediaType,
    UploadInterrupted,
)
from tusingest.pipeline.validate import RejectionCode

Json = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
# The tus surface's constants, spelled out: `api` may not import its sibling `tus`.
TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"

_AUTH_CODES = ("missing_token", "malformed_token", "token_expired", "invalid_token")
_REJECTIONS: tuple[str, ...] = get_args(RejectionCode)
# What a completing request (or HEAD) says when the pipeline could not store the file now.
_NOT_STORED = (NoStorageAvailable.code, "processing_failed")
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    207: "Multi-Status",
    400: "Bad Request",
    401: "Unauthorized: a missing, malformed, expired or invalid bearer token",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    423: "Locked",
    429: "Too Many Requests: the user started too many uploads (RATE_LIMIT_UPLOADS_*)",
    460: "Checksum Mismatch",
    503: "Service Unavailable",
}


# --- schema helpers ------------------------------------------------------------------------


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(*, nullable: bool = False, **extra: Any) -> Json:
    return {"type": ["string", "null"] if nullable else "string", **extra}


def _integer(*, nullable: bool = False, **extra: Any) -> Json:
    return {"type": ["integer", "null"] if nullable else "integer", **extra}


def _time(*, nullable: bool = False) -> Json:
    return _string(nullable=nullable, format="date-time")


def _object(properties: Mapping[str, Json], optional: Sequence[str] = ()) -> Json:
    """An object whose properties are all present, but those named in `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": dict(properties),
    }


def _retention() -> Json:
    return _string(enum=[policy.value for policy in Retention])


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _header(description: str, schema: Json | None = None, *, required: bool = False) -> Json:
    return {"description": description, "required": required, "schema": schema or _string()}


def _param(
    where: str, name: str, description: str, schema: Json, *, required: bool = False
) -> Json:
    return {
        "name": name,
        "in": where,
        "description": description,
        "required": required or where == "path",
        "schema": schema,
    }


def _response(
    description: str, content: Json | None = None, headers: Mapping[str, Json] | None = None
) -> Json:
    response: Json = {"description": description}
    if headers:
        response["headers"] = dict(headers)
    if content:
        response["content"] = content
    return response


# --- error helpers -------------------------------------------------------------------------


def _unique(codes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(codes))


def _error_schema(codes: Sequence[str], extra: Mapping[str, Json] | None = None) -> Json:
    """`{"error": code, "message": text}` with `code` one of `codes`."""
    narrowed: Json = {"properties": {"error": {"enum": _unique(codes)}}}
    if extra:
        narrowed["properties"].update(extra)
        narrowed["required"] = list(extra)
    return {"allOf": [_ref("Error"), narrowed]}


def _json_error(
    status: int,
    codes: Sequence[str],
    *,
    headers: Mapping[str, Json] | None = None,
    extra: Mapping[str, Json] | None = None,
    description: str | None = None,
) -> Json:
    return _response(
        description or _REASONS[status], _json(_error_schema(codes, extra)), headers=headers
    )


def _text_error(
    status: int, codes: Sequence[str], *, headers: Mapping[str, Json] | None = None
) -> Json:
    """The tus surface's errors: plain text `code: message`."""
    alternatives = "|".join(re.escape(code) for code in _unique(codes))
    schema = _string(pattern=f"^({alternatives}): ")
    return _response(
        f"{_REASONS[status]} (plain text `code: message`; codes: {', '.join(_unique(codes))})",
        {"text/plain": {"schema": schema}},
        headers=headers,
    )


def _head_error(
    status: int,
    codes: Sequence[str] = (),
    *,
    headers: Mapping[str, Json] | None = None,
    description: str | None = None,
) -> Json:
    """An error to HEAD: no body, so the codes are only named."""
    said = f" ({', '.join(codes)})" if codes else ""
    return _response(description or f"{_REASONS[status]}{said}", headers=headers)


def _challenge() -> dict[str, Json]:
    return {
        "WWW-Authenticate": _header(
            'The bearer challenge, e.g. `Bearer realm="tusingest", error="invalid_token"`',
            required=True,
        )
    }


def _retry_after(*, required: bool = True) -> Json:
    return _header("Seconds to wait before trying again", _integer(minimum=1), required=required)


# --- operation helpers ---------------------------------------------------------------------


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: Mapping[int, Json],
    *,
    description: str | None = None,
    parameters: Sequence[Json] = (),
    body: Json | None = None,
    public: bool = False,
) -> Json:
    operation: Json = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = list(parameters)
    if body:
        operation["requestBody"] = body
    operation["responses"] = {str(status): responses[status] for status in sorted(responses)}
    if public:
        operation["security"] = []  # the document's default is the bearer token
    return operation


def _api_operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: Mapping[int, Json],
    **kwargs: Any,
) -> Json:
    """An operation of the JSON sub-app: every one authenticated (401 as JSON)."""
    if not kwargs.get("public"):
        responses = {**responses, 401: _json_error(401, _AUTH_CODES, headers=_challenge())}
    return _operation(operation_id, tag, summary, responses, **kwargs)


def _tus_operation(
    method: str,
    operation_id: str,
    summary: str,
    responses: Mapping[int, Json],
    *,
    parameters: Sequence[Json] = (),
    **kwargs: Any,
) -> Json:
    """An operation of the tus sub-app: `Tus-Resumable` required (412 without it) and
    authenticated except OPTIONS; `Tus-Resumable` on every response."""
    responses = dict(responses)
    if method != "options":
        parameters = [_TUS_RESUMABLE_PARAM, *parameters]
        unauthorized = _text_error(401, _AUTH_CODES, headers=_challenge())
        unsupported = _text_error(
            412,
            [PreconditionFailed.code],
            headers={"Tus-Version": _header("Versions supported", required=True)},
        )
        if method == "head":
            unauthorized = _head_error(401, _AUTH_CODES, headers=_challenge())
            unsupported = _head_error(
                412,
                [PreconditionFailed.code],
                headers={"Tus-Version": _header("Versions supported", required=True)},
            )
        responses.setdefault(401, unauthorized)
        responses.setdefault(412, unsupported)
    for status, response in responses.items():
        headers = {"Tus-Resumable": _header("Always `1.0.0`", required=True)}
        responses[status] = {**response, "headers": {**headers, **response.get("headers", {})}}
    return _operation(
        operation_id,
        "tus",
        summary,
        responses,
        parameters=parameters,
        public=method == "options",
        **kwargs,
    )


# --- tus -----------------------------------------------------------------------------------

_TUS_RESUMABLE_PARAM = _param(
    "header", "Tus-Resumable", "The protocol version", _string(enum=[TUS_VERSION]), required=True
)
_TUS_METADATA = _param(
    "header",
    "Upload-Metadata",
    "Comma-separated `key base64value` pairs (`filename`, `filetype`, `checksum`, "
    "`retention_policy`, ...)",
    _string(),
)
_TUS_CHECKSUM = _param(
    "header",
    "Upload-Checksum",
    "`<algorithm> <base64 digest>` of this request's body (sha1, md5, sha256)",
    _string(),
)
_UPLOAD_ID = _param("path", "upload_id", "The upload's id (the last segment of its URL)", _string())


def _tus_state_headers() -> dict[str, Json]:
    return {
        "Upload-Offset": _header("Bytes received", _integer(minimum=0), required=True),
        "Upload-Expires": _header("When an incomplete upload expires (HTTP date)"),
    }


def _verdict_headers() -> dict[str, Json]:
    return {
        "X-Upload-Status": _header("`stored` or `processing` once the upload is complete"),
        "X-File-Id": _header("The stored file's id (with `X-Upload-Status: stored`)"),
    }


def _tus_refusals(*, head: bool = False, location: bool = False) -> dict[int, Json]:
    """The pipeline's verdict on a complete upload: rejected (422) or not stored now (503)."""
    rejected_headers: dict[str, Json] = {
        "X-Upload-Status": _header("`rejected`", required=True),
        "X-Upload-Error": _header("The rejection code", _string(enum=list(_REJECTIONS))),
    }
    unstored_headers: dict[str, Json] = {
        "X-Upload-Status": _header("`processing` (waiting for storage) or `failed`"),
        "X-Upload-Error": _header("Why", _string(enum=list(_NOT_STORED))),
        "Retry-After": _retry_after(required=False),
    }
    if location:
        where = _header("The upload's URL, to ask about it later")
        rejected_headers["Location"] = unstored_headers["Location"] = where
    if head:
        return {
            422: _response("The file was rejected", headers=rejected_headers),
            503: _response("The file cannot be stored now", headers=unstored_headers),
        }
    return {
        422: _json_error(
            422, _REJECTIONS, headers=rejected_headers, description="The file was rejected"
        ),
        503: _json_error(
            503,
            _NOT_STORED,
            headers=unstored_headers,
            description="The file cannot be stored now (the bytes stay staged)",
        ),
    }


def _tus_options() -> Json:
    headers = {
        "Tus-Version": _header("`1.0.0`", required=True),
        "Tus-Extension": _header("The extensions supported", required=True),
        "Tus-Max-Size": _header("The largest upload, in bytes", _integer(), required=True),
        "Tus-Checksum-Algorithm": _header("sha1,md5,sha256", required=True),
    }
    return _response("What the server speaks", headers=headers)


def _tus_collection() -> Json:
    create_headers = {
        "Location": _header("The new upload's URL (relative)", required=True),
        **_tus_state_headers(),
        **_verdict_headers(),
    }
    return {
        "options": _tus_operation(
            "options",
            "tusDiscover",
            "Discover the tus version, extensions and limits",
            {204: _tus_options()},
        ),
        "post": _tus_operation(
            "post",
            "tusCreate",
            "Create an upload (creation, creation-with-upload, defer-length, concatenation)",
            {
                201: _response("Created", headers=create_headers),
                400: _text_error(
                    400,
                    [
                        "invalid_length",
                        "invalid_upload_length",
                        "invalid_upload_defer_length",
                        "invalid_metadata",
                        "invalid_concat",
                        "invalid_concat_part",
                        "concat_part_incomplete",
                        "unsupported_checksum_algorithm",
                        "invalid_upload_checksum",
                        BodyInterrupted.code,
                    ],
                ),
                403: _text_error(403, ["final_upload"]),
                413: _text_error(413, [PayloadTooLarge.code]),
                415: _text_error(415, [UnsupportedMediaType.code]),
                429: _text_error(429, [RateLimited.code], headers={"Retry-After": _retry_after()}),
                460: _text_error(460, [ChecksumMismatch.code]),
                **_tus_refusals(location=True),
            },
            description=(
                "Exactly one of `Upload-Length` and `Upload-Defer-Length`, or `Upload-Concat: "
                "final;<url> ...` without either. A body (creation-with-upload) must be "
                f"`{OFFSET_CONTENT_TYPE}`. Any method may be sent as POST with "
                "`X-HTTP-Method-Override`."
            ),
            parameters=[
                _param(
                    "header", "Upload-Length", "The upload's size in bytes", _integer(minimum=0)
                ),
                _param(
                    "header",
                    "Upload-Defer-Length",
                    "`1`: the length is sent by a later PATCH",
                    _string(enum=["1"]),
                ),
                _TUS_METADATA,
                _param(
                    "header",
                    "Upload-Concat",
                    "`partial`, or `final;<url> <url> ...` listing complete partial uploads",
                    _string(),
                ),
                _TUS_CHECKSUM,
            ],
            body={
                "required": False,
                "content": {OFFSET_CONTENT_TYPE: {"schema": _string(format="binary")}},
            },
        ),
    }


def _tus_upload() -> Json:
    head_headers = {
        **_tus_state_headers(),
        "Upload-Length": _header("The upload's length (absent while deferred)", _integer()),
        "Upload-Defer-Length": _header("`1` while the length is deferred"),
        "Upload-Metadata": _header("`Upload-Metadata` as received"),
        "Upload-Concat": _header("`Upload-Concat` as received"),
        "Cache-Control": _header("`no-store`", required=True),
        **_verdict_headers(),
    }
    gone = _text_error(410, [Gone.code])
    missing = _text_error(404, [NotFound.code])
    locked = _text_error(423, [Locked.code], headers={"Retry-After": _retry_after()})
    return {
        "parameters": [_UPLOAD_ID],
        "options": _tus_operation(
            "options",
            "tusDiscoverUpload",
            "Discover the tus version, extensions and limits",
            {204: _tus_options()},
        ),
        "head": _tus_operation(
            "head",
            "tusHead",
            "The upload's offset, length and metadata (and the pipeline's verdict)",
            {
                200: _response("The upload's state", headers=head_headers),
                404: _head_error(404, [NotFound.code]),
                410: _head_error(410, [Gone.code]),
                423: _head_error(
                    423,
                    headers={
                        "X-Upload-Status": _header("`processing`: the pipeline is running"),
                        "Retry-After": _retry_after(),
                    },
                    description="Locked: the pipeline is still deciding (`X-Upload-Status: "
                    "processing`), or another request holds the upload (`upload_locked`)",
                ),
                **_tus_refusals(head=True),
            },
        ),
        "patch": _tus_operation(
            "patch",
            "tusPatch",
            "Append bytes at `Upload-Offset`",
            {
                204: _response("Applied", headers={**_tus_state_headers(), **_verdict_headers()}),
                400: _text_error(
                    400,
                    [
                        "missing_upload_offset",
                        "invalid_upload_offset",
                        "invalid_upload_length",
                        "length_mismatch",
                        "length_below_offset",
                        "unsupported_checksum_algorithm",
                        "invalid_upload_checksum",
                        BodyInterrupted.code,
                        UploadInterrupted.code,
                    ],
                ),
                403: _text_error(403, ["final_upload"]),
                404: missing,
                409: _text_error(
                    409,
                    [Conflict.code],
                    headers={
                        "Upload-Offset": _header("The current offset", _integer(), required=True)
                    },
                ),
                410: gone,
                413: _text_error(413, [PayloadTooLarge.code]),
                415: _text_error(415, [UnsupportedMediaType.code]),
                423: locked,
                460: _text_error(460, [ChecksumMismatch.code]),
                **_tus_refusals(),
            },
            parameters=[
                _param(
                    "header",
                    "Upload-Offset",
                    "Where the body goes",
                    _integer(minimum=0),
                    required=True,
                ),
                _param(
                    "header",
                    "Upload-Length",
                    "Declares a deferred length",
                    _integer(minimum=0),
                ),
                _TUS_CHECKSUM,
            ],
            body={
                "required": True,
                "content": {OFFSET_CONTENT_TYPE: {"schema": _string(format="binary")}},
            },
        ),
        "delete": _tus_operation(
            "delete",
            "tusTerminate",
            "Terminate the upload (a stored upload takes its file with it)",
            {
                204: _response("Terminated"),
                400: _text_error(400, ["file_in_readonly_storage"]),
                404: missing,
                410: gone,
                423: locked,
                503: _text_error(
                    503, ["element_unavailable"], headers={"Retry-After": _retry_after()}
                ),
            },
        ),
    }


# --- /api ----------------------------------------------------------------------------------

_FILE_ID = _param("path", "file_id", "The stored file's id (a UUID)", _string())
_LIMIT = _param(
    "query",
    "limit",
    f"Page size (default {DEFAULT_LIMIT})",
    _integer(minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
)


def _form(*, batch: bool) -> Json:
    binary = _string(format="binary")
    field = "files" if batch else "file"
    properties: Json = {
        field: {"type": "array", "items": binary} if batch else binary,
        "metadata": _string(
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
        400: _json_error(400, bad),
        413: _json_error(413, too_large),
        415: _json_error(415, [UnsupportedMediaType.code]),
    }


def _api_paths() -> Json:
    session_id = {"upload_session_id": _string()}
    return {
        "/api/openapi.json": {
            "get": _api_operation(
                "openapi",
                "meta",
                "This document",
                {200: _response("The OpenAPI document", _json({"type": "object"}))},
                public=True,
            )
        },
        "/api/files": {
            "get": _api_operation(
                "listFiles",
                "files",
                "The caller's stored files (everyone's for admins), newest first",
                {
                    200: _response("A page of files", _json(_ref("FileList"))),
                    400: _json_error(400, ["invalid_limit", "invalid_cursor"]),
                },
                parameters=[
                    _LIMIT,
                    _param("query", "cursor", "`next_cursor` of the previous page", _string()),
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
                    200: _response("The file", _json(_ref("FileEntry"))),
                    404: _json_error(404, ["file_not_found"]),
                },
            ),
            "delete": _api_operation(
                "deleteFile",
                "files",
                "Delete a stored file from its storage element and the catalog",
                {
                    202: _response(
                        "The deletion goes on in the background (the element is slow or down)",
                        _json(
                            _object({"file_id": _string(), "status": _string(enum=["deleting"])})
                        ),
                    ),
                    204: _response("Deleted"),
                    400: _json_error(400, ["file_in_readonly_storage"]),
                    404: _json_error(404, ["file_not_found"]),
                    503: _json_error(
                        503, ["element_unavailable"], headers={"Retry-After": _retry_after()}
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
                    201: _response("Stored", _json(_ref("StoredFile"))),
                    202: _response(
                        "Received, still being checked (see the upload session)",
                        _json(
                            _object(
                                {
                                    **session_id,
                                    "status": _string(enum=["processing"]),
                                    "bytes_uploaded": _integer(),
                                    "bytes_total": _integer(nullable=True),
                                    "percent_complete": {"type": "number"},
                                }
                            )
                        ),
                    ),
                    **_form_errors(batch=False),
                    429: _json_error(
                        429, [RateLimited.code], headers={"Retry-After": _retry_after()}
                    ),
                    422: _json_error(
                        422, _REJECTIONS, extra=session_id, description="The file was rejected"
                    ),
                    503: _json_error(
                        503,
                        _NOT_STORED,
                        extra=session_id,
                        headers={"Retry-After": _retry_after()},
                        description="The file cannot be stored now",
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
                    207: _response(
                        "One result per file",
                        _json(_ref("BatchResult")),
                        headers={"Retry-After": _retry_after(required=False)},
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
                    202: _response(
                        "Queued",
                        _json(
                            _object(
                                {
                                    "transfer_id": _string(format="uuid"),
                                    "status": _string(enum=["in_progress"]),
                                    "estimated_time_seconds": _integer(),
                                }
                            )
                        ),
                    ),
                    400: _json_error(
                        400,
                        [
                            "invalid_request",
                            "invalid_destination",
                            "unknown_destination",
                            "destination_not_writable",
                        ],
                    ),
                    413: _json_error(413, ["body_too_large"]),
                    404: _json_error(404, ["file_not_found"]),
                    409: _json_error(
                        409, ["same_element", "destination_full", "destination_unavailable"]
                    ),
                    503: _json_error(
                        503, ["element_unavailable"], headers={"Retry-After": _retry_after()}
                    ),
                },
                body={
                    "required": True,
                    "content": _json(
                        _object(
                            {
                                "destination_storage_element_id": _string(
                                    minLength=1, maxLength=64
                                ),
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
            "parameters": [_param("path", "transfer_id", "The transfer's id", _string())],
            "get": _api_operation(
                "getTransfer",
                "transfers",
                "A transfer's progress",
                {
                    200: _response("The transfer", _json(_ref("Transfer"))),
                    404: _json_error(404, ["transfer_not_found"]),
                },
            ),
        },
        "/api/files/upload/session/{upload_id}": {
            "parameters": [_UPLOAD_ID],
            "get": _api_operation(
                "getUploadSession",
                "uploads",
                "An upload's state and the pipeline's verdict",
                {
                    200: _response("The upload session", _json(_ref("UploadSession"))),
                    404: _json_error(404, [NotFound.code]),
                    410: _json_error(410, [Gone.code]),
                },
            ),
        },
        "/api/audit": {
            "get": _api_operation(
                "listAudit",
                "audit",
                "The audit trail of file operations, newest first (admins only)",
                {
                    200: _response("A page of events", _json(_ref("AuditPage"))),
                    400: _json_error(
                        400,
                        [
                            "invalid_limit",
                            "invalid_file_id",
                            "invalid_user",
                            "invalid_since",
                            "invalid_before",
                        ],
                    ),
                    403: _json_error(403, ["admin_required"]),
                },
                parameters=[
                    _LIMIT,
                    _param(
                        "query", "file_id", "Only events about this file (or upload)", _string()
                    ),
                    _param("query", "user", "Only events by this user (`sub`)", _string()),
                    _param(
                        "query", "since", "Only events at or after (ISO 8601 with a zone)", _time()
                    ),
                    _param(
                        "query",
                        "before",
                        "Only events older than this id (`next_before`)",
                        _integer(),
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
                    200: _response("The status document", _json(_ref("StatusDocument"))),
                    403: _json_error(403, ["admin_required"]),
                },
            )
        },
    }


# --- root ----------------------------------------------------------------------------------

_SEE_STATUS = {"Location": _header("/status", required=True)}


def _html() -> Json:
    return {"text/html": {"schema": _string()}}


def _root_paths() -> Json:
    element = _object(
        {
            "mode": _string(),
            "capacity_status": _string(),
            "healthy": {"type": "boolean"},
            "breaker": _string(enum=["closed", "half_open", "open"]),
            "usable": {"type": "boolean"},
        }
    )
    health = _object(
        {
            "status": _string(enum=["ok", "degraded", "fail"]),
            "checks": _object(
                {
                    "database": _string(),
                    "redis": _string(),
                    "elements": {"type": "object", "additionalProperties": element},
                    "registry": {"type": "object", "additionalProperties": _string()},
                    "admin_module": _string(),
                    "node": _string(enum=["draining"]),
                },
                optional=("database", "redis", "admin_module", "elements", "registry", "node"),
            ),
        }
    )
    return {
        "/health/live": {
            "get": _operation(
                "live",
                "health",
                "Liveness",
                {200: _response("Alive", _json(_object({"status": _string(enum=["ok"])})))},
                public=True,
            )
        },
        "/health/ready": {
            "get": _operation(
                "ready",
                "health",
                "Readiness: database, Redis (when configured) and the writable elements",
                {
                    200: _response("ok, or degraded (uploads can still be stored)", _json(health)),
                    503: _response(
                        "fail: no database, no element to store on, or shutting down",
                        _json(health),
                    ),
                },
                public=True,
            )
        },
        "/status": {
            "get": _operation(
                "statusPage",
                "operators",
                "The operators' status page (HTML); the sign-in form without a valid session",
                {
                    200: _response("The page", _html()),
                    401: _response("The sign-in form", _html()),
                    403: _response("The sign-in form: the token is not an admin's", _html()),
                },
                public=True,
            )
        },
        "/status/login": {
            "post": _operation(
                "statusLogin",
                "operators",
                "Sign in to the status page: an admin's token into an HttpOnly, "
                "SameSite=Strict cookie",
                {
                    303: _response("Signed in: to /status", headers=_SEE_STATUS),
                    400: _response("No token in the form", _html()),
                    401: _response("The token is not valid", _html()),
                    403: _response("The token is not an admin's", _html()),
                    413: _response("The form is too large", _html()),
                },
                body={
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": _object({"token": _string()})
                        }
                    },
                },
                public=True,
            )
        },
        "/status/logout": {
            "post": _operation(
                "statusLogout",
                "operators",
                "Sign out of the status page (the cookie is removed)",
                {303: _response("To /status", headers=_SEE_STATUS)},
                public=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "health",
                "Prometheus metrics",
                {
                    200: _response(
                        "Text exposition format 0.0.4", {"text/plain": {"schema": _string()}}
                    )
                },
                public=True,
            )
        },
    }


# --- components ----------------------------------------------------------------------------


def _schemas() -> Json:
    file_fields = {
        "file_id": _string(),
        "storage_element_id": _string(),
        "storage_filename": _string(),
        "size_bytes": _integer(),
        "md5_hash": _string(nullable=True),
        "sha256_hash": _string(),
        "uploaded_at": _time(),
        "content_type": _string(),
        "retention_policy": _retention(),
    }
    stored = _object(
        {**file_fields, "upload_session_id": _string()},
        # A file deleted before the answer is written is only named.
        optional=[name for name in file_fields if name != "file_id"],
    )
    batch_item = _object(
        {
            "filename": _string(),
            "status": _string(enum=["success", "processing", "failed"]),
            "upload_session_id": _string(),
            "error": _string(),
            "message": _string(),
            "retry_after_seconds": _integer(),
            **file_fields,
            "size_bytes": _integer(nullable=True),
        },
        optional=["upload_session_id", "error", "message", "retry_after_seconds", *file_fields],
    )
    return {
        "Error": _object({"error": _string(), "message": _string()}),
        "FileEntry": _object(
            {
                "file_id": _string(),
                "upload_id": _string(),
                "storage_element_id": _string(),
                "storage_filename": _string(),
                "storage_path": _string(),
                "original_filename": _string(),
                "content_type": _string(),
                "declared_type": _string(nullable=True),
                "size_bytes": _integer(),
                "stored_size_bytes": _integer(),
                "codec": _string(nullable=True),
                "md5_hash": _string(nullable=True),
                "sha256_hash": _string(),
                "stored_sha256_hash": _string(),
                "retention_policy": _retention(),
                "owner": _string(),
                "uploaded_at": _time(),
            }
        ),
        "FileList": _object(
            {
                "files": {"type": "array", "items": _ref("FileEntry")},
                "next_cursor": _string(nullable=True),
            }
        ),
        "StoredFile": stored,
        "BatchResult": _object(
            {
                "results": {"type": "array", "items": batch_item},
                "summary": _object(
                    {
                        "total": _integer(),
                        "succeeded": _integer(),
                        "failed": _integer(),
                        "processing": _integer(),
                    }
                ),
            }
        ),
        "Transfer": _object(
            {
                "transfer_id": _string(),
                "file_id": _string(),
                "status": _string(
                    enum=["queued", "in_progress", "verifying", "completed", "failed"]
                ),
                "source_storage_element_id": _string(),
                "destination_storage_element_id": _string(),
                "bytes_transferred": _integer(),
                "bytes_total": _integer(),
                "transfer_rate_mbps": {"type": ["number", "null"]},
                "started_at": _time(nullable=True),
                "completed_at": _time(nullable=True),
                "delete_source": {"type": "boolean"},
                "error": _string(),
                "last_error": _string(),
            },
            optional=["error", "last_error"],
        ),
        "UploadSession": _object(
            {
                "session_id": _string(),
                "status": _string(enum=["in_progress", "completed", "failed"]),
                "bytes_uploaded": _integer(),
                "bytes_total": _integer(nullable=True),
                "last_activity_at": _time(),
                "upload_id": _string(),
                "upload_status": _string(enum=[status.value for status in UploadStatus]),
                "offset": _integer(),
                "length": _integer(nullable=True),
                "metadata": {"type": "object", "additionalProperties": _string()},
                "concat": _string(nullable=True),
                "verdict": {
                    "oneOf": [
                        {"type": "null"},
                        _object({"error": _string(), "message": _string(nullable=True)}),
                    ]
                },
                "file_id": _string(nullable=True),
                "md5": _string(nullable=True),
                "sha256": _string(nullable=True),
                "created_at": _time(),
                "updated_at": _time(),
                "expires_at": _time(nullable=True),
                "file": {"oneOf": [{"type": "null"}, _ref("SessionFile")]},
            }
        ),
        "SessionFile": _object(
            {
                "file_id": _string(),
                "element_id": _string(),
                "storage_path": _string(),
                "storage_filename": _string(),
                "original_filename": _string(),
                "content_type": _string(),
                "declared_type": _string(nullable=True),
                "size": _integer(),
                "stored_size": _integer(),
                "codec": _string(nullable=True),
                "md5": _string(nullable=True),
                "sha256": _string(),
                "stored_sha256": _string(),
                "retention_policy": _string(),
            }
        ),
        "StatusDocument": _status_document(),
        "AuditPage": _object(
            {
                "events": {"type": "array", "items": _ref("AuditEvent")},
                "next_before": _integer(nullable=True),
            }
        ),
        "AuditEvent": _object(
            {
                "id": _integer(),
                "at": _time(),
                "user": _string(),
                "action": _string(),
                "subject": _string(description="The file id (an upload id for a rejection)"),
                "address": _string(nullable=True),
                "outcome": _string(nullable=True),
                "detail": {"type": "object"},
            }
        ),
    }


def _version() -> str:
    version = getattr(tusingest, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("tusingest")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; callers must not change it)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tusingest",
            "version": _version(),
            "description": (
                "tus 1.0 upload gateway of ArtStore. Errors are JSON "
                '`{"error": code, "message": text}`, except on the tus surface (`/files`), '
                "where they are plain text `code: message` (the pipeline's 422/503 verdicts "
                "are JSON there too). A request from an origin CORS does not allow is "
                "answered `403 origin_not_allowed` anywhere."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "tus", "description": "tus 1.0 resumable uploads"},
            {"name": "uploads", "description": "Whole-file uploads and upload sessions"},
            {"name": "files", "description": "Stored files"},
            {"name": "transfers", "description": "Moving files between storage elements"},
            {"name": "audit", "description": "The audit trail"},
            {"name": "health", "description": "Probes and metrics"},
            {"name": "meta", "description": "This document"},
        ],
        "paths": {
            **_root_paths(),
            "/files/": _tus_collection(),
            "/files/{upload_id}": _tus_upload(),
            **_api_paths(),
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearerAuth": []}],
    }


@functools.cache
def _body() -> bytes:
    return json.dumps(document(), ensure_ascii=False).encode()


async def openapi(_request: web.Request) -> web.Response:
    """The document, without authentication."""
    return web.Response(body=_body(), content_type="application/json", charset="utf-8")


def _status_document() -> Json:
    """`GET /api/status`; a section that could not be read is `{"error": ...}` instead."""
    number = {"type": ["number", "null"]}
    failed = _object({"error": _string()})

    def section(schema: Json) -> Json:
        return {"oneOf": [schema, failed]}

    in_flight = _object(
        {
            "upload_id": _string(),
            "owner": _string(),
            "filename": _string(nullable=True),
            "offset": _integer(),
            "length": _integer(nullable=True),
            "percent": number,
            "bytes_per_second": _integer(nullable=True),
            "eta_seconds": number,
            "node": _string(nullable=True),
            "created_at": _string(format="date-time"),
            "updated_at": _string(format="date-time"),
        }
    )
    verdict = {
        "type": "object",
        "required": ["at", "owner", "outcome", "upload_id"],
        "properties": {
            "at": _string(format="date-time"),
            "owner": _string(),
            "outcome": _string(enum=["stored", "rejected", "failed"]),
            "upload_id": _string(nullable=True),
            "file_id": _string(),
            "filename": _string(nullable=True),
            "size": _integer(nullable=True),
            "element_id": _string(nullable=True),
            "reason": _string(nullable=True),
            "message": _string(),
        },
    }
    work = _object(
        {
            "id": _string(),
            "kind": _string(),
            "subject": _string(),
            "status": _string(enum=["queued", "retrying", "running", "failed"]),
            "step": _string(nullable=True),
            "attempts": _integer(),
            "next_attempt_at": _string(format="date-time"),
            "last_error": _string(nullable=True),
            "updated_at": _string(format="date-time"),
        }
    )
    element = _object(
        {
            "element_id": _string(),
            "mode": _string(),
            "priority": _integer(),
            "endpoint": _string(),
            "capacity_total": _integer(),
            "capacity_used": _integer(),
            "capacity_free": _integer(),
            "used_percent": number,
            "capacity_status": _string(),
            "healthy": {"type": "boolean"},
            "breaker": _string(enum=["closed", "half_open", "open"]),
            "usable": {"type": "boolean"},
        }
    )
    return _object(
        {
            "generated_at": _string(format="date-time"),
            "node": _object(
                {
                    "id": _string(),
                    "hostname": _string(),
                    "pid": _integer(),
                    "version": _string(),
                    "database": _string(enum=["sqlite", "postgresql"]),
                    "started_at": _string(format="date-time"),
                    "uptime_seconds": {"type": "number"},
                    "window_seconds": _integer(),
                    "uploads_per_second": {"type": "number"},
                    "bytes_per_second": _integer(),
                    "receiving_here": _integer(),
                }
            ),
            "uploads": _object(
                {
                    "in_progress": section({"type": "array", "items": in_flight}),
                    "recent": section({"type": "array", "items": verdict}),
                }
            ),
            "operations": section(
                _object(
                    {
                        "counts": {"type": "object", "additionalProperties": _integer()},
                        "items": {"type": "array", "items": work},
                    }
                )
            ),
            "storage": section(
                _object(
                    {
                        "registry": _object(
                            {
                                "sources": {"type": "array", "items": _string()},
                                "answered_by": {
                                    "type": "object",
                                    "additionalProperties": _string(),
                                },
                                "reloaded_at": _string(nullable=True, format="date-time"),
                            }
                        ),
                        "elements": {"type": "array", "items": element},
                    }
                )
            ),
        }
    )
