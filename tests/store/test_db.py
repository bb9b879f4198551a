"""`Database.execute_all`: several statements in one transaction, on both drivers; a failing
one (a duplicate key) leaves nothing of the others."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import BACKENDS
from tusingest.store.db import Duplicate, open_database

_INSERT = "INSERT INTO audit_events (at, actor, action, subject) VALUES (now(), $1, $2, $3)"
_INSERT_LITE = (
    "INSERT INTO audit_events (at, actor, action, subject) "
    "VALUES ('2026-12-06 10:00:00+00:00', $1, $2, $3)"
)
_LOCK = "INSERT INTO upload_locks (key, holder, expires_at) VALUES ($1, 'h', '2030-01-01')"


@pytest.mark.parametrize("backend", BACKENDS)
def test_statements_commit_together_or_not_at_all(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue("sqlite_database" if backend == "sqlite" else "pg_database")

    async def scenario() -> None:
        db = await open_database(url)
        try:
            insert = _INSERT_LITE if backend == "sqlite" else _INSERT
            await db.execute("DELETE FROM upload_locks")
            counts = await db.execute_all([(insert, ["alice", "a", "subject-1"]), (_LOCK, ["k1"])])
            assert counts == [1, 1]
            with pytest.raises(Duplicate):
                await db.execute_all([(insert, ["alice", "b", "subject-2"]), (_LOCK, ["k1"])])
            rows = await db.fetch(
                "SELECT subject FROM audit_events WHERE actor = $1 ORDER BY id", "alice"
            )
            assert [r["subject"] for r in rows] == ["subject-1"]  # the second batch left nothing
        finally:
            await db.close()

    asyncio.run(scenario())
