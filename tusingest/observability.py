"""Logging (text for humans, JSON lines for collectors) and Prometheus metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tusingest.logcontext import FILE_ID, REQUEST_ID, UPLOAD_ID, USER


class ContextFilter(logging.Filter):
    """Puts the request id, the user, the upload and the file of the current task on every
    record (`subject`: the two ids as text, or nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.user = USER.get()
        record.upload_id = upload_id = UPLOAD_ID.get()
        record.file_id = file_id = FILE_ID.get()
        parts = [f"upload={upload_id}"] if upload_id else []
        if file_id:
            parts.append(f"file={file_id}")
        record.subject = "".join(" " + part for part in parts)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "user": getattr(record, "user", "-"),
            "upload_id": getattr(record, "upload_id", None),
            "file_id": getattr(record, "file_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class NoiseFilter(logging.Filter):
    """What clients cause by the thousand (malformed requests, refused accepts when the
    descriptors run out) is logged as one WARNING line per kind and interval, with a count and
    the latest case, never as a traceback per event."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _noise_kind(record)
        if kind is None:
            return True
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = self._clock()
        if now - self._last.get(kind, -self._interval) < self._interval:
            return False
        count, self._counts[kind], self._last[kind] = self._counts[kind], 0, now
        latest = _first_line(record)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "%s: %d since the last report (latest: %s)"
        record.args = (kind, count, latest)
        record.exc_info = record.exc_text = None
        record.stack_info = None
        return True


def _noise_kind(record: logging.LogRecord) -> str | None:
    if record.name == "aiohttp.server" and record.exc_info:
        error = record.exc_info[1]
        if isinstance(error, HttpProcessingError):
            return "malformed requests"
    if record.name == "asyncio" and "socket.accept() out of system resource" in str(record.msg):
        return "refused connections (out of descriptors)"
    return None


def _first_line(record: logging.LogRecord) -> str:
    error = record.exc_info[1] if record.exc_info else None
    text = str(error) if error is not None else record.getMessage()
    return " ".join(text.split())[:200]


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s "
                "[%(request_id)s %(user)s%(subject)s]: %(message)s"
            )
        )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs are noise at INFO for an upload server; keep them one level down.
    logging.getLogger("aiohttp.access").setLevel(max(logging.getLevelName(level), logging.WARNING))
    noise = NoiseFilter()
    for name in ("aiohttp.server", "asyncio"):
        logging.getLogger(name).addFilter(noise)


_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class PrometheusMetrics:
    """Implements `Metrics` on a per-app Prometheus registry (no global collectors)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._selections = Counter(
            "storage_selection_total",
            "Storage-element selections",
            ["retention_policy", "status", "source"],
            registry=r,
        )
        selection_buckets = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)
        self._selection_seconds = Histogram(
            "storage_selection_duration_seconds",
            "Time to choose a storage element",
            ["retention_policy"],
            buckets=selection_buckets,
            registry=r,
        )
        self._selection_seconds_seed = Histogram(
            "artstore_ingester_storage_selection_duration_seconds",
            "Time to choose a storage element",
            ["retention_policy"],
            buckets=selection_buckets,
            registry=r,
        )
        self._reloads = Counter(
            "ingester_se_config_reload_total",
            "Reloads of the storage-element list",
            ["source", "status"],
            registry=r,
        )
        self._reload_seconds = Histogram(
            "ingester_se_config_reload_duration_seconds",
            "Time to reload the storage-element list",
            ["source"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
            registry=r,
        )
        self._endpoints = Gauge(
            "ingester_se_endpoints_count",
            "Storage elements known after the last reload",
            registry=r,
        )
        self._changes = Counter(
            "ingester_se_config_changes_total",
            "Storage elements added, removed or updated between reloads",
            ["change_type"],
            registry=r,
        )
        self._lazy = Counter(
            "ingester_lazy_se_config_reload_total",
            "Registry reloads forced by a storage-element failure",
            ["reason", "status"],
            registry=r,
        )
        self._breakers = Gauge(
            "ingester_se_circuit_breaker_state",
            "Circuit breaker per storage element (0 closed, 1 half-open, 2 open)",
            ["element_id"],
            registry=r,
        )
        self._breakers_seed = Gauge(
            "artstore_ingester_circuit_breaker_state",
            "Circuit breaker per storage element (0 closed, 1 half-open, 2 open)",
            ["element"],
            registry=r,
        )
        self._capacity_fallbacks = Counter(
            "ingester_capacity_fallback_total",
            "Element lists answered by a fallback source (the Admin Module) "
            "because the first (Redis) failed or had none",
            registry=r,
        )
        self._capacity_seconds = Histogram(
            "ingester_capacity_latency_seconds",
            "Time to read the element list and capacities, by registry source",
            ["source"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )

        self._uploads = Counter(
            "artstore_ingester_uploads_total",
            "Uploads by the pipeline's verdict",
            ["status"],
            registry=r,
        )
        self._upload_seconds = Histogram(
            "artstore_ingester_upload_duration_seconds",
            "From an upload's creation to its file being stored",
            buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 7200),
            registry=r,
        )
        self._upload_bytes = Histogram(
            "artstore_ingester_upload_size_bytes",
            "Size of the stored files (as uploaded)",
            buckets=tuple(float(1 << n) for n in range(10, 41, 3)),
            registry=r,
        )
        self._sagas = Counter(
            "artstore_ingester_saga_transactions_total",
            "Durable operations ended, by kind and outcome",
            ["kind", "status"],
            registry=r,
        )
        self._compensations = Counter(
            "artstore_ingester_saga_compensations_total",
            "Copies queued for removal by a saga being undone",
            registry=r,
        )
        self._compression = Histogram(
            "artstore_ingester_compression_ratio",
            "Stored size over original size of the files compressed",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self._received = Counter(
            "artstore_ingester_bytes_received_total",
            "Upload bytes received and handed to staging",
            registry=r,
        )
        self._in_progress = Gauge(
            "artstore_ingester_uploads_in_progress",
            "Requests streaming into uploads on this node now",
            registry=r,
        )
        self._requests = Counter(
            "artstore_ingester_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._request_seconds = Histogram(
            "artstore_ingester_http_request_duration_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300),
            registry=r,
        )

    def upload_finished(self, status: str, size: int | None, seconds: float | None) -> None:
        """A verdict: `stored` (with the size and the time since creation), `rejected`,
        `failed` or `terminated`."""
        self._uploads.labels(status).inc()
        if size is not None:
            self._upload_bytes.observe(size)
        if seconds is not None:
            self._upload_seconds.observe(seconds)

    def operation_finished(self, kind: str, status: str) -> None:
        self._sagas.labels(kind, status).inc()

    def compensations(self, count: int) -> None:
        self._compensations.inc(count)

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # The labelled children, looked up once per (route, method, status): routes and methods
        # are bounded sets, so is this cache.
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self._requests.labels(route, method, str(status)),
                self._request_seconds.labels(route, method),
            )
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def compression(self, original: int, stored: int) -> None:
        if original > 0:
            self._compression.observe(stored / original)

    def bytes_received(self, count: int) -> None:
        self._received.inc(count)

    def watch_in_progress(self, count: Callable[[], int]) -> None:
        """The uploads-in-progress gauge reads `count` at each scrape."""
        self._in_progress.set_function(count)

    def selection(self, retention_policy: str, status: str, source: str, seconds: float) -> None:
        self._selections.labels(retention_policy, status, source).inc()
        self._selection_seconds.labels(retention_policy).observe(seconds)
        self._selection_seconds_seed.labels(retention_policy).observe(seconds)

    def capacity_lookup(self, source: str, seconds: float, *, fallback: bool) -> None:
        self._capacity_seconds.labels(source).observe(seconds)
        if fallback:
            self._capacity_fallbacks.inc()

    def config_reload(self, source: str, status: str, seconds: float) -> None:
        self._reloads.labels(source, status).inc()
        self._reload_seconds.labels(source).observe(seconds)

    def endpoints(self, count: int) -> None:
        self._endpoints.set(count)

    def config_change(self, change_type: str) -> None:
        self._changes.labels(change_type).inc()

    def lazy_reload(self, reason: str, status: str) -> None:
        self._lazy.labels(reason, status).inc()

    def breaker(self, element_id: str, state: str) -> None:
        value = _BREAKER_STATES.get(state, 2)
        self._breakers.labels(element_id).set(value)
        self._breakers_seed.labels(element_id).set(value)

    def forget_element(self, element_id: str) -> None:
        for gauge in (self._breakers, self._breakers_seed):
            with contextlib.suppress(KeyError):
                gauge.remove(element_id)

    def exposition(self) -> bytes:
        """The text format served on GET /metrics."""
        return generate_latest(self.registry)
