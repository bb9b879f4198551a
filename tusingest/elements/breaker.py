"""Per-storage-element circuit breakers: closed → open → half-open → closed, clock injected."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from tusingest.settings.storage import BreakerSettings


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One element's breaker.

    Closed: calls pass; `failure_threshold` consecutive failures open it. Open: calls are
    refused until `timeout_seconds` have elapsed, then it is half-open. Half-open: calls pass;
    any failure reopens it, `success_threshold` consecutive successes close it.
    """

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._settings.timeout_seconds
        ):
            self._state = BreakerState.HALF_OPEN
            self._successes = 0
        return self._state

    def allows(self) -> bool:
        return self.state is not BreakerState.OPEN

    def record_success(self) -> None:
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self._settings.success_threshold:
                self._close()
        elif state is BreakerState.CLOSED:
            self._failures = 0

    def record_failure(self) -> None:
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._open()
        elif state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._settings.failure_threshold:
                self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._successes = 0

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0


class Breakers:
    """One `CircuitBreaker` per element id, created on first use."""

    def __init__(
        self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._by_id: dict[str, CircuitBreaker] = {}

    def get(self, element_id: str) -> CircuitBreaker:
        breaker = self._by_id.get(element_id)
        if breaker is None:
            breaker = CircuitBreaker(self._settings, self._clock)
            self._by_id[element_id] = breaker
        return breaker

    def open_ids(self) -> set[str]:
        """Elements whose breaker refuses calls now (placement skips them)."""
        return {eid for eid, breaker in self._by_id.items() if not breaker.allows()}

    def forget(self, element_id: str) -> None:
        """Drop a removed element's breaker."""
        self._by_id.pop(element_id, None)

    def states(self) -> dict[str, str]:
        """Element id → state name, for metrics."""
        return {eid: str(breaker.state) for eid, breaker in self._by_id.items()}
