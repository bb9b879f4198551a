"""SessionStore on SQLAlchemy async: SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tusingest.domain import PARTIAL, OperationStatus, Upload, UploadStatus
from tusingest.store.tables import operations, uploads


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and its directory created.

    Every statement here is a single atomic statement (compare-and-set updates, inserts,
    reads), so connections run in autocommit: no BEGIN/COMMIT round trips around each one.
    """
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, isolation_level="AUTOCOMMIT"
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # A fixed pool: connections that overflow it would be opened and closed per request.
    return create_async_engine(
        url, pool_size=20, max_overflow=0, pool_recycle=3600, isolation_level="AUTOCOMMIT"
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row_to_upload(row: sa.Row[Any]) -> Upload:
    created = _utc(row.created_at)
    updated = _utc(row.updated_at)
    assert created is not None
    assert updated is not None
    return Upload(
        id=row.id,
        owner=row.owner,
        length=row.length,
        offset=row.upload_offset,
        metadata_raw=row.metadata_raw,
        status=UploadStatus(row.status),
        created_at=created,
        updated_at=updated,
        expires_at=_utc(row.expires_at),
        concat=row.concat,
        error=row.error,
        file_id=row.file_id,
        md5=row.md5,
        sha256=row.sha256,
        error_detail=row.error_detail,
    )


def transactional(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, but with real transactions (the default engine autocommits)."""
    level = "SERIALIZABLE" if engine.dialect.name == "sqlite" else "READ COMMITTED"
    return engine.execution_options(isolation_level=level)


def ingest_operation(upload_id: str, now: datetime) -> dict[str, Any]:
    """The `operations` row that completes an upload (inserted with the status change)."""
    return {
        "id": uuid.uuid4().hex,
        "kind": "ingest",
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
