"""The service graph, built from the settings inside an AsyncExitStack: the one place that picks
adapters and hands each part its own section of the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from tusingest import __version__
from tusingest.auth import Authenticator
from tusingest.domain import OperationKind, Upload
from tusingest.elements.directory import ElementDirectory
from tusingest.elements.tls import client_context
from tusingest.elements.token import AdminToken, MintedToken
from tusingest.keys import ensure_dev_keys
from tusingest.limiters.memory import MemoryRateLimiter
from tusingest.observability import PrometheusMetrics
from tusingest.pipeline.delete import Delete, Deletions
from tusingest.pipeline.delivery import Deliver
from tusingest.pipeline.discard import Discard
from tusingest.pipeline.ingest import Ingest, IngestPolicy
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.saga import SagaPolicy, StoreSaga
from tusingest.pipeline.scan import ClamdScanner
from tusingest.pipeline.tracing import NoTracer
from tusingest.pipeline.transfer import Transfer
from tusingest.pipeline.transfer_requests import Transfers
from tusingest.pipeline.verdicts import Verdicts
from tusingest.pipeline.webhooks import WebhookOutbox
from tusingest.ports import (
    Catalog,
    FileRegistrar,
    Locker,
    OperationStore,
    Outbox,
    RateLimiter,
    Registry,
    Scanner,
    SessionStore,
    Staging,
    TokenSource,
    Tracer,
)
from tusingest.ratelimits import RateLimits
from tusingest.receivers.http import HttpWebhookSender
from tusingest.registry.admin import AdminFiles, AdminRegistry
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.local import LocalElementRegistry
from tusingest.registry.reload import ConfigReloader
from tusingest.settings.app import Settings
from tusingest.settings.storage import StorageSettings
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
    # Redis and its clients are imported only when Redis is configured (a node on the embedded
    # defaults never loads redis-py, nor the OpenTelemetry API that it imports).
    import redis.asyncio as aioredis

    from tusingest.registry.monitor import CapacityMonitor
    from tusingest.tracing import Tracing

log = logging.getLogger(__name__)

Task = Callable[[], Coroutine[Any, Any, None]]


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


@dataclass
class Storage:
    """The storage side of the graph: registry chain, element clients, registration."""

    chain: ChainRegistry
    elements: ElementDirectory
    registrar: FileRegistrar | None
    metrics: PrometheusMetrics
    tasks: list[Task]
    redis: aioredis.Redis | None = None  # the registry's Redis, when configured (readiness)
    admin: AdminRegistry | None = None  # the Admin Module, when configured (readiness)
    reloader: ConfigReloader | None = None  # the periodic registry reload, when enabled


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
        outbox, webhooks = _webhooks(settings, node, db, operations, storage, stack)
        catalog = SqlCatalog(db, outbox)
        sessions = SqlSessionStore(db, claim=claim, notes=catalog)
        tracer = NoTracer() if tracing is None else tracing.tracer
        runner, ingest = _runner(
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
            verdicts=Verdicts(
                runner,
                sessions,
                wait_seconds=config.completion_wait_seconds,
                retry_after=settings.storage.no_storage_retry_seconds,
            ),
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


async def open_storage(
    settings: Settings, stack: contextlib.AsyncExitStack, tracing: Tracing | None = None
) -> Storage:
    """Registry (Redis → Admin Module, or the embedded local element), SE clients with their
    breakers, the service-account token, and Admin Module registration when configured."""
    config = settings.storage
    metrics = PrometheusMetrics()
    session = _element_session(config, stack, tracing)
    token = await _token_source(settings, session)
    elements = ElementDirectory(
        session,
        token,
        config.breaker,
        timeout=config.se_timeout,
        max_retries=config.se_max_retries,
        slow_answer=config.se_slow_answer_seconds,
    )
    links: list[tuple[str, Registry]] = []
    tasks: list[Task] = []
    client: aioredis.Redis | None = None
    if config.redis_url:
        from tusingest.registry.redis import RedisRegistry

        client = open_redis(config, stack)
        # The legacy keys and the Admin Module's `artstore:storage_elements`, one source.
        redis_registry = RedisRegistry(
            client,
            prefix=config.key_prefix,
            cache_seconds=config.cache_seconds,
            thresholds=config.thresholds,
        )
        links.append(("redis", redis_registry))
        tasks.append(redis_registry.listen)
        if config.monitor_enabled:
            tasks.append(capacity_monitor(config, client, session).run_forever)
    else:
        local = LocalElementRegistry(
            config.local_storage_dir,
            config.local_element_id,
            thresholds=config.thresholds,
            interval=config.monitor_interval,
        )
        await local.refresh()
        links.append(("memory", local))
        tasks.append(local.run_forever)
    registrar: FileRegistrar | None = None
    admin: AdminRegistry | None = None
    if config.admin_module_url and token is not None:
        admin = AdminRegistry(config.admin_module_url, session, token)
        links.append(("admin", admin))
        registrar = AdminFiles(config.admin_module_url, session, token)
    chain = ChainRegistry(links, metrics)
    reloader: ConfigReloader | None = None
    if config.reload_enabled:
        reloader = ConfigReloader(chain, elements, metrics, config.reload_interval)
        tasks.append(reloader.run_forever)
    return Storage(
        chain, elements, registrar, metrics, tasks, redis=client, admin=admin, reloader=reloader
    )


def open_redis(config: StorageSettings, stack: contextlib.AsyncExitStack) -> aioredis.Redis:
    """The Redis client of REDIS_URL, closed with `stack`."""
    assert config.redis_url is not None
    import redis.asyncio as aioredis

    client = aioredis.from_url(config.redis_url, socket_connect_timeout=2, socket_timeout=5)
    stack.push_async_callback(client.aclose)
    return client


def _element_session(
    config: StorageSettings, stack: contextlib.AsyncExitStack, tracing: Tracing | None = None
) -> aiohttp.ClientSession:
    """The one session of every call to elements and the Admin Module (the capacity monitor's
    too); the `https://` ones are verified as `config.tls` says."""
    tls = client_context(config.tls)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=config.se_pool_size, ssl=tls),
        trace_configs=None if tracing is None else [tracing.client_config()],
    )
    stack.push_async_callback(session.close)
    return session


def capacity_monitor(
    config: StorageSettings,
    client: aioredis.Redis,
    session: aiohttp.ClientSession,
    *,
    node: str | None = None,
) -> CapacityMonitor:
    """The capacity monitor of the elements configured in Redis (`tusingest elements`)."""
    from tusingest.registry.configs import RedisElementConfigs
    from tusingest.registry.monitor import CapacityMonitor

    return CapacityMonitor(
        client,
        session,
        RedisElementConfigs(client, config.key_prefix),
        prefix=config.key_prefix,
        interval=config.monitor_interval,
        thresholds=config.thresholds,
        node=node or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
    )


@contextlib.asynccontextmanager
async def open_element_admin(
    settings: Settings,
) -> AsyncIterator[tuple[aioredis.Redis, CapacityMonitor]]:
    """What `tusingest elements` works with: the Redis client and a capacity monitor to probe
    an element with (never run as the cluster's monitor)."""
    async with contextlib.AsyncExitStack() as stack:
        config = settings.storage
        client = open_redis(config, stack)
        session = _element_session(config, stack)
        node = f"cli:{socket.gethostname()}:{os.getpid()}"
        yield client, capacity_monitor(config, client, session, node=node)


async def _token_source(settings: Settings, session: aiohttp.ClientSession) -> TokenSource | None:
    """SERVICE_ACCOUNT_PRIVATE_KEY_PATH, else the Admin Module with client credentials, else
    tokens minted with the dev key (for reference SEs started with the dev public key); none
    for the embedded local element."""
    config = settings.storage
    if config.sa_private_key_path is not None:
        return MintedToken(config.sa_private_key_path, name=config.sa_name, subject=config.sa_id)
    if config.sa_client_id and config.sa_client_secret and config.admin_module_url:
        return AdminToken(
            config.admin_module_url, session, config.sa_client_id, config.sa_client_secret
        )
    if not config.redis_url and not config.admin_module_url:
        return None
    private = settings.auth.dev_private_key_path
    log.info("storage elements get service-account tokens signed with the dev key %s", private)
    await asyncio.to_thread(ensure_dev_keys, private)
    return MintedToken(private, name=config.sa_name, subject=config.sa_id)


def _runner(
    settings: Settings,
    node: str,
    operations: OperationStore,
    sessions: SessionStore,
    staging: Staging,
    catalog: Catalog,
    storage: Storage,
    tracer: Tracer,
) -> tuple[Runner, Ingest]:
    """The durable runner with a handler for every operation kind, and its ingest."""
    pipeline = settings.pipeline
    scanner: Scanner | None = None
    if pipeline.virus_scan_enabled and pipeline.clamd_url:
        scanner = ClamdScanner(pipeline.clamd_url, timeout=pipeline.attempt_timeout_seconds)
    else:
        log.warning("VIRUS_SCAN_ENABLED=off: completed uploads are NOT scanned for viruses")
    pipeline.workdir.mkdir(parents=True, exist_ok=True)
    saga = StoreSaga(
        storage.chain,
        storage.elements,
        operations,
        storage.metrics,
        SagaPolicy(
            thresholds=settings.storage.thresholds,
            retry_after=settings.storage.no_storage_retry_seconds,
        ),
        tracer,
    )
    ingest = Ingest(
        sessions,
        staging,
        catalog,
        saga,
        storage.registrar,
        scanner,
        IngestPolicy(
            validation=pipeline.validation,
            compression=pipeline.compression,
            workdir=pipeline.workdir,
            temporary_ttl_days=settings.storage.temporary_ttl_days,
            crash_at=pipeline.crash_at_step,
        ),
        metrics=storage.metrics,
        tracer=tracer,
        # The completing request waits on the runner: woken at the verdict, not at its end.
        decided=lambda upload_id: runner.announce(upload_id),
    )
    # A copy left on a dead element is retried about when its breaker lets calls through.
    discard_wait = min(60.0, max(1.0, settings.storage.breaker.timeout_seconds))
    runner = Runner(
        operations,
        {
            OperationKind.INGEST: ingest,
            OperationKind.DISCARD: Discard(
                storage.elements, catalog, storage.metrics, discard_wait
            ),
            OperationKind.DELETE: Delete(
                storage.elements,
                catalog,
                storage.registrar,
                storage.metrics,
                discard_wait,
                crash_at=pipeline.crash_at_step,
            ),
            OperationKind.TRANSFER: Transfer(
                storage.elements,
                catalog,
                sessions,
                operations,
                storage.registrar,
                storage.metrics,
                workdir=pipeline.workdir,
                retry_after=discard_wait,
                temporary_ttl_days=settings.storage.temporary_ttl_days,
                crash_at=pipeline.crash_at_step,
                tracer=tracer,
            ),
        },
        RunnerPolicy(
            max_attempts=pipeline.max_attempts,
            attempt_timeout=pipeline.attempt_timeout_seconds,
            lease_seconds=pipeline.lease_seconds,
        ),
        node=node,
        on_end=lambda kind, status: storage.metrics.operation_finished(kind.value, status),
    )
    return runner, ingest


def _webhooks(
    settings: Settings,
    node: str,
    db: Database,
    operations: OperationStore,
    storage: Storage,
    stack: contextlib.AsyncExitStack,
) -> tuple[Outbox | None, list[Runner]]:
    """With WEBHOOK_URLS: the outbox queueing deliveries with the audit notes, and a runner of
    their own (deliveries never take the place of an ingest, however many wait)."""
    config = settings.pipeline.webhooks
    if not config.enabled:
        return None, []
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.concurrency),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    stack.push_async_callback(session.close)
    # A give-up's note (webhook_failed) is no event: written without the outbox.
    deliver = Deliver(HttpWebhookSender(session, config.timeout_seconds), SqlCatalog(db), config)
    attempt = config.timeout_seconds + 30  # the POST, then recording how it went
    runner = Runner(
        operations,
        {OperationKind.WEBHOOK: deliver},
        RunnerPolicy(
            max_attempts=settings.pipeline.max_attempts,
            attempt_timeout=attempt,
            lease_seconds=max(settings.pipeline.lease_seconds, attempt + 30),
            concurrency=config.concurrency,
        ),
        node=node,
        on_end=lambda kind, status: storage.metrics.operation_finished(kind.value, status),
    )
    log.info("webhooks: every event goes to %d receiver(s)", len(config.urls))
    return WebhookOutbox(config.urls, runner.wake), [runner]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
