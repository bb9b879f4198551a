"""The files catalog and the audit trail in SQL; an audit note's outbox operations (webhook
deliveries) are queued in the note's transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tusingest.domain import AuditEvent, AuditNote, CatalogEntry, StoredFile
from tusingest.ports import Outbox
from tusingest.store.db import Database, Duplicate, Row, Statement, utc
from tusingest.store.operations import enqueue_statement

_FIELDS = (
    "file_id",
    "upload_id",
    "element_id",
    "storage_filename",
    "storage_path",
    "original_filename",
    "content_type",
    "declared_type",
    "size",
    "stored_size",
    "codec",
    "md5",
    "sha256",
    "stored_sha256",
    "retention_policy",
    "owner",
    "created_at",
)
_COLUMNS = ", ".join((*_FIELDS, "deleted_at"))
_RECORD = (
    f"INSERT INTO files ({', '.join(_FIELDS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_FIELDS)))})"
)
_BY_UPLOAD = f"SELECT {_COLUMNS} FROM files WHERE upload_id = $1"
_BY_FILE = f"SELECT {_COLUMNS} FROM files WHERE file_id = $1"
_REMOVE = "DELETE FROM files WHERE upload_id = $1"
_MARK_DELETED = "UPDATE files SET deleted_at = $1 WHERE file_id = $2 AND deleted_at IS NULL"
_RELOCATE = (
    "UPDATE files SET element_id = $1, storage_filename = $2, storage_path = $3, "
    "stored_size = $4, stored_sha256 = $5, retention_policy = $6 "
    "WHERE file_id = $7 AND element_id = $8 AND deleted_at IS NULL"
)
_AUDIT = (
    "INSERT INTO audit_events (at, actor, action, subject, detail, address, outcome) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
EVENT_COLUMNS = "id, at, actor, action, subject, detail, address, outcome"


class SqlCatalog:
    """Implements `Catalog`. Every audit note is written with the operations `outbox` says it
    brings along, in one transaction."""

    def __init__(self, db: Database, outbox: Outbox | None = None) -> None:
        self._db = db
        self._outbox = outbox

    async def record(self, entry: CatalogEntry, note: AuditNote | None = None) -> None:
        values = [getattr(entry, name) for name in _FIELDS]
        noted = [] if note is None else self.noted(note)
        try:
            if noted:
                await self._db.execute_all([(_RECORD, values), *noted])
            else:
                await self._db.execute(_RECORD, *values)
        except Duplicate:
            if await self.by_upload(entry.upload_id) is None:
                raise
            return
        self.queued(noted)

    async def by_upload(self, upload_id: str) -> CatalogEntry | None:
        row = await self._db.fetchrow(_BY_UPLOAD, upload_id)
        return None if row is None else _entry(row)

    async def by_file(self, file_id: str) -> CatalogEntry | None:
        row = await self._db.fetchrow(_BY_FILE, file_id)
        return None if row is None else _entry(row)

    async def page(
        self, owner: str | None, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[CatalogEntry]:
        conditions = ["deleted_at IS NULL"]
        args: list[Any] = []
        if owner is not None:
            args.append(owner)
            conditions.append(f"owner = ${len(args)}")
        if after is not None:
            # Newest first; the file id breaks ties between files stored in the same instant.
            args.extend(after)
            first, second = len(args) - 1, len(args)
            conditions.append(
                f"(created_at < ${first} OR (created_at = ${first} AND file_id < ${second}))"
            )
        args.append(limit)
        sql = (
            f"SELECT {_COLUMNS} FROM files WHERE {' AND '.join(conditions)} "
            f"ORDER BY created_at DESC, file_id DESC LIMIT ${len(args)}"
        )
        return [_entry(row) for row in await self._db.fetch(sql, *args)]

    async def mark_deleted(self, file_id: str, at: datetime, note: AuditNote | None) -> None:
        noted = [] if note is None else self.noted(note)
        async with self._db.transaction() as tx:
            changed = await tx.execute(_MARK_DELETED, at, file_id)
            if changed:
                for sql, args in noted:
                    await tx.execute(sql, *args)
        if changed:
            self.queued(noted)

    async def relocate(
        self, file_id: str, source_id: str, stored: StoredFile, retention: str, note: AuditNote
    ) -> bool:
        noted = self.noted(note)
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                _RELOCATE,
                stored.element_id,
                stored.storage_filename,
                stored.storage_path,
                stored.size,
                stored.sha256,
                retention,
                file_id,
                source_id,
            )
            if changed:
                for sql, args in noted:
                    await tx.execute(sql, *args)
        if changed:
            self.queued(noted)
        return bool(changed)

    async def remove(self, upload_id: str) -> None:
        await self._db.execute(_REMOVE, upload_id)

    async def audit(self, note: AuditNote) -> None:
        noted = self.noted(note)
        if len(noted) == 1:
            await self._db.execute(noted[0][0], *noted[0][1])
            return
        await self._db.execute_all(noted)
        self.queued(noted)

    async def events(
        self,
        *,
        subject: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        conditions: list[str] = []
        args: list[Any] = []
        for column, operator, value in (
            ("subject", "=", subject),
            ("actor", "=", actor),
            ("at", ">=", since),
            ("id", "<", before_id),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} {operator} ${len(args)}")
        args.append(limit)
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        sql = f"SELECT {EVENT_COLUMNS} FROM audit_events {where}ORDER BY id DESC LIMIT ${len(args)}"
        return [event_from_row(row) for row in await self._db.fetch(sql, *args)]

    def noted(self, note: AuditNote) -> list[Statement]:
        """The note's statement, then those queueing what it brings along (for a transaction
        of another store's; `queued` once it committed)."""
        follow = [] if self._outbox is None else self._outbox.follow(note)
        return [_audit_statement(note), *(enqueue_statement(op) for op in follow)]

    def queued(self, noted: Sequence[Statement]) -> None:
        """The statements of `noted` were committed: what they queued may run now."""
        if len(noted) > 1 and self._outbox is not None:
            self._outbox.queued()


def _audit_statement(note: AuditNote) -> Statement:
    return _AUDIT, [
        datetime.now(UTC),
        note.actor,
        note.action,
        note.subject,
        json.dumps(note.detail, ensure_ascii=False),
        note.address,
        note.outcome,
    ]


def _entry(row: Row) -> CatalogEntry:
    values = {name: row[name] for name in _FIELDS}
    values["created_at"] = utc(values["created_at"])
    return CatalogEntry(**values, deleted_at=utc(row["deleted_at"]))


def event_from_row(row: Row) -> AuditEvent:
    at = utc(row["at"])
    assert at is not None
    try:
        detail = json.loads(row["detail"]) if row["detail"] else {}
    except ValueError:
        detail = {"raw": row["detail"]}
    return AuditEvent(
        id=int(row["id"]),
        at=at,
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        detail=detail if isinstance(detail, dict) else {"value": detail},
        address=row["address"],
        outcome=row["outcome"],
    )
