"""The storage side of the service graph: the registry chain, the element clients and their one
session, the service-account token, Admin Module registration and the capacity monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from tusingest.elements.directory import ElementDirectory
from tusingest.elements.tls import client_context
from tusingest.elements.token import AdminToken, MintedToken
from tusingest.keys import ensure_dev_keys
from tusingest.observability import PrometheusMetrics
from tusingest.ports import FileRegistrar, Registry, TokenSource
from tusingest.registry.admin import AdminFiles, AdminRegistry
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.local import LocalElementRegistry
from tusingest.registry.reload import ConfigReloader
from tusingest.settings.app import Settings
from tusingest.settings.storage import StorageSettings

if TYPE_CHECKING:
    # Redis and its clients are imported only when Redis is configured (a node on the embedded
    # defaults never loads redis-py, nor the OpenTelemetry API that it imports).
    import redis.asyncio as aioredis

    from tusingest.registry.monitor import CapacityMonitor
    from tusingest.tracing import Tracing

log = logging.getLogger(__name__)

Task = Callable[[], Coroutine[Any, Any, None]]


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
