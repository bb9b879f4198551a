"""The tus sub-app's paths (`/files/`, `/files/{upload_id}`): its protocol headers and answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tusingest.api.openapi.error_responses import (
    AUTH_CODES,
    NOT_STORED,
    REJECTIONS,
    challenge,
    head_error,
    retry_after,
    text_error,
    verdict_errors,
)
from tusingest.api.openapi.primitives import (
    Json,
    header,
    integer,
    operation,
    param,
    response,
    string,
)
from tusingest.errors import (
    BodyInterrupted,
    ChecksumMismatch,
    Conflict,
    Gone,
    Locked,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    UnsupportedMediaType,
    UploadInterrupted,
)

# The tus surface's constants, spelled out: `api` may not import its sibling `tus`.
TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"

_TUS_RESUMABLE_PARAM = param(
    "header", "Tus-Resumable", "The protocol version", string(enum=[TUS_VERSION]), required=True
)
_TUS_METADATA = param(
    "header",
    "Upload-Metadata",
    "Comma-separated `key base64value` pairs (`filename`, `filetype`, `checksum`, "
    "`retention_policy`, ...)",
    string(),
)
_TUS_CHECKSUM = param(
    "header",
    "Upload-Checksum",
    "`<algorithm> <base64 digest>` of this request's body (sha1, md5, sha256)",
    string(),
)
UPLOAD_ID = param("path", "upload_id", "The upload's id (the last segment of its URL)", string())


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
        unauthorized = text_error(401, AUTH_CODES, headers=challenge())
        unsupported = text_error(
            412,
            [PreconditionFailed.code],
            headers={"Tus-Version": header("Versions supported", required=True)},
        )
        if method == "head":
            unauthorized = head_error(401, AUTH_CODES, headers=challenge())
            unsupported = head_error(
                412,
                [PreconditionFailed.code],
                headers={"Tus-Version": header("Versions supported", required=True)},
            )
        responses.setdefault(401, unauthorized)
        responses.setdefault(412, unsupported)
    for status, answer in responses.items():
        headers = {"Tus-Resumable": header("Always `1.0.0`", required=True)}
        responses[status] = {**answer, "headers": {**headers, **answer.get("headers", {})}}
    return operation(
        operation_id,
        "tus",
        summary,
        responses,
        parameters=parameters,
        public=method == "options",
        **kwargs,
    )


def _tus_state_headers() -> dict[str, Json]:
    return {
        "Upload-Offset": header("Bytes received", integer(minimum=0), required=True),
        "Upload-Expires": header("When an incomplete upload expires (HTTP date)"),
    }


def _verdict_headers() -> dict[str, Json]:
    return {
        "X-Upload-Status": header("`stored` or `processing` once the upload is complete"),
        "X-File-Id": header("The stored file's id (with `X-Upload-Status: stored`)"),
    }


def _tus_refusals(*, head: bool = False, location: bool = False) -> dict[int, Json]:
    """The pipeline's verdict on a complete upload: rejected (422) or not stored now (503)."""
    rejected_headers: dict[str, Json] = {
        "X-Upload-Status": header("`rejected`", required=True),
        "X-Upload-Error": header("The rejection code", string(enum=list(REJECTIONS))),
    }
    unstored_headers: dict[str, Json] = {
        "X-Upload-Status": header("`processing` (waiting for storage) or `failed`"),
        "X-Upload-Error": header("Why", string(enum=list(NOT_STORED))),
        "Retry-After": retry_after(required=False),
    }
    if location:
        where = header("The upload's URL, to ask about it later")
        rejected_headers["Location"] = unstored_headers["Location"] = where
    if head:
        return {
            422: response("The file was rejected", headers=rejected_headers),
            503: response("The file cannot be stored now", headers=unstored_headers),
        }
    return verdict_errors(
        unstored="The file cannot be stored now (the bytes stay staged)",
        rejected_headers=rejected_headers,
        unstored_headers=unstored_headers,
    )


def _tus_discover(operation_id: str) -> Json:
    """OPTIONS: what the server speaks, without a token."""
    headers = {
        "Tus-Version": header("`1.0.0`", required=True),
        "Tus-Extension": header("The extensions supported", required=True),
        "Tus-Max-Size": header("The largest upload, in bytes", integer(), required=True),
        "Tus-Checksum-Algorithm": header("sha1,md5,sha256", required=True),
    }
    return _tus_operation(
        "options",
        operation_id,
        "Discover the tus version, extensions and limits",
        {204: response("What the server speaks", headers=headers)},
    )


def _tus_collection() -> Json:
    create_headers = {
        "Location": header("The new upload's URL (relative)", required=True),
        **_tus_state_headers(),
        **_verdict_headers(),
    }
    return {
        "options": _tus_discover("tusDiscover"),
        "post": _tus_operation(
            "post",
            "tusCreate",
            "Create an upload (creation, creation-with-upload, defer-length, concatenation)",
            {
                201: response("Created", headers=create_headers),
                400: text_error(
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
                403: text_error(403, ["final_upload"]),
                413: text_error(413, [PayloadTooLarge.code]),
                415: text_error(415, [UnsupportedMediaType.code]),
                429: text_error(429, [RateLimited.code], headers={"Retry-After": retry_after()}),
                460: text_error(460, [ChecksumMismatch.code]),
                **_tus_refusals(location=True),
            },
            description=(
                "Exactly one of `Upload-Length` and `Upload-Defer-Length`, or `Upload-Concat: "
                "final;<url> ...` without either. A body (creation-with-upload) must be "
                f"`{OFFSET_CONTENT_TYPE}`. Any method may be sent as POST with "
                "`X-HTTP-Method-Override`."
            ),
            parameters=[
                param("header", "Upload-Length", "The upload's size in bytes", integer(minimum=0)),
                param(
                    "header",
                    "Upload-Defer-Length",
                    "`1`: the length is sent by a later PATCH",
                    string(enum=["1"]),
                ),
                _TUS_METADATA,
                param(
                    "header",
                    "Upload-Concat",
                    "`partial`, or `final;<url> <url> ...` listing complete partial uploads",
                    string(),
                ),
                _TUS_CHECKSUM,
            ],
            body={
                "required": False,
                "content": {OFFSET_CONTENT_TYPE: {"schema": string(format="binary")}},
            },
        ),
    }


def _tus_upload() -> Json:
    head_headers = {
        **_tus_state_headers(),
        "Upload-Length": header("The upload's length (absent while deferred)", integer()),
        "Upload-Defer-Length": header("`1` while the length is deferred"),
        "Upload-Metadata": header("`Upload-Metadata` as received"),
        "Upload-Concat": header("`Upload-Concat` as received"),
        "Cache-Control": header("`no-store`", required=True),
        **_verdict_headers(),
    }
    gone = text_error(410, [Gone.code])
    missing = text_error(404, [NotFound.code])
    locked = text_error(423, [Locked.code], headers={"Retry-After": retry_after()})
    return {
        "parameters": [UPLOAD_ID],
        "options": _tus_discover("tusDiscoverUpload"),
        "head": _tus_operation(
            "head",
            "tusHead",
            "The upload's offset, length and metadata (and the pipeline's verdict)",
            {
                200: response("The upload's state", headers=head_headers),
                404: head_error(404, [NotFound.code]),
                410: head_error(410, [Gone.code]),
                423: head_error(
                    423,
                    headers={
                        "X-Upload-Status": header("`processing`: the pipeline is running"),
                        "Retry-After": retry_after(),
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
                204: response("Applied", headers={**_tus_state_headers(), **_verdict_headers()}),
                400: text_error(
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
                403: text_error(403, ["final_upload"]),
                404: missing,
                409: text_error(
                    409,
                    [Conflict.code],
                    headers={
                        "Upload-Offset": header("The current offset", integer(), required=True)
                    },
                ),
                410: gone,
                413: text_error(413, [PayloadTooLarge.code]),
                415: text_error(415, [UnsupportedMediaType.code]),
                423: locked,
                460: text_error(460, [ChecksumMismatch.code]),
                **_tus_refusals(),
            },
            parameters=[
                param(
                    "header",
                    "Upload-Offset",
                    "Where the body goes",
                    integer(minimum=0),
                    required=True,
                ),
                param(
                    "header",
                    "Upload-Length",
                    "Declares a deferred length",
                    integer(minimum=0),
                ),
                _TUS_CHECKSUM,
            ],
            body={
                "required": True,
                "content": {OFFSET_CONTENT_TYPE: {"schema": string(format="binary")}},
            },
        ),
        "delete": _tus_operation(
            "delete",
            "tusTerminate",
            "Terminate the upload (a stored upload takes its file with it)",
            {
                204: response("Terminated"),
                400: text_error(400, ["file_in_readonly_storage"]),
                404: missing,
                410: gone,
                423: locked,
                503: text_error(
                    503, ["element_unavailable"], headers={"Retry-After": retry_after()}
                ),
            },
        ),
    }


def tus_paths() -> Json:
    return {"/files/": _tus_collection(), "/files/{upload_id}": _tus_upload()}
