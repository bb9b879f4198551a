"""The files catalog and the audit trail in SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tusingest.domain import CatalogEntry
from tusingest.store.db import Database, Duplicate, utc

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
_RECORD = (
    f"INSERT INTO files ({', '.join(_FIELDS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_FIELDS)))})"
)
_BY_UPLOAD = f"SELECT {', '.join(_FIELDS)} FROM files WHERE upload_id = $1"
_REMOVE = "DELETE FROM files WHERE upload_id = $1"
_AUDIT = "INSERT INTO audit_events (at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5)"


class SqlCatalog:
    """Implements `Catalog`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, entry: CatalogEntry) -> None:
        try:
            await self._db.execute(_RECORD, *(getattr(entry, name) for name in _FIELDS))
        except Duplicate:
            if await self.by_upload(entry.upload_id) is None:
                raise

    async def by_upload(self, upload_id: str) -> CatalogEntry | None:
        row = await self._db.fetchrow(_BY_UPLOAD, upload_id)
        if row is None:
            return None
        values = {name: row[name] for name in _FIELDS}
        values["created_at"] = utc(values["created_at"])
        return CatalogEntry(**values)

    async def remove(self, upload_id: str) -> None:
        await self._db.execute(_REMOVE, upload_id)

    async def audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        await self._db.execute(
            _AUDIT,
            datetime.now(UTC),
            actor,
            action,
            subject,
            json.dumps(detail, ensure_ascii=False),
        )
