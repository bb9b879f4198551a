"""Protocols at the seams: session store, staging bytes and per-upload locks, operations, the
catalog and what its audit notes bring along, storage elements and registries, webhook
receivers, rate limiters."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tusingest.domain import (
    AuditEvent,
    AuditNote,
    CatalogEntry,
    ElementInfo,
    ElementMode,
    FetchedFile,
    FileToStore,
    NewOperation,
    Operation,
    OperationKind,
    PendingWork,
    ScanResult,
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
    ) -> bool:
        """Record the completion pipeline's progress or verdict on the upload, and `note` (with
        what it brings along) in the same transaction; False (and nothing changed, nothing
        noted) when the client terminated it meanwhile."""
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


class Scanner(Protocol):
    """A virus scanner. Anything but a definite answer raises `ScannerUnavailable`."""

    async def scan(self, path: Path) -> ScanResult: ...

    async def ping(self) -> None: ...


class StorageElement(Protocol):
    """Where files end up. `store` is idempotent by `file_id`; `delete` of an absent file is
    not an error."""

    @property
    def element_id(self) -> str: ...

    async def store(self, item: FileToStore) -> StoredFile: ...

    async def delete(self, file_id: str) -> None: ...

    async def fetch(self, file_id: str, target: Path) -> FetchedFile | None:
        """Write the element's copy of `file_id` to `target` (streamed, durable); None when the
        element does not hold it. A copy whose bytes differ from what the element says they are
        raises."""
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


class WebhookSender(Protocol):
    """POSTs one signed event to a webhook receiver."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The receiver's status code (its answer is not read beyond that, redirects are not
        followed); `TransientError` when no answer came in time."""
        ...


class Registry(Protocol):
    """Where the storage elements are and how full they are."""

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        """The elements of `mode`, by ascending priority."""
        ...

    async def element(self, element_id: str) -> ElementInfo | None:
        """One element by id, whatever its mode and however full (an element listed under
        several modes: its `edit` entry); None when this source does not know it."""
        ...

    async def invalidate(self) -> None:
        """Forget anything cached: the next call reads the source again."""
        ...


class TokenSource(Protocol):
    """A service-account bearer token for the SEs and the Admin Module."""

    async def token(self, *, fresh: bool = False) -> str:
        """The cached token, renewed ahead of its expiry; `fresh` forces a new one (after
        a 401)."""
        ...


class FileRegistrar(Protocol):
    """The Admin Module's file registry."""

    async def register(self, entry: CatalogEntry, *, ttl_days: int | None) -> None:
        """Register a stored file; an existing registration of the same `file_id` counts as
        done. `ttl_days` is set for temporary files, None for permanent ones."""
        ...

    async def unregister(self, file_id: str) -> None:
        """Compensation: remove the registration (absent is not an error)."""
        ...

    async def relocate(self, entry: CatalogEntry, *, ttl_days: int | None) -> None:
        """The file moved to `entry.element_id` (a transfer): update its registration, or
        register it when there is none."""
        ...


class Breaker(Protocol):
    """One storage element's circuit breaker."""

    @property
    def state(self) -> str:
        """closed | open | half_open."""
        ...

    def allows(self) -> bool: ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...


class Elements(Protocol):
    """Storage elements by what the registry says about them, each with its breaker."""

    def element(self, info: ElementInfo) -> StorageElement:
        """A client for `info` (`file://` local disk or `http(s)://` SE), reused per id."""
        ...

    def breaker(self, element_id: str) -> Breaker: ...

    def open_ids(self) -> set[str]:
        """Elements whose breaker refuses calls now (placement skips them)."""
        ...

    def forget(self, element_id: str) -> None:
        """Drop the client and the breaker of an element that left the registry."""
        ...


class RegistryChain(Registry, Protocol):
    """A registry that falls back from one source to the next, and says which one answered."""

    last_errors: list[str]  # why each source gave nothing, for the last `elements` call

    @property
    def last_source(self) -> str:
        """The source of the last `elements` answer (redis | admin | memory | none)."""
        ...

    async def snapshot(self) -> dict[str, ElementInfo]:
        """Every element of the upload modes, by id."""
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


class Metrics(Protocol):
    """What the storage side reports (Prometheus names in observability.py)."""

    def selection(self, retention_policy: str, status: str, source: str, seconds: float) -> None:
        """`storage_selection_total` + `storage_selection_duration_seconds`."""
        ...

    def config_reload(self, source: str, status: str, seconds: float) -> None: ...

    def capacity_lookup(self, source: str, seconds: float, *, fallback: bool) -> None:
        """`ingester_capacity_latency_seconds{source}`; `fallback` counts an answer from a
        source behind the first in `ingester_capacity_fallback_total`."""
        ...

    def compression(self, original: int, stored: int) -> None:
        """`artstore_ingester_compression_ratio` of a compressed file."""
        ...

    def endpoints(self, count: int) -> None: ...

    def config_change(self, change_type: str) -> None:
        """added | removed | updated."""
        ...

    def lazy_reload(self, reason: str, status: str) -> None: ...

    def breaker(self, element_id: str, state: str) -> None:
        """closed | half_open | open."""
        ...

    def forget_element(self, element_id: str) -> None:
        """Drop the series of an element that left the registry."""
        ...

    def upload_finished(self, status: str, size: int | None, seconds: float | None) -> None:
        """`artstore_ingester_uploads_total{status}`, and for a stored file its size and the
        time from the upload's creation."""
        ...

    def operation_finished(self, kind: str, status: str) -> None:
        """`artstore_ingester_saga_transactions_total{kind,status}` (success | failed)."""
        ...

    def compensations(self, count: int) -> None:
        """`artstore_ingester_saga_compensations_total`."""
        ...


# What a span attribute may hold.
Attribute = str | int | float | bool


class Span(Protocol):
    """One traced piece of work, open while its context manager is."""

    def set(self, key: str, value: Attribute) -> None: ...


class Tracer(Protocol):
    """Traces the pipeline's work: a span is the child of the one open around it, in this task
    or in the task that created this one."""

    def span(
        self, name: str, attributes: Mapping[str, Attribute] | None = None
    ) -> AbstractContextManager[Span]:
        """A span that is current inside the block; an exception leaving it is recorded."""
        ...


class RateLimiter(Protocol):
    """Token buckets by key: each holds up to `burst` tokens and refills at `rate` per second."""

    async def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        """Take `cost` tokens (at most `burst`) from the bucket `key`: 0 when they were taken,
        else the seconds until they will be there (nothing taken). A store that cannot answer
        lets the request through (0): a limiter never stops uploads by being down."""
        ...
