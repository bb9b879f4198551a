"""The runner on a real SQLite operation store: stopping a node (SIGTERM) gives running
operations their grace to finish and hands back at once what outlives it; operations adopted
from completing requests run at once up to a limit, past which they wait their turn in order
(a stopping node hands them to the queue), and never take the claimed operations' slots."""

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


class Gated:
    """A handler whose operations on `held` subjects wait for `gate`; the others run at once."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.gate = asyncio.Event()
        self.finished: list[str] = []
        self.done = asyncio.Event()

    async def run(self, op: Operation, progress: Progress) -> Done:
        if op.subject in self.held:
            await self.gate.wait()
        self.finished.append(op.subject)
        self.done.set()
        return Done()

    async def give_up(self, op: Operation, error: str) -> None:
        raise AssertionError(f"no attempt should fail: {error}")


@asynccontextmanager
async def _adopting(tmp_path: Path, handler: Gated, adopt_limit: int) -> AsyncIterator[Rig]:
    """A runner (one claim slot, `adopt_limit` adopted) on a fresh store, not yet polling."""
    url = normalise_database_url("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    await schema.upgrade(url)
    db = await open_database(url)
    try:
        operations = SqlOperationStore(db)
        yield Runner(
            operations,
            {OperationKind.INGEST: handler},
            RunnerPolicy(max_attempts=3, attempt_timeout=30, lease_seconds=30, poll_seconds=0.05,
                         concurrency=1, adopt_limit=adopt_limit),
        ), operations  # fmt: skip
    finally:
        await db.close()


async def _adopt(runner: Runner, operations: SqlOperationStore, subjects: list[str]) -> list[str]:
    """Queue and lease an operation per subject as a completing request does, then adopt it."""
    ids = [f"{n:032x}" for n in range(1, len(subjects) + 1)]
    for subject, op_id in zip(subjects, ids, strict=True):
        assert await operations.enqueue(op_id, OperationKind.INGEST, subject, {})
    leased = await operations.claim(runner.node, 30, len(ids), kinds=[OperationKind.INGEST])
    assert len(leased) == len(ids)
    for subject, op_id in zip(subjects, ids, strict=True):
        runner.adopt(op_id, OperationKind.INGEST, subject)
    return ids


def test_adopted_operations_past_the_limit_wait_their_turn_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        handler = Gated({"u1", "u2"})
        async with _adopting(tmp_path, handler, adopt_limit=2) as (runner, operations):
            ids = await _adopt(runner, operations, ["u1", "u2", "u3", "u4"])
            task = asyncio.create_task(runner.run_forever())
            try:
                # A claimed operation has a slot of its own while the adopted ones hold theirs.
                assert await operations.enqueue("f" * 32, OperationKind.INGEST, "c1", {})
                runner.wake()
                async with asyncio.timeout(10):
                    await handler.done.wait()
                assert handler.finished == ["c1"]  # u3 and u4 wait: both adopted slots taken
                for op_id in ids[2:]:
                    op = await operations.get(op_id)
                    assert op is not None
                    assert op.status is OperationStatus.RUNNING  # still leased to this node
                handler.gate.set()
                for op_id in ids:
                    await _reaches(operations, op_id, OperationStatus.DONE)
            finally:
                await runner.stop(grace_seconds=5)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert handler.finished.index("u3") < handler.finished.index("u4")
            assert sorted(handler.finished) == ["c1", "u1", "u2", "u3", "u4"]

    asyncio.run(scenario())


def test_a_stopping_node_hands_waiting_adopted_operations_to_the_queue(tmp_path: Path) -> None:
    async def scenario() -> None:
        handler = Gated({"u1"})
        async with _adopting(tmp_path, handler, adopt_limit=1) as (runner, operations):
            ids = await _adopt(runner, operations, ["u1", "u2"])
            async with asyncio.timeout(5):
                await runner.stop(grace_seconds=0.2)
            assert handler.finished == []
            for op_id in ids:  # u1 outlived its grace, u2 never started: both queued, due now
                op = await _reaches(operations, op_id, OperationStatus.QUEUED)
                assert op.error is not None
                assert "node stopped" in op.error

    asyncio.run(scenario())


async def _reaches(
    operations: SqlOperationStore, op_id: str, status: OperationStatus, seconds: float = 10
) -> Operation:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (op := await operations.get(op_id)) is None or op.status is not status:
        assert loop.time() < deadline, f"{op_id} is {op and op.status}, not {status}"
        await asyncio.sleep(0.02)
    return op
