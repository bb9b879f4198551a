"""Moving a stored file to another element: the `transfer` operation (`transfer_requests`
starts one and reports on it).

The saga: fetch the source's copy into a spool file (streamed, never in memory) → store it on
the destination under the same file id (original filename and content type, the metadata
carried over) → check size and SHA-256 there → repoint the catalog (and the Admin Module) →
delete the source when asked → audit. Until the repoint the source stays the live copy; a
transfer that gives up before it removes the destination's copy (a durable `discard`), so
there are never two live copies and never none. The retention follows the destination's mode
(an rw element keeps permanent files, an edit element temporary ones).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from tusingest.domain import (
    AuditNote,
    FileToStore,
    Operation,
    OperationKind,
    Retention,
    StoredFile,
)
from tusingest.errors import (
    TransientError,
    TusingestError,
)
from tusingest.metadata import metadata_text
from tusingest.pipeline.compress import stored_form
from tusingest.pipeline.discard import remove_from_element
from tusingest.pipeline.faults import crash_point
from tusingest.pipeline.ingest_state import client_metadata, file_metadata
from tusingest.pipeline.runner import Progress
from tusingest.pipeline.saga import DiscardState
from tusingest.pipeline.tracing import (
    ATTEMPT,
    DESTINATION_ELEMENT_ID,
    FILE_ID,
    SIZE,
    SOURCE_ELEMENT_ID,
    TRANSFER,
    TRANSFER_ID,
    VERDICT,
    NoTracer,
)
from tusingest.pipeline.transfer_state import TransferState
from tusingest.ports import (
    Attribute,
    Catalog,
    Elements,
    FileRegistrar,
    Metrics,
    OperationStore,
    SessionStore,
    Tracer,
)

log = logging.getLogger(__name__)


class TransferFailed(TusingestError):
    """The transfer cannot succeed however often it is tried (the file went away)."""

    status = 409
    code = "transfer_failed"


class Transfer:
    """Implements the runner's `Handler` for kind `transfer` (subject = file id)."""

    def __init__(
        self,
        elements: Elements,
        catalog: Catalog,
        sessions: SessionStore,
        operations: OperationStore,
        registrar: FileRegistrar | None,
        metrics: Metrics,
        *,
        workdir: Path,
        retry_after: float,
        temporary_ttl_days: int,
        crash_at: str | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._elements = elements
        self._catalog = catalog
        self._sessions = sessions
        self._operations = operations
        self._registrar = registrar
        self._metrics = metrics
        self._workdir = workdir
        self._retry_after = retry_after
        self._ttl_days = temporary_ttl_days
        self._crash_at = crash_at
        self._tracer = tracer or NoTracer()

    def _step(self, name: str) -> None:
        crash_point(self._crash_at, name)

    async def run(self, op: Operation, progress: Progress) -> TransferState:
        state = TransferState.from_json(op.state)
        attributes: dict[str, Attribute] = {
            TRANSFER_ID: state.transfer_id,
            FILE_ID: state.file_id,
            SOURCE_ELEMENT_ID: state.source_id,
            DESTINATION_ELEMENT_ID: state.destination_id,
            ATTEMPT: op.attempts,
        }
        with self._tracer.span(TRANSFER, attributes) as span:
            state = await self._run(state, progress)
            span.set(VERDICT, state.status)
            span.set(SIZE, state.bytes_transferred)
            return state

    async def _run(self, state: TransferState, progress: Progress) -> TransferState:
        if state.status in ("completed", "failed"):
            return state
        if not state.repointed:
            if state.started_at is None:
                state = replace(state, status="in_progress", started_at=_now())
                await progress("started", state)
            try:
                state = await self._copy(state)
            except TransferFailed as failed:
                await self._compensate(state)
                return replace(state, status="failed", error=failed.message, completed_at=_now())
            await progress("repointed", state)
        if self._registrar is not None and not state.registered:
            entry = await self._catalog.by_file(state.file_id)
            if entry is not None:
                ttl = self._ttl_days if state.retention is Retention.TEMPORARY else None
                await self._registrar.relocate(entry, ttl_days=ttl)
            state = replace(state, registered=True)
            await progress("registered", state)
        if state.delete_source and not state.source_deleted:
            await remove_from_element(
                self._elements, self._metrics, state.source, self._retry_after
            )
            state = replace(state, source_deleted=True)
        log.info("transferred %s from %s to %s", state.file_id, state.source_id,
                 state.destination_id)  # fmt: skip
        return replace(state, status="completed", completed_at=_now())

    async def _copy(self, state: TransferState) -> TransferState:
        """Source → spool → destination, checked, then the catalog repointed."""
        entry = await self._catalog.by_file(state.file_id)
        if entry is None or entry.deleted_at is not None:
            raise TransferFailed(f"{state.file_id} was deleted")
        if entry.element_id == state.destination_id:
            return replace(state, repointed=True)  # an earlier attempt got this far
        if entry.element_id != state.source_id:
            raise TransferFailed(f"{state.file_id} moved to {entry.element_id} meanwhile")
        spool = self._workdir / f"transfer-{state.transfer_id}"
        await asyncio.to_thread(self._workdir.mkdir, parents=True, exist_ok=True)
        try:
            source = self._elements.element(state.source.info())
            fetched = await source.fetch(state.file_id, spool)
            if fetched is None:
                raise TransferFailed(f"{state.source_id} does not hold {state.file_id}")
            if state.verify_checksum and fetched.sha256 != entry.stored_sha256.lower():
                raise TransientError(
                    f"{state.source_id} sent sha256 {fetched.sha256} for {state.file_id}, the "
                    f"catalog has {entry.stored_sha256}"
                )
            state = replace(state, status="verifying", bytes_transferred=fetched.size)
            upload = await self._sessions.get(entry.upload_id)
            described = client_metadata(metadata_text(upload.metadata_raw if upload else None))
            # A compressed file stays self-describing on its new element too.
            name, content_type = stored_form(
                entry.original_filename, entry.content_type, entry.codec
            )
            item = FileToStore(
                file_id=state.file_id,
                source=spool,
                original_filename=name,
                content_type=content_type,
                size=fetched.size,
                sha256=fetched.sha256,
                owner_sub=entry.owner,
                owner_name=entry.owner,
                uploaded_at=fetched.created_at,
                metadata=file_metadata(
                    upload_id=entry.upload_id,
                    retention=state.retention,
                    md5=entry.md5,
                    size=entry.size,
                    sha256=entry.sha256,
                    codec=entry.codec,
                    owner=entry.owner,
                    described=described,
                    filename=entry.original_filename,
                    content_type=entry.content_type,
                ),
            )
            stored = await self._store(state, item)
        finally:
            await asyncio.to_thread(spool.unlink, True)
        self._step("transfer_copied")
        moved = await self._catalog.relocate(
            state.file_id,
            state.source_id,
            stored,
            state.retention.value,
            AuditNote(
                state.actor,
                "file_transferred",
                state.file_id,
                {"from": state.source_id, "to": state.destination_id,
                 "delete_source": state.delete_source, "transfer_id": state.transfer_id},
                address=state.address,
            ),
        )  # fmt: skip
        if not moved:
            raise TransferFailed(f"{state.file_id} was deleted or moved during the transfer")
        return replace(state, repointed=True)

    async def _store(self, state: TransferState, item: FileToStore) -> StoredFile:
        breaker = self._elements.breaker(state.destination_id)
        if not breaker.allows():
            raise TransientError(f"{state.destination_id} is unavailable (circuit open)")
        destination = self._elements.element(state.destination.info())
        try:
            stored = await destination.store(item)
        except (TransientError, OSError):
            breaker.record_failure()
            self._metrics.breaker(state.destination_id, breaker.state)
            raise
        breaker.record_success()
        self._metrics.breaker(state.destination_id, breaker.state)
        if (stored.size, stored.sha256.lower()) != (item.size, item.sha256):
            await destination.delete(state.file_id)
            raise TransientError(
                f"{state.destination_id} holds {stored.size} bytes, sha256 {stored.sha256}; "
                f"sent {item.size} bytes, sha256 {item.sha256}"
            )
        return stored

    async def _compensate(self, state: TransferState) -> None:
        """Remove whatever the destination may hold of a transfer that did not repoint: a
        durable `discard` (the destination may be down now). Never the live copy: one that
        another transfer moved there stays."""
        entry = await self._catalog.by_file(state.file_id)
        live = entry is not None and entry.deleted_at is None
        if live and entry is not None and entry.element_id == state.destination_id:
            return
        placement = state.destination
        op_id = uuid.uuid5(uuid.NAMESPACE_URL, f"tusingest:transfer/{state.transfer_id}").hex
        queued = await self._operations.enqueue(
            op_id, OperationKind.DISCARD, placement.file_id, DiscardState(placement).to_json()
        )
        if queued:
            log.warning("transfer %s rolled back: discarding the copy on %s",
                        state.transfer_id, state.destination_id)  # fmt: skip

    async def give_up(self, op: Operation, error: str) -> None:
        state = TransferState.from_json(op.state)
        if not state.repointed:
            await self._compensate(state)
        await self._catalog.audit(
            AuditNote(
                state.actor,
                "file_transferred",
                state.file_id,
                {"from": state.source_id, "to": state.destination_id, "error": error},
                address=state.address,
                outcome="failed",
            )
        )


def _now() -> str:
    return datetime.now(UTC).isoformat()
