"""The store saga: choose a storage element (sequential fill), put the file there, and queue
a durable `discard` for every element an abandoned attempt may have left bytes on.

Every placement (element + the file id used there) is persisted before the first byte is
sent, so after a crash the retry knows which elements may hold a copy: it resumes on the
last one if that is still acceptable, and compensates it otherwise. An abandoned placement is
never resumed (a retry on the same element gets a fresh file id), so a discard can never
remove the copy that is finally kept.
"""

from __future__ import annotations

import errno
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tusingest.domain import (
    CapacityStatus,
    ElementInfo,
    ElementMode,
    FileToStore,
    OperationKind,
    Retention,
    StoredFile,
    Thresholds,
)
from tusingest.errors import NoStorageAvailable, TusingestError
from tusingest.pipeline.jobstate import VERSION, VERSION_KEY
from tusingest.pipeline.placement import choose
from tusingest.pipeline.tracing import (
    CANDIDATES,
    ELEMENT_ID,
    MODE,
    REGISTRY_SOURCE,
    SIZE,
    STORAGE_SELECTION,
    NoTracer,
)
from tusingest.ports import Elements, Metrics, OperationStore, RegistryChain, Tracer
from tusingest.randomids import uuid4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """One attempt to keep the file on one element, under its own file id."""

    element_id: str
    endpoint: str
    mode: ElementMode
    file_id: str

    def to_json(self) -> dict[str, str]:
        return {
            "element_id": self.element_id,
            "endpoint": self.endpoint,
            "mode": self.mode.value,
            "file_id": self.file_id,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Placement:
        """KeyError/ValueError when `raw` is not a placement."""
        return cls(
            element_id=str(raw["element_id"]),
            endpoint=str(raw["endpoint"]),
            mode=ElementMode(raw["mode"]),
            file_id=str(raw["file_id"]),
        )

    def info(self) -> ElementInfo:
        """Enough of an `ElementInfo` to reach the element (for compensation)."""
        return ElementInfo(
            element_id=self.element_id,
            mode=self.mode,
            priority=0,
            endpoint=self.endpoint,
            capacity_total=0,
            capacity_used=0,
            capacity_free=0,
            status=CapacityStatus.OK,
            healthy=True,
        )

    def same_element(self, info: ElementInfo) -> bool:
        return (self.element_id, self.endpoint, self.mode) == (
            info.element_id,
            info.endpoint,
            info.mode,
        )


@dataclass(frozen=True)
class PlacementLog:
    """The saga's state: every placement tried, in order, and those abandoned since."""

    placements: tuple[Placement, ...] = ()
    abandoned: tuple[Placement, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "placements": [p.to_json() for p in self.placements],
            "abandoned": [p.to_json() for p in self.abandoned],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PlacementLog:
        return cls(
            placements=tuple(Placement.from_json(p) for p in raw.get("placements", ())),
            abandoned=tuple(Placement.from_json(p) for p in raw.get("abandoned", ())),
        )

    @property
    def all(self) -> tuple[Placement, ...]:
        return (*self.placements, *self.abandoned)


def discard_id(placement: Placement) -> str:
    """The discard operation's id: one per (element, file id), so queuing it twice is safe."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{placement.element_id}/{placement.file_id}").hex


@dataclass(frozen=True)
class DiscardState:
    """The `discard` operation's state: the placement to remove, and whether it is gone."""

    placement: Placement
    discarded: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            VERSION_KEY: VERSION,
            **self.placement.to_json(),
            "discarded": self.discarded,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DiscardState:
        return cls(Placement.from_json(raw), bool(raw.get("discarded", False)))


@dataclass(frozen=True)
class SagaPolicy:
    thresholds: Mapping[ElementMode, Thresholds]
    retry_after: float  # seconds before trying again when no element can take the file


class StoreSaga:
    """Places one file; `state` is the operation's persisted result (placements so far)."""

    def __init__(
        self,
        registry: RegistryChain,
        elements: Elements,
        operations: OperationStore,
        metrics: Metrics,
        policy: SagaPolicy,
        tracer: Tracer | None = None,
    ) -> None:
        self._registry = registry
        self._elements = elements
        self._operations = operations
        self._metrics = metrics
        self._policy = policy
        self._tracer = tracer or NoTracer()

    async def place(
        self,
        earlier: PlacementLog,
        persist: Callable[[PlacementLog], Awaitable[None]],
        build: Callable[[str], FileToStore],
        *,
        retention: Retention,
        size: int,
    ) -> StoredFile:
        """Store the file on the first element that takes it; `earlier` is what earlier
        attempts recorded, `persist` records every change to it before it matters."""
        placements = list(earlier.placements)
        abandoned = list(earlier.abandoned)
        for placement in abandoned:  # a crash may have come between persisting and queuing
            await self._discard(placement)
        resumable = placements[-1] if placements and placements[-1] not in abandoned else None

        async def record() -> None:
            await persist(PlacementLog(tuple(placements), tuple(abandoned)))

        async def abandon(placement: Placement) -> None:
            abandoned.append(placement)
            await record()
            await self._discard(placement)

        mode = retention.mode
        tried: set[str] = set()
        while True:
            candidates = [
                c for c in await self._choose(mode, size, retention) if c.element_id not in tried
            ]
            if resumable is not None and not any(resumable.same_element(c) for c in candidates):
                await abandon(resumable)  # it may hold a copy we will not use
                resumable = None
            if not candidates:
                raise self._none_left(mode, size, tried)
            if resumable is not None:  # finish where the last attempt was going
                last = resumable
                candidates.sort(key=lambda c: not last.same_element(c))
            info = candidates[0]
            tried.add(info.element_id)
            if resumable is not None and resumable.same_element(info):
                placement = resumable
            else:
                placement = Placement(info.element_id, info.endpoint, info.mode, str(uuid4()))
                placements.append(placement)
                await record()
            resumable = None
            breaker = self._elements.breaker(info.element_id)
            try:
                stored = await self._elements.element(info).store(build(placement.file_id))
            except (TusingestError, OSError) as exc:
                reason = _reason(exc)
                log.warning("storing on %s failed (%s): %s; compensating and trying the next "
                            "element", info.element_id, reason, exc)  # fmt: skip
                if reason not in _REFUSALS:
                    breaker.record_failure()
                self._metrics.breaker(info.element_id, breaker.state)
                await abandon(placement)
                await self._lazy_reload(reason)
                continue
            breaker.record_success()
            self._metrics.breaker(info.element_id, breaker.state)
            return stored

    async def compensate(self, placed: PlacementLog) -> None:
        """Queue discards for every placement of `placed` (the saga is being undone)."""
        for placement in placed.all:
            await self._discard(placement)
        if placed.all:
            self._metrics.compensations(len(placed.all))

    async def _choose(
        self, mode: ElementMode, size: int, retention: Retention
    ) -> list[ElementInfo]:
        started = time.monotonic()
        with self._tracer.span(STORAGE_SELECTION, {MODE: mode.value, SIZE: size}) as span:
            try:
                known = await self._registry.elements(mode)
            except Exception:
                seconds = time.monotonic() - started
                self._metrics.selection(retention.value, "failed", "none", seconds)
                raise
            found = choose(
                known,
                mode=mode,
                size=size,
                open_circuits=self._elements.open_ids(),
                thresholds=self._policy.thresholds.get(mode),
            )
            status = "success" if found else "no_storage"
            source = self._registry.last_source
            self._metrics.selection(retention.value, status, source, time.monotonic() - started)
            span.set(REGISTRY_SOURCE, source)
            span.set(CANDIDATES, len(found))
            if found:
                span.set(ELEMENT_ID, found[0].element_id)  # the first choice
        return found

    async def _lazy_reload(self, reason: str) -> None:
        try:
            await self._registry.invalidate()
        except Exception as exc:
            log.warning("lazy registry reload (%s) failed: %s", reason, exc)
            self._metrics.lazy_reload(reason, "failed")
            return
        self._metrics.lazy_reload(reason, "success")

    async def _discard(self, placement: Placement) -> None:
        await self._operations.enqueue(
            discard_id(placement),
            OperationKind.DISCARD,
            placement.file_id,
            DiscardState(placement).to_json(),
        )

    def _none_left(self, mode: ElementMode, size: int, tried: set[str]) -> Exception:
        why = "; ".join(self._registry.last_errors)
        failed = f"; failed now: {', '.join(sorted(tried))}" if tried else ""
        return NoStorageAvailable(
            f"no {mode.value} storage element can take {size} bytes now"
            f"{f' ({why})' if why else ''}{failed}",
            retry_after=self._policy.retry_after,
        )


# An element that answered and refused is not broken: its breaker stays as it is.
_REFUSALS = frozenset({"rejected", "not_found", "insufficient_storage"})


def _reason(exc: Exception) -> str:
    """The lazy-reload reason label for an element failure."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "insufficient_storage"  # what an SE would call 507
    if isinstance(exc, TusingestError):
        if exc.code == "element_full":
            return "insufficient_storage"
        if exc.code == "element_not_found":
            return "not_found"
        if exc.code in ("element_rejected", "element_unauthorized"):
            return "rejected"
        return "unavailable"
    return "connection_error"
