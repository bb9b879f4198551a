"""`POST /api/files/upload` and `POST /api/files/batch/upload`: whole files in a multipart form.

Each file part is streamed into an upload session of its own (deferred length, hashed inline,
fsynced) as it arrives, then completed and taken through the same pipeline as a tus upload. A
batch completes its files only once the whole form has arrived within its limits, so a batch
that breaks them stores nothing. A body cut off mid-way leaves nothing: its sessions are
terminated and their staged bytes removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web

from tusingest.api.multipart import (
    drain,
    metadata_field,
    multipart,
    next_part,
    read_chunk,
    refuse_length,
)
from tusingest.auth import PRINCIPAL, client_address
from tusingest.domain import Principal, Upload, UploadStatus
from tusingest.errors import (
    BadRequest,
    PayloadTooLarge,
    RateLimited,
    TusingestError,
)
from tusingest.intake import INTAKE
from tusingest.metadata import encode_metadata
from tusingest.pipeline.validate import check_at_creation
from tusingest.pipeline.verdicts import awaits_verdict, waits_for_storage
from tusingest.services import SERVICES, Services

log = logging.getLogger(__name__)

FORM_OVERHEAD = 256 * 1024  # part headers, boundaries and small fields around the files
METADATA_LIMIT = 16 * 1024  # the `metadata` field, as JSON
BATCH_PARALLELISM = 4  # files of one batch completed and checked at a time
FILE_FIELDS = ("file", "files")


async def upload(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    _refuse_resume(request)
    policy = services.uploads.policy
    refuse_length(request, policy.max_size + FORM_OVERHEAD, "file_too_large", "the file")
    # One file: refused before a byte of the form is read.
    await services.limits.start_upload(request[PRINCIPAL])
    form = _Form(services, request[PRINCIPAL], client_address(request), max_files=1, counted=True)
    async with form.receiving():
        with request.config_dict[INTAKE].streaming(request):
            await form.read(await multipart(request))
        if not form.files:
            raise BadRequest("the form has no `file` part", code="missing_file")
        staged = form.files[0]
        if staged.error is not None:
            raise staged.error
        upload = await form.complete(staged)
    return await _respond(services, upload)


async def batch(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    _refuse_resume(request)
    policy = services.uploads.policy
    refuse_length(request, policy.max_batch_bytes + FORM_OVERHEAD, "batch_too_large", "the batch")
    form = _Form(
        services,
        request[PRINCIPAL],
        client_address(request),
        max_files=policy.max_batch_files,
        max_bytes=policy.max_batch_bytes,
    )
    async with form.receiving():
        with request.config_dict[INTAKE].streaming(request):
            await form.read(await multipart(request))
        if not form.files:
            raise BadRequest("the form has no `files` part", code="missing_file")
        gate = asyncio.Semaphore(BATCH_PARALLELISM)

        async def settle(staged: _Staged) -> dict[str, Any]:
            async with gate:
                return await _result(services, form, staged)

        results = await asyncio.gather(*(settle(staged) for staged in form.files))
    succeeded = sum(1 for r in results if r["status"] == "success")
    failed = sum(1 for r in results if r["status"] == "failed")
    limited = [s.error.retry_after for s in form.files if isinstance(s.error, RateLimited)]
    return web.json_response(
        {
            "results": results,
            "summary": {
                "total": len(results),
                "succeeded": succeeded,
                "failed": failed,
                "processing": len(results) - succeeded - failed,
            },
        },
        status=207,
        headers={"Retry-After": str(max(limited))} if limited else None,
    )


@dataclass
class _Staged:
    """One file part: its upload session, or why it could not be taken."""

    filename: str
    content_type: str | None
    upload: Upload | None = None
    error: TusingestError | None = None


@dataclass
class _Form:
    """A form being read: its metadata and its files, each staged as an upload session."""

    services: Services
    principal: Principal
    address: str | None
    max_files: int
    max_bytes: int | None = None
    counted: bool = False  # the form's one upload was counted against the rate limit already
    metadata: dict[str, str] = field(default_factory=dict)
    files: list[_Staged] = field(default_factory=list)
    received: int = 0
    _metadata_seen: bool = False

    @contextlib.asynccontextmanager
    async def receiving(self) -> AsyncIterator[None]:
        """On any failure (the body cut off, a limit broken) no session of the form stays."""
        try:
            yield
        except BaseException:
            await asyncio.shield(self.discard())
            raise

    async def discard(self) -> None:
        for staged in self.files:
            if staged.upload is not None and staged.upload.status is UploadStatus.RECEIVING:
                await self._terminate(staged.upload.id)

    async def read(self, reader: MultipartReader) -> None:
        while True:
            part = await next_part(reader)
            if part is None:
                return
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart forms are not supported", code="invalid_form")
            if part.name == "metadata" and part.filename is None:
                self._read_metadata(await metadata_field(part, METADATA_LIMIT))
            elif part.name in FILE_FIELDS and part.filename is not None:
                await self._stage(part)
            else:
                await drain(part)  # a field we do not know: skipped

    def _read_metadata(self, raw: str) -> None:
        if self._metadata_seen:
            raise BadRequest("the form has two `metadata` fields", code="invalid_metadata")
        self._metadata_seen = True
        try:
            values = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise BadRequest("metadata is not valid JSON", code="invalid_metadata") from None
        if not isinstance(values, dict):
            raise BadRequest("metadata must be a JSON object", code="invalid_metadata")
        self.metadata = {
            str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in values.items()
        }
        encode_metadata(self.metadata)  # refuses keys that cannot be carried

    async def _stage(self, part: BodyPartReader) -> None:
        if len(self.files) >= self.max_files:
            raise PayloadTooLarge(
                f"the form has more than {self.max_files} file(s)", code="too_many_files"
            )
        name = part.filename or "file"
        content_type = part.headers.get("Content-Type")
        staged = _Staged(name, content_type)
        self.files.append(staged)
        try:
            check_at_creation({**self.metadata, "filename": name}, self.principal.sub, _now())
        except BadRequest as refused:
            staged.error = refused  # this file fails alone; the form goes on
            await drain(part)
            return
        if not self.counted:
            try:
                await self.services.limits.start_upload(self.principal)
            except RateLimited as refused:
                staged.error = refused  # so does a file past the user's rate limit
                await drain(part)
                return
        uploads = self.services.uploads
        upload = await uploads.create(
            self.principal, length=None, metadata_raw=None, address=self.address
        )
        staged.upload = upload
        try:
            staged.upload = await uploads.append(
                self.principal,
                upload.id,
                offset=0,
                length=None,
                content_length=None,
                body=self.services.limits.paced(self.principal, self._chunks(part)),
            )
        except PayloadTooLarge as too_large:
            if self.max_bytes is not None and self.received > self.max_bytes:
                raise  # the batch's own limit: the whole form is refused
            # One file too large fails alone; the form goes on with the next part.
            staged.error = PayloadTooLarge(too_large.message, code="file_too_large")
            await self._terminate(upload.id)
            staged.upload = None
            await drain(part)

    async def _chunks(self, part: BodyPartReader) -> AsyncIterator[bytes]:
        silence = self.services.uploads.policy.body_timeout
        while True:
            chunk = await read_chunk(part, silence)
            if not chunk:
                return
            self.received += len(chunk)
            if self.max_bytes is not None and self.received > self.max_bytes:
                raise PayloadTooLarge(
                    f"the files of the batch pass {self.max_bytes} bytes", code="batch_too_large"
                )
            yield chunk

    async def complete(self, staged: _Staged) -> Upload:
        """Complete the staged upload with everything the form said about it."""
        assert staged.upload is not None
        values = dict(self.metadata)
        values["filename"] = staged.filename
        if staged.content_type:
            values.setdefault("filetype", staged.content_type)
        upload = await self.services.uploads.finish(
            self.principal, staged.upload.id, metadata_raw=encode_metadata(values)
        )
        staged.upload = upload
        return await self.services.verdicts.settle(upload)

    async def _terminate(self, upload_id: str) -> None:
        try:
            await self.services.uploads.terminate(self.principal, upload_id)
        except Exception:
            log.exception("could not discard the form upload %s", upload_id)


async def _result(services: Services, form: _Form, staged: _Staged) -> dict[str, Any]:
    """One file of a batch as the seed's `results` show it."""
    result: dict[str, Any] = {"filename": staged.filename}
    if staged.error is not None or staged.upload is None:
        error = staged.error or BadRequest("not received", code="not_received")
        failed = {**result, "status": "failed", "error": error.code, "message": error.message}
        if isinstance(error, RateLimited):
            failed["retry_after_seconds"] = error.retry_after
        return failed
    try:
        upload = await form.complete(staged)
    except TusingestError as exc:
        return {**result, "status": "failed", "error": exc.code, "message": exc.message}
    result["upload_session_id"] = upload.id
    if upload.status is UploadStatus.STORED:
        stored = await _stored(services, upload)
        return {**result, "status": "success", **stored}
    if awaits_verdict(upload) and not waits_for_storage(upload):
        return {**result, "status": "processing", "size_bytes": upload.length}
    code = upload.error or "processing_failed"
    return {**result, "status": "failed", "error": code, "message": upload.error_detail or code}


async def _respond(services: Services, upload: Upload) -> web.StreamResponse:
    if upload.status is UploadStatus.STORED:
        return web.json_response(await _stored(services, upload), status=201)
    if waits_for_storage(upload) or upload.status is UploadStatus.FAILED:
        retry = str(max(1, round(services.verdicts.retry_after)))
        return web.json_response(
            {
                "error": upload.error or "processing_failed",
                "message": upload.error_detail or "the file could not be stored now",
                "upload_session_id": upload.id,
            },
            status=503,
            headers={"Retry-After": retry},
        )
    if upload.status is UploadStatus.REJECTED:
        code = upload.error or "rejected"
        return web.json_response(
            {"error": code, "message": upload.error_detail or code, "upload_session_id": upload.id},
            status=422,
        )
    # Received and durable, still being checked: the session endpoint tells the verdict.
    return web.json_response(
        {
            "upload_session_id": upload.id,
            "status": "processing",
            "bytes_uploaded": upload.offset,
            "bytes_total": upload.length,
            "percent_complete": 100.0,
        },
        status=202,
    )


async def _stored(services: Services, upload: Upload) -> dict[str, Any]:
    entry = await services.catalog.by_upload(upload.id)
    if entry is None:  # stored, then deleted already
        return {"file_id": upload.file_id, "upload_session_id": upload.id}
    return {
        "file_id": entry.file_id,
        "storage_element_id": entry.element_id,
        "storage_filename": entry.storage_filename,
        "size_bytes": entry.size,
        "md5_hash": entry.md5,
        "sha256_hash": entry.sha256,
        "uploaded_at": entry.created_at.isoformat(),
        "upload_session_id": upload.id,
        "content_type": entry.content_type,
        "retention_policy": entry.retention_policy,
    }


def _now() -> datetime:
    return datetime.now(UTC)


def _refuse_resume(request: web.Request) -> None:
    if "X-Upload-Session-ID" in request.headers:
        raise BadRequest(
            "a multipart upload is not resumable: upload with tus at /files/ to resume an "
            "interrupted upload (it continues from the last byte the server has)",
            code="resumable_multipart_unsupported",
        )
