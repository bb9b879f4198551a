"""Embedded registry: the storage elements from the configuration and `tusingest elements add`."""

from __future__ import annotations

from collections.abc import Iterable

from tusingest.domain import ElementInfo, ElementMode


class MemoryRegistry:
    """Implements `Registry` over an in-process dict of `ElementInfo` by element id."""

    def __init__(self, elements: Iterable[ElementInfo] = ()) -> None:
        self._elements: dict[str, ElementInfo] = {}
        for info in elements:
            self.put(info)

    def put(self, info: ElementInfo) -> None:
        """Add the element, or replace what is known about it."""
        self._elements[info.element_id] = info

    def remove(self, element_id: str) -> None:
        """Forget the element (absent is not an error)."""
        self._elements.pop(element_id, None)

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        found = [info for info in self._elements.values() if info.mode is mode]
        found.sort(key=lambda info: (info.priority, info.element_id))
        return found

    async def invalidate(self) -> None:
        """Nothing is cached: the dict is the source."""
