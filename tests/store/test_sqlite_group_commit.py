"""SQLite's single statements share commits: those queued together go in one transaction and
one commit (one fsync of the log), and those that arrive while a transaction is open wait for
its end. Each still succeeds or fails on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tusingest.domain import OperationKind
from tusingest.store.database import open_checked
from tusingest.store.db import Database, Duplicate, Statement
from tusingest.store.operations import SqlOperationStore

_INSERT = "INSERT INTO upload_locks (key, holder, expires_at) VALUES ($1, $2, '2030-01-01')"
_KEYS = "SELECT key FROM upload_locks ORDER BY key"


def _log_frames(path: Path) -> int:
    """Frames in the write-ahead log so far (each commit appends at least one; automatic
    checkpoints are off, so the log only grows)."""
    page_size = 4096  # SQLite's default
    return (path.with_name(path.name + "-wal").stat().st_size - 32) // (page_size + 24)


async def _open(path: Path) -> Database:
    db = await open_checked(f"sqlite+aiosqlite:///{path}")
    await db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def test_statements_during_a_transaction_wait_for_it_then_share_one_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "group.db"

    async def scenario() -> None:
        db = await _open(path)
        try:
            await db.execute(_INSERT, "first", "h")
            before = _log_frames(path)
            async with db.transaction() as tx:
                await tx.execute(_INSERT, "tx", "h")
                singles = [
                    asyncio.ensure_future(db.execute(_INSERT, f"k{i:02d}", "h")) for i in range(30)
                ]
                await asyncio.sleep(0.2)
                # Not inside this transaction: none of them has run yet.
                assert not any(single.done() for single in singles)
            assert await asyncio.gather(*singles) == [1] * 30
            rows = await db.fetch(_KEYS)
            assert len(rows) == 32
            # One commit for the transaction and one for the 30 statements, not 31.
            assert _log_frames(path) - before < 10
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_rolled_back_transaction_keeps_the_statements_that_waited_for_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        db = await _open(tmp_path / "rollback.db")
        try:
            singles: list[asyncio.Future[int]] = []

            async def change_of_mind() -> None:
                async with db.transaction() as tx:
                    await tx.execute(_INSERT, "undone", "h")
                    singles.extend(
                        asyncio.ensure_future(db.execute(_INSERT, f"k{i}", "h")) for i in range(5)
                    )
                    await asyncio.sleep(0.05)
                    raise RuntimeError("changed my mind")

            with pytest.raises(RuntimeError, match="changed my mind"):
                await change_of_mind()
            assert await asyncio.gather(*singles) == [1] * 5
            assert [r["key"] for r in await db.fetch(_KEYS)] == [f"k{i}" for i in range(5)]
        finally:
            await db.close()

    asyncio.run(scenario())


def test_in_a_shared_commit_a_duplicate_fails_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await _open(tmp_path / "duplicate.db")
        try:
            await db.execute(_INSERT, "taken", "h")
            async with db.transaction() as tx:
                await tx.execute("UPDATE upload_locks SET holder = 'h2' WHERE key = 'taken'")
                keys = ["a", "b", "taken", "c", "a"]
                singles = [asyncio.ensure_future(db.execute(_INSERT, k, "h")) for k in keys]
                await asyncio.sleep(0.05)
            outcomes = await asyncio.gather(*singles, return_exceptions=True)
            assert outcomes[:2] == [1, 1]
            assert isinstance(outcomes[2], Duplicate)
            assert outcomes[3] == 1
            assert isinstance(outcomes[4], Duplicate)  # the first "a" of the same commit
            assert [r["key"] for r in await db.fetch(_KEYS)] == ["a", "b", "c", "taken"]
        finally:
            await db.close()

    asyncio.run(scenario())


def test_concurrent_statements_from_many_tasks_all_land(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = await _open(tmp_path / "many.db")
        try:

            async def worker(n: int) -> None:
                for i in range(20):
                    assert await db.execute(_INSERT, f"w{n:02d}-{i:02d}", "h") == 1
                    assert (
                        await db.execute(
                            "UPDATE upload_locks SET holder = $1 WHERE key = $2",
                            f"x{i}",
                            f"w{n:02d}-{i:02d}",
                        )
                        == 1
                    )

            await asyncio.gather(*(worker(n) for n in range(16)))
            rows = await db.fetch("SELECT holder FROM upload_locks")
            assert len(rows) == 320
            assert {r["holder"] for r in rows} == {f"x{i}" for i in range(20)}
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_failing_self_contained_transaction_undoes_only_itself(tmp_path: Path) -> None:
    """`fetchrow_then` is all or nothing, alone or in a shared commit, and the writer goes on:
    a statement after the first that fails (here a duplicate of the first's key) undoes the
    first."""

    def refuse(key: str) -> list[Statement]:
        return [(_INSERT, [key, "h"])]

    async def scenario() -> None:
        db = await _open(tmp_path / "together.db")
        try:
            returning = _INSERT + " RETURNING key"
            with pytest.raises(Duplicate):
                await db.fetchrow_then(returning, ["alone", "h"], refuse("alone"))
            async with db.transaction() as tx:  # the next ones wait, then share one commit
                await tx.execute(_INSERT, "tx", "h")
                together = [
                    asyncio.ensure_future(db.execute(_INSERT, "before", "h")),
                    asyncio.ensure_future(
                        db.fetchrow_then(returning, ["grouped", "h"], refuse("grouped"))
                    ),
                    asyncio.ensure_future(
                        db.fetchrow_then(returning, ["kept", "h"], [(_INSERT, ["kept2", "h"])])
                    ),
                    asyncio.ensure_future(db.execute(_INSERT, "after", "h")),
                ]
                await asyncio.sleep(0.05)
            outcomes = await asyncio.gather(*together, return_exceptions=True)
            assert outcomes[0] == 1
            assert isinstance(outcomes[1], Duplicate)
            assert outcomes[3] == 1
            keys = [r["key"] for r in await db.fetch(_KEYS)]
            assert keys == ["after", "before", "kept", "kept2", "tx"]
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_claim_poll_that_finds_nothing_neither_waits_nor_writes(tmp_path: Path) -> None:
    """On SQLite a claim picks with a read and claims with one statement that checks the row is
    still due: an empty poll does not wait for a transaction in progress and leaves the log as
    it was, and a claimed row is not claimed twice."""
    path = tmp_path / "claims.db"

    async def scenario() -> None:
        db = await _open(path)
        try:
            operations = SqlOperationStore(db)
            before = _log_frames(path)
            async with db.transaction() as tx:  # holds the writer meanwhile
                await tx.execute(_INSERT, "tx", "h")
                for _ in range(20):
                    poll = operations.claim("n1", 30, 8, [OperationKind.INGEST])
                    assert await asyncio.wait_for(poll, 1.0) == []
            assert _log_frames(path) - before < 3  # the transaction's one commit
            assert await operations.enqueue("op-1", OperationKind.INGEST, "u1", {})
            [claimed] = await operations.claim("n1", 30, 8, [OperationKind.INGEST])
            assert claimed.id == "op-1"
            assert await operations.claim("n2", 30, 8, [OperationKind.INGEST]) == []
        finally:
            await db.close()

    asyncio.run(scenario())
