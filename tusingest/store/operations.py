"""Durable operations in SQL: claimed with leases (FOR UPDATE SKIP LOCKED on PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tusingest.domain import Operation, OperationKind, OperationStatus
from tusingest.store.database import transactional
from tusingest.store.tables import operations


def _now() -> datetime:
    return datetime.now(UTC)


def _operation(row: sa.Row[Any]) -> Operation:
    return Operation(
        id=row.id,
        kind=OperationKind(row.kind),
        subject=row.subject,
        status=OperationStatus(row.status),
        step=row.step,
        attempts=row.attempts,
        state=json.loads(row.result or "{}"),
    )


class SqlOperationStore:
    """Implements `OperationStore`. Every update after the claim is fenced by `claimed_by`: a
    node whose lease lapsed (and whose work another node took over) changes nothing."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._tx = transactional(engine)

    async def claim(
        self, node: str, lease_seconds: float, limit: int, kinds: Collection[OperationKind]
    ) -> list[Operation]:
        now = _now()
        due = sa.and_(
            operations.c.kind.in_([kind.value for kind in kinds]),
            sa.or_(
                sa.and_(
                    operations.c.status == OperationStatus.QUEUED.value,
                    operations.c.next_attempt_at <= now,
                ),
                sa.and_(
                    operations.c.status == OperationStatus.RUNNING.value,
                    operations.c.claimed_until < now,
                ),
            ),
        )
        pick = (
            sa.select(operations.c.id)
            .where(due)
            .order_by(operations.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self._tx.begin() as conn:
            ids = list((await conn.execute(pick)).scalars())
            if not ids:
                return []
            rows = await conn.execute(
                operations.update()
                .where(operations.c.id.in_(ids), due)
                .values(
                    status=OperationStatus.RUNNING.value,
                    claimed_by=node,
                    claimed_until=now + timedelta(seconds=lease_seconds),
                    attempts=operations.c.attempts + 1,
                    updated_at=now,
                )
                .returning(*operations.c)
            )
            return [_operation(row) for row in rows]

    async def _update(self, op: Operation, node: str, **values: Any) -> None:
        values["updated_at"] = _now()
        async with self._engine.begin() as conn:
            await conn.execute(
                operations.update()
                .where(operations.c.id == op.id, operations.c.claimed_by == node)
                .values(**values)
            )

    async def progress(
        self, op: Operation, node: str, step: str, state: dict[str, Any], lease_seconds: float
    ) -> None:
        await self._update(
            op,
            node,
            step=step,
            result=json.dumps(state),
            claimed_until=_now() + timedelta(seconds=lease_seconds),
        )

    async def finish(self, op: Operation, node: str, state: dict[str, Any]) -> None:
        await self._update(
            op,
            node,
            status=OperationStatus.DONE.value,
            step="done",
            result=json.dumps(state),
            claimed_until=None,
        )

    async def retry(self, op: Operation, node: str, error: str, delay_seconds: float) -> None:
        await self._update(
            op,
            node,
            status=OperationStatus.QUEUED.value,
            error=error,
            next_attempt_at=_now() + timedelta(seconds=delay_seconds),
            claimed_by=None,
            claimed_until=None,
        )

    async def defer(self, op: Operation, node: str, error: str, delay_seconds: float) -> None:
        await self._update(
            op,
            node,
            status=OperationStatus.QUEUED.value,
            error=error,
            attempts=operations.c.attempts - 1,
            next_attempt_at=_now() + timedelta(seconds=delay_seconds),
            claimed_by=None,
            claimed_until=None,
        )

    async def enqueue(
        self, op_id: str, kind: OperationKind, subject: str, state: dict[str, Any]
    ) -> bool:
        now = _now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    operations.insert().values(
                        id=op_id,
                        kind=kind.value,
                        subject=subject,
                        status=OperationStatus.QUEUED.value,
                        attempts=0,
                        next_attempt_at=now,
                        result=json.dumps(state),
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return False  # already queued (or done): enqueueing is idempotent by id
        return True

    async def fail(self, op: Operation, node: str, error: str) -> None:
        await self._update(
            op, node, status=OperationStatus.FAILED.value, error=error, claimed_until=None
        )
