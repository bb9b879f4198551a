"""The service graph, built from the settings inside an AsyncExitStack: the one place that picks
adapters and hands each part its own section of the settings. The storage side is built in
`storage.py`, the runners of the pipeline in `pipeline.py`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from tusingest import __version__
from tusingest.auth import Authenticator
from tusingest.domain import OperationKind, Upload
from tusingest.keys import ensure_dev_keys
from tusingest.limiters.memory import MemoryRateLimiter
from tusingest.pipeline.delete import Deletions
from tusingest.pipeline.runner import Runner
from tusingest.pipeline.tracing import NoTracer
from tusingest.pipeline.transfer_requests import Transfers
from tusingest.pipeline.verdicts import Verdicts
from tusingest.ports import Catalog, Locker, RateLimiter, SessionStore
from tusingest.ratelimits import RateLimits
from tusingest.services.pipeline import operation_runner, webhook_runners
from tusingest.services.storage import Storage, open_element_admin, open_storage
from tusingest.settings.app import Settings
from tusingest.statusreport import NodeFacts, StatusReport, Throughput
from tusingest.store.catalog import SqlCatalog
from tusingest.store.database import open_checked
from tusingest.store.db import Database
from tusingest.store.locks import MemoryLocker
from tusingest.store.operations import SqlOperationStore
from tusingest.store.pglocks import PgLocker, asyncpg_dsn
from tusingest.store.reaper import Reaper
from tusingest.store.sql import IngestClaim, SqlSessionStore, ingest_operation_id
from tusingest.store.staging import FileStaging
from tusingest.store.status import SqlStatusQueries
from tusingest.store.uploads import UploadPolicy, UploadStore, utcnow

if TYPE_CHECKING:
    from tusingest.tracing import Tracing

__all__ = [
    "SERVICES",
    "Lifecycle",
    "Services",
    "Storage",
    "open_element_admin",
    "open_services",
    "open_storage",
]


class Lifecycle:
    """Draining a node before it stops (a rolling deploy behind a load balancer)."""

    def __init__(self, locker: Locker, runners: Sequence[Runner]) -> None:
        self._locker = locker
        self._runners = tuple(runners)
        self.draining = False

    async def drain(self, grace_seconds: float) -> None:
        """Readiness fails and new requests are refused from now on; requests streaming into
        uploads commit what arrived and end; running operations get `grace_seconds` to finish,
        then hand their lease back."""
        self.draining = True
        self._locker.interrupt_all()
        await asyncio.gather(*(runner.stop(grace_seconds) for runner in self._runners))


@dataclass(frozen=True)
class Services:
    """What the HTTP surface uses."""

    uploads: UploadStore
    sessions: SessionStore
    verdicts: Verdicts
    catalog: Catalog
    deletions: Deletions
    transfers: Transfers
    authenticator: Authenticator
    storage: Storage
    lifecycle: Lifecycle
    status: StatusReport
    limits: RateLimits


SERVICES = web.AppKey("services", Services)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, tracing: Tracing | None = None
) -> AsyncIterator[Services]:
    """The graph; `tracing` (None: off) traces the pipeline and the calls it makes."""
    async with contextlib.AsyncExitStack() as stack:
        auth = settings.auth
        if auth.enabled and auth.uses_dev_keys:
            await asyncio.to_thread(ensure_dev_keys, auth.dev_private_key_path)
        authenticator = Authenticator.from_settings(auth)

        db = await open_checked(settings.database.url)
        stack.push_async_callback(db.close)

        config = settings.uploads
        await asyncio.to_thread(config.staging_dir.mkdir, parents=True, exist_ok=True)
        node = f"node-{uuid.uuid4().hex[:12]}"
        # The node that completes an upload runs its ingest at once (no claim round trip).
        claim = IngestClaim(node, settings.pipeline.lease_seconds)
        locker = await _locker(settings, db, stack)
        staging = FileStaging(config.staging_dir)
        storage = await open_storage(settings, stack, tracing)
        operations = SqlOperationStore(db)
        outbox, webhooks = webhook_runners(settings, node, db, operations, storage, stack)
        catalog = SqlCatalog(db, outbox)
        sessions = SqlSessionStore(db, claim=claim, notes=catalog)
        tracer = NoTracer() if tracing is None else tracing.tracer
        runner, ingest, verdicts = operation_runner(
            settings, node, operations, sessions, staging, catalog, storage, tracer
        )
        runners = [runner, *webhooks]
        throughput = Throughput()

        def completed(upload: Upload) -> None:
            throughput.add_upload()
            ingest.hand_over(upload)  # its first attempt need not read the row back
            runner.adopt(ingest_operation_id(upload.id), OperationKind.INGEST, upload.id)

        def received(count: int) -> None:
            throughput.add_bytes(count)
            storage.metrics.bytes_received(count)

        uploads = UploadStore(
            sessions,
            staging,
            locker,
            UploadPolicy(
                ttl_seconds=config.session_ttl_seconds,
                max_size=config.max_file_size,
                md5=config.md5,
                max_batch_files=config.max_batch_files,
                max_batch_bytes=config.max_batch_size,
                body_timeout=config.body_timeout_seconds,
            ),
            on_complete=completed,
            on_bytes=received,
        )
        storage.metrics.watch_in_progress(lambda: len(uploads.streaming()))
        reaper = Reaper(
            sessions,
            staging,
            locker,
            ttl_seconds=config.session_ttl_seconds,
            clock=utcnow,
            forget=uploads.forget,
        )
        for task in (
            asyncio.create_task(reaper.run_forever(config.reaper_interval_seconds)),
            *(asyncio.create_task(each.run_forever()) for each in runners),
            *(asyncio.create_task(start()) for start in storage.tasks),
        ):
            stack.push_async_callback(_cancel, task)
        deletions = Deletions(
            catalog,
            storage.chain,
            operations,
            runner,
            wait_seconds=config.completion_wait_seconds,
        )
        yield Services(
            uploads=uploads,
            sessions=sessions,
            verdicts=verdicts,
            catalog=catalog,
            deletions=deletions,
            transfers=Transfers(catalog, storage.chain, storage.elements, operations, runner),
            authenticator=authenticator,
            storage=storage,
            lifecycle=Lifecycle(locker, runners),
            limits=RateLimits(_rate_limiter(settings, storage, stack), settings.ratelimits),
            status=StatusReport(
                SqlStatusQueries(db),
                uploads,
                storage.chain,
                storage.elements,
                storage.reloader,
                throughput,
                NodeFacts(
                    node_id=node,
                    version=__version__,
                    database="sqlite" if settings.database.is_sqlite else "postgresql",
                ),
            ),
        )


def _rate_limiter(
    settings: Settings, storage: Storage, stack: contextlib.AsyncExitStack
) -> RateLimiter:
    """Buckets in Redis (RATE_LIMIT_REDIS_URL, else REDIS_URL) shared by the nodes, else in
    this process."""
    config = settings.ratelimits
    if not config.enabled or config.redis_url is None:
        return MemoryRateLimiter()
    import redis.asyncio as aioredis

    from tusingest.limiters.redis import RedisRateLimiter

    client = storage.redis
    if client is None or config.redis_url != settings.storage.redis_url:
        client = aioredis.from_url(config.redis_url, socket_connect_timeout=1, socket_timeout=2)
        stack.push_async_callback(client.aclose)
    return RedisRateLimiter(client, prefix=config.key_prefix)


async def _locker(settings: Settings, db: Database, stack: contextlib.AsyncExitStack) -> Locker:
    """In process for the embedded database; leases in PostgreSQL for a cluster."""
    wait = settings.uploads.lock_timeout_seconds
    if settings.database.is_sqlite:
        return MemoryLocker(wait)
    locker = PgLocker(db, asyncpg_dsn(settings.database.url), wait_seconds=wait)
    await locker.start()
    stack.push_async_callback(locker.stop)
    return locker


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
