"""The completion pipeline's verdict as tus responses: wait for it on the completing request,
and repeat it on HEAD and retried PATCHes (tus-protocol.md §7)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tusingest.domain import Upload, UploadStatus
from tusingest.services import Services

STATUS_HEADER = "X-Upload-Status"
FILE_ID_HEADER = "X-File-Id"
ERROR_HEADER = "X-Upload-Error"

_PENDING = (UploadStatus.COMPLETE, UploadStatus.PROCESSING)
NO_STORAGE = "no_storage_available"


def awaits_verdict(upload: Upload) -> bool:
    return upload.status in _PENDING and not upload.is_partial


async def settle(services: Services, upload: Upload) -> Upload:
    """Wait (up to COMPLETION_WAIT_SECONDS) for the pipeline to decide about `upload`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + services.settings.pipeline.completion_wait_seconds
    while awaits_verdict(upload) and not waits_for_storage(upload) and loop.time() < deadline:
        # Usually this node runs the operation and wakes us; in a cluster another node may
        # have claimed it, so look at the row every quarter second as well.
        await services.runner.wait(upload.id, min(0.25, deadline - loop.time()))
        upload = await services.sessions.get(upload.id) or upload
    return upload


def waits_for_storage(upload: Upload) -> bool:
    """The file is fine but no storage element can take it now: the operation retries."""
    return awaits_verdict(upload) and upload.error == NO_STORAGE


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
