"""The error answers: their codes, JSON, plain-text and HEAD forms, the pipeline's verdicts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import get_args

from tusingest.api.openapi.primitives import (
    Json,
    header,
    integer,
    json_content,
    ref,
    response,
    string,
)
from tusingest.errors import NoStorageAvailable
from tusingest.pipeline.validate import RejectionCode

AUTH_CODES = ("missing_token", "malformed_token", "token_expired", "invalid_token")
REJECTIONS: tuple[str, ...] = get_args(RejectionCode)
# What a completing request (or HEAD) says when the pipeline could not store the file now.
NOT_STORED = (NoStorageAvailable.code, "processing_failed")
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


def _unique(codes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(codes))


def _error_schema(codes: Sequence[str], extra: Mapping[str, Json] | None = None) -> Json:
    """`{"error": code, "message": text}` with `code` one of `codes`."""
    narrowed: Json = {"properties": {"error": {"enum": _unique(codes)}}}
    if extra:
        narrowed["properties"].update(extra)
        narrowed["required"] = list(extra)
    return {"allOf": [ref("Error"), narrowed]}


def json_error(
    status: int,
    codes: Sequence[str],
    *,
    headers: Mapping[str, Json] | None = None,
    extra: Mapping[str, Json] | None = None,
    description: str | None = None,
) -> Json:
    return response(
        description or _REASONS[status], json_content(_error_schema(codes, extra)), headers=headers
    )


def text_error(
    status: int, codes: Sequence[str], *, headers: Mapping[str, Json] | None = None
) -> Json:
    """The tus surface's errors: plain text `code: message`."""
    alternatives = "|".join(re.escape(code) for code in _unique(codes))
    schema = string(pattern=f"^({alternatives}): ")
    return response(
        f"{_REASONS[status]} (plain text `code: message`; codes: {', '.join(_unique(codes))})",
        {"text/plain": {"schema": schema}},
        headers=headers,
    )


def head_error(
    status: int,
    codes: Sequence[str] = (),
    *,
    headers: Mapping[str, Json] | None = None,
    description: str | None = None,
) -> Json:
    """An error to HEAD: no body, so the codes are only named."""
    said = f" ({', '.join(codes)})" if codes else ""
    return response(description or f"{_REASONS[status]}{said}", headers=headers)


def challenge() -> dict[str, Json]:
    return {
        "WWW-Authenticate": header(
            'The bearer challenge, e.g. `Bearer realm="tusingest", error="invalid_token"`',
            required=True,
        )
    }


def retry_after(*, required: bool = True) -> Json:
    return header("Seconds to wait before trying again", integer(minimum=1), required=required)


def verdict_errors(
    *,
    unstored: str,
    rejected_headers: Mapping[str, Json] | None = None,
    unstored_headers: Mapping[str, Json],
    extra: Mapping[str, Json] | None = None,
) -> dict[int, Json]:
    """The pipeline's verdict on a complete upload, as JSON: rejected (422) or, described by
    `unstored`, not stored now (503)."""
    return {
        422: json_error(
            422,
            REJECTIONS,
            headers=rejected_headers,
            extra=extra,
            description="The file was rejected",
        ),
        503: json_error(
            503, NOT_STORED, headers=unstored_headers, extra=extra, description=unstored
        ),
    }
