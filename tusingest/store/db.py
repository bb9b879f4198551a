"""The database as the stores use it: SQL written once (PostgreSQL's `$1` parameters), run
through the driver itself, without an ORM on the hot path. SQLite (`store/sqlite.py`): a writer
connection in a thread of its own; PostgreSQL: an asyncpg pool with prepared statements."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


Statement = tuple[str, Sequence[Any]]  # SQL with `$n` parameters, and their values


class Duplicate(Exception):
    """A row with this key exists already (unique constraint)."""


class Queries(Protocol):
    """Statements with `$1`, `$2` ... parameters; datetimes are bound as points in time."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...


class Database(Queries, Protocol):
    """Statements in autocommit, or several in one transaction."""

    dialect: str  # sqlite | postgresql

    def transaction(self) -> AbstractAsyncContextManager[Queries]: ...

    async def execute_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run `statements` in one transaction (one round trip where the driver allows);
        the rows each changed."""
        ...

    async def fetchrow_then(
        self,
        sql: str,
        args: Sequence[Any],
        then: Sequence[Statement],
        *,
        unless: tuple[str, Any] | None = None,
    ) -> Row | None:
        """In one transaction: `sql`, a statement that returns at most one row, then, if it
        returned one (and with `unless=(column, value)`, unless that row's `column` is
        `value`), the inserts `then`, each `INSERT INTO t (columns) VALUES (values)`, maybe
        with `ON CONFLICT (column) DO NOTHING`. The row. On PostgreSQL all of it is one
        statement: one round trip instead of four (BEGIN, the two, COMMIT)."""
        ...

    async def close(self) -> None: ...


def utc(value: datetime | str | None) -> datetime | None:
    """A timestamp read back from either database, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def open_database(url: str) -> Database:
    """`sqlite+aiosqlite:///path` or `postgresql+asyncpg://...` (the settings' forms)."""
    if url.startswith("sqlite"):
        from tusingest.store.sqlite import SqliteDatabase  # it builds on this module's types

        return await SqliteDatabase.open(Path(url.split(":///", 1)[1]))
    dsn = "postgresql://" + url.split("://", 1)[1]
    return await PgDatabase.open(dsn)


# --- PostgreSQL -------------------------------------------------------------------------------


class _PgQueries:
    """Statements on a pool (each in autocommit) or on one connection (in its transaction):
    both have the same methods."""

    def __init__(self, target: asyncpg.Pool | asyncpg.Connection) -> None:
        self._target = target

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            row: Row | None = await self._target.fetchrow(sql, *args)
        except asyncpg.UniqueViolationError as exc:
            raise Duplicate(str(exc)) from None
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._target.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return _pg_count(await self._target.execute(sql, *args))
        except asyncpg.UniqueViolationError as exc:
            raise Duplicate(str(exc)) from None


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A connection back in the pool keeps its session: nothing here changes one (no SET,
    LISTEN, cursor or session-level advisory lock; the lease listener has a connection of its
    own). asyncpg still rolls back a transaction left open before calling this. Its default
    reset (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) would cost a
    round trip to the server after every statement."""


class PgDatabase(_PgQueries):
    """An asyncpg pool; each statement is prepared once per connection and reused, and a
    released connection goes back without a reset round trip (`_keep_session`)."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool
        self._folded: dict[tuple[str, tuple[str, ...], str | None], str] = {}

    @classmethod
    async def open(cls, dsn: str, *, size: int = 20) -> PgDatabase:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=2,
            max_size=size,
            max_inactive_connection_lifetime=3600,
            timeout=10,
            reset=_keep_session,
        )
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgQueries(conn)

    async def execute_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        async with self.transaction() as tx:
            return [await tx.execute(sql, *args) for sql, args in statements]

    async def fetchrow_then(
        self,
        sql: str,
        args: Sequence[Any],
        then: Sequence[Statement],
        *,
        unless: tuple[str, Any] | None = None,
    ) -> Row | None:
        if not then:
            return await self.fetchrow(sql, *args)
        key = (sql, tuple(more for more, _args in then), None if unless is None else unless[0])
        folded = self._folded.get(key)
        if folded is None:
            folded = self._folded[key] = _fold(sql, len(args), then, unless)
        values = [*args]
        for _sql, more_args in then:
            values.extend(more_args)
        if unless is not None:
            values.append(unless[1])
        return await self.fetchrow(folded, *values)

    async def close(self) -> None:
        await self._pool.close()


_INSERT_VALUES = re.compile(
    r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \((.*)\)( ON CONFLICT \(\w+\) DO NOTHING)?", re.DOTALL
)
_PARAMETER = re.compile(r"\$(\d+)")


def _fold(sql: str, count: int, then: Sequence[Statement], unless: tuple[str, Any] | None) -> str:
    """`sql` and the INSERT ... VALUES statements `then` as one statement (PostgreSQL's
    data-modifying WITH: all of it or nothing, as one transaction), each insert made once per
    row `sql` returns (at most one) that `unless` does not exclude, their parameters
    renumbered after those of `sql` (PostgreSQL infers their types from the columns they go
    into, as with VALUES)."""
    parts = [f"fold_row AS ({sql})"]
    where = ""
    if unless is not None:
        if not unless[0].isidentifier():
            raise ValueError(f"not a column name: {unless[0]!r}")
        position = count + sum(len(args) for _sql, args in then) + 1
        where = f" WHERE fold_row.{unless[0]} IS DISTINCT FROM ${position}"
    offset = count
    for index, (more, args) in enumerate(then):
        match = _INSERT_VALUES.fullmatch(more)
        if match is None:
            raise ValueError(f"not an INSERT ... VALUES statement: {more}")
        table, columns, values, conflict = match.groups()
        values = _PARAMETER.sub(lambda m, by=offset: f"${int(m.group(1)) + by}", values)
        parts.append(
            f"then{index} AS (INSERT INTO {table} ({columns}) "
            f"SELECT {values} FROM fold_row{where}{conflict or ''})"
        )
        offset += len(args)
    return f"WITH {', '.join(parts)} SELECT * FROM fold_row"


def _pg_count(status: str) -> int:
    """The row count of a command tag: `UPDATE 3`, `INSERT 0 1`, `DELETE 0`."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
