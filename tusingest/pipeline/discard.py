"""The `discard` operation: remove a copy an abandoned store attempt may have left on an
element (compensation), retried until the element answers."""

from __future__ import annotations

import logging
from dataclasses import replace

from tusingest.domain import Operation
from tusingest.errors import TransientError
from tusingest.pipeline.runner import Progress
from tusingest.pipeline.saga import DiscardState
from tusingest.ports import Catalog, Elements, Metrics

log = logging.getLogger(__name__)


class Discard:
    """Implements the runner's `Handler` for kind `discard` (subject = file id)."""

    def __init__(
        self, elements: Elements, catalog: Catalog, metrics: Metrics, retry_after: float
    ) -> None:
        self._elements = elements
        self._catalog = catalog
        self._metrics = metrics
        self._retry_after = retry_after

    async def run(self, op: Operation, progress: Progress) -> DiscardState:
        state = DiscardState.from_json(op.state)
        placement = state.placement
        breaker = self._elements.breaker(placement.element_id)
        if not breaker.allows():
            # The element is known to be down: wait for it without hammering it, and
            # without using up attempts (a copy left there must still go, however late).
            raise _Wait(f"{placement.element_id} is unavailable (circuit open)", self._retry_after)
        try:
            await self._elements.element(placement.info()).delete(placement.file_id)
        except TransientError as exc:
            breaker.record_failure()
            self._metrics.breaker(placement.element_id, breaker.state)
            raise _Wait(str(exc), self._retry_after) from exc
        except OSError as exc:
            raise _Wait(str(exc), self._retry_after) from exc
        breaker.record_success()
        self._metrics.breaker(placement.element_id, breaker.state)
        log.info("discarded %s from %s", placement.file_id, placement.element_id)
        return replace(state, discarded=True)

    async def give_up(self, op: Operation, error: str) -> None:
        placement = DiscardState.from_json(op.state).placement
        log.error("could not discard %s from %s: %s; remove it by hand",
                  placement.file_id, placement.element_id, error)  # fmt: skip
        await self._catalog.audit(
            "tusingest", "discard_failed", placement.file_id,
            {**placement.to_json(), "error": error},
        )  # fmt: skip


class _Wait(TransientError):
    code = "element_unavailable"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
