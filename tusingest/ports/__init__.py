"""Protocols at the seams: session store, staging bytes and per-upload locks, operations, the
catalog and what its audit notes bring along, storage elements and registries, webhook
receivers, rate limiters.

The seams live in one module per side: `state` (sessions, staging, leases, operations, the
catalog), `storage` (elements and registries) and `external` (scanner, webhooks, rate limits,
metrics, tracing); every one is importable from here.
"""

from __future__ import annotations

from tusingest.ports.external import (
    Attribute,
    Metrics,
    RateLimiter,
    Scanner,
    Span,
    Tracer,
    WebhookSender,
)
from tusingest.ports.state import (
    Catalog,
    Locker,
    OperationStore,
    Outbox,
    ReleaseRequest,
    SessionStore,
    Staging,
    StagingWriter,
    StatusQueries,
)
from tusingest.ports.storage import (
    Breaker,
    Elements,
    FileRegistrar,
    Registry,
    RegistryChain,
    StorageElement,
    TokenSource,
)

__all__ = [
    "Attribute",
    "Breaker",
    "Catalog",
    "Elements",
    "FileRegistrar",
    "Locker",
    "Metrics",
    "OperationStore",
    "Outbox",
    "RateLimiter",
    "Registry",
    "RegistryChain",
    "ReleaseRequest",
    "Scanner",
    "SessionStore",
    "Span",
    "Staging",
    "StagingWriter",
    "StatusQueries",
    "StorageElement",
    "TokenSource",
    "Tracer",
    "WebhookSender",
]
