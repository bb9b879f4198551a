"""The service graph: opened from Settings inside an AsyncExitStack; the only adapter importer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tusingest.auth import Authenticator
from tusingest.config import Settings
from tusingest.domain import ElementInfo, ElementMode, capacity_status
from tusingest.elements.directory import ElementDirectory
from tusingest.elements.token import AdminToken, MintedToken
from tusingest.errors import ConfigError
from tusingest.keys import ensure_dev_keys
from tusingest.observability import PrometheusMetrics
from tusingest.pipeline.discard import Discard
from tusingest.pipeline.ingest import Ingest, IngestPolicy
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.saga import DISCARD, SagaPolicy, StoreSaga
from tusingest.pipeline.scan import ClamdScanner
from tusingest.ports import (
    Catalog,
    FileRegistrar,
    Locker,
    Registry,
    Scanner,
    SessionStore,
    Staging,
    TokenSource,
)
from tusingest.registry.admin import AdminFiles, AdminRegistry
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.configs import RedisElementConfigs
from tusingest.registry.memory import MemoryRegistry
from tusingest.registry.monitor import CapacityMonitor
from tusingest.registry.redis import RedisRegistry
from tusingest.registry.reload import ConfigReloader
from tusingest.store import revision
from tusingest.store.catalog import SqlCatalog
from tusingest.store.locks import MemoryLocker
from tusingest.store.operations import SqlOperationStore
from tusingest.store.pglocks import PgLocker, asyncpg_dsn
from tusingest.store.reaper import Reaper
from tusingest.store.sql import SqlSessionStore, create_engine
from tusingest.store.staging import FileStaging
from tusingest.store.uploads import UploadPolicy, UploadStore, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    uploads: UploadStore
    sessions: SessionStore
    authenticator: Authenticator
    runner: Runner
    catalog: Catalog
    storage: Storage


SERVICES = web.AppKey("services", Services)


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with contextlib.AsyncExitStack() as stack:
        if settings.auth.enabled and settings.auth.uses_dev_keys:
            await asyncio.to_thread(ensure_dev_keys, settings.auth.dev_private_key_path)
        authenticator = Authenticator.from_settings(settings.auth)

        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        await _ensure_schema(settings, engine)

        settings.staging_dir.mkdir(parents=True, exist_ok=True)
        sessions = SqlSessionStore(engine)
        locker: Locker
        if settings.is_sqlite:
            locker = MemoryLocker(settings.lock_timeout_seconds)
        else:
            pg_locker = PgLocker(
                engine,
                asyncpg_dsn(settings.database_url),
                wait_seconds=settings.lock_timeout_seconds,
            )
            await pg_locker.start()
            stack.push_async_callback(pg_locker.stop)
            locker = pg_locker
        catalog = SqlCatalog(engine)
        staging = FileStaging(settings.staging_dir)
        storage = await _storage(settings, stack)
        runner = _runner(settings, engine, sessions, staging, catalog, storage)
        uploads = UploadStore(
            sessions,
            staging,
            locker,
            UploadPolicy(ttl_seconds=settings.session_ttl_seconds, max_size=settings.max_file_size),
            on_complete=lambda _upload_id: runner.wake(),
        )
        reaper = Reaper(
            sessions,
            staging,
            locker,
            ttl_seconds=settings.session_ttl_seconds,
            clock=utcnow,
            forget=uploads.forget,
        )
        for task in (
            asyncio.create_task(_reap_forever(reaper, settings.reaper_interval_seconds)),
            asyncio.create_task(runner.run_forever()),
            *(asyncio.create_task(start()) for start in storage.tasks),
        ):
            stack.push_async_callback(_cancel, task)
        yield Services(
            settings=settings,
            uploads=uploads,
            sessions=sessions,
            authenticator=authenticator,
            runner=runner,
            catalog=catalog,
            storage=storage,
        )


@dataclass
class Storage:
    """The storage side of the graph: registry chain, element clients, registration."""

    chain: ChainRegistry
    elements: ElementDirectory
    registrar: FileRegistrar | None
    metrics: PrometheusMetrics
    tasks: list[Callable[[], Coroutine[Any, Any, None]]]


async def _storage(settings: Settings, stack: contextlib.AsyncExitStack) -> Storage:
    """Registry (Redis → Admin Module, or the embedded local element), SE clients with their
    breakers, the service-account token, and Admin Module registration when configured."""
    config = settings.storage
    metrics = PrometheusMetrics()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=config.se_pool_size)
    )
    stack.push_async_callback(session.close)
    token = await _token_source(settings, session)
    elements = ElementDirectory(
        session,
        token,
        config.breaker,
        timeout=config.se_timeout,
        max_retries=config.se_max_retries,
    )
    links: list[tuple[str, Registry]] = []
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if config.redis_url:
        client = aioredis.from_url(config.redis_url, socket_connect_timeout=2, socket_timeout=5)
        stack.push_async_callback(client.aclose)
        redis_registry = RedisRegistry(
            client, prefix=config.key_prefix, cache_seconds=config.cache_seconds
        )
        links.append(("redis", redis_registry))
        tasks.append(redis_registry.listen)
        if config.monitor_enabled:
            monitor = CapacityMonitor(
                client,
                session,
                RedisElementConfigs(client, config.key_prefix),
                prefix=config.key_prefix,
                interval=config.monitor_interval,
                thresholds=config.thresholds,
                node=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            )
            tasks.append(monitor.run_forever)
    else:
        local = MemoryRegistry()
        links.append(("memory", local))
        await _refresh_local(settings, local)
        tasks.append(lambda: _refresh_local_forever(settings, local))
    registrar: FileRegistrar | None = None
    if config.admin_module_url and token is not None:
        links.append(("admin", AdminRegistry(config.admin_module_url, session, token)))
        registrar = AdminFiles(config.admin_module_url, session, token)
    chain = ChainRegistry(links)
    if config.reload_enabled:
        tasks.append(ConfigReloader(chain, elements, metrics, config.reload_interval).run_forever)
    return Storage(chain, elements, registrar, metrics, tasks)


async def _token_source(settings: Settings, session: aiohttp.ClientSession) -> TokenSource | None:
    """SERVICE_ACCOUNT_PRIVATE_KEY_PATH, else the Admin Module with client credentials, else
    tokens minted with the dev key (for reference SEs started with the dev public key); none
    for the embedded local element."""
    config = settings.storage
    if config.sa_private_key_path is not None:
        return MintedToken(config.sa_private_key_path, name=config.sa_name)
    if config.sa_client_id and config.sa_client_secret and config.admin_module_url:
        return AdminToken(
            config.admin_module_url, session, config.sa_client_id, config.sa_client_secret
        )
    if not config.redis_url and not config.admin_module_url:
        return None
    private = settings.auth.dev_private_key_path
    log.info("storage elements get service-account tokens signed with the dev key %s", private)
    await asyncio.to_thread(ensure_dev_keys, private)
    return MintedToken(private, name=config.sa_name)


async def _refresh_local(settings: Settings, registry: MemoryRegistry) -> None:
    """The embedded local element's capacity is its filesystem's; it takes both modes."""
    root = settings.pipeline.local_storage_dir
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    usage = await asyncio.to_thread(shutil.disk_usage, root)
    used = usage.total - usage.free  # as an SE reports it (contract §7.1)
    registry.put(
        *(
            ElementInfo(
                element_id=settings.pipeline.local_element_id,
                mode=mode,
                priority=100,
                endpoint=root.as_uri(),
                capacity_total=usage.total,
                capacity_used=used,
                capacity_free=usage.free,
                status=capacity_status(usage.total, used, settings.storage.thresholds[mode]),
                healthy=True,
            )
            for mode in (ElementMode.EDIT, ElementMode.RW)
        )
    )


async def _refresh_local_forever(settings: Settings, registry: MemoryRegistry) -> None:
    while True:
        await asyncio.sleep(settings.storage.monitor_interval)
        try:
            await _refresh_local(settings, registry)
        except OSError as exc:
            log.warning("local storage element: cannot read capacity: %s", exc)


def _runner(
    settings: Settings,
    engine: AsyncEngine,
    sessions: SessionStore,
    staging: Staging,
    catalog: Catalog,
    storage: Storage,
) -> Runner:
    """The durable runner: the completion pipeline (`ingest`) and its compensations."""
    pipeline = settings.pipeline
    scanner: Scanner | None = None
    if pipeline.virus_scan_enabled and pipeline.clamd_url:
        scanner = ClamdScanner(pipeline.clamd_url, timeout=pipeline.attempt_timeout_seconds)
    else:
        log.warning("VIRUS_SCAN_ENABLED=off: completed uploads are NOT scanned for viruses")
    workdir = settings.staging_dir / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    operations = SqlOperationStore(engine)
    saga = StoreSaga(
        storage.chain,
        storage.elements,
        operations,
        storage.metrics,
        SagaPolicy(
            thresholds=settings.storage.thresholds,
            retry_after=settings.storage.no_storage_retry_seconds,
        ),
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
            workdir=workdir,
            temporary_ttl_days=settings.storage.temporary_ttl_days,
            crash_at=pipeline.crash_at_step,
        ),
    )
    # A copy left on a dead element is retried about when its breaker lets calls through.
    discard_wait = min(60.0, max(1.0, settings.storage.breaker.timeout_seconds))
    return Runner(
        operations,
        {
            "ingest": ingest,
            DISCARD: Discard(storage.elements, catalog, storage.metrics, discard_wait),
        },
        RunnerPolicy(
            max_attempts=pipeline.max_attempts,
            attempt_timeout=pipeline.attempt_timeout_seconds,
            lease_seconds=pipeline.lease_seconds,
        ),
    )


async def migrate(settings: Settings) -> str:
    """Upgrade the schema to head (`tusingest migrate`); returns the head revision."""
    if settings.is_sqlite:
        # The embedded database lives in a data dir that may not exist yet.
        await asyncio.to_thread(_sqlite_dir(settings).mkdir, parents=True, exist_ok=True)
    # alembic stays resident (~11 MiB) once imported: load it only when a migration is due.
    from tusingest.store import schema

    try:
        await schema.upgrade(settings.database_url)
    except (OSError, DBAPIError) as exc:
        raise ConfigError("DATABASE_URL", f"cannot migrate: {_db_reason(exc)}") from None
    return schema.head_revision()


def _sqlite_dir(settings: Settings) -> Path:
    path = make_url(settings.database_url).database
    return Path(path).parent if path and path != ":memory:" else Path(".")


def _db_reason(exc: OSError | DBAPIError) -> str:
    # The driver's message ("database x does not exist"), without SQLAlchemy's boilerplate.
    return str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)


async def _ensure_schema(settings: Settings, engine: AsyncEngine) -> None:
    """SQLite (embedded) migrates itself; PostgreSQL must be migrated explicitly."""
    try:
        current = await revision.current_revision(engine)
    except (OSError, DBAPIError) as exc:
        raise ConfigError("DATABASE_URL", f"cannot reach the database: {_db_reason(exc)}") from None
    head = revision.HEAD
    if current != head and settings.is_sqlite:
        await migrate(settings)
    elif current != head:
        raise ConfigError(
            "DATABASE_URL",
            f"the database schema is at revision {current or 'none'}, this version needs "
            f"{head}: run `tusingest migrate` first",
        )


async def _reap_forever(reaper: Reaper, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            reaped = await reaper.reap()
            if reaped:
                log.info("expired %d upload(s)", reaped)
        except Exception:
            log.exception("upload reaper failed; retrying next interval")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
