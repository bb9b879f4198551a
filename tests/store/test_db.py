"""`Database.execute_all`: several statements in one transaction, on both drivers; a failing
one (a duplicate key) leaves nothing of the others. On PostgreSQL a pooled statement is one
round trip (no reset query when its connection goes back), and a failed transaction leaves
its connection idle."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.conftest import BACKENDS
from tusingest.store.db import Duplicate, Statement, open_database
from tusingest.store.pglocks import asyncpg_dsn

_INSERT = "INSERT INTO audit_events (at, actor, action, subject) VALUES (now(), $1, $2, $3)"
_INSERT_LITE = (
    "INSERT INTO audit_events (at, actor, action, subject) "
    "VALUES ('2026-12-06 10:00:00+00:00', $1, $2, $3)"
)
_LOCK = "INSERT INTO upload_locks (key, holder, expires_at) VALUES ($1, 'h', '2030-01-01')"
_HOLDERS = "SELECT key, holder FROM upload_locks"


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


_RETURNING = "UPDATE upload_locks SET holder = $1 WHERE key = $2 RETURNING key, holder"
_NOTE = "INSERT INTO audit_events (at, actor, action, subject) VALUES ($1, $2, 'noted', $3)"
_NOTE_ONCE = (
    "INSERT INTO upload_locks (key, holder, expires_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (key) DO NOTHING"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_then_its_statements_commit_together_or_not_at_all(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """`fetchrow_then`: the statements after the row run only when it returned one that
    `unless` does not exclude; a failing one (a duplicate key) undoes the row's change too.
    On PostgreSQL it is one statement, the last thing its connection ran (no COMMIT after)."""
    url: str = request.getfixturevalue("sqlite_database" if backend == "sqlite" else "pg_database")
    at = datetime(2026, 12, 6, 10, tzinfo=UTC)

    def then(subject: str, key: str) -> list[Statement]:
        return [(_NOTE, [at, "folder", subject]), (_NOTE_ONCE, [key, "queued", at])]

    async def scenario() -> None:
        db = await open_database(url)
        try:
            await db.execute("DELETE FROM upload_locks")
            await db.execute("DELETE FROM audit_events WHERE actor = 'folder'")
            await db.execute(_LOCK, "row")
            await db.execute(_LOCK, "taken")

            row = await db.fetchrow_then(_RETURNING, ["h2", "row"], then("done", "q1"))
            assert row is not None
            assert (row["key"], row["holder"]) == ("row", "h2")
            missing = await db.fetchrow_then(_RETURNING, ["h3", "absent"], then("no-row", "q2"))
            assert missing is None
            excluded = await db.fetchrow_then(
                _RETURNING, ["skip", "row"], then("excluded", "q3"), unless=("holder", "skip")
            )
            assert excluded is not None
            assert excluded["holder"] == "skip"
            kept = await db.fetchrow_then(
                _RETURNING, ["h4", "row"], then("again", "q1"), unless=("holder", "skip")
            )
            assert kept is not None  # q1 is queued already: ON CONFLICT DO NOTHING
            with pytest.raises(Duplicate):
                await db.fetchrow_then(
                    _RETURNING,
                    ["h5", "row"],
                    [(_NOTE, [at, "folder", "undone"]), (_LOCK, ["taken"])],
                )

            notes = await db.fetch(
                "SELECT subject FROM audit_events WHERE actor = 'folder' ORDER BY id"
            )
            assert [r["subject"] for r in notes] == ["done", "again"]
            locks = {r["key"]: r["holder"] for r in await db.fetch(_HOLDERS)}
            assert locks == {"row": "h4", "taken": "h", "q1": "queued"}
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_row_then_its_statements_is_one_statement_on_postgresql(pg_database: str) -> None:
    """No BEGIN and COMMIT around it: the folded statement is the last its connection ran, and
    it left the connection idle (committed)."""

    async def scenario() -> None:
        db = await open_database(pg_database)
        at = datetime(2026, 12, 6, 10, tzinfo=UTC)
        try:
            await db.execute("DELETE FROM upload_locks")
            await db.execute(_LOCK, "solo")
            sql = (
                "UPDATE upload_locks SET holder = $1 WHERE key = $2 "
                "RETURNING pg_backend_pid() AS pid"
            )
            row = await db.fetchrow_then(sql, ["h2", "solo"], [(_NOTE, [at, "folder", "one"])])
            assert row is not None
            query, state = await asyncpg_last_query(pg_database, row["pid"])
            assert query.startswith("WITH fold_row AS (UPDATE upload_locks")
            assert state == "idle"
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_pooled_statement_costs_one_round_trip_and_leaves_no_transaction(
    pg_database: str,
) -> None:
    """A statement on the pool is the last thing its connection ran: no reset query follows it
    when the connection goes back (asyncpg's default is one more round trip per statement).
    A transaction that fails still leaves its connection clean for the next statement."""

    async def scenario() -> None:
        db = await open_database(pg_database)
        try:
            for _ in range(3):
                row = await db.fetchrow("SELECT pg_backend_pid() AS pid")
                assert row is not None
                seen = await asyncpg_last_query(pg_database, row["pid"])
                assert seen == ("SELECT pg_backend_pid() AS pid", "idle")
            pids: list[int] = []

            async def failing() -> None:
                async with db.transaction() as tx:
                    row = await tx.fetchrow("SELECT pg_backend_pid() AS pid")
                    assert row is not None
                    pids.append(row["pid"])
                    await tx.execute("DELETE FROM upload_locks")
                    await tx.execute(_LOCK, "k2")
                    await tx.execute(_LOCK, "k2")

            with pytest.raises(Duplicate):
                await failing()
            # Rolled back: nothing of it stays, and its connection is not left in a transaction.
            assert (await asyncpg_last_query(pg_database, pids[0]))[1] == "idle"
            keys = [r["key"] for r in await db.fetch("SELECT key FROM upload_locks")]
            assert "k2" not in keys
        finally:
            await db.close()

    asyncio.run(scenario())


async def asyncpg_last_query(url: str, pid: int) -> tuple[str, str]:
    """What backend `pid` ran last and its state, seen from a connection of its own."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow("SELECT query, state FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()
    assert row is not None
    return row["query"], row["state"]
