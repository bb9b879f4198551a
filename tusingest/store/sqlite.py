"""SQLite as the stores' `Database`: one writer connection in a thread of its own, where single
statements queued together share one commit, and plain SELECTs on the event loop on a read-only
WAL connection."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import queue
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tusingest.store.db import Duplicate, Queries, Row, Statement

T = TypeVar("T")

_PARAM = re.compile(r"\$(\d+)")  # PostgreSQL's `$n`, SQLite's `?n`


class SqliteDatabase:
    """Writes on one connection, used by one thread: SQLite has one writer at a time, and a
    second connection waiting for the write lock would sleep in SQLite's busy handler. A
    transaction has that connection to itself until it ends.

    A SELECT outside a transaction runs at once on the event loop, on a read-only connection of
    its own: a read of a small indexed table takes ~25 µs there, a quarter of what handing it
    to the thread and back costs. In WAL mode it reads the latest commit without waiting for
    the writer, and never sees a commit before it is durable (`synchronous=FULL` syncs the log
    before a commit becomes visible). Should SQLite ever answer it busy, it goes the writer's
    way."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # used on the event loop only
        self._turn = asyncio.Lock()
        self._sql: dict[str, tuple[str, bool]] = {}  # `$n` statement → (`?n` text, a SELECT)

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        db = cls(path)
        db._thread.start()
        try:
            await db._call(db._connect)
            db._reader = _read_only(path)
        except BaseException:
            await db.close()
            raise
        return db

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        found = self._read(sql, args, _one)
        if not isinstance(found, _Busy):
            return found
        return await self._run(sql, args, _one, solo=True)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        found = self._read(sql, args, _all)
        if not isinstance(found, _Busy):
            return found
        return await self._run(sql, args, _all, solo=True)

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(sql, args, _count, solo=True)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._turn:
            tx = _SqliteTx(self)  # BEGIN goes with its first statement: one hop less
            try:
                yield tx
            except BaseException:
                if tx.begun:
                    await asyncio.shield(self._call(lambda conn: conn.rollback()))
                raise
            if tx.begun:
                try:
                    await self._call(lambda conn: conn.commit())
                except BaseException:
                    # A commit that failed (a full disk) leaves the transaction open, and the
                    # single statements waiting for its end would wait for ever.
                    await asyncio.shield(self._call(_end_quietly))
                    raise

    async def execute_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        texts = [self._bound(sql, args) for sql, args in statements]

        def run(conn: sqlite3.Connection) -> list[int]:
            return [_count(conn.execute(text, params)) for text, params in texts]

        return await self._call(functools.partial(_together, run), solo=True)

    async def fetchrow_then(
        self,
        sql: str,
        args: Sequence[Any],
        then: Sequence[Statement],
        *,
        unless: tuple[str, Any] | None = None,
    ) -> Row | None:
        text, params = self._bound(sql, args)
        texts = [self._bound(more, more_args) for more, more_args in then]

        def run(conn: sqlite3.Connection) -> Row | None:
            row = _one(conn.execute(text, params))
            if row is not None and (unless is None or row[unless[0]] != unless[1]):
                for more_text, more_params in texts:
                    conn.execute(more_text, more_params)
            return row

        return await self._call(functools.partial(_together, run), solo=True)

    def _bound(self, sql: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
        return self._text(sql)[0], [_sqlite_value(a) for a in args]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._thread.is_alive():
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)

    def _text(self, sql: str) -> tuple[str, bool]:
        """`sql` with SQLite's `?n` parameters, and whether it is a plain SELECT (cached)."""
        known = self._sql.get(sql)
        if known is None:
            text = _PARAM.sub(r"?\1", sql)
            known = self._sql[sql] = (text, sql.lstrip()[:6].upper() == "SELECT")
        return known

    def _read(
        self, sql: str, args: Sequence[Any], fetch: Callable[[sqlite3.Cursor], T]
    ) -> T | _Busy:
        """`sql` on the read connection, if it is a plain SELECT; else (or busy) `_BUSY`."""
        reader = self._reader
        text, reads = self._text(sql)
        if reader is None or not reads:
            return _BUSY
        try:
            cursor = reader.execute(text, [_sqlite_value(a) for a in args])
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return _BUSY
            raise
        try:
            return fetch(cursor)
        finally:
            cursor.close()  # ends the read transaction: the next read sees the latest commit

    async def _run(
        self,
        sql: str,
        args: Sequence[Any],
        fetch: Callable[[sqlite3.Cursor], T],
        *,
        begin: bool = False,
        solo: bool = False,
    ) -> T:
        text, params = self._bound(sql, args)

        def run(conn: sqlite3.Connection) -> T:
            if begin:
                conn.execute("BEGIN IMMEDIATE")
            return fetch(conn.execute(text, params))

        return await self._call(run, solo=solo)

    async def _call(self, fn: Callable[[sqlite3.Connection], T], *, solo: bool = False) -> T:
        """Run `fn` on the writer's thread. A `solo` statement stands alone (autocommit): it
        may share one commit with other solo statements; any other job belongs to the
        transaction of the `_turn` holder, or is one of its own."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, future, loop, solo))
        return await future

    def _connect(self, _conn: sqlite3.Connection) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when acknowledged
        conn.execute("PRAGMA busy_timeout=30000")  # another process (migrate) holding a lock
        self._conn = conn

    def _serve(self) -> None:
        """The writer's thread. Solo statements queued together share one transaction, so one
        commit (one fsync of the log) acknowledges them all; those that arrive while a
        transaction is open wait for its end, then go together."""
        ahead: collections.deque[_Job | None] = collections.deque()  # taken, not yet run
        waiting: list[_Job] = []  # solo statements that came during a transaction
        while True:
            in_transaction = self._conn is not None and self._conn.in_transaction
            if waiting and not in_transaction:
                group, waiting = waiting, []
                self._group(group)
                continue
            job = ahead.popleft() if ahead else self._jobs.get()
            if job is None:
                break
            if not job.solo:
                _settle_from(job, self._conn)
            elif in_transaction:
                waiting.append(job)
            else:
                group = [job]
                while len(group) < _GROUP_MAX:
                    try:
                        queued = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if queued is None or not queued.solo:
                        ahead.append(queued)
                        break
                    group.append(queued)
                self._group(group)
        if self._conn is not None:
            self._conn.close()

    def _group(self, jobs: list[_Job]) -> None:
        """Run solo statements in one transaction and commit it once. If SQLite rolls the
        whole transaction back on an error (a full disk, I/O), the statements before lost
        their writes: they fail with it, and the ones after start a new group."""
        conn = self._conn
        if len(jobs) == 1 or conn is None:
            for job in jobs:
                _settle_from(job, conn)
            if conn is not None and conn.in_transaction:  # its commit failed: not left open
                _end_quietly(conn)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in jobs:
                _resolve(job, None, exc)
            return
        done: list[tuple[_Job, Any, BaseException | None]] = []
        for index, job in enumerate(jobs):
            try:
                done.append((job, job.fn(conn), None))
            except BaseException as exc:
                if conn.in_transaction:  # the statement alone was undone
                    done.append((job, None, exc))
                    continue
                for lost, _result, _error in done:
                    _resolve(lost, None, exc)
                _resolve(job, None, exc)
                self._group(jobs[index + 1 :])
                return
        try:
            conn.commit()
        except BaseException as exc:
            _end_quietly(conn)
            for job, _result, _error in done:
                _resolve(job, None, exc)
            return
        for job, result, error in done:
            _resolve(job, result, error)


_GROUP_MAX = 64  # solo statements per shared commit


def _together(run: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """`run`'s statements all or none: in a savepoint, which is a transaction of its own when
    none is open, and part of a shared commit's transaction when one is."""
    conn.execute("SAVEPOINT together")
    try:
        result = run(conn)
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back all already
            conn.execute("ROLLBACK TO together")
            conn.execute("RELEASE together")
        raise
    conn.execute("RELEASE together")
    return result


def _end_quietly(conn: sqlite3.Connection) -> None:
    """Roll back whatever transaction is open, if any."""
    with contextlib.suppress(sqlite3.Error):
        conn.rollback()


def _settle_from(job: _Job, conn: sqlite3.Connection | None) -> None:
    """Run one job on its own and hand its outcome to the loop."""
    try:
        result: Any = job.fn(conn)  # type: ignore[arg-type]
    except BaseException as exc:
        _resolve(job, None, exc)
    else:
        _resolve(job, result, None)


def _resolve(job: _Job, result: Any, error: BaseException | None) -> None:
    if isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error):
        error = Duplicate(str(error))
    job.loop.call_soon_threadsafe(_settle, job.future, result, error)


class _Busy:
    """A read the loop's connection could not make (not a plain SELECT, or SQLite busy)."""


_BUSY = _Busy()


def _read_only(path: Path) -> sqlite3.Connection:
    """The loop's connection: reads only, and never sleeps in SQLite's busy handler."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only=1")
    return conn


class _SqliteTx:
    """Statements inside a transaction (the connection is already this caller's)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.begun = False  # BEGIN is sent with the first statement

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._statement(sql, args, _one)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._statement(sql, args, _all)

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._statement(sql, args, _count)

    async def _statement(
        self, sql: str, args: Sequence[Any], fetch: Callable[[sqlite3.Cursor], T]
    ) -> T:
        begin, self.begun = not self.begun, True
        return await self._db._run(sql, args, fetch, begin=begin)


class _Job:
    __slots__ = ("fn", "future", "loop", "solo")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        solo: bool,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.solo = solo


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _one(cursor: sqlite3.Cursor) -> Row | None:
    row: Row | None = cursor.fetchone()
    return row


def _all(cursor: sqlite3.Cursor) -> list[Row]:
    return list(cursor.fetchall())


def _count(cursor: sqlite3.Cursor) -> int:
    return cursor.rowcount


def _sqlite_value(value: Any) -> Any:
    """A timestamp as SQLite keeps it, text as SQLAlchemy (and so the migrations) writes it:
    UTC, `YYYY-MM-DD HH:MM:SS.ffffff`, fixed width so that text order is time order."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return moment.isoformat(" ", "microseconds")
    return value
