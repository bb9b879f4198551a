"""Durable operations in SQL: claimed with leases (FOR UPDATE SKIP LOCKED on PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from tusingest.domain import NewOperation, Operation, OperationKind, OperationStatus
from tusingest.store.db import Database, Duplicate, Row

_COLUMNS = "id, kind, subject, status, step, attempts, result, error"
_GET = f"SELECT {_COLUMNS} FROM operations WHERE id = $1"
# Due: queued and its time has come, or running under a lease that lapsed.
_DUE = (
    "kind IN ({kinds}) AND ((status = 'queued' AND next_attempt_at <= $1) OR "
    "(status = 'running' AND claimed_until < $1))"
)
_PICK = {
    "postgresql": "SELECT id FROM operations WHERE {due} ORDER BY next_attempt_at LIMIT $2 "
    "FOR UPDATE SKIP LOCKED",
    # One writer at a time (the transaction is IMMEDIATE): nothing to skip.
    "sqlite": "SELECT id FROM operations WHERE {due} ORDER BY next_attempt_at LIMIT $2",
}
# $1 now, $2 the lease's end, $3 the node, then the kinds and the ids.
_CLAIM = (
    "UPDATE operations SET status = 'running', claimed_by = $3, claimed_until = $2, "
    "attempts = attempts + 1, updated_at = $1 WHERE id IN ({ids}) AND {due} "
    f"RETURNING {_COLUMNS}"
)
_ENQUEUE = (
    "INSERT INTO operations (id, kind, subject, status, attempts, next_attempt_at, result, "
    "created_at, updated_at) VALUES ($1, $2, $3, 'queued', 0, $4, $5, $4, $4)"
)
# Queued along with another write (an audit note's webhook deliveries): an id queued already
# is left alone, and the other write still commits.
_ENQUEUE_ONCE = f"{_ENQUEUE} ON CONFLICT (id) DO NOTHING"
# Every update after the claim is fenced by the claimant ($1).
_PROGRESS = (
    "UPDATE operations SET step = $3, result = $4, claimed_until = $5, updated_at = $6 "
    "WHERE id = $2 AND claimed_by = $1"
)
_FINISH = (
    "UPDATE operations SET status = 'done', step = 'done', result = $3, claimed_until = NULL, "
    "updated_at = $4 WHERE id = $2 AND claimed_by = $1"
)
_REQUEUE = (
    "UPDATE operations SET status = 'queued', error = $3, next_attempt_at = $4, "
    "attempts = attempts - $5, claimed_by = NULL, claimed_until = NULL, updated_at = $6 "
    "WHERE id = $2 AND claimed_by = $1"
)
_FAIL = (
    "UPDATE operations SET status = 'failed', error = $3, claimed_until = NULL, "
    "updated_at = $4 WHERE id = $2 AND claimed_by = $1"
)


def _now() -> datetime:
    return datetime.now(UTC)


def enqueue_statement(op: NewOperation) -> tuple[str, list[Any]]:
    """The statement queueing `op` now, unless its id is queued already (for a transaction of
    another store)."""
    return _ENQUEUE_ONCE, [op.id, op.kind.value, op.subject, _now(), json.dumps(op.state)]


def _operation(row: Row) -> Operation:
    return Operation(
        id=row["id"],
        kind=OperationKind(row["kind"]),
        subject=row["subject"],
        status=OperationStatus(row["status"]),
        step=row["step"],
        attempts=row["attempts"],
        state=json.loads(row["result"] or "{}"),
        error=row["error"],
    )


class SqlOperationStore:
    """Implements `OperationStore`. Every update after the claim is fenced by `claimed_by`: a
    node whose lease lapsed (and whose work another node took over) changes nothing."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pick: dict[int, str] = {}
        self._claim: dict[tuple[int, int], str] = {}

    async def claim(
        self, node: str, lease_seconds: float, limit: int, kinds: Collection[OperationKind]
    ) -> list[Operation]:
        now = _now()
        names = sorted(kind.value for kind in kinds)
        claim_args = (now, now + timedelta(seconds=lease_seconds), node, *names)
        if self._db.dialect == "sqlite":
            # One writer, and the claim checks again that each row is due: the pick needs no
            # transaction (a read that does not wait for the writer), the claim is one
            # statement, and a poll that finds nothing writes nothing.
            picked = await self._db.fetch(self._pick_sql(len(names)), now, limit, *names)
            ids = [str(row["id"]) for row in picked]
            if not ids:
                return []
            rows = await self._db.fetch(self._claim_sql(len(names), len(ids)), *claim_args, *ids)
            return [_operation(row) for row in rows]
        async with self._db.transaction() as tx:
            picked = await tx.fetch(self._pick_sql(len(names)), now, limit, *names)
            ids = [str(row["id"]) for row in picked]
            if not ids:
                return []
            rows = await tx.fetch(self._claim_sql(len(names), len(ids)), *claim_args, *ids)
        return [_operation(row) for row in rows]

    async def progress(
        self, op: Operation, node: str, step: str, state: dict[str, Any], lease_seconds: float
    ) -> None:
        now = _now()
        await self._db.execute(
            _PROGRESS,
            node,
            op.id,
            step,
            json.dumps(state),
            now + timedelta(seconds=lease_seconds),
            now,
        )

    async def finish(self, op: Operation, node: str, state: dict[str, Any]) -> None:
        await self._db.execute(_FINISH, node, op.id, json.dumps(state), _now())

    async def retry(self, op: Operation, node: str, error: str, delay_seconds: float) -> None:
        await self._requeue(op, node, error, delay_seconds, uncount=False)

    async def defer(self, op: Operation, node: str, error: str, delay_seconds: float) -> None:
        await self._requeue(op, node, error, delay_seconds, uncount=True)

    async def enqueue(
        self, op_id: str, kind: OperationKind, subject: str, state: dict[str, Any]
    ) -> bool:
        try:
            await self._db.execute(_ENQUEUE, op_id, kind.value, subject, _now(), json.dumps(state))
        except Duplicate:
            return False  # already queued (or done): enqueueing is idempotent by id
        return True

    async def get(self, op_id: str) -> Operation | None:
        row = await self._db.fetchrow(_GET, op_id)
        return None if row is None else _operation(row)

    async def fail(self, op: Operation, node: str, error: str) -> None:
        await self._db.execute(_FAIL, node, op.id, error, _now())

    async def _requeue(
        self, op: Operation, node: str, error: str, delay_seconds: float, *, uncount: bool
    ) -> None:
        now = _now()
        await self._db.execute(
            _REQUEUE,
            node,
            op.id,
            error,
            now + timedelta(seconds=delay_seconds),
            1 if uncount else 0,
            now,
        )

    def _pick_sql(self, kinds: int) -> str:
        sql = self._pick.get(kinds)
        if sql is None:
            due = _DUE.format(kinds=_placeholders(3, kinds))
            sql = self._pick[kinds] = _PICK[self._db.dialect].format(due=due)
        return sql

    def _claim_sql(self, kinds: int, ids: int) -> str:
        sql = self._claim.get((kinds, ids))
        if sql is None:
            due = _DUE.format(kinds=_placeholders(4, kinds))
            listed = _placeholders(4 + kinds, ids)
            sql = self._claim[(kinds, ids)] = _CLAIM.format(ids=listed, due=due)
        return sql


def _placeholders(first: int, count: int) -> str:
    return ", ".join(f"${first + i}" for i in range(count))
