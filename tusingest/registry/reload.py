"""Periodic reload of the storage-element list: what was added, removed or changed is logged
and counted, and a removed element's client and breaker are dropped."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from tusingest.domain import ElementInfo
from tusingest.ports import Elements, Metrics
from tusingest.registry.chain import ChainRegistry

log = logging.getLogger(__name__)


def _config(info: ElementInfo) -> tuple[object, ...]:
    return (info.mode, info.endpoint, info.priority, info.status, info.healthy)


class ConfigReloader:
    """Re-reads the registry chain every `interval` seconds (and on demand)."""

    def __init__(
        self, chain: ChainRegistry, elements: Elements, metrics: Metrics, interval: float
    ) -> None:
        self._chain = chain
        self._elements = elements
        self._metrics = metrics
        self._interval = interval
        self.reloaded_at: datetime | None = None  # the last reload that got an answer
        self._known: dict[str, ElementInfo] | None = None

    @property
    def known(self) -> dict[str, ElementInfo]:
        return dict(self._known or {})

    async def reload(self) -> bool:
        """One reload; False when every source failed (the previous list is kept)."""
        started = time.monotonic()
        await self._chain.invalidate()
        try:
            current = await self._chain.snapshot()
        except Exception as exc:
            log.warning("storage-element reload failed: %s", exc)
            self._metrics.config_reload("none", "failed", time.monotonic() - started)
            return False
        source = self._chain.last_source
        if not current and self._chain.last_failures and self._known:
            # Every source down is no evidence that the elements are gone.
            errors = "; ".join(self._chain.last_errors)
            log.warning("storage-element reload: %s; keeping the last list", errors)
            self._metrics.config_reload(source, "failed", time.monotonic() - started)
            return False
        self._metrics.config_reload(source, "success", time.monotonic() - started)
        self._metrics.endpoints(len(current))
        self.reloaded_at = datetime.now(UTC)
        previous = self._known
        self._known = current
        if previous is None:
            log.info("storage elements (%s): %s", source, ", ".join(sorted(current)) or "none")
            return True
        for element_id in sorted(current.keys() - previous.keys()):
            info = current[element_id]
            log.info("storage element added: %s (%s, %s)", element_id, info.mode, info.endpoint)
            self._metrics.config_change("added")
        for element_id in sorted(previous.keys() - current.keys()):
            log.info("storage element removed: %s", element_id)
            self._elements.forget(element_id)
            self._metrics.forget_element(element_id)
            self._metrics.config_change("removed")
        for element_id in sorted(current.keys() & previous.keys()):
            before, after = previous[element_id], current[element_id]
            if _config(before) != _config(after):
                log.info("storage element updated: %s: %s → %s", element_id,
                         _describe(before), _describe(after))  # fmt: skip
                self._metrics.config_change("updated")
        return True

    async def run_forever(self) -> None:
        while True:
            try:
                await self.reload()
            except Exception:
                log.exception("storage-element reload failed; retrying next interval")
            await asyncio.sleep(self._interval)


def _describe(info: ElementInfo) -> str:
    health = "healthy" if info.healthy else "unhealthy"
    return f"{info.mode} {info.endpoint} priority {info.priority} {info.status} {health}"
