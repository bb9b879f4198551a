"""The operators' view of a node and its cluster, as JSON: uploads in flight, the latest
verdicts, the operations queue, the storage elements and the node's own figures."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tusingest.domain import (
    WRITABLE_MODES,
    AuditEvent,
    CapacityStatus,
    ElementInfo,
    ElementMode,
    OperationStatus,
    PendingWork,
    Upload,
)
from tusingest.elements.directory import ElementDirectory
from tusingest.metadata import metadata_text
from tusingest.ports import StatusQueries
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.reload import ConfigReloader
from tusingest.store.uploads import Streaming, UploadStore

log = logging.getLogger(__name__)

T = TypeVar("T")

_QUERY_SECONDS = 3.0
_IN_PROGRESS = 50  # uploads in flight listed
_QUEUE_ITEMS = 50  # operations listed
_ERROR_CHARS = 300  # of an operation's last error
_MODE_ORDER = {mode: index for index, mode in enumerate(ElementMode)}
# The read-only modes first: the chain keeps which source answered its latest read (for the
# saga's metrics and messages), and the status page's reads leave it as edit and rw left it.
_LISTED_MODES = (*(m for m in ElementMode if m not in WRITABLE_MODES), *WRITABLE_MODES)
# The registry sources' names (kept in the JSON, the metrics and readiness) as people read them.
SOURCE_LABELS = {"redis": "Redis", "admin": "Admin Module", "memory": "embedded"}


class Throughput:
    """Bytes received and uploads completed on this node over a sliding window, in buckets of
    one second (memory is bounded by the window)."""

    def __init__(self, window: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._began = clock()
        self._buckets: collections.deque[list[int]] = collections.deque()  # [second, bytes, n]

    def _bucket(self) -> list[int]:
        second = int(self._clock())
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
            while self._buckets[0][0] <= second - self.window:
                self._buckets.popleft()
        return self._buckets[-1]

    def add_bytes(self, count: int) -> None:
        self._bucket()[1] += count

    def add_upload(self) -> None:
        self._bucket()[2] += 1

    def rates(self) -> tuple[float, float]:
        """(uploads per second, bytes per second) over the window, or over the node's life
        while that is shorter."""
        now = self._clock()
        since = int(now) - self.window
        span = max(1.0, min(float(self.window), now - self._began))
        recent = [b for b in self._buckets if b[0] > since]
        return sum(b[2] for b in recent) / span, sum(b[1] for b in recent) / span


@dataclass(frozen=True)
class NodeFacts:
    """Who this node is."""

    node_id: str
    version: str
    database: str  # sqlite | postgresql
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)


class StatusReport:
    """Builds the status document; a part that cannot be read (the database down, say) is
    reported as an error in its section, never as a failed page."""

    def __init__(
        self,
        queries: StatusQueries,
        uploads: UploadStore,
        chain: ChainRegistry,
        elements: ElementDirectory,
        reloader: ConfigReloader | None,
        throughput: Throughput,
        node: NodeFacts,
        *,
        recent: int = 20,
    ) -> None:
        self._queries = queries
        self._uploads = uploads
        self._chain = chain
        self._elements = elements
        self._reloader = reloader
        self._throughput = throughput
        self._node = node
        self._recent = recent

    async def snapshot(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        in_progress, recent, queue, elements = await asyncio.gather(
            _section(self._in_progress(now)),
            _section(self._latest()),
            _section(self._queue()),
            _section(self._storage()),
        )
        return {
            "generated_at": _iso(now),
            "node": self._node_figures(),
            "uploads": {"in_progress": in_progress, "recent": recent},
            "operations": queue,
            "storage": elements,
        }

    def _node_figures(self) -> dict[str, Any]:
        uploads_per_second, bytes_per_second = self._throughput.rates()
        node = self._node
        return {
            "id": node.node_id,
            "hostname": node.hostname,
            "pid": node.pid,
            "version": node.version,
            "database": node.database,
            "started_at": _iso(node.started_at),
            "uptime_seconds": round(time.monotonic() - node.started, 1),
            "window_seconds": self._throughput.window,
            "uploads_per_second": round(uploads_per_second, 3),
            "bytes_per_second": round(bytes_per_second),
            "receiving_here": len(self._uploads.streaming()),
        }

    async def _in_progress(self, now: datetime) -> list[dict[str, Any]]:
        live = {s.upload.id: s for s in self._uploads.streaming()}
        listed = await self._queries.receiving(now, _IN_PROGRESS)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for upload, leased in listed:
            seen.add(upload.id)
            rows.append(self._in_flight(upload, live.get(upload.id), leased))
        for upload_id, streaming in live.items():
            if upload_id not in seen:
                rows.append(self._in_flight(streaming.upload, streaming, True))
        # This node's streams first; otherwise the database's order (the most recently active
        # first: each commit pushes an upload's expiry on).
        rows.sort(key=lambda r: r["node"] != self._node.node_id)
        return rows

    def _in_flight(
        self, upload: Upload, streaming: Streaming | None, leased: bool
    ) -> dict[str, Any]:
        offset, rate, eta = upload.offset, None, None
        node = None
        if streaming is not None:
            offset, node = streaming.offset, self._node.node_id
            if streaming.seconds > 0:
                rate = streaming.received / streaming.seconds
            if rate and upload.length is not None:
                eta = max(0.0, (upload.length - offset) / rate)
        elif leased:
            node = "another node"
        return {
            "upload_id": upload.id,
            "owner": upload.owner,
            "filename": _filename(upload),
            "offset": offset,
            "length": upload.length,
            "percent": _percent(offset, upload.length),
            "bytes_per_second": None if rate is None else round(rate),
            "eta_seconds": None if eta is None else round(eta, 1),
            "node": node,
            "created_at": _iso(upload.created_at),
            "updated_at": _iso(upload.updated_at),
        }

    async def _latest(self) -> list[dict[str, Any]]:
        events = await self._queries.outcomes(self._recent)
        unnamed = [e.subject for e in events if e.action != "file_stored"]
        uploads = await self._queries.uploads(unnamed) if unnamed else {}
        return [_outcome(event, uploads.get(event.subject)) for event in events]

    async def _queue(self) -> dict[str, Any]:
        counts, items = await self._queries.queue(_QUEUE_ITEMS)
        return {"counts": counts, "items": [_work(item) for item in items]}

    async def _storage(self) -> dict[str, Any]:
        listed, sources = await known_elements(self._chain)
        reloaded = self._reloader.reloaded_at if self._reloader is not None else None
        return {
            "registry": {
                "sources": self._chain.names,
                "answered_by": sources,
                "reloaded_at": None if reloaded is None else _iso(reloaded),
                "labels": dict(SOURCE_LABELS),
            },
            "elements": [element_view(info, self._elements) for info in listed],
        }


async def writable_elements(chain: ChainRegistry) -> tuple[dict[str, ElementInfo], dict[str, str]]:
    """The elements uploads can go to, by id, and which registry source listed each mode (or
    why none could)."""
    found: dict[str, ElementInfo] = {}
    sources: dict[str, str] = {}
    for mode in WRITABLE_MODES:
        listed, sources[mode.value] = await _listed(chain, mode)
        found.update((info.element_id, info) for info in listed)
    return found, sources


async def known_elements(chain: ChainRegistry) -> tuple[list[ElementInfo], dict[str, str]]:
    """Every element the registry sources list, of every mode (one entry per element and mode:
    the embedded element takes both edit and rw), by mode, priority and id; and which source
    listed each mode (or why none could)."""
    found: list[ElementInfo] = []
    sources: dict[str, str] = {}
    for mode in _LISTED_MODES:
        listed, sources[mode.value] = await _listed(chain, mode)
        found.extend(listed)
    found.sort(key=lambda info: (_MODE_ORDER[info.mode], info.priority, info.element_id))
    return found, {mode.value: sources[mode.value] for mode in ElementMode}


async def _listed(chain: ChainRegistry, mode: ElementMode) -> tuple[list[ElementInfo], str]:
    """The elements of `mode` and the source that listed them (`none`, or why it failed)."""
    try:
        async with asyncio.timeout(_QUERY_SECONDS):
            listed = await chain.elements(mode)
        return listed, chain.last_source
    except Exception as exc:
        return [], f"error: {exc.__class__.__name__}"


def element_view(info: ElementInfo, elements: ElementDirectory) -> dict[str, Any]:
    """One element as readiness and the status page show it: `writable` when its mode takes
    uploads, `usable` when uploads can go there now."""
    breaker = elements.breaker(info.element_id).state
    writable = info.mode in WRITABLE_MODES
    usable = (
        writable and info.healthy and info.status is not CapacityStatus.FULL and breaker != "open"
    )
    return {
        "element_id": info.element_id,
        "mode": info.mode.value,
        "priority": info.priority,
        "endpoint": _public_endpoint(info.endpoint),
        "capacity_total": info.capacity_total,
        "capacity_used": info.capacity_used,
        "capacity_free": info.capacity_free,
        "used_percent": _percent(info.capacity_used, info.capacity_total),
        "capacity_status": info.status.value,
        "healthy": info.healthy,
        "breaker": breaker,
        "writable": writable,
        "usable": usable,
    }


async def _section(work: Awaitable[T]) -> T | dict[str, str]:
    try:
        async with asyncio.timeout(_QUERY_SECONDS):
            return await work
    except Exception as exc:
        log.warning("status: a section could not be read: %r", exc)
        return {"error": exc.__class__.__name__}


def _outcome(event: AuditEvent, upload: Upload | None) -> dict[str, Any]:
    detail = event.detail
    row: dict[str, Any] = {"at": _iso(event.at), "owner": event.actor}
    if event.action == "file_stored":
        return row | {
            "outcome": "stored",
            "file_id": event.subject,
            "upload_id": detail.get("upload_id"),
            "filename": detail.get("filename"),
            "size": detail.get("size"),
            "element_id": detail.get("element_id"),
        }
    rejected = event.action == "upload_rejected"
    return row | {
        "outcome": "rejected" if rejected else "failed",
        "upload_id": event.subject,
        "filename": _filename(upload) if upload is not None else None,
        "size": upload.length if upload is not None else None,
        "reason": detail.get("code") if rejected else "processing_failed",
        "message": str(detail.get("message") or detail.get("error") or "")[:_ERROR_CHARS],
    }


def _work(item: PendingWork) -> dict[str, Any]:
    retrying = item.status is OperationStatus.QUEUED and item.error is not None
    return {
        "id": item.id,
        "kind": item.kind,
        "subject": item.subject,
        "status": "retrying" if retrying else item.status.value,
        "step": item.step,
        "attempts": item.attempts,
        "next_attempt_at": _iso(item.next_attempt_at),
        "last_error": None if item.error is None else item.error[:_ERROR_CHARS],
        "updated_at": _iso(item.updated_at),
    }


def _filename(upload: Upload) -> str | None:
    try:
        meta = metadata_text(upload.metadata_raw)
    except Exception:
        return None
    return meta.get("filename") or meta.get("name")


def _percent(part: int, whole: int | None) -> float | None:
    if not whole:
        return None
    return round(min(100.0, part * 100 / whole), 1)


def _public_endpoint(endpoint: str) -> str:
    """The endpoint without credentials a URL might carry."""
    parts = urlsplit(endpoint)
    if parts.username is None and parts.password is None:
        return endpoint
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
