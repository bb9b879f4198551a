"""Placement: which storage elements may take a file, in sequential-fill order (pure)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from tusingest.domain import CapacityStatus, ElementInfo, ElementMode, Thresholds, capacity_status

# An element in CRITICAL state takes only files up to this size (the rest go elsewhere).
CRITICAL_MAX_SIZE = 100 * 1024 * 1024


def acceptable(
    element: ElementInfo,
    *,
    mode: ElementMode,
    size: int,
    open_circuits: Collection[str],
    thresholds: Thresholds | None = None,
) -> bool:
    """Whether `element` may take a file of `size` bytes now (see `choose`)."""
    if element.mode is not mode or not element.healthy:
        return False
    if element.element_id in open_circuits:
        return False
    if element.status is CapacityStatus.FULL or element.capacity_free < size:
        return False
    if element.status is CapacityStatus.CRITICAL and size > CRITICAL_MAX_SIZE:
        return False
    if thresholds is not None:
        after = capacity_status(element.capacity_total, element.capacity_used + size, thresholds)
        if after is CapacityStatus.FULL:
            return False
    return True


def choose(
    elements: Sequence[ElementInfo],
    *,
    mode: ElementMode,
    size: int,
    open_circuits: Collection[str],
    thresholds: Thresholds | None = None,
) -> list[ElementInfo]:
    """Candidates in fill order (ascending priority, ties by element id): the first is the
    choice, the rest are fall-backs for retries. Skips other modes, unhealthy, FULL and
    open-circuit elements, those with less free space than `size`, and CRITICAL ones for
    files over 100 MB. With `thresholds`, also skips elements the file would make FULL."""
    candidates = [
        e
        for e in elements
        if acceptable(e, mode=mode, size=size, open_circuits=open_circuits, thresholds=thresholds)
    ]
    return sorted(candidates, key=lambda e: (e.priority, e.element_id))
