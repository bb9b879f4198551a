"""The storage elements the Admin Module publishes in Redis as `ElementInfo`.

`artstore:storage_elements` is a STRING holding one JSON document (TTL 3600 s, rewritten on
every change and every 30 s):
`{"version", "timestamp", "count", "storage_elements": [{"element_id", "api_url", "mode",
"status", "is_available", "capacity_bytes", "used_bytes", "priority", ...}]}`. A change is
announced on `artstore:service_discovery` (`{"event": "storage_element_config_updated",
"action", "version", "count", ...}`): the reader then reads the key again. Both names take
REDIS_KEY_PREFIX in front, like the legacy keys.

An entry is an element only with an `element_id`, an `api_url` and a known mode. For placement
(`listed`) it must also be available (`is_available` true, i.e. status online) and of the mode
asked for (edit or rw); by id (`find`) it is found whatever its mode or availability, an
unavailable one as unhealthy (a delete from it waits instead of failing as unknown). Capacity:
`capacity_bytes` and `used_bytes` give the totals and the status by the mode's thresholds; an
element without `capacity_bytes` has no known room, counts as FULL and is never chosen (the
element itself enforces no size limit, so nothing else bounds what it would take). A malformed
document or entry is skipped with a warning, never an error: the legacy keys and the next
sources still answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tusingest.domain import (
    DEFAULT_THRESHOLDS,
    WRITABLE_MODES,
    ElementInfo,
    ElementMode,
    Thresholds,
    capacity_status,
)

log = logging.getLogger(__name__)

KEY = "artstore:storage_elements"


def published_key(prefix: str = "") -> str:
    return f"{prefix}{KEY}"


def parse_document(
    raw: object, thresholds: Mapping[ElementMode, Thresholds] | None = None
) -> list[ElementInfo]:
    """The elements of the key's value (bytes or str; None when the key is missing), in
    document order, unavailable ones unhealthy. Malformed: a warning and what could be read."""
    if raw is None:
        return []
    try:
        document = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("registry: %s is not JSON: %s", KEY, exc)
        return []
    entries = document.get("storage_elements") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        log.warning("registry: %s has no storage_elements list; ignored", KEY)
        return []
    found: list[ElementInfo] = []
    for entry in entries:
        info = parse_entry(entry, thresholds or {})
        if info is not None:
            found.append(info)
    return found


def parse_entry(entry: object, thresholds: Mapping[ElementMode, Thresholds]) -> ElementInfo | None:
    """One entry, or None when it names no element (no element_id or api_url, unknown mode) or
    is malformed (a warning)."""
    if not isinstance(entry, dict):
        log.warning("registry: %s: skipping a non-object entry %r", KEY, entry)
        return None
    element_id, api_url = entry.get("element_id"), entry.get("api_url")
    if not element_id or not api_url:
        log.debug("registry: %s: entry %r has no element_id or api_url", KEY, entry.get("id"))
        return None
    try:
        if not isinstance(element_id, str) or not isinstance(api_url, str):
            raise ValueError("element_id and api_url must be strings")
        mode = ElementMode(str(entry.get("mode")))
        total = _count(entry, "capacity_bytes")
        used = _count(entry, "used_bytes") or 0
        priority = _integer(entry, "priority")
        available = entry.get("is_available")
        if not isinstance(available, bool):
            raise ValueError(f"is_available {available!r}")
    except ValueError as exc:
        log.warning("registry: %s: skipping malformed element %r: %s", KEY, element_id, exc)
        return None
    total = total or 0  # unknown capacity: no room known, FULL
    return ElementInfo(
        element_id=element_id,
        mode=mode,
        priority=priority,
        endpoint=api_url,
        capacity_total=total,
        capacity_used=used,
        capacity_free=max(total - used, 0),
        status=capacity_status(total, used, thresholds.get(mode, DEFAULT_THRESHOLDS)),
        healthy=available,
    )


def listed(elements: Sequence[ElementInfo], mode: ElementMode) -> list[ElementInfo]:
    """The available elements of `mode` (edit or rw only), the first entry of an id kept, by
    ascending priority (ties by id)."""
    if mode not in WRITABLE_MODES:
        return []
    found: dict[str, ElementInfo] = {}
    for info in elements:
        if info.mode is mode and info.healthy:
            if info.element_id in found:
                log.warning("registry: %s lists %r twice; the first kept", KEY, info.element_id)
                continue
            found[info.element_id] = info
    return sorted(found.values(), key=lambda info: (info.priority, info.element_id))


def find(elements: Sequence[ElementInfo], element_id: str) -> ElementInfo | None:
    """The element by id whatever its mode and availability; listed more than once: its edit
    entry, else an available one, else the first."""
    same = [info for info in elements if info.element_id == element_id]
    if not same:
        return None
    return min(same, key=lambda info: (info.mode is not ElementMode.EDIT, not info.healthy))


def _integer(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name)
    if not isinstance(value, int) or isinstance(value, bool):  # JSON true is no number
        raise ValueError(f"{name} {value!r}")
    return value


def _count(entry: Mapping[str, Any], name: str) -> int | None:
    """A byte count: None when null or absent, ValueError when not a non-negative integer."""
    if entry.get(name) is None:
        return None
    value = _integer(entry, name)
    if value < 0:
        raise ValueError(f"{name} {value!r}")
    return value
