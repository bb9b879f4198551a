"""Webhook events: which audit notes are events (stored, rejected, deleted, transferred), their
JSON body and delivery ids, and the `Outbox` that queues one `webhook` operation per event and
receiver in the note's own transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tusingest.domain import AuditNote, NewOperation, OperationKind
from tusingest.pipeline.delivery import DeliveryState

# A delivery id is the UUIDv5 of (event, its key, receiver) in this namespace: the same event
# queued again (a retried step that wrote its note twice) is the same delivery, sent once.
_NAMESPACE = uuid.UUID("6f9d0f52-2b6e-4c53-9a0c-3c1e7f3b8a41")


@dataclass(frozen=True)
class _Kind:
    type: str  # the event's `type`
    subject: str  # the name of the note's subject in `data`
    fields: Mapping[str, str]  # the note's detail key of each further field of `data`
    actor: str  # the name of the note's actor in `data`
    key: str | None = None  # the detail that tells this event apart (default: the subject)


_EVENTS: Mapping[str, _Kind] = {
    "file_stored": _Kind(
        "file.stored",
        "file_id",
        {name: name for name in ("upload_id", "filename", "size", "sha256", "md5",
                                 "content_type", "retention_policy", "element_id")},
        "owner",
    ),
    "upload_rejected": _Kind(
        "upload.rejected",
        "upload_id",
        {"reason": "code", "message": "message", "filename": "filename", "size": "size"},
        "owner",
    ),
    "file_deleted": _Kind("file.deleted", "file_id", {"element_id": "element_id"}, "actor"),
    "file_transferred": _Kind(
        "file.transferred",
        "file_id",
        {"transfer_id": "transfer_id", "from_element_id": "from", "to_element_id": "to",
         "source_deleted": "delete_source"},
        "actor",
        key="transfer_id",
    ),
}  # fmt: skip

EVENT_TYPES: tuple[str, ...] = tuple(kind.type for kind in _EVENTS.values())


@dataclass(frozen=True)
class Event:
    """What happened, as receivers are told: its `type`, what makes it one event (`key`), the
    file or upload it is about, and its `data`."""

    type: str
    key: str
    subject: str
    data: dict[str, Any]


def event_of(note: AuditNote) -> Event | None:
    """The event an audit note records; None for the notes that are none (and for failures:
    a deletion or transfer that failed changed nothing)."""
    kind = _EVENTS.get(note.action)
    if kind is None or note.outcome == "failed":
        return None
    data: dict[str, Any] = {kind.subject: note.subject}
    data.update({name: note.detail.get(source) for name, source in kind.fields.items()})
    data[kind.actor] = note.actor
    key = note.detail.get(kind.key) if kind.key else None
    return Event(kind.type, str(key or note.subject), note.subject, data)


def delivery_id(event: Event, url: str) -> str:
    """The id of `event`'s delivery to `url` (32 hex digits, the `webhook` operation's id)."""
    return uuid.uuid5(_NAMESPACE, f"{event.type}\n{event.key}\n{url}").hex


def event_body(delivery: str, event: Event, occurred_at: datetime) -> str:
    """The JSON a receiver gets (frozen when the event happens: every try sends these bytes)."""
    return json.dumps(
        {
            "id": delivery,
            "type": event.type,
            "occurred_at": occurred_at.isoformat(),
            "data": event.data,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


class WebhookOutbox:
    """Implements `Outbox`: every event goes to each of `urls`; `wake` starts the deliveries
    once they are committed."""

    def __init__(
        self,
        urls: Sequence[str],
        wake: Callable[[], None],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._urls = tuple(urls)
        self._wake = wake
        self._clock = clock

    def follow(self, note: AuditNote) -> list[NewOperation]:
        event = event_of(note)
        if event is None:
            return []
        now = self._clock()
        operations = []
        for url in self._urls:
            delivery = delivery_id(event, url)
            state = DeliveryState(
                url=url,
                event=event.type,
                body=event_body(delivery, event, now),
                queued_at=now.isoformat(),
            )
            operations.append(
                NewOperation(delivery, OperationKind.WEBHOOK, event.subject, state.to_json())
            )
        return operations

    def queued(self) -> None:
        self._wake()
