"""Placement: sequential fill, skips, the CRITICAL size rule, mode mapping, capacity status."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from tusingest.domain import CapacityStatus, ElementInfo, ElementMode, Retention, capacity_status
from tusingest.pipeline.placement import (
    CRITICAL_MAX_SIZE,
    choose,
)

MiB = 1 << 20
GiB = 1 << 30


def se(
    element_id: str,
    priority: int,
    *,
    mode: ElementMode = ElementMode.EDIT,
    free: int = 10 * GiB,
    total: int = 100 * GiB,
    status: CapacityStatus = CapacityStatus.OK,
    healthy: bool = True,
) -> ElementInfo:
    return ElementInfo(
        element_id=element_id,
        mode=mode,
        priority=priority,
        endpoint=f"http://{element_id}:8010",
        capacity_total=total,
        capacity_used=total - free,
        capacity_free=free,
        status=status,
        healthy=healthy,
    )


def ids(elements: list[ElementInfo]) -> list[str]:
    return [e.element_id for e in elements]


def pick(
    elements: list[ElementInfo],
    *,
    size: int = MiB,
    mode: ElementMode = ElementMode.EDIT,
    open_circuits: Collection[str] = (),
    thresholds: tuple[float, float, float] | None = None,
) -> list[str]:
    chosen = choose(
        elements, mode=mode, size=size, open_circuits=open_circuits, thresholds=thresholds
    )
    return ids(chosen)


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("temporary", ElementMode.EDIT),
        ("permanent", ElementMode.RW),
        ("", ElementMode.EDIT),
        ("forever", ElementMode.EDIT),
        ("PERMANENT", ElementMode.RW),
        (None, ElementMode.EDIT),
    ],
)
def test_retention_picks_the_mode(policy: str | None, mode: ElementMode) -> None:
    assert Retention.of(policy).mode is mode


def test_empty_gives_nothing() -> None:
    assert choose([], mode=ElementMode.EDIT, size=MiB, open_circuits=set()) == []


def test_sequential_fill_by_ascending_priority() -> None:
    elements = [se("c", 30), se("a", 10), se("b", 20)]
    assert pick(elements) == ["a", "b", "c"]


def test_ties_broken_by_element_id() -> None:
    elements = [se("se-b", 1), se("se-a", 1), se("se-0", 2)]
    assert pick(elements) == ["se-a", "se-b", "se-0"]


def test_spills_over_when_first_is_full() -> None:
    elements = [se("a", 1, status=CapacityStatus.FULL), se("b", 2), se("c", 3)]
    assert pick(elements) == ["b", "c"]


def test_returns_the_elements_themselves() -> None:
    first = se("a", 1)
    assert choose([first], mode=ElementMode.EDIT, size=1, open_circuits=())[0] is first


def test_skips_other_modes() -> None:
    elements = [
        se("edit", 1, mode=ElementMode.EDIT),
        se("rw", 2, mode=ElementMode.RW),
        se("ro", 0, mode=ElementMode.RO),
        se("ar", 0, mode=ElementMode.AR),
    ]
    assert pick(elements, mode=ElementMode.EDIT) == ["edit"]
    assert pick(elements, mode=ElementMode.RW) == ["rw"]


def test_skips_unhealthy() -> None:
    assert pick([se("a", 1, healthy=False), se("b", 2)]) == ["b"]


def test_skips_open_circuits() -> None:
    elements = [se("a", 1), se("b", 2), se("c", 3)]
    assert pick(elements, open_circuits={"a", "c"}) == ["b"]
    assert pick(elements, open_circuits=["a", "b", "c"]) == []


def test_skips_too_small() -> None:
    elements = [se("a", 1, free=MiB - 1), se("b", 2, free=MiB)]
    assert pick(elements, size=MiB) == ["b"]


def test_warning_is_accepted() -> None:
    big = 500 * MiB
    assert pick([se("a", 1, status=CapacityStatus.WARNING)], size=big) == ["a"]


def test_critical_accepts_only_up_to_100_mb() -> None:
    elements = [se("crit", 1, status=CapacityStatus.CRITICAL), se("ok", 2)]
    assert pick(elements, size=100 * MiB) == ["crit", "ok"]
    assert pick(elements, size=100 * MiB + 1) == ["ok"]
    assert pick(elements, size=CRITICAL_MAX_SIZE + 1) == ["ok"]


def test_all_skipped_gives_nothing() -> None:
    elements = [
        se("full", 1, status=CapacityStatus.FULL),
        se("sick", 2, healthy=False),
        se("tiny", 3, free=10),
        se("rw", 4, mode=ElementMode.RW),
        se("tripped", 5),
    ]
    assert pick(elements, open_circuits={"tripped"}) == []


def test_post_upload_full_skipped_only_with_thresholds() -> None:
    # 97 % used; a 2 GiB file on 100 GiB takes it to 99 % → FULL after the upload
    elements = [se("nearly", 1, free=3 * GiB, status=CapacityStatus.WARNING), se("roomy", 2)]
    assert pick(elements, size=2 * GiB) == ["nearly", "roomy"]
    assert pick(elements, size=2 * GiB, thresholds=(85, 92, 98)) == ["roomy"]
    assert pick(elements, size=MiB, thresholds=(85, 92, 98)) == ["nearly", "roomy"]


@pytest.mark.parametrize(
    ("used", "status"),
    [
        (0, CapacityStatus.OK),
        (8499, CapacityStatus.OK),
        (8500, CapacityStatus.WARNING),
        (9199, CapacityStatus.WARNING),
        (9200, CapacityStatus.CRITICAL),
        (9799, CapacityStatus.CRITICAL),
        (9800, CapacityStatus.FULL),
        (10000, CapacityStatus.FULL),
        (10500, CapacityStatus.FULL),
    ],
)
def test_capacity_status_boundaries(used: int, status: CapacityStatus) -> None:
    assert capacity_status(10000, used) is status


def test_capacity_status_zero_total_is_full() -> None:
    assert capacity_status(0, 0) is CapacityStatus.FULL


def test_capacity_status_custom_thresholds() -> None:
    # Admin Module's edit thresholds: 90 / 95 / 99
    edit = (90.0, 95.0, 99.0)
    assert capacity_status(100, 89, edit) is CapacityStatus.OK
    assert capacity_status(100, 92, edit) is CapacityStatus.WARNING
    assert capacity_status(100, 98, edit) is CapacityStatus.CRITICAL
    assert capacity_status(100, 99, edit) is CapacityStatus.FULL
