"""The completion pipeline's verdict as tus responses: on the completing request, and repeated
on HEAD and retried PATCHes."""

from __future__ import annotations

from aiohttp import web

from tusingest.domain import Upload, UploadStatus
from tusingest.pipeline.verdicts import awaits_verdict, waits_for_storage

STATUS_HEADER = "X-Upload-Status"
FILE_ID_HEADER = "X-File-Id"
ERROR_HEADER = "X-Upload-Error"


def respond(
    upload: Upload, status: int, headers: dict[str, str], retry_after: float
) -> web.StreamResponse:
    """`status` with `headers` unless the pipeline refused the file (422), gave up (503) or
    waits for storage (503 with Retry-After; the bytes stay staged)."""
    # A refused creation still names its upload, so the client can ask about it later.
    keep = {k: v for k, v in headers.items() if k == "Location"}
    if waits_for_storage(upload):
        return _refusal(upload, 503, {**keep, **_retry_after(retry_after)})
    if upload.status is UploadStatus.REJECTED:
        return _refusal(upload, 422, keep)
    if upload.status is UploadStatus.FAILED:
        return _refusal(upload, 503, keep)
    headers = {**headers, **verdict_headers(upload)}
    return web.Response(status=status, headers=headers)


def verdict_headers(upload: Upload) -> dict[str, str]:
    if upload.status is UploadStatus.STORED:
        return {STATUS_HEADER: "stored", FILE_ID_HEADER: upload.file_id or ""}
    if awaits_verdict(upload):
        return {STATUS_HEADER: "processing"}
    return {}


def head_refusal(upload: Upload, retry_after: float) -> web.StreamResponse | None:
    """HEAD while the pipeline runs → 423 (clients retry); while it waits for storage → 503
    with Retry-After; after a refusal → its 4xx/5xx."""
    if waits_for_storage(upload):
        return _refusal(upload, 503, _retry_after(retry_after))
    if awaits_verdict(upload):
        return web.Response(status=423, headers={STATUS_HEADER: "processing", "Retry-After": "1"})
    if upload.status in (UploadStatus.REJECTED, UploadStatus.FAILED):
        return _refusal(upload, 422 if upload.status is UploadStatus.REJECTED else 503)
    return None


def _refusal(
    upload: Upload, status: int, extra: dict[str, str] | None = None
) -> web.StreamResponse:
    code = upload.error or "processing_failed"
    return web.json_response(
        {"error": code, "message": upload.error_detail or code},
        status=status,
        headers={STATUS_HEADER: upload.status.value, ERROR_HEADER: code, **(extra or {})},
    )


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}
