"""SessionStore on SQLAlchemy async: SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tusingest.domain import PARTIAL, OperationKind, OperationStatus, Upload, UploadStatus
from tusingest.store.database import transactional
from tusingest.store.tables import operations, uploads


def _row_to_upload(row: sa.Row[Any]) -> Upload:
    return Upload(
        id=row.id,
        owner=row.owner,
        length=row.length,
        offset=row.upload_offset,
        metadata_raw=row.metadata_raw,
        status=UploadStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        concat=row.concat,
        error=row.error,
        file_id=row.file_id,
        md5=row.md5,
        sha256=row.sha256,
        error_detail=row.error_detail,
    )


def ingest_operation(upload_id: str, now: datetime) -> dict[str, Any]:
    """The `operations` row that completes an upload (inserted with the status change)."""
    return {
        "id": uuid.uuid4().hex,
        "kind": OperationKind.INGEST.value,
        "subject": upload_id,
        "status": OperationStatus.QUEUED.value,
        "attempts": 0,
        "next_attempt_at": now,
        "result": "{}",
        "created_at": now,
        "updated_at": now,
    }


def _needs_ingest(status: UploadStatus, concat: str | None) -> bool:
    return status is UploadStatus.COMPLETE and concat != PARTIAL


class SqlSessionStore:
    """Implements `SessionStore`; offsets move only by compare-and-set."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._tx = transactional(engine)

    async def insert(self, upload: Upload) -> None:
        async with self._tx.begin() as conn:
            if _needs_ingest(upload.status, upload.concat):
                await conn.execute(
                    operations.insert().values(**ingest_operation(upload.id, upload.created_at))
                )
            await conn.execute(
                uploads.insert().values(
                    id=upload.id,
                    owner=upload.owner,
                    length=upload.length,
                    upload_offset=upload.offset,
                    metadata_raw=upload.metadata_raw,
                    concat=upload.concat,
                    status=upload.status.value,
                    created_at=upload.created_at,
                    updated_at=upload.updated_at,
                    expires_at=upload.expires_at,
                )
            )

    async def get(self, upload_id: str) -> Upload | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(uploads).where(uploads.c.id == upload_id))).first()
        return None if row is None else _row_to_upload(row)

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
        digests: tuple[str, str] | None = None,
    ) -> Upload | None:
        values: dict[str, Any] = {
            "upload_offset": new_offset,
            "length": length,
            "status": status.value,
            "updated_at": now,
            "expires_at": expires_at,
        }
        if digests is not None:
            values["md5"], values["sha256"] = digests
        stmt = (
            uploads.update()
            .where(
                uploads.c.id == upload_id,
                uploads.c.upload_offset == expected_offset,
                uploads.c.status == UploadStatus.RECEIVING.value,
            )
            .values(**values)
            .returning(*uploads.c)
        )
        if not _needs_ingest(status, None):
            async with self._engine.begin() as conn:
                row = (await conn.execute(stmt)).first()
            return None if row is None else _row_to_upload(row)
        async with self._tx.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None or not _needs_ingest(status, row.concat):
                return None if row is None else _row_to_upload(row)
            await conn.execute(operations.insert().values(**ingest_operation(upload_id, now)))
        return _row_to_upload(row)

    async def settle(
        self,
        upload_id: str,
        *,
        status: UploadStatus,
        now: datetime,
        error: str | None = None,
        detail: str | None = None,
        file_id: str | None = None,
        digests: tuple[str, str] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status.value,
            "updated_at": now,
            "error": error,
            "error_detail": detail,
        }
        if file_id is not None:
            values["file_id"] = file_id
        if digests is not None:
            values["md5"], values["sha256"] = digests
        async with self._engine.begin() as conn:
            await conn.execute(uploads.update().where(uploads.c.id == upload_id).values(**values))

    async def transition(
        self,
        upload_id: str,
        *,
        from_statuses: Sequence[UploadStatus],
        to_status: UploadStatus,
        now: datetime,
    ) -> bool:
        stmt = (
            uploads.update()
            .where(
                uploads.c.id == upload_id,
                uploads.c.status.in_([s.value for s in from_statuses]),
            )
            .values(status=to_status.value, updated_at=now)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def expired_ids(self, now: datetime, limit: int) -> list[str]:
        stmt = (
            sa.select(uploads.c.id)
            .where(
                sa.or_(
                    uploads.c.status == UploadStatus.RECEIVING.value,
                    sa.and_(
                        uploads.c.status == UploadStatus.COMPLETE.value,
                        uploads.c.concat == PARTIAL,
                    ),
                ),
                uploads.c.expires_at <= now,
            )
            .order_by(uploads.c.expires_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return list((await conn.execute(stmt)).scalars())

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
