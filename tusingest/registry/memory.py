"""Embedded registry: storage elements held in-process (the local element, or given by tests)."""

from __future__ import annotations

from collections.abc import Iterable

from tusingest.domain import ElementInfo, ElementMode


class MemoryRegistry:
    """Implements `Registry` over an in-process dict of `ElementInfo` by (element id, mode);
    one element may be listed under several modes (the embedded local element takes both
    temporary and permanent files)."""

    def __init__(self, elements: Iterable[ElementInfo] = ()) -> None:
        self._elements: dict[tuple[str, ElementMode], ElementInfo] = {}
        for info in elements:
            self._elements[(info.element_id, info.mode)] = info

    def put(self, info: ElementInfo, *more_modes: ElementInfo) -> None:
        """Add the element, or replace everything known about it (it may change mode);
        `more_modes` lists the same element under further modes."""
        self.remove(info.element_id)
        for entry in (info, *more_modes):
            if entry.element_id != info.element_id:
                raise ValueError("put() lists one element under several modes, not several")
            self._elements[(entry.element_id, entry.mode)] = entry

    def remove(self, element_id: str) -> None:
        """Forget the element under every mode (absent is not an error)."""
        for key in [key for key in self._elements if key[0] == element_id]:
            del self._elements[key]

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        found = [info for info in self._elements.values() if info.mode is mode]
        found.sort(key=lambda info: (info.priority, info.element_id))
        return found

    async def element(self, element_id: str) -> ElementInfo | None:
        found = [info for (key, _), info in self._elements.items() if key == element_id]
        found.sort(key=lambda info: info.mode is not ElementMode.EDIT)
        return found[0] if found else None

    async def invalidate(self) -> None:
        """Nothing is cached: the dict is the source."""
