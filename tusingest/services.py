"""The service graph: opened from Settings inside an AsyncExitStack; the only adapter importer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tusingest.auth import Authenticator
from tusingest.config import Settings
from tusingest.elements.local import LocalElement
from tusingest.errors import ConfigError
from tusingest.keys import ensure_dev_keys
from tusingest.pipeline.ingest import Ingest, IngestPolicy
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.scan import ClamdScanner
from tusingest.ports import Catalog, Locker, Scanner, SessionStore, Staging
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
        runner = _runner(settings, engine, sessions, staging, catalog)
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
        ):
            stack.push_async_callback(_cancel, task)
        yield Services(
            settings=settings,
            uploads=uploads,
            sessions=sessions,
            authenticator=authenticator,
            runner=runner,
            catalog=catalog,
        )


def _runner(
    settings: Settings,
    engine: AsyncEngine,
    sessions: SessionStore,
    staging: Staging,
    catalog: Catalog,
) -> Runner:
    """The durable runner with the completion pipeline (`ingest`) on the embedded local SE."""
    pipeline = settings.pipeline
    scanner: Scanner | None = None
    if pipeline.virus_scan_enabled and pipeline.clamd_url:
        scanner = ClamdScanner(pipeline.clamd_url, timeout=pipeline.attempt_timeout_seconds)
    else:
        log.warning("VIRUS_SCAN_ENABLED=off: completed uploads are NOT scanned for viruses")
    workdir = settings.staging_dir / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    ingest = Ingest(
        sessions,
        staging,
        catalog,
        LocalElement(pipeline.local_storage_dir, pipeline.local_element_id),
        scanner,
        IngestPolicy(
            validation=pipeline.validation,
            compression=pipeline.compression,
            workdir=workdir,
            crash_at=pipeline.crash_at_step,
        ),
    )
    return Runner(
        SqlOperationStore(engine),
        {"ingest": ingest},
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
