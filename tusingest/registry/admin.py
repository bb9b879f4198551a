"""The Admin Module as a registry: `GET /api/v1/internal/storage-elements/available`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tusingest.domain import CapacityStatus, ElementInfo, ElementMode
from tusingest.errors import TransientError

log = logging.getLogger(__name__)

_UPLOAD_MODES = (ElementMode.EDIT, ElementMode.RW)


class AdminRegistry:
    """Implements `Registry` from the Admin Module's list of available elements (the fallback
    when Redis has none). A 503 means "none available"; other failures are transient."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        token: Callable[[], Awaitable[str]],
        *,
        timeout: float = 10.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        if mode not in _UPLOAD_MODES:
            return []
        url = f"{self._base}/api/v1/internal/storage-elements/available"
        headers = {"Authorization": f"Bearer {await self._token()}"}
        try:
            async with self._session.get(
                url, params={"mode": mode.value}, headers=headers, timeout=self._timeout
            ) as response:
                if response.status == 503:
                    return []
                if response.status != 200:
                    raise TransientError(
                        f"Admin Module answered {response.status} for the element list"
                    )
                body: dict[str, Any] = await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"Admin Module unreachable: {exc!r}") from None
        found = [info for raw in body.get("storage_elements", []) if (info := parse(raw, mode))]
        return sorted(found, key=lambda e: (e.priority, e.element_id))

    async def invalidate(self) -> None:
        """Nothing is cached here."""


def parse(raw: dict[str, Any], mode: ElementMode) -> ElementInfo | None:
    """One list entry, or None when it cannot be used (no element_id or api_url, other mode,
    malformed numbers)."""
    try:
        element_id = raw.get("element_id")
        api_url = raw.get("api_url")
        if not element_id or not api_url or raw.get("mode") != mode.value:
            return None
        total = int(raw["capacity_bytes"]) if raw.get("capacity_bytes") is not None else 0
        used = int(raw.get("used_bytes") or 0)
        status = CapacityStatus(str(raw.get("capacity_status", "ok")).lower())
        return ElementInfo(
            element_id=str(element_id),
            mode=mode,
            priority=int(raw.get("priority", 100)),
            endpoint=str(api_url),
            capacity_total=total,
            capacity_used=used,
            capacity_free=max(total - used, 0),
            status=status,
            healthy=raw.get("health_status", "healthy") == "healthy",
        )
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("skipping a malformed Admin Module element entry %r: %s", raw, exc)
        return None
