"""SessionStore in SQL (SQLite or PostgreSQL): upload rows whose offsets move only by
compare-and-set, and the `ingest` operation queued with the status change that completes one."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tusingest.domain import (
    PARTIAL,
    AuditNote,
    OperationKind,
    OperationStatus,
    Upload,
    UploadStatus,
)
from tusingest.store.db import Database, Row, Statement, utc

UPLOAD_COLUMNS = (
    "id, owner, length, upload_offset, metadata_raw, concat, status, error, file_id, "
    "created_at, updated_at, expires_at, md5, sha256, error_detail, client_address"
)
_INSERT = (
    "INSERT INTO uploads (id, owner, length, upload_offset, metadata_raw, concat, status, "
    "created_at, updated_at, expires_at, client_address) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
_GET = f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1"
_GET_LEASED = (
    f"SELECT {UPLOAD_COLUMNS}, EXISTS (SELECT 1 FROM upload_locks WHERE key = $1 "
    "AND expires_at > $2) AS leased FROM uploads WHERE id = $1"
)
_ADVANCE = (
    "UPDATE uploads SET upload_offset = $1, length = $2, status = $3, updated_at = $4, "
    "expires_at = $5, md5 = COALESCE($6, md5), sha256 = COALESCE($7, sha256), "
    "metadata_raw = COALESCE($10, metadata_raw) "
    f"WHERE id = $8 AND upload_offset = $9 AND status = 'receiving' RETURNING {UPLOAD_COLUMNS}"
)
_SETTLE = (
    "UPDATE uploads SET status = $1, updated_at = $2, error = $3, error_detail = $4, "
    "file_id = COALESCE($5, file_id), md5 = COALESCE($6, md5), sha256 = COALESCE($7, sha256) "
    f"WHERE id = $8 AND status <> 'terminated' RETURNING {UPLOAD_COLUMNS}"
)
_EXPIRED = (
    "SELECT id FROM uploads WHERE (status = 'receiving' OR (status = 'complete' AND "
    "concat = 'partial')) AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
)
_QUEUE_OPERATION = (
    "INSERT INTO operations (id, kind, subject, status, attempts, next_attempt_at, claimed_by, "
    "claimed_until, result, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{}', $6, $6)"
)


@dataclass(frozen=True)
class IngestClaim:
    """Who runs an upload's `ingest` at once: the node that completed it, which takes the
    operation's lease in the same transaction (no claim round trip; another node takes over
    when the lease lapses)."""

    node: str
    lease_seconds: float


def ingest_operation_id(upload_id: str) -> str:
    """One `ingest` per upload: its id follows from the upload's."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tusingest:ingest/{upload_id}").hex


class Notes(Protocol):
    """Audit notes as statements for a transaction of this store's (the catalog's)."""

    def noted(self, note: AuditNote) -> Sequence[Statement]:
        """The statements that record `note` and queue what it brings along."""
        ...

    def queued(self, noted: Sequence[Statement]) -> None:
        """`noted` was committed."""
        ...


class SqlSessionStore:
    """Implements `SessionStore`; offsets move only by compare-and-set. `notes` records the
    audit note that goes with a verdict, in the verdict's transaction."""

    def __init__(
        self, db: Database, *, claim: IngestClaim | None = None, notes: Notes | None = None
    ) -> None:
        self._db = db
        self._claim = claim
        self._notes = notes
        self._transitions: dict[int, str] = {}

    async def insert(self, upload: Upload) -> None:
        values = (
            upload.id,
            upload.owner,
            upload.length,
            upload.offset,
            upload.metadata_raw,
            upload.concat,
            upload.status.value,
            upload.created_at,
            upload.updated_at,
            upload.expires_at,
            upload.client_address,
        )
        if not _needs_ingest(upload.status, upload.concat):
            await self._db.execute(_INSERT, *values)
            return
        await self._db.execute_all(
            [self._queue_ingest(upload.id, upload.created_at), (_INSERT, values)]
        )

    async def get(self, upload_id: str) -> Upload | None:
        row = await self._db.fetchrow(_GET, upload_id)
        return None if row is None else upload_from_row(row)

    async def get_leased(self, upload_id: str) -> tuple[Upload | None, bool]:
        row = await self._db.fetchrow(_GET_LEASED, upload_id, datetime.now(UTC))
        return (None, False) if row is None else (upload_from_row(row), bool(row["leased"]))

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
        md5, sha256 = digests if digests is not None else (None, None)
        args: tuple[object, ...] = (new_offset, length, status.value, now, expires_at, md5)
        args += (sha256, upload_id, expected_offset, metadata_raw)
        if status is not UploadStatus.COMPLETE:
            row = await self._db.fetchrow(_ADVANCE, *args)
            return None if row is None else upload_from_row(row)
        # A complete upload queues its ingest in the same statement, unless it is a partial
        # (whose concat only the row knows).
        row = await self._db.fetchrow_then(
            _ADVANCE, args, [self._queue_ingest(upload_id, now)], unless=("concat", PARTIAL)
        )
        return None if row is None else upload_from_row(row)

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
        md5, sha256 = digests if digests is not None else (None, None)
        args = (status.value, now, error, detail, file_id, md5, sha256, upload_id)
        if note is None:
            row = await self._db.fetchrow(_SETTLE, *args)
            return None if row is None else upload_from_row(row)
        if self._notes is None:
            raise RuntimeError("this session store was given no catalog to record notes")
        noted = self._notes.noted(note)
        row = await self._db.fetchrow_then(_SETTLE, args, noted)
        if row is None:
            return None
        self._notes.queued(noted)
        return upload_from_row(row)

    async def transition(
        self,
        upload_id: str,
        *,
        from_statuses: Sequence[UploadStatus],
        to_status: UploadStatus,
        now: datetime,
    ) -> bool:
        sql = self._transitions.get(len(from_statuses))
        if sql is None:
            listed = ", ".join(f"${i + 4}" for i in range(len(from_statuses)))
            sql = (
                "UPDATE uploads SET status = $1, updated_at = $2 "
                f"WHERE id = $3 AND status IN ({listed})"
            )
            self._transitions[len(from_statuses)] = sql
        changed = await self._db.execute(
            sql, to_status.value, now, upload_id, *(s.value for s in from_statuses)
        )
        return changed > 0

    async def expired_ids(self, now: datetime, limit: int) -> list[str]:
        return [str(row["id"]) for row in await self._db.fetch(_EXPIRED, now, limit)]

    async def ping(self) -> None:
        await self._db.fetchrow("SELECT 1 AS ok")

    def _queue_ingest(self, upload_id: str, now: datetime) -> Statement:
        """The statement that queues the upload's ingest (claimed at once by this node when
        it runs ingests), to go in the transaction that completes the upload."""
        claim = self._claim
        return (
            _QUEUE_OPERATION,
            (
                ingest_operation_id(upload_id),
                OperationKind.INGEST.value,
                upload_id,
                (OperationStatus.QUEUED if claim is None else OperationStatus.RUNNING).value,
                0 if claim is None else 1,
                now,
                None if claim is None else claim.node,
                None if claim is None else now + timedelta(seconds=claim.lease_seconds),
            ),
        )


def _needs_ingest(status: UploadStatus, concat: str | None) -> bool:
    return status is UploadStatus.COMPLETE and concat != PARTIAL


def upload_from_row(row: Row) -> Upload:
    created, updated = utc(row["created_at"]), utc(row["updated_at"])
    assert created is not None
    assert updated is not None
    return Upload(
        id=row["id"],
        owner=row["owner"],
        length=row["length"],
        offset=row["upload_offset"],
        metadata_raw=row["metadata_raw"],
        status=UploadStatus(row["status"]),
        created_at=created,
        updated_at=updated,
        expires_at=utc(row["expires_at"]),
        concat=row["concat"],
        error=row["error"],
        file_id=row["file_id"],
        md5=row["md5"],
        sha256=row["sha256"],
        error_detail=row["error_detail"],
        client_address=row["client_address"],
    )
