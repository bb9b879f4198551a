"""The `ingest` operation: validate, scan, compress and store a completed upload, exactly once;
every step is idempotent, so a retry (on any node, after any crash) just runs again."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from tusingest.domain import (
    Operation,
    Retention,
    StoredFile,
    Upload,
    UploadStatus,
)
from tusingest.errors import NoStorageAvailable, TusingestError
from tusingest.logcontext import about
from tusingest.metadata import metadata_text
from tusingest.pipeline.compress import is_compressible, maybe_compress, remove_copies
from tusingest.pipeline.faults import crash_point
from tusingest.pipeline.ingest_notes import failed_note, rejected_note, stored_note
from tusingest.pipeline.ingest_state import IngestState, Prepared, client_metadata
from tusingest.pipeline.runner import Progress
from tusingest.pipeline.saga import PlacementLog, StoreSaga
from tusingest.pipeline.tracing import (
    ATTEMPT,
    CODEC,
    COMPRESSION,
    CONTENT_TYPE,
    ELEMENT_ID,
    FILE_ID,
    REJECTION,
    SIZE,
    STORED_SIZE,
    UPLOAD,
    UPLOAD_ID,
    VALIDATION,
    VERDICT,
    NoTracer,
)
from tusingest.pipeline.validate import (
    MimeDetector,
    Rejection,
    Validated,
    check_name,
    validate,
)
from tusingest.ports import (
    Catalog,
    FileRegistrar,
    Metrics,
    Scanner,
    SessionStore,
    Span,
    Staging,
    Tracer,
)
from tusingest.settings.pipeline import CompressionSettings, ValidationSettings

log = logging.getLogger(__name__)

_HANDED_OVER = 1024  # completed uploads kept for the ingest that runs them at once


@dataclass(frozen=True)
class IngestPolicy:
    validation: ValidationSettings
    compression: CompressionSettings
    workdir: Path  # compressed copies are made here
    temporary_ttl_days: int = 30  # registered with the Admin Module for temporary files
    crash_at: str | None = None  # fault injection for crash-safety tests: SIGKILL at that step


class Ingest:
    """Implements the runner's `Handler` for kind `ingest` (subject = upload id)."""

    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        catalog: Catalog,
        saga: StoreSaga,
        registrar: FileRegistrar | None,
        scanner: Scanner | None,
        policy: IngestPolicy,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        decided: Callable[[Upload], None] | None = None,
    ) -> None:
        """`decided(upload)` hears of each verdict once it and its audit note are committed,
        with the upload as committed, before the cleanup and the operation's end (the
        completing request waits for no more, and need not read the row back)."""
        self._sessions = sessions
        self._staging = staging
        self._catalog = catalog
        self._saga = saga
        self._registrar = registrar
        self._scanner = scanner
        self._policy = policy
        self._metrics = metrics
        self._tracer = tracer or NoTracer()
        self._decided = decided or (lambda _upload: None)
        self._detector = MimeDetector()
        self._handed: OrderedDict[str, Upload] = OrderedDict()

    def hand_over(self, upload: Upload) -> None:
        """The upload as the request that completed it committed it: the ingest this node
        runs at once starts from it instead of reading the row back. Only a hint (a
        termination since is caught by the guarded status change that starts the work), and
        kept for a bounded number of uploads."""
        self._handed[upload.id] = upload
        while len(self._handed) > _HANDED_OVER:
            self._handed.popitem(last=False)

    def _step(self, name: str) -> None:
        crash_point(self._policy.crash_at, name)

    async def run(self, op: Operation, progress: Progress) -> IngestState:
        # Adopted by the request that completed the upload, the operation runs in a task made in
        # that request's context: its span is the request's child. Claimed later, its own trace.
        with self._tracer.span(UPLOAD, {UPLOAD_ID: op.subject, ATTEMPT: op.attempts}) as span:
            state = await self._run(op, progress, span)
            span.set(VERDICT, state.verdict or "none")
            if state.file_id is not None:
                span.set(FILE_ID, state.file_id)
            if state.code is not None:
                span.set(REJECTION, state.code)
            return state

    async def _run(self, op: Operation, progress: Progress, span: Span) -> IngestState:
        state = IngestState.from_json(op.state)
        upload = self._handed.pop(op.subject, None) or await self._sessions.get(op.subject)
        if upload is None:
            return replace(state, verdict="gone")
        if upload.status in (UploadStatus.STORED, UploadStatus.REJECTED):
            # A crash came between the verdict (committed with its note) and the end of the
            # operation: only the cleanup is left.
            await self._cleanup(upload)
            return replace(state, verdict=upload.status.value)
        if upload.status in (UploadStatus.TERMINATED, UploadStatus.EXPIRED):
            # Terminated while an earlier attempt ran: nothing it placed may stay.
            return await self._withdraw(state, upload)
        if not await self._sessions.settle(
            upload.id, status=UploadStatus.PROCESSING, now=datetime.now(UTC)
        ):
            return await self._withdraw(state, upload)
        meta = metadata_text(upload.metadata_raw)
        source = self._staging.path(upload.id)
        try:
            state, prepared, unsaved = await self._prepare(state, upload, meta, source)
        except Rejection as rejection:
            return await self._reject(state, upload, meta, rejection)
        # The catalog entry records where the file went: a retry past it does not store again.
        # An entry follows a recorded placement, so without one there is none to look for.
        placed = bool(state.log.placements)
        entry = await self._catalog.by_upload(upload.id) if placed else None
        if entry is None:
            self._step("store")
            stored, state = await self._store(state, upload, prepared, source, progress, unsaved)
            self._step("catalog")
            entry = prepared.entry(upload, stored)
            await self._catalog.record(entry)
        about(file_id=entry.file_id)
        span.set(ELEMENT_ID, entry.element_id)
        span.set(SIZE, entry.size)
        self._step("register")
        if self._registrar is not None:
            temporary = prepared.retention is Retention.TEMPORARY
            ttl = self._policy.temporary_ttl_days if temporary else None
            await self._registrar.register(entry, ttl_days=ttl)
        self._step("stored")
        # The note goes in the verdict's transaction: a `file.stored` webhook never announces
        # a file that a failed registration or a termination then takes back, and a stored
        # file never lacks its note.
        settled = await self._sessions.settle(
            upload.id,
            status=UploadStatus.STORED,
            now=datetime.now(UTC),
            file_id=entry.file_id,
            digests=(prepared.validated.md5, prepared.validated.sha256),
            note=stored_note(upload, entry),
        )
        if not settled:  # the client terminated the upload while it was being stored
            return await self._withdraw(state, upload)
        self._step("note")
        log.info("stored upload %s as file %s on %s (%d bytes)", upload.id, entry.file_id,
                 entry.element_id, entry.size)  # fmt: skip
        self._count("stored", entry.size, (datetime.now(UTC) - upload.created_at).total_seconds())
        # The audit trail and the counts show the file by the time its client hears.
        self._decided(settled)
        self._step("cleanup")
        await self._cleanup(upload, copies=self._compressible(prepared.validated))
        return replace(state, verdict="stored", file_id=entry.file_id)

    async def _prepare(
        self,
        state: IngestState,
        upload: Upload,
        meta: dict[str, str],
        source: Path,
    ) -> tuple[IngestState, Prepared, bool]:
        """Validate, scan and compress, or reuse what an earlier attempt persisted (a retry
        after waiting for storage reads nothing again); raises `Rejection`. True when the
        state holds a check not persisted yet (the saga's first record carries it)."""
        validated = state.validated or await self._check(upload, meta, source)
        self._step("compress")
        name = meta.get("filename") or meta.get("name") or "file"
        stored_at = state.stored_at or datetime.now(UTC)
        check_name(name, upload.owner, stored_at)
        reusable = state.validated is not None and (
            state.compressed is None or await asyncio.to_thread(state.compressed.still_there)
        )
        if reusable:
            compressed = state.compressed
        else:
            with self._tracer.span(
                COMPRESSION, {UPLOAD_ID: upload.id, CONTENT_TYPE: validated.detected_type}
            ) as span:
                compressed = await maybe_compress(
                    source,
                    validated.detected_type,
                    validated.size,
                    self._policy.compression,
                    self._policy.workdir,
                )
                span.set(CODEC, "none" if compressed is None else compressed.codec)
                span.set(STORED_SIZE, validated.size if compressed is None else compressed.size)
            if compressed is not None and self._metrics is not None:
                self._metrics.compression(validated.size, compressed.size)
        prepared = Prepared(
            validated,
            compressed,
            stored_at,
            name,
            Retention.of(meta.get("retention_policy")),
            client_metadata(meta),
        )
        if not reusable:
            state = replace(state, validated=validated, compressed=compressed, stored_at=stored_at)
        return state, prepared, not reusable

    async def _store(
        self,
        state: IngestState,
        upload: Upload,
        prepared: Prepared,
        source: Path,
        progress: Progress,
        unsaved: bool,
    ) -> tuple[StoredFile, IngestState]:
        async def persist(log: PlacementLog) -> None:
            nonlocal state, unsaved
            state = replace(state, log=log)
            await progress("placing", state)
            unsaved = False

        try:
            stored = await self._saga.place(
                state.log,
                persist,
                lambda file_id: prepared.item(file_id, upload, source),
                retention=prepared.retention,
                size=prepared.size,
            )
        except Exception as failed:
            if unsaved:  # a retry reuses the check (and the compressed copy)
                await progress("prepared", state)
            if not isinstance(failed, NoStorageAvailable):
                raise
            waiting = failed
            # Not a verdict: the bytes stay staged and the operation waits for storage.
            await self._sessions.settle(
                upload.id,
                status=UploadStatus.PROCESSING,
                now=datetime.now(UTC),
                error=waiting.code,
                detail=waiting.message,
            )
            raise
        self._step("verify")
        if stored.sha256 != prepared.sha256:
            # Retried: the store is idempotent by file id and redoes a copy that differs.
            raise OSError(f"{stored.element_id} holds {stored.sha256}, expected {prepared.sha256}")
        return stored, state

    async def _check(self, upload: Upload, meta: dict[str, str], source: Path) -> Validated:
        """Validate and scan the staged file; raises `Rejection`."""
        self._step("validate")
        with self._tracer.span(VALIDATION, {UPLOAD_ID: upload.id}) as span:
            known = (upload.md5, upload.sha256) if upload.sha256 else None
            try:
                validated = await validate(
                    source,
                    declared_type=meta.get("filetype") or meta.get("type"),
                    declared_checksum=meta.get("checksum"),
                    known_digests=known,
                    settings=self._policy.validation,
                    detector=self._detector,
                )
                span.set(SIZE, validated.size)
                span.set(CONTENT_TYPE, validated.detected_type)
                self._step("scan")
                if self._scanner is not None:
                    scan = await self._scanner.scan(source)
                    if not scan.clean:
                        raise Rejection("virus_detected", f"the file contains {scan.signature}")
            except Rejection as rejection:
                span.set(REJECTION, rejection.code)
                raise
        return validated

    async def _reject(
        self, state: IngestState, upload: Upload, meta: dict[str, str], rejection: Rejection
    ) -> IngestState:
        # The note (and the webhook deliveries it brings along) in the verdict's transaction.
        settled = await self._sessions.settle(
            upload.id,
            status=UploadStatus.REJECTED,
            now=datetime.now(UTC),
            error=rejection.code,
            detail=rejection.message,
            note=rejected_note(upload, meta, rejection),
        )
        self._count("rejected")
        if settled is not None:
            self._decided(settled)
        await self._cleanup(upload)
        return replace(state, verdict="rejected", code=rejection.code)

    async def _withdraw(self, state: IngestState, upload: Upload) -> IngestState:
        """The client terminated the upload while it was processed: undo what the saga did
        (catalog entry, registration, every copy on an element) and keep nothing staged."""
        entry = await self._catalog.by_upload(upload.id)
        if entry is not None and self._registrar is not None:
            await self._registrar.unregister(entry.file_id)
        await self._catalog.remove(upload.id)
        await self._saga.compensate(state.log)
        await self._cleanup(upload)
        log.info("upload %s was terminated while being processed: withdrawn", upload.id)
        self._count("terminated")
        return replace(state, verdict=UploadStatus.TERMINATED.value)

    def _count(self, status: str, size: int | None = None, seconds: float | None = None) -> None:
        if self._metrics is not None:
            self._metrics.upload_finished(status, size, seconds)

    async def _cleanup(self, upload: Upload, *, copies: bool = True) -> None:
        """Remove the staged bytes and (`copies`) what compressing may have left."""
        await self._staging.delete(upload.id)
        if copies:
            await asyncio.to_thread(remove_copies, self._policy.workdir, upload.id)

    def _compressible(self, validated: Validated) -> bool:
        """Whether compressing may have written a copy of this file."""
        settings = self._policy.compression
        return (
            settings.enabled
            and validated.size >= settings.min_size
            and is_compressible(validated.detected_type)
        )

    async def give_up(self, op: Operation, error: str) -> None:
        """Undo the saga in reverse (registration, catalog entry, copies on elements); the
        staged bytes stay, so nothing the client sent is lost."""
        entry = await self._catalog.by_upload(op.subject)
        if entry is not None and self._registrar is not None:
            try:
                await self._registrar.unregister(entry.file_id)
            except TusingestError as exc:
                log.error("could not unregister %s: %s", entry.file_id, exc)
        await self._catalog.remove(op.subject)
        await self._saga.compensate(IngestState.from_json(op.state).log)
        upload = await self._sessions.settle(
            op.subject,
            status=UploadStatus.FAILED,
            now=datetime.now(UTC),
            error="processing_failed",
            detail=error,
        )
        self._count("failed")
        if upload is not None:
            await self._catalog.audit(failed_note(upload, error))
