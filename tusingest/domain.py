"""Domain values: uploads and their status, the caller, stored files, operations, storage
elements and their capacity."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

PARTIAL = "partial"
FINAL_PREFIX = "final;"


@dataclass(frozen=True)
class Checksum:
    """A client-declared digest of one request body (`Upload-Checksum`)."""

    algorithm: str
    digest: bytes


class UploadStatus(enum.StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSING = "processing"
    STORED = "stored"
    REJECTED = "rejected"
    FAILED = "failed"
    TERMINATED = "terminated"
    EXPIRED = "expired"


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the JWT `sub`, display name and role."""

    sub: str
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_access(self, owner: str) -> bool:
        return self.is_admin or owner == self.sub


@dataclass(frozen=True)
class Upload:
    """One tus upload session as stored."""

    id: str
    owner: str
    length: int | None
    offset: int
    metadata_raw: str | None
    status: UploadStatus
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    concat: str | None = None
    error: str | None = None
    file_id: str | None = None
    md5: str | None = None
    sha256: str | None = None
    error_detail: str | None = None
    client_address: str | None = None  # where the creating request came from (audit)

    def is_overdue(self, now: datetime) -> bool:
        """Past its expiry while still expirable (receiving, or a partial nobody used)."""
        expirable = self.status is UploadStatus.RECEIVING or (
            self.is_partial and self.status is UploadStatus.COMPLETE
        )
        return expirable and self.expires_at is not None and self.expires_at <= now

    @property
    def is_partial(self) -> bool:
        return self.concat == PARTIAL

    @property
    def is_final(self) -> bool:
        return self.concat is not None and self.concat.startswith(FINAL_PREFIX)


@dataclass(frozen=True)
class ScanResult:
    """A virus scanner's answer for one file: clean, or the signature found."""

    clean: bool
    signature: str | None = None


@dataclass(frozen=True)
class FileToStore:
    """A validated file on local disk, ready to be put on a storage element."""

    file_id: str  # 36-char UUID, assigned before the first attempt so retries are idempotent
    source: Path  # the bytes to store (possibly compressed)
    original_filename: str
    content_type: str
    size: int  # bytes in `source`
    sha256: str  # lowercase hex of the bytes in `source`
    owner_sub: str
    owner_name: str
    uploaded_at: datetime  # UTC; picks the YYYY/MM/DD/HH directory
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredFile:
    """Where and how a storage element holds a file."""

    file_id: str
    element_id: str
    storage_filename: str
    storage_path: str  # "YYYY/MM/DD/HH/"
    size: int
    sha256: str


@dataclass(frozen=True)
class FetchedFile:
    """A stored file read back from an element into a local file."""

    file_id: str
    original_filename: str
    content_type: str
    size: int
    sha256: str  # lowercase hex of the bytes fetched
    created_at: datetime  # when the element stored it (UTC)


class OperationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class OperationKind(enum.StrEnum):
    """The durable jobs, each run by its own handler."""

    INGEST = "ingest"  # complete an upload: check, compress, store (subject: the upload id)
    DISCARD = "discard"  # remove a copy an abandoned store left on an element (the file id)
    DELETE = "delete"  # delete a stored file: element, catalog, Admin Module (the file id)
    TRANSFER = "transfer"  # move a stored file to another element (the file id)
    WEBHOOK = "webhook"  # deliver one event to one webhook receiver (the event's file/upload id)


@dataclass(frozen=True)
class Operation:
    """A durable job. `state` is its persisted progress as a JSON object, which its kind's
    handler reads into a typed, versioned state (what retries must reuse)."""

    id: str
    kind: OperationKind
    subject: str
    status: OperationStatus
    step: str | None
    attempts: int
    state: dict[str, Any]
    error: str | None = None  # the last attempt's failure


@dataclass(frozen=True)
class NewOperation:
    """An operation to queue: its id, kind, subject and first state."""

    id: str
    kind: OperationKind
    subject: str
    state: dict[str, Any]


@dataclass(frozen=True)
class CatalogEntry:
    """A stored file as the catalog records it."""

    file_id: str
    upload_id: str
    element_id: str
    storage_filename: str
    storage_path: str
    original_filename: str
    content_type: str
    declared_type: str | None
    size: int
    stored_size: int
    codec: str | None
    md5: str | None  # None when UPLOAD_DIGESTS leaves MD5 out
    sha256: str
    stored_sha256: str
    retention_policy: str
    owner: str
    created_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class AuditNote:
    """An audit event to record: `actor` did `action` to `subject` (a file or upload id)."""

    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    address: str | None = None  # the client's address, when a request started it
    outcome: str = "success"  # success | failed | rejected


@dataclass(frozen=True)
class AuditEvent:
    """Who did what to which file or upload, from where, and how it ended."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    address: str | None
    outcome: str | None


class ElementMode(enum.StrEnum):
    """A storage element's mode: edit (temporary files, deletable), rw (permanent files),
    ro (read only), ar (archived, read only)."""

    EDIT = "edit"
    RW = "rw"
    RO = "ro"
    AR = "ar"


# The modes that take uploads (and the only ones a registry lists for placement).
WRITABLE_MODES: tuple[ElementMode, ...] = (ElementMode.EDIT, ElementMode.RW)


class Retention(enum.StrEnum):
    """How long ArtStore keeps a file: temporary files go to edit elements, permanent ones to
    rw elements."""

    TEMPORARY = "temporary"
    PERMANENT = "permanent"

    @property
    def mode(self) -> ElementMode:
        return ElementMode.EDIT if self is Retention.TEMPORARY else ElementMode.RW

    @classmethod
    def of(cls, value: str | None) -> Retention:
        """The policy a client asked for; anything unknown (or nothing) is temporary."""
        try:
            return cls((value or "").lower())
        except ValueError:
            return cls.TEMPORARY


class CapacityStatus(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    FULL = "full"


@dataclass(frozen=True)
class ElementInfo:
    """What the registry knows about one storage element."""

    element_id: str
    mode: ElementMode
    priority: int  # lower fills first
    endpoint: str  # base URL of its HTTP API ("file://..." for an embedded local element)
    capacity_total: int
    capacity_used: int
    capacity_free: int
    status: CapacityStatus
    healthy: bool


Thresholds = tuple[float, float, float]  # percent used for (warning, critical, full)
DEFAULT_THRESHOLDS: Thresholds = (85.0, 92.0, 98.0)


def capacity_status(
    total: int, used: int, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> CapacityStatus:
    """The capacity status by percent used: ≥ full FULL, ≥ critical CRITICAL, ≥ warning
    WARNING, else OK. No capacity at all is FULL."""
    if total <= 0:
        return CapacityStatus.FULL
    warning, critical, full = thresholds
    percent_used = used * 100 / total
    if percent_used >= full:
        return CapacityStatus.FULL
    if percent_used >= critical:
        return CapacityStatus.CRITICAL
    if percent_used >= warning:
        return CapacityStatus.WARNING
    return CapacityStatus.OK


@dataclass(frozen=True)
class PendingWork:
    """An operation not done yet (queued, retrying, running) or given up, as operators see it."""

    id: str
    kind: str
    subject: str
    status: OperationStatus
    step: str | None
    attempts: int
    next_attempt_at: datetime
    error: str | None  # the last attempt's failure (a queued one with an error is retrying)
    updated_at: datetime
