"""Deleting a stored file: the `delete` operation (element → catalog → Admin Module → audit),
durable and resumed after a crash, and the request that starts it (owner or admin, edit-mode
elements only)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tusingest.domain import (
    AuditNote,
    ElementInfo,
    ElementMode,
    Operation,
    OperationKind,
    Principal,
)
from tusingest.errors import BadRequest, ElementUnavailable
from tusingest.pipeline import jobstate
from tusingest.pipeline.discard import remove_from_element
from tusingest.pipeline.faults import crash_point
from tusingest.pipeline.files import find_live
from tusingest.pipeline.runner import Progress, Runner
from tusingest.pipeline.saga import Placement
from tusingest.ports import Catalog, Elements, FileRegistrar, Metrics, OperationStore, RegistryChain
from tusingest.randomids import uuid4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeleteState:
    """The `delete` operation's state: where the file is, who asked, and how far it got."""

    file_id: str
    element_id: str
    endpoint: str
    mode: str
    actor: str
    address: str | None = None
    element_done: bool = False
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return jobstate.dump(self)

    @classmethod
    def from_json(cls, raw: Any) -> DeleteState:
        return jobstate.load(cls, raw)

    @property
    def placement(self) -> Placement:
        return Placement(self.element_id, self.endpoint, ElementMode(self.mode), self.file_id)


class Delete:
    """Implements the runner's `Handler` for kind `delete` (subject = file id)."""

    def __init__(
        self,
        elements: Elements,
        catalog: Catalog,
        registrar: FileRegistrar | None,
        metrics: Metrics,
        retry_after: float,
        crash_at: str | None = None,
    ) -> None:
        self._elements = elements
        self._catalog = catalog
        self._registrar = registrar
        self._metrics = metrics
        self._retry_after = retry_after
        self._crash_at = crash_at

    async def run(self, op: Operation, progress: Progress) -> DeleteState:
        state = DeleteState.from_json(op.state)
        if not state.element_done:
            await remove_from_element(
                self._elements, self._metrics, state.placement, self._retry_after
            )
            state = replace(state, element_done=True)
            await progress("element_deleted", state)
        crash_point(self._crash_at, "delete_catalog")
        await self._catalog.mark_deleted(
            state.file_id,
            datetime.now(UTC),
            AuditNote(
                state.actor,
                "file_deleted",
                state.file_id,
                {"element_id": state.element_id},
                address=state.address,
            ),
        )
        if self._registrar is not None:
            await self._registrar.unregister(state.file_id)
        log.info("deleted %s from %s", state.file_id, state.element_id)
        return replace(state, done=True)

    async def give_up(self, op: Operation, error: str) -> None:
        state = DeleteState.from_json(op.state)
        await self._catalog.audit(
            AuditNote(
                state.actor,
                "file_deleted",
                state.file_id,
                {"element_id": state.element_id, "error": error},
                address=state.address,
                outcome="failed",
            )
        )


class Deletions:
    """Starts deletions and waits a bounded time for them to end."""

    def __init__(
        self,
        catalog: Catalog,
        registry: RegistryChain,
        operations: OperationStore,
        runner: Runner,
        *,
        wait_seconds: float,
    ) -> None:
        self._catalog = catalog
        self._registry = registry
        self._operations = operations
        self._runner = runner
        self._wait = wait_seconds

    async def _element(self, element_id: str) -> ElementInfo:
        """The file's element, which must be in edit mode (400 otherwise); 503 when no
        registry knows it now."""
        info = await self._registry.element(element_id)
        if info is None:
            raise ElementUnavailable(element_id)
        if info.mode is not ElementMode.EDIT:
            raise BadRequest(
                "Cannot delete file from read-only Storage Element",
                code="file_in_readonly_storage",
            )
        return info

    async def delete(self, principal: Principal, file_id: str, address: str | None) -> bool:
        """Start deleting the file; True once it is gone, False while the operation still
        runs (the element is slow or down: it goes on in the background)."""
        entry = await find_live(self._catalog, principal, file_id)
        info = await self._element(entry.element_id)
        state = DeleteState(
            file_id=entry.file_id,
            element_id=info.element_id,
            endpoint=info.endpoint,
            mode=info.mode.value,
            actor=principal.sub,
            address=address,
        )
        await self._operations.enqueue(
            uuid4().hex, OperationKind.DELETE, entry.file_id, state.to_json()
        )
        self._runner.wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            # Usually this node runs it and wakes us; another node may have claimed it.
            await self._runner.wait(entry.file_id, max(0.0, min(0.25, deadline - loop.time())))
            current = await self._catalog.by_file(entry.file_id)
            if current is None or current.deleted_at is not None:
                return True
            if loop.time() >= deadline:
                return False
