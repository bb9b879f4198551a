"""The seams of the node's state: upload sessions, staged bytes, per-upload leases, durable
operations, the catalog with the outbox its notes fill, and the status page's queries."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tusingest.domain import (
    AuditEvent,
    AuditNote,
    CatalogEntry,
    NewOperation,
    Operation,
    OperationKind,
    PendingWork,
    StoredFile,
    Upload,
    UploadStatus,
)


class SessionStore(Protocol):
    """Durable upload rows; every offset change is a compare-and-set."""

    async def insert(self, upload: Upload) -> None:
        """Insert a new upload; one complete at creation gets its `ingest` operation."""
        ...

    async def get(self, upload_id: str) -> Upload | None: ...

    async def get_leased(self, upload_id: str) -> tuple[Upload | None, bool]:
        """The upload, and whether a lease on it is recorded in the database (by a locker that
        keeps its leases there) and still live: one read for both."""
        ...

    async def advance(
        self,
        upload_id: str,
        *,
        expected_offset: int,
        new_offset: int,
        length: int | None,
        status: UploadStatus,
        now: datetime,
        expires_at: datetime | None,
        digests: tuple[str | None, str] | None = None,
        metadata_raw: str | None = None,
    ) -> Upload | None:
        """Set offset/length/status (and md5/sha256 hex, and the metadata when given) if the
        row is receiving at `expected_offset`; None otherwise. An upload that becomes complete
        (and is not a partial) gets its `ingest` operation in the same transaction."""
        ...

    async def settle(
        self,
        upload_id: str,
        *,
        status: UploadStatus,
        now: datetime,
        error: str | None = None,
        detail: str | None = None,
        file_id: str | None = None,
        digests: tuple[str | None, str] | None = None,
        note: AuditNote | None = None,
    ) -> Upload | None:
        """Record the completion pipeline's progress or verdict on the upload, and `note` (with
        what it brings along) in the same transaction: the upload as committed, or None (and
        nothing changed, nothing noted) when the client terminated it meanwhile."""
        ...

    async def transition(
        self,
        upload_id: str,
        *,
        from_statuses: Sequence[UploadStatus],
        to_status: UploadStatus,
        now: datetime,
    ) -> bool:
        """Move the row to `to_status` if it is in one of `from_statuses`."""
        ...

    async def expired_ids(self, now: datetime, limit: int) -> list[str]:
        """Uploads whose `expires_at` has passed (receiving ones, and unused partials)."""
        ...

    async def ping(self) -> None: ...


class StagingWriter(Protocol):
    """Appends bytes at a fixed start offset of one staging file (blocking calls run off-loop)."""

    @property
    def written(self) -> int: ...

    async def write(
        self,
        buffers: Sequence[bytes | memoryview],
        *,
        feed: Sequence[Callable[[bytes | memoryview], object]] = (),
        sync: bool = False,
    ) -> None:
        """Append `buffers`; in the same blocking call, hand them to each of `feed` (hashes)
        and, with `sync`, make everything written durable (one hop off the loop, not three).
        A `sync` write is the last: the writer takes no more writes, and `discard` still
        works after it."""
        ...

    async def sync(self) -> None:
        """Make everything written so far durable (fsync)."""
        ...

    async def discard(self) -> None:
        """Drop everything this writer wrote (truncate back to its start offset)."""
        ...

    async def close(self) -> None: ...


class Staging(Protocol):
    """Staging bytes of uploads in progress."""

    async def create(self, upload_id: str) -> None: ...

    def path(self, upload_id: str) -> Path:
        """The staged file itself, for reading (validation, scanning, storing)."""
        ...

    async def writer(
        self, upload_id: str, offset: int, reserve: int | None = None
    ) -> StagingWriter:
        """Open for appending at `offset`; bytes past it (uncommitted) are discarded first.
        `reserve`: the upload's final size, so storage can be allocated ahead."""
        ...

    async def assemble(self, upload_id: str, parts: Sequence[tuple[str, int]]) -> None:
        """Create `upload_id` durably from the first `length` bytes of each part, in order."""
        ...

    async def delete(self, upload_id: str) -> None: ...

    async def size(self, upload_id: str) -> int | None: ...

    async def stale(self, older_than_seconds: float) -> list[str]:
        """Ids of staged files not modified for `older_than_seconds`."""
        ...


ReleaseRequest = Callable[[], None]


class Locker(Protocol):
    """Exclusive per-upload leases, with tusd-style release requests."""

    def hold(
        self, key: str, *, on_release: ReleaseRequest | None = None, patient: bool = True
    ) -> AbstractAsyncContextManager[None]:
        """Hold the lease for `key`.

        If another request holds it and `patient`, ask the holder to release (its
        `on_release` is called, on whichever node it runs) and wait a bounded time; raise
        `Locked` if the lease cannot be had (at once when not `patient`). `on_release` is
        this holder's own callback, called when a later request asks for the lease.
        """
        ...

    async def busy(self, key: str) -> bool:
        """Whether some request holds the lease for `key` now."""
        ...

    def held_here(self, key: str) -> bool:
        """Whether a request in this process holds the lease for `key` now (no I/O)."""
        ...

    def interrupt_all(self) -> None:
        """Ask every request of this process that holds a lease to release it (the node is
        shutting down: they commit what arrived)."""
        ...


class OperationStore(Protocol):
    """Durable operations, each claimed by one node at a time with a lease; `state` is the
    operation's progress as a JSON object (written whole)."""

    async def claim(
        self, node: str, lease_seconds: float, limit: int, kinds: Collection[OperationKind]
    ) -> list[Operation]:
        """Due operations of `kinds` (queued, or running under a lapsed lease) now leased to
        `node`; other kinds are left to the nodes that know them."""
        ...

    async def progress(
        self, op: Operation, node: str, step: str, state: dict[str, Any], lease_seconds: float
    ) -> None:
        """Persist the step reached and the state retries must reuse; extends the lease."""
        ...

    async def finish(self, op: Operation, node: str, state: dict[str, Any]) -> None: ...

    async def retry(self, op: Operation, node: str, error: str, delay_seconds: float) -> None: ...

    async def fail(self, op: Operation, node: str, error: str) -> None: ...

    async def defer(self, op: Operation, node: str, error: str, delay_seconds: float) -> None:
        """Like `retry`, but the attempt does not count (waiting for storage is no failure)."""
        ...

    async def enqueue(
        self, op_id: str, kind: OperationKind, subject: str, state: dict[str, Any]
    ) -> bool:
        """Queue a new operation now; an existing `op_id` is left alone (False)."""
        ...

    async def get(self, op_id: str) -> Operation | None: ...


class Catalog(Protocol):
    """Stored files, and the audit trail of what happened to uploads and files."""

    async def record(self, entry: CatalogEntry, note: AuditNote | None = None) -> None:
        """Insert the entry (and `note`, in the same transaction) unless the upload is already
        recorded (idempotent)."""
        ...

    async def by_upload(self, upload_id: str) -> CatalogEntry | None:
        """The upload's entry, deleted or not (a retried ingest must not store it again)."""
        ...

    async def by_file(self, file_id: str) -> CatalogEntry | None:
        """The file's entry, deleted or not (`deleted_at` tells)."""
        ...

    async def page(
        self, owner: str | None, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[CatalogEntry]:
        """Live files, newest first, of `owner` (everyone's for None), after the
        `(created_at, file_id)` of the last entry of the previous page."""
        ...

    async def mark_deleted(self, file_id: str, at: datetime, note: AuditNote | None) -> None:
        """The file is gone from its element: hide it (and record `note`), once."""
        ...

    async def relocate(
        self, file_id: str, source_id: str, stored: StoredFile, retention: str, note: AuditNote
    ) -> bool:
        """The live file on `source_id` now lives as `stored` with `retention` (and `note` is
        recorded); False when it is not live on `source_id` any more (moved or deleted)."""
        ...

    async def remove(self, upload_id: str) -> None:
        """Compensation: forget the upload's entry (absent is not an error)."""
        ...

    async def audit(self, note: AuditNote) -> None: ...

    async def events(
        self,
        *,
        subject: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Audit events matching every filter given, newest first."""
        ...


class Outbox(Protocol):
    """The operations an audit note brings along (its webhook deliveries): the catalog queues
    them in the note's own transaction, so the event and its deliveries are recorded together
    or not at all. Queueing an id that exists already changes nothing."""

    def follow(self, note: AuditNote) -> list[NewOperation]:
        """The operations `note` brings along (none for most notes)."""
        ...

    def queued(self) -> None:
        """Some were committed: start them now (no I/O)."""
        ...


class StatusQueries(Protocol):
    """What the operators' status view reads from the database (cluster-wide)."""

    async def receiving(self, now: datetime, limit: int) -> list[tuple[Upload, bool]]:
        """Uploads still receiving and not expired, the most recently active first, each
        with whether a request (on any node) holds its lease now."""
        ...

    async def outcomes(self, limit: int) -> list[AuditEvent]:
        """The latest verdicts (`file_stored`, `upload_rejected`, `upload_failed`), newest
        first."""
        ...

    async def uploads(self, ids: Collection[str]) -> dict[str, Upload]: ...

    async def queue(self, limit: int) -> tuple[dict[str, int], list[PendingWork]]:
        """Operations by state (`queued`, `retrying`, `running`, `failed`) and the latest
        `limit` of them, most recently changed first."""
        ...
