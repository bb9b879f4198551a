"""The `discard` operation: remove a copy an abandoned store attempt may have left on an
element (compensation), retried until the element answers."""

from __future__ import annotations

import logging
from dataclasses import replace

from tusingest.domain import AuditNote, Operation
from tusingest.errors import TransientError
from tusingest.pipeline.runner import Progress
from tusingest.pipeline.saga import DiscardState, Placement
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
        entry = await self._catalog.by_file(placement.file_id)
        live = entry is not None and entry.deleted_at is None
        if live and entry is not None and entry.element_id == placement.element_id:
            # The copy became the live one (a transfer moved the file there since).
            log.info("kept %s on %s: it is the live copy", placement.file_id,
                     placement.element_id)  # fmt: skip
            return replace(state, discarded=False)
        await remove_from_element(self._elements, self._metrics, placement, self._retry_after)
        log.info("discarded %s from %s", placement.file_id, placement.element_id)
        return replace(state, discarded=True)

    async def give_up(self, op: Operation, error: str) -> None:
        placement = DiscardState.from_json(op.state).placement
        log.error("could not discard %s from %s: %s; remove it by hand",
                  placement.file_id, placement.element_id, error)  # fmt: skip
        await self._catalog.audit(
            AuditNote(
                "tusingest",
                "discard_failed",
                placement.file_id,
                {**placement.to_json(), "error": error},
                outcome="failed",
            )
        )


async def remove_from_element(
    elements: Elements, metrics: Metrics, placement: Placement, retry_after: float
) -> None:
    """Delete `placement`'s file from its element (absent counts as done). An element known to
    be down, or failing now, makes the operation wait `retry_after` without using up attempts:
    a file that must go must go, however late."""
    breaker = elements.breaker(placement.element_id)
    if not breaker.allows():
        raise _Wait(f"{placement.element_id} is unavailable (circuit open)", retry_after)
    try:
        await elements.element(placement.info()).delete(placement.file_id)
    except TransientError as exc:
        breaker.record_failure()
        metrics.breaker(placement.element_id, breaker.state)
        raise _Wait(str(exc), retry_after) from exc
    except OSError as exc:
        raise _Wait(str(exc), retry_after) from exc
    breaker.record_success()
    metrics.breaker(placement.element_id, breaker.state)


class _Wait(TransientError):
    code = "element_unavailable"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
