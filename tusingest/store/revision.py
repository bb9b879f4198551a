"""The schema revision this code needs, and the one a database has, without loading alembic."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

# The head of migrations/versions; a test keeps the two in step.
HEAD = "0003"


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's alembic revision; None for an empty (never migrated) database."""
    async with engine.connect() as conn:
        exists = await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version"))
        if not exists:
            return None
        row = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).first()
    return None if row is None else str(row[0])
