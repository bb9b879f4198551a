"""Stopping a node's runner (SIGTERM): running operations get their grace to finish, and what
outlives it is handed back at once, on a real SQLite operation store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tusingest.domain import Operation, OperationKind, OperationStatus
from tusingest.pipeline.runner import Progress, Runner, RunnerPolicy
from tusingest.settings.uploads import normalise_database_url
from tusingest.store import schema
from tusingest.store.db import open_database
from tusingest.store.operations import SqlOperationStore


class Done:
    def to_json(self) -> dict[str, Any]:
        return {"done": True}


class Slow:
    """A handler that works for `seconds` once started (`started` is set then)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.finished = 0

    async def run(self, op: Operation, progress: Progress) -> Done:
        self.started.set()
        await asyncio.sleep(self.seconds)
        self.finished += 1
        return Done()

    async def give_up(self, op: Operation, error: str) -> None:
        raise AssertionError(f"no attempt should fail: {error}")


Rig = tuple[Runner, SqlOperationStore]


@asynccontextmanager
async def _running(tmp_path: Path, handler: Slow) -> AsyncIterator[Rig]:
    url = normalise_database_url("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    await schema.upgrade(url)
    db = await open_database(url)
    try:
        operations = SqlOperationStore(db)
        runner = Runner(
            operations,
            {OperationKind.INGEST: handler},
            RunnerPolicy(max_attempts=3, attempt_timeout=30, lease_seconds=30, poll_seconds=0.05,
                         base_delay=0.05, max_delay=0.1),
        )  # fmt: skip
        assert await operations.enqueue("a" * 32, OperationKind.INGEST, "u1", {})
        task = asyncio.create_task(runner.run_forever())
        try:
            async with asyncio.timeout(10):
                await handler.started.wait()
            yield runner, operations
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await db.close()


def test_stop_lets_a_running_operation_finish_within_its_grace(tmp_path: Path) -> None:
    async def scenario() -> None:
        handler = Slow(0.5)
        async with _running(tmp_path, handler) as (runner, operations):
            await runner.stop(grace_seconds=10)
            assert handler.finished == 1
            op = await operations.get("a" * 32)
            assert op is not None
            assert (op.status, op.attempts, op.state) == (OperationStatus.DONE, 1, {"done": True})

    asyncio.run(scenario())


def test_stop_hands_back_what_outlives_its_grace(tmp_path: Path) -> None:
    async def scenario() -> None:
        handler = Slow(60)
        async with _running(tmp_path, handler) as (runner, operations):
            async with asyncio.timeout(5):
                await runner.stop(grace_seconds=0.2)
            assert handler.finished == 0
            op = await operations.get("a" * 32)
            assert op is not None
            # Queued again, due now, for another node to resume at once.
            assert op.status is OperationStatus.QUEUED
            assert op.error is not None
            assert "node stopped" in op.error

    asyncio.run(scenario())
