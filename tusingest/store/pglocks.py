"""Cross-node per-upload leases in PostgreSQL, with release requests over LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from tusingest.ports import ReleaseRequest
from tusingest.randomids import uuid4
from tusingest.store.db import Database
from tusingest.store.locks import locked_error

log = logging.getLogger(__name__)

CHANNEL = "tusingest_lock_release"
_POLL_SECONDS = 0.02

# A holder is `{node}:{request}`; `node` is the key of the advisory lock its node holds on its
# listener connection for as long as it lives. A lease whose node lock is gone (the node was
# killed: PostgreSQL dropped its connection, and the lock with it) is free at once.
_NODE_ALIVE = (
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) "
    "= split_part(upload_locks.holder, ':', 1)::bigint)"
)
_ACQUIRE = (
    "INSERT INTO upload_locks (key, holder, expires_at) "
    "VALUES ($1, $2, now() + make_interval(secs => $3::float8)) "
    "ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
    "WHERE upload_locks.expires_at < now() "
    f"OR (upload_locks.holder ~ '^[0-9]{{1,19}}:' AND NOT {_NODE_ALIVE}) "
    "RETURNING holder"
)
_NODE_LOCK = "SELECT pg_advisory_lock($1)"
_RELEASE = "DELETE FROM upload_locks WHERE key = $1 AND holder = $2"
_BUSY = "SELECT 1 AS busy FROM upload_locks WHERE key = $1 AND expires_at > now()"
_RENEW = (
    "UPDATE upload_locks SET expires_at = now() + make_interval(secs => $1::float8) "
    "WHERE holder = ANY($2::text[]) RETURNING holder"
)
_NOTIFY = "SELECT pg_notify($1, $2)"


def asyncpg_dsn(url: str) -> str:
    """A `postgresql+asyncpg://` URL (the settings' form) as a plain DSN for asyncpg."""
    return "postgresql://" + url.split("://", 1)[1]


@dataclass
class _Held:
    holder: str
    on_release: ReleaseRequest | None


class PgLocker:
    """Implements `Locker` for a cluster sharing one PostgreSQL database.

    A lease is a row with an expiry, renewed in the background while held; a node killed
    outright loses its leases at once (its node lock dies with its connection), and any
    lease lapses by itself in the end. Each statement is its own short transaction: no pooled
    connection stays pinned while a request streams. One dedicated connection per node
    LISTENs for release requests addressed to the leases it holds.
    """

    def __init__(
        self, db: Database, dsn: str, *, wait_seconds: float, lease_seconds: float = 15.0
    ) -> None:
        self._db = db
        self._dsn = dsn
        self._wait = wait_seconds
        self._lease = lease_seconds
        self._held: dict[str, _Held] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        # This node's liveness: an advisory lock on the listener connection (see _ACQUIRE).
        self._node = secrets.randbelow(1 << 62) + 1

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever()),
            asyncio.create_task(self._renew_forever()),
        ]
        # Do not serve before release requests can reach us (bounded: a dead listener only
        # degrades to lease expiry).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._listening.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def held_here(self, key: str) -> bool:
        return key in self._held

    async def busy(self, key: str) -> bool:
        return await self._db.fetchrow(_BUSY, key) is not None

    @asynccontextmanager
    async def hold(
        self, key: str, *, on_release: ReleaseRequest | None = None, patient: bool = True
    ) -> AsyncIterator[None]:
        holder = f"{self._node}:{uuid4().hex}"
        if not await self._try_acquire(key, holder):
            if not patient:
                raise locked_error()
            await self._request_release(key)
            deadline = asyncio.get_running_loop().time() + self._wait
            while not await self._try_acquire(key, holder):
                if asyncio.get_running_loop().time() >= deadline:
                    raise locked_error()
                await asyncio.sleep(_POLL_SECONDS)
        self._held[key] = _Held(holder, on_release)
        try:
            yield
        finally:
            if self._held.get(key) is not None and self._held[key].holder == holder:
                del self._held[key]
            await asyncio.shield(self._release(key, holder))

    async def _try_acquire(self, key: str, holder: str) -> bool:
        return await self._db.fetchrow(_ACQUIRE, key, holder, self._lease) is not None

    async def _release(self, key: str, holder: str) -> None:
        try:
            await self._db.execute(_RELEASE, key, holder)
        except Exception:
            log.exception("could not release the lease on %s; it lapses by itself", key)

    async def _request_release(self, key: str) -> None:
        local = self._held.get(key)
        if local is not None:
            if local.on_release is not None:
                local.on_release()
            return
        await self._db.fetchrow(_NOTIFY, CHANNEL, key)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        held = self._held.get(payload)
        if held is not None and held.on_release is not None:
            held.on_release()

    async def _listen_forever(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                closed = asyncio.Event()
                conn.add_termination_listener(_setter(closed))
                await conn.execute(_NODE_LOCK, self._node)
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listening.set()
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lock release listener: %s; reconnecting", exc)
            finally:
                if self._listening.is_set():
                    # Without its node lock this node looks dead to the others, who may take
                    # its leases at once: stop writing, commit what arrived.
                    self.interrupt_all()
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            await asyncio.sleep(1)

    def interrupt_all(self) -> None:
        for held in list(self._held.values()):
            if held.on_release is not None:
                held.on_release()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            held = dict(self._held)
            if not held:
                continue
            try:
                rows = await self._db.fetch(_RENEW, self._lease, [h.holder for h in held.values()])
                renewed = {row["holder"] for row in rows}
            except Exception:
                log.exception("could not renew leases; retrying")
                continue
            for entry in held.values():
                if entry.holder not in renewed and entry.on_release is not None:
                    # The lease lapsed (e.g. a long stall): stop writing, someone may own it.
                    entry.on_release()


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()
