"""`GET /api/audit`: the audit trail of file operations, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from tusingest.api.files import parse_limit
from tusingest.auth import PRINCIPAL
from tusingest.domain import AuditEvent
from tusingest.errors import BadRequest, Forbidden
from tusingest.services import SERVICES


async def audit(request: web.Request) -> web.StreamResponse:
    if not request[PRINCIPAL].is_admin:
        raise Forbidden("the audit trail is for admins", code="admin_required")
    services = request.config_dict[SERVICES]
    query = request.query
    limit = parse_limit(query.get("limit"))
    events = await services.catalog.events(
        subject=_text(query, "file_id"),
        actor=_text(query, "user"),
        since=_since(query.get("since")),
        before_id=_before(query.get("before")),
        limit=limit + 1,
    )
    page, more = events[:limit], len(events) > limit
    return web.json_response(
        {"events": [_event(e) for e in page], "next_before": page[-1].id if more else None}
    )


def _text(query: Any, name: str) -> str | None:
    value: str | None = query.get(name)
    if value is not None and (len(value) > 255 or not value.isprintable()):
        raise BadRequest(f"{name} is not a valid filter value", code=f"invalid_{name}")
    return value


def _since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(
            "since must be an ISO 8601 time with a zone, e.g. 2026-12-06T10:00:00Z",
            code="invalid_since",
        )
    return value


def _before(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise BadRequest("before must be an event id", code="invalid_before")
    return int(raw)


def _event(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "user": event.actor,
        "action": event.action,
        "subject": event.subject,  # the file id (an upload id for a rejected upload)
        "address": event.address,
        "outcome": event.outcome,
        "detail": event.detail,
    }
