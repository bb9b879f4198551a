"""The SQL operation store claims only the kinds a node handles, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.store.conftest import OpenSessions
from tusingest.domain import OperationKind, OperationStatus
from tusingest.store.operations import SqlOperationStore


def test_a_node_claims_only_the_kinds_it_knows(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            operations = SqlOperationStore(s.db)
            assert await operations.enqueue("a" * 32, OperationKind.INGEST, "u1", {})
            assert await operations.enqueue("b" * 32, OperationKind.DISCARD, "f1", {})
            assert not await operations.enqueue("b" * 32, OperationKind.DISCARD, "f1", {})
            discards = await operations.claim("node-1", 30, 10, kinds={OperationKind.DISCARD})
            assert [(op.kind, op.subject) for op in discards] == [(OperationKind.DISCARD, "f1")]
            assert discards[0].status is OperationStatus.RUNNING
            assert discards[0].attempts == 1
            assert await operations.claim("node-1", 30, 10, kinds={OperationKind.DISCARD}) == []
            ingests = await operations.claim("node-2", 30, 10, kinds=set(OperationKind))
            assert [(op.kind, op.subject) for op in ingests] == [(OperationKind.INGEST, "u1")]

    asyncio.run(scenario())
