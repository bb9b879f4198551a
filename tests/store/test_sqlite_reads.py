"""SQLite's reads run on the event loop, on a read-only connection of their own: each sees the
latest commit (never a snapshot a cursor left open), none waits for a transaction in progress,
and statements that write are never sent there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tusingest.store.database import open_checked
from tusingest.store.db import Duplicate

_INSERT = "INSERT INTO upload_locks (key, holder, expires_at) VALUES ($1, $2, '2030-01-01')"
_HOLDERS = "SELECT key, holder FROM upload_locks ORDER BY key"


def test_reads_see_each_commit_and_do_not_wait_for_a_transaction(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await open_checked(f"sqlite+aiosqlite:///{tmp_path / 'reads.db'}")
        try:
            await db.execute(_INSERT, "a", "h1")
            await db.execute(_INSERT, "b", "h1")
            # Only the first of two rows is fetched: the cursor must not pin this snapshot.
            first = await db.fetchrow(_HOLDERS)
            assert first is not None
            assert first["key"] == "a"
            await db.execute("UPDATE upload_locks SET holder = 'h2' WHERE key = 'a'")
            again = await db.fetchrow(_HOLDERS)
            assert again is not None
            assert again["holder"] == "h2"

            # A transaction in progress holds the writer; a read neither waits for it nor
            # sees its uncommitted change, and it runs on the loop's own thread.
            async with db.transaction() as tx:
                await tx.execute("UPDATE upload_locks SET holder = 'h3' WHERE key = 'a'")
                seen = await asyncio.wait_for(db.fetch(_HOLDERS), 1.0)
                assert [(r["key"], r["holder"]) for r in seen] == [("a", "h2"), ("b", "h1")]
                mine = await tx.fetchrow("SELECT holder FROM upload_locks WHERE key = 'a'")
                assert mine is not None
                assert mine["holder"] == "h3"
            after = await db.fetch(_HOLDERS)
            assert [r["holder"] for r in after] == ["h3", "h1"]

            # UPDATE … RETURNING through fetchrow writes (the read connection would refuse).
            row = await db.fetchrow(
                "UPDATE upload_locks SET holder = 'h4' WHERE key = 'b' RETURNING holder"
            )
            assert row is not None
            assert row["holder"] == "h4"
            last = await db.fetch(_HOLDERS)
            assert [r["holder"] for r in last] == ["h3", "h4"]
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_transaction_begins_with_its_first_statement(tmp_path: Path) -> None:
    """BEGIN travels with the first statement: a transaction with none is nothing, one whose
    later statement fails leaves nothing of the earlier ones, and the writer is free after."""

    async def scenario() -> None:
        db = await open_checked(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}")
        try:
            async with db.transaction():
                pass

            async def twice() -> None:
                async with db.transaction() as tx:
                    await tx.execute(_INSERT, "a", "h1")
                    await tx.execute(_INSERT, "a", "h2")  # the same key again

            with pytest.raises(Duplicate):
                await twice()
            assert await db.fetch(_HOLDERS) == []
            async with db.transaction() as tx:
                await tx.execute(_INSERT, "b", "h1")
            assert [r["key"] for r in await db.fetch(_HOLDERS)] == ["b"]
        finally:
            await db.close()

    asyncio.run(scenario())
