"""The seams to what lies beyond the node's state and storage: the virus scanner, webhook
receivers, rate limiters, and the metrics and traces the node reports."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from tusingest.domain import (
    ScanResult,
)


class Scanner(Protocol):
    """A virus scanner. Anything but a definite answer raises `ScannerUnavailable`."""

    async def scan(self, path: Path) -> ScanResult: ...

    async def ping(self) -> None: ...


class WebhookSender(Protocol):
    """POSTs one signed event to a webhook receiver."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """The receiver's status code (its answer is not read beyond that, redirects are not
        followed); `TransientError` when no answer came in time."""
        ...


class Metrics(Protocol):
    """What the storage side reports (Prometheus names in observability.py)."""

    def selection(self, retention_policy: str, status: str, source: str, seconds: float) -> None:
        """`storage_selection_total` + `storage_selection_duration_seconds`."""
        ...

    def config_reload(self, source: str, status: str, seconds: float) -> None: ...

    def capacity_lookup(self, source: str, seconds: float, *, fallback: bool) -> None:
        """`ingester_capacity_latency_seconds{source}`; `fallback` counts an answer from a
        source behind the first in `ingester_capacity_fallback_total`."""
        ...

    def compression(self, original: int, stored: int) -> None:
        """`artstore_ingester_compression_ratio` of a compressed file."""
        ...

    def endpoints(self, count: int) -> None: ...

    def config_change(self, change_type: str) -> None:
        """added | removed | updated."""
        ...

    def lazy_reload(self, reason: str, status: str) -> None: ...

    def breaker(self, element_id: str, state: str) -> None:
        """closed | half_open | open."""
        ...

    def forget_element(self, element_id: str) -> None:
        """Drop the series of an element that left the registry."""
        ...

    def upload_finished(self, status: str, size: int | None, seconds: float | None) -> None:
        """`artstore_ingester_uploads_total{status}`, and for a stored file its size and the
        time from the upload's creation."""
        ...

    def operation_finished(self, kind: str, status: str) -> None:
        """`artstore_ingester_saga_transactions_total{kind,status}` (success | failed)."""
        ...

    def compensations(self, count: int) -> None:
        """`artstore_ingester_saga_compensations_total`."""
        ...


# What a span attribute may hold.
Attribute = str | int | float | bool


class Span(Protocol):
    """One traced piece of work, open while its context manager is."""

    def set(self, key: str, value: Attribute) -> None: ...


class Tracer(Protocol):
    """Traces the pipeline's work: a span is the child of the one open around it, in this task
    or in the task that created this one."""

    def span(
        self, name: str, attributes: Mapping[str, Attribute] | None = None
    ) -> AbstractContextManager[Span]:
        """A span that is current inside the block; an exception leaving it is recorded."""
        ...


class RateLimiter(Protocol):
    """Token buckets by key: each holds up to `burst` tokens and refills at `rate` per second."""

    async def take(self, key: str, cost: float, rate: float, burst: float) -> float:
        """Take `cost` tokens (at most `burst`) from the bucket `key`: 0 when they were taken,
        else the seconds until they will be there (nothing taken). A store that cannot answer
        lets the request through (0): a limiter never stops uploads by being down."""
        ...
