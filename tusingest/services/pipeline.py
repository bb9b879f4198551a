"""The pipeline side of the service graph: the durable runner with a handler for every operation
kind (ingest, discard, delete, transfer), and the webhooks' outbox and runner."""

from __future__ import annotations

import contextlib
import logging

import aiohttp

from tusingest.domain import OperationKind
from tusingest.pipeline.delete import Delete
from tusingest.pipeline.delivery import Deliver
from tusingest.pipeline.discard import Discard
from tusingest.pipeline.ingest import Ingest, IngestPolicy
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.saga import SagaPolicy, StoreSaga
from tusingest.pipeline.scan import ClamdScanner
from tusingest.pipeline.transfer import Transfer
from tusingest.pipeline.verdicts import Verdicts
from tusingest.pipeline.webhooks import WebhookOutbox
from tusingest.ports import Catalog, OperationStore, Outbox, Scanner, SessionStore, Staging, Tracer
from tusingest.receivers.http import HttpWebhookSender
from tusingest.services.storage import Storage
from tusingest.settings.app import Settings
from tusingest.store.catalog import SqlCatalog
from tusingest.store.db import Database

log = logging.getLogger(__name__)


def operation_runner(
    settings: Settings,
    node: str,
    operations: OperationStore,
    sessions: SessionStore,
    staging: Staging,
    catalog: Catalog,
    storage: Storage,
    tracer: Tracer,
) -> tuple[Runner, Ingest, Verdicts]:
    """The durable runner with a handler for every operation kind, its ingest, and the
    verdicts that completing requests wait for."""
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
        # The completing request is handed the verdict's row when it commits, not at the
        # operation's end.
        decided=lambda upload: verdicts.decided(upload),
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
    verdicts = Verdicts(
        runner,
        sessions,
        wait_seconds=settings.uploads.completion_wait_seconds,
        retry_after=settings.storage.no_storage_retry_seconds,
    )
    return runner, ingest, verdicts


def webhook_runners(
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
