"""The registry chain: each source in turn (Redis → Admin Module, or the embedded memory
registry) until one names an element; which one answered is kept for metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from tusingest.domain import WRITABLE_MODES, ElementInfo, ElementMode
from tusingest.ports import Metrics, Registry

log = logging.getLogger(__name__)


class ChainRegistry:
    """Implements `RegistryChain`. A source that fails (Redis down, Admin Module 5xx) or has
    no element of the mode falls through to the next; when none has any, the answer is empty
    and `last_errors` says why."""

    def __init__(
        self, links: Sequence[tuple[str, Registry]], metrics: Metrics | None = None
    ) -> None:
        if not links:
            raise ValueError("a registry chain needs at least one source")
        self._links = list(links)
        self._metrics = metrics
        self._last_source = "none"
        self.last_errors: list[str] = []  # why each source gave nothing, last call
        self.last_failures: list[str] = []  # the sources among them that failed outright

    @property
    def names(self) -> list[str]:
        """The sources, in the order they are asked."""
        return [name for name, _ in self._links]

    @property
    def last_source(self) -> str:
        return self._last_source

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        errors: list[str] = []
        failures: list[str] = []
        for index, (name, registry) in enumerate(self._links):
            started = time.monotonic()
            try:
                found = await registry.elements(mode)
            except Exception as exc:  # any source failing must not stop the next one
                log.warning("registry %s unavailable: %s", name, exc)
                errors.append(f"{name}: {exc}")
                failures.append(name)
                continue
            if self._metrics is not None:
                took = time.monotonic() - started
                self._metrics.capacity_lookup(name, took, fallback=bool(found) and index > 0)
            if found:
                self._last_source = name
                self.last_errors, self.last_failures = errors, failures
                return found
            errors.append(f"{name}: no {mode.value} element")
        self._last_source = "none"
        self.last_errors, self.last_failures = errors, failures
        return []

    async def element(self, element_id: str) -> ElementInfo | None:
        for name, registry in self._links:
            try:
                found = await registry.element(element_id)
            except Exception as exc:  # any source failing must not stop the next one
                log.warning("registry %s unavailable: %s", name, exc)
                continue
            if found is not None:
                return found
        return None

    async def invalidate(self) -> None:
        for name, registry in self._links:
            try:
                await registry.invalidate()
            except Exception as exc:
                log.warning("registry %s: could not invalidate: %s", name, exc)

    async def snapshot(self) -> dict[str, ElementInfo]:
        """Every element of the upload modes, by id (for the periodic reload); `last_source` is
        then the source that listed them (the first mode's that had any), `none` if no mode
        had one: a mode with no element must not hide where the others came from."""
        found: dict[str, ElementInfo] = {}
        source = "none"
        for mode in WRITABLE_MODES:
            for info in await self.elements(mode):
                found[info.element_id] = info
            if source == "none":
                source = self._last_source
        self._last_source = source
        return found
