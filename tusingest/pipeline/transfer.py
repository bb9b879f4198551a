"""Moving a stored file to another element: the `transfer` operation and the request that
starts it.

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
import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tusingest.domain import (
    WRITABLE_MODES,
    AuditNote,
    CapacityStatus,
    FileToStore,
    Operation,
    OperationKind,
    OperationStatus,
    Principal,
    Retention,
    StoredFile,
)
from tusingest.errors import (
    BadRequest,
    Conflict,
    ElementUnavailable,
    NotFound,
    TransientError,
    TusingestError,
)
from tusingest.metadata import metadata_text
from tusingest.pipeline.compress import stored_form
from tusingest.pipeline.discard import remove_from_element
from tusingest.pipeline.faults import crash_point
from tusingest.pipeline.files import find_live
from tusingest.pipeline.ingest_state import client_metadata, file_metadata
from tusingest.pipeline.runner import Progress, Runner
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
    RegistryChain,
    SessionStore,
    Tracer,
)

log = logging.getLogger(__name__)

# What a transfer's estimate assumes (bytes per second): two streams over a LAN.
_ASSUMED_RATE = 50 * 1024 * 1024


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


class Transfers:
    """Starts transfers (checking both elements first) and reports on them."""

    def __init__(
        self,
        catalog: Catalog,
        registry: RegistryChain,
        elements: Elements,
        operations: OperationStore,
        runner: Runner,
    ) -> None:
        self._catalog = catalog
        self._registry = registry
        self._elements = elements
        self._operations = operations
        self._runner = runner

    async def start(
        self,
        principal: Principal,
        file_id: str,
        *,
        destination_id: str,
        delete_source: bool,
        verify_checksum: bool,
        address: str | None,
    ) -> tuple[str, int]:
        """Queue the transfer; its id and an estimate of its duration in seconds."""
        entry = await find_live(self._catalog, principal, file_id)
        source = await self._registry.element(entry.element_id)
        if source is None:
            raise ElementUnavailable(entry.element_id)
        if destination_id == entry.element_id:
            raise Conflict(f"the file is on {destination_id} already", code="same_element")
        destination = await self._registry.element(destination_id)
        if destination is None:
            raise BadRequest(
                f"no storage element {destination_id!r} is registered",
                code="unknown_destination",
            )
        if destination.mode not in WRITABLE_MODES:
            raise BadRequest(
                f"{destination_id} is {destination.mode.value}: it takes no files",
                code="destination_not_writable",
            )
        full = destination.status is CapacityStatus.FULL
        if full or destination.capacity_free < entry.stored_size:
            raise Conflict(
                f"{destination_id} has no room for {entry.stored_size} bytes",
                code="destination_full",
            )
        if not destination.healthy or destination_id in self._elements.open_ids():
            raise Conflict(f"{destination_id} is unavailable now", code="destination_unavailable")
        transfer_id = str(uuid.uuid4())
        state = TransferState(
            transfer_id=transfer_id,
            file_id=entry.file_id,
            source_id=source.element_id,
            source_endpoint=source.endpoint,
            source_mode=source.mode.value,
            destination_id=destination.element_id,
            destination_endpoint=destination.endpoint,
            destination_mode=destination.mode.value,
            delete_source=delete_source,
            verify_checksum=verify_checksum,
            actor=principal.sub,
            address=address,
            size=entry.stored_size,
        )
        await self._operations.enqueue(
            uuid.UUID(transfer_id).hex, OperationKind.TRANSFER, entry.file_id, state.to_json()
        )
        self._runner.wake()
        return transfer_id, max(1, math.ceil(entry.stored_size / _ASSUMED_RATE))

    async def status(self, principal: Principal, transfer_id: str) -> dict[str, Any]:
        op_id = _operation_id(transfer_id)
        op = await self._operations.get(op_id) if op_id else None
        if op is None or op.kind is not OperationKind.TRANSFER:
            raise NotFound("transfer not found", code="transfer_not_found")
        state = TransferState.from_json(op.state)
        if not principal.may_access(state.actor):
            raise NotFound("transfer not found", code="transfer_not_found")
        status, error = state.status, state.error
        if op.status is OperationStatus.FAILED:
            status, error = "failed", error or op.error
        seconds = _seconds(state.started_at, state.completed_at)
        rate = state.bytes_transferred * 8 / 1e6 / seconds if seconds else None
        body: dict[str, Any] = {
            "transfer_id": state.transfer_id,
            "file_id": state.file_id,
            "status": status,
            "source_storage_element_id": state.source_id,
            "destination_storage_element_id": state.destination_id,
            "bytes_transferred": state.bytes_transferred,
            "bytes_total": state.size,
            "transfer_rate_mbps": None if rate is None else round(rate, 3),
            "started_at": state.started_at,
            "completed_at": state.completed_at,
            "delete_source": state.delete_source,
        }
        if status == "failed":
            body["error"] = error or "transfer_failed"
        elif op.error and status != "completed":
            body["last_error"] = op.error  # retrying
        return body


def _operation_id(transfer_id: str) -> str | None:
    try:
        value = uuid.UUID(transfer_id)
    except ValueError:
        return None
    return value.hex if str(value) == transfer_id.lower() else None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _seconds(started: str | None, completed: str | None) -> float | None:
    if started is None or completed is None:
        return None
    elapsed = (datetime.fromisoformat(completed) - datetime.fromisoformat(started)).total_seconds()
    return max(elapsed, 1e-3)
