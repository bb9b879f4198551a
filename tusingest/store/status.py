"""The operators' status queries in SQL: uploads receiving, latest verdicts, the queue."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from tusingest.domain import AuditEvent, OperationStatus, PendingWork, Upload
from tusingest.store.catalog import EVENT_COLUMNS, event_from_row
from tusingest.store.db import Database, Row, utc
from tusingest.store.sql import UPLOAD_COLUMNS, upload_from_row

_RECEIVING = (
    f"SELECT {UPLOAD_COLUMNS}, EXISTS (SELECT 1 FROM upload_locks "
    "WHERE upload_locks.key = uploads.id AND upload_locks.expires_at > $1) AS leased "
    "FROM uploads WHERE status = 'receiving' AND expires_at > $1 "
    "ORDER BY expires_at DESC LIMIT $2"
)
_OUTCOMES = (
    f"SELECT {EVENT_COLUMNS} FROM audit_events "
    "WHERE action IN ('file_stored', 'upload_rejected', 'upload_failed') "
    "ORDER BY id DESC LIMIT $1"
)
_OPEN = "status IN ('queued', 'running', 'failed')"
_COUNTS = (
    "SELECT status, CASE WHEN error IS NULL THEN 0 ELSE 1 END AS erred, COUNT(*) AS n "
    f"FROM operations WHERE {_OPEN} GROUP BY status, CASE WHEN error IS NULL THEN 0 ELSE 1 END"
)
_PENDING = (
    "SELECT id, kind, subject, status, step, attempts, next_attempt_at, error, updated_at "
    f"FROM operations WHERE {_OPEN} ORDER BY updated_at DESC LIMIT $1"
)
_MAX_IDS = 100


class SqlStatusQueries:
    """Implements `StatusQueries`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def receiving(self, now: datetime, limit: int) -> list[tuple[Upload, bool]]:
        rows = await self._db.fetch(_RECEIVING, now, limit)
        return [(upload_from_row(row), bool(row["leased"])) for row in rows]

    async def outcomes(self, limit: int) -> list[AuditEvent]:
        return [event_from_row(row) for row in await self._db.fetch(_OUTCOMES, limit)]

    async def uploads(self, ids: Collection[str]) -> dict[str, Upload]:
        wanted = sorted(set(ids))[:_MAX_IDS]
        if not wanted:
            return {}
        marks = ", ".join(f"${i + 1}" for i in range(len(wanted)))
        sql = f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id IN ({marks})"
        return {row["id"]: upload_from_row(row) for row in await self._db.fetch(sql, *wanted)}

    async def queue(self, limit: int) -> tuple[dict[str, int], list[PendingWork]]:
        counts = {"queued": 0, "retrying": 0, "running": 0, "failed": 0}
        for row in await self._db.fetch(_COUNTS):
            status = row["status"]
            key = "retrying" if status == "queued" and row["erred"] else status
            counts[key] = counts.get(key, 0) + int(row["n"])
        items = [_pending(row) for row in await self._db.fetch(_PENDING, limit)]
        return counts, items


def _pending(row: Row) -> PendingWork:
    next_at, updated = utc(row["next_attempt_at"]), utc(row["updated_at"])
    assert next_at is not None
    assert updated is not None
    return PendingWork(
        id=row["id"],
        kind=row["kind"],
        subject=row["subject"],
        status=OperationStatus(row["status"]),
        step=row["step"],
        attempts=int(row["attempts"]),
        next_attempt_at=next_at,
        error=row["error"],
        updated_at=updated,
    )
