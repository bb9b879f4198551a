"""The files catalog and the audit trail in SQL."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tusingest.domain import CatalogEntry
from tusingest.store.tables import audit_events, files


class SqlCatalog:
    """Implements `Catalog`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, entry: CatalogEntry) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(files.insert().values(**asdict(entry)))
        except IntegrityError:
            if await self.by_upload(entry.upload_id) is None:
                raise

    async def by_upload(self, upload_id: str) -> CatalogEntry | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(files).where(files.c.upload_id == upload_id))
            ).first()
        if row is None:
            return None
        values = {k: v for k, v in row._mapping.items() if k != "deleted_at"}
        return CatalogEntry(**values)

    async def remove(self, upload_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(files.delete().where(files.c.upload_id == upload_id))

    async def audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                audit_events.insert().values(
                    at=datetime.now(UTC),
                    actor=actor,
                    action=action,
                    subject=subject,
                    detail=json.dumps(detail, ensure_ascii=False),
                )
            )
