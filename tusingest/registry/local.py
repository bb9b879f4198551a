"""The embedded registry's one element: the local storage element, which takes temporary and
permanent files and has its filesystem's capacity."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from tusingest.domain import WRITABLE_MODES, ElementInfo, ElementMode, Thresholds, capacity_status
from tusingest.registry.memory import MemoryRegistry

log = logging.getLogger(__name__)

PRIORITY = 100


class LocalElementRegistry(MemoryRegistry):
    """Implements `Registry` for the embedded element in `root`, its capacity re-read every
    `interval` seconds by `run_forever`."""

    def __init__(
        self,
        root: Path,
        element_id: str,
        *,
        thresholds: Mapping[ElementMode, Thresholds],
        interval: float,
    ) -> None:
        super().__init__()
        self._root = root
        self._element_id = element_id
        self._thresholds = thresholds
        self._interval = interval

    async def refresh(self) -> None:
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        usage = await asyncio.to_thread(shutil.disk_usage, self._root)
        used = usage.total - usage.free  # as an SE reports it: what the filesystem has in use
        self.put(
            *(
                ElementInfo(
                    element_id=self._element_id,
                    mode=mode,
                    priority=PRIORITY,
                    endpoint=self._root.as_uri(),
                    capacity_total=usage.total,
                    capacity_used=used,
                    capacity_free=usage.free,
                    status=capacity_status(usage.total, used, self._thresholds[mode]),
                    healthy=True,
                )
                for mode in WRITABLE_MODES
            )
        )

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except OSError as exc:
                log.warning("local storage element: cannot read capacity: %s", exc)
