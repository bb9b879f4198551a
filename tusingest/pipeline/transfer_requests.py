"""Starting a transfer (both elements checked first) and reporting on its progress."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

from tusingest.domain import (
    WRITABLE_MODES,
    CapacityStatus,
    OperationKind,
    OperationStatus,
    Principal,
)
from tusingest.errors import BadRequest, Conflict, ElementUnavailable, NotFound
from tusingest.pipeline.files import find_live
from tusingest.pipeline.runner import Runner
from tusingest.pipeline.transfer_state import TransferState
from tusingest.ports import Catalog, Elements, OperationStore, RegistryChain

# What a transfer's estimate assumes (bytes per second): two streams over a LAN.
_ASSUMED_RATE = 50 * 1024 * 1024


class Transfers:
    """Starts transfers (checking both elements first) and reports on them."""

    def __init__(
        self,
        catalog: Catalog,
        registry: RegistryChain,
        elements: Elements,
        operations: OperationStore,
        runner: Runner,
    ) -> None:
        self._catalog = catalog
        self._registry = registry
        self._elements = elements
        self._operations = operations
        self._runner = runner

    async def start(
        self,
        principal: Principal,
        file_id: str,
        *,
        destination_id: str,
        delete_source: bool,
        verify_checksum: bool,
        address: str | None,
    ) -> tuple[str, int]:
        """Queue the transfer; its id and an estimate of its duration in seconds."""
        entry = await find_live(self._catalog, principal, file_id)
        source = await self._registry.element(entry.element_id)
        if source is None:
            raise ElementUnavailable(entry.element_id)
        if destination_id == entry.element_id:
            raise Conflict(f"the file is on {destination_id} already", code="same_element")
        destination = await self._registry.element(destination_id)
        if destination is None:
            raise BadRequest(
                f"no storage element {destination_id!r} is registered",
                code="unknown_destination",
            )
        if destination.mode not in WRITABLE_MODES:
            raise BadRequest(
                f"{destination_id} is {destination.mode.value}: it takes no files",
                code="destination_not_writable",
            )
        full = destination.status is CapacityStatus.FULL
        if full or destination.capacity_free < entry.stored_size:
            raise Conflict(
                f"{destination_id} has no room for {entry.stored_size} bytes",
                code="destination_full",
            )
        if not destination.healthy or destination_id in self._elements.open_ids():
            raise Conflict(f"{destination_id} is unavailable now", code="destination_unavailable")
        transfer_id = str(uuid.uuid4())
        state = TransferState(
            transfer_id=transfer_id,
            file_id=entry.file_id,
            source_id=source.element_id,
            source_endpoint=source.endpoint,
            source_mode=source.mode.value,
            destination_id=destination.element_id,
            destination_endpoint=destination.endpoint,
            destination_mode=destination.mode.value,
            delete_source=delete_source,
            verify_checksum=verify_checksum,
            actor=principal.sub,
            address=address,
            size=entry.stored_size,
        )
        await self._operations.enqueue(
            uuid.UUID(transfer_id).hex, OperationKind.TRANSFER, entry.file_id, state.to_json()
        )
        self._runner.wake()
        return transfer_id, max(1, math.ceil(entry.stored_size / _ASSUMED_RATE))

    async def status(self, principal: Principal, transfer_id: str) -> dict[str, Any]:
        op_id = _operation_id(transfer_id)
        op = await self._operations.get(op_id) if op_id else None
        if op is None or op.kind is not OperationKind.TRANSFER:
            raise NotFound("transfer not found", code="transfer_not_found")
        state = TransferState.from_json(op.state)
        if not principal.may_access(state.actor):
            raise NotFound("transfer not found", code="transfer_not_found")
        status, error = state.status, state.error
        if op.status is OperationStatus.FAILED:
            status, error = "failed", error or op.error
        seconds = _seconds(state.started_at, state.completed_at)
        rate = state.bytes_transferred * 8 / 1e6 / seconds if seconds else None
        body: dict[str, Any] = {
            "transfer_id": state.transfer_id,
            "file_id": state.file_id,
            "status": status,
            "source_storage_element_id": state.source_id,
            "destination_storage_element_id": state.destination_id,
            "bytes_transferred": state.bytes_transferred,
            "bytes_total": state.size,
            "transfer_rate_mbps": None if rate is None else round(rate, 3),
            "started_at": state.started_at,
            "completed_at": state.completed_at,
            "delete_source": state.delete_source,
        }
        if status == "failed":
            body["error"] = error or "transfer_failed"
        elif op.error and status != "completed":
            body["last_error"] = op.error  # retrying
        return body


def _operation_id(transfer_id: str) -> str | None:
    try:
        value = uuid.UUID(transfer_id)
    except ValueError:
        return None
    return value.hex if str(value) == transfer_id.lower() else None


def _seconds(started: str | None, completed: str | None) -> float | None:
    if started is None or completed is None:
        return None
    elapsed = (datetime.fromisoformat(completed) - datetime.fromisoformat(started)).total_seconds()
    return max(elapsed, 1e-3)
