"""Logging (text for humans, JSON lines for collectors) and Prometheus metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs are noise at INFO for an upload server; keep them one level down.
    logging.getLogger("aiohttp.access").setLevel(max(logging.getLevelName(level), logging.WARNING))


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
        self._selection_seconds = Histogram(
            "storage_selection_duration_seconds",
            "Time to choose a storage element",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
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

    def selection(self, retention_policy: str, status: str, source: str, seconds: float) -> None:
        self._selections.labels(retention_policy, status, source).inc()
        self._selection_seconds.observe(seconds)

    def config_reload(self, source: str, status: str, seconds: float) -> None:
        self._reloads.labels(source, status).inc()
        self._reload_seconds.observe(seconds)

    def endpoints(self, count: int) -> None:
        self._endpoints.set(count)

    def config_change(self, change_type: str) -> None:
        self._changes.labels(change_type).inc()

    def lazy_reload(self, reason: str, status: str) -> None:
        self._lazy.labels(reason, status).inc()

    def breaker(self, element_id: str, state: str) -> None:
        self._breakers.labels(element_id).set(_BREAKER_STATES.get(state, 2))

    def forget_element(self, element_id: str) -> None:
        with contextlib.suppress(KeyError):
            self._breakers.remove(element_id)

    def exposition(self) -> bytes:
        """The text format served on GET /metrics."""
        return generate_latest(self.registry)
