"""The `webhook` operation: one event POSTed to one receiver, signed with HMAC-SHA256, tried
with exponential backoff until a 2xx or until it is WEBHOOK_MAX_AGE_SECONDS old."""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tusingest.domain import AuditNote, Operation
from tusingest.errors import Exhausted, ReceiverUnavailable, TransientError
from tusingest.pipeline import jobstate
from tusingest.pipeline.runner import Progress
from tusingest.ports import Catalog, WebhookSender
from tusingest.settings.pipeline import WebhookSettings

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Tusingest-Event"
DELIVERY_HEADER = "X-Tusingest-Delivery"
TIMESTAMP_HEADER = "X-Tusingest-Timestamp"
SIGNATURE_HEADER = "X-Tusingest-Signature"
USER_AGENT = "tusingest-webhooks/1"


@dataclass(frozen=True)
class DeliveryState:
    """The `webhook` operation's state: the receiver, the event (its body frozen when it
    happened) and how the tries went."""

    url: str
    event: str  # the event's type
    body: str  # the JSON sent, byte for byte the same on every try
    queued_at: str  # ISO 8601, UTC: the delivery's age counts from here
    tries: int = 0
    status: int | None = None  # the receiver's last answer (None: no answer)
    delivered_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return jobstate.dump(self)

    @classmethod
    def from_json(cls, raw: Any) -> DeliveryState:
        return jobstate.load(cls, raw)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256, keyed by `secret`, of `{timestamp}.{body}`."""
    signed = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def backoff(
    tries: int,
    base: float,
    cap: float,
    jitter: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after the `tries`-th failed try: `base` doubled each time, at most `cap`,
    less up to a quarter at random (deliveries that failed together do not come back as one)."""
    full = min(cap, base * 2.0 ** min(max(tries - 1, 0), 40))
    return full * jitter(0.75, 1.0)


def receiver(url: str) -> str:
    """The receiver as logs may name it: scheme, host and port (a path or query may hold a
    token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class Deliver:
    """Implements the runner's `Handler` for kind `webhook` (subject = the event's file or
    upload id; the operation's id is the delivery id). A failed try is no failed attempt: it
    is tried again after `backoff`, until the delivery is `max_age_seconds` old."""

    def __init__(
        self,
        sender: WebhookSender,
        catalog: Catalog,
        settings: WebhookSettings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sender = sender
        self._catalog = catalog
        self._settings = settings
        self._clock = clock

    async def run(self, op: Operation, progress: Progress) -> DeliveryState:
        state = DeliveryState.from_json(op.state)
        now = self._clock()
        timestamp = str(int(now.timestamp()))
        body = state.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: state.event,
            DELIVERY_HEADER: op.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._settings.secret, timestamp, body),
        }
        status: int | None = None
        try:
            status = await self._sender.post(state.url, body, headers)
        except TransientError as exc:
            failure = exc.message
        else:
            if 200 <= status < 300:
                log.info("webhook %s (%s) delivered to %s", op.id, state.event,
                         receiver(state.url))  # fmt: skip
                return replace(
                    state, tries=state.tries + 1, status=status, delivered_at=now.isoformat()
                )
            failure = f"answered {status}"
        state = replace(state, tries=state.tries + 1, status=status)
        where = receiver(state.url)
        age = (now - datetime.fromisoformat(state.queued_at)).total_seconds()
        if age >= self._settings.max_age_seconds:
            raise Exhausted(f"{where} {failure}; given up after {state.tries} tries in {age:.0f} s")
        await progress("retrying", state)
        delay = backoff(
            state.tries, self._settings.retry_base_seconds, self._settings.retry_max_seconds
        )
        raise ReceiverUnavailable(f"{where} {failure} (try {state.tries})", retry_after=delay)

    async def give_up(self, op: Operation, error: str) -> None:
        state = DeliveryState.from_json(op.state)
        await self._catalog.audit(
            AuditNote(
                "tusingest",
                "webhook_failed",
                op.subject,
                {"delivery_id": op.id, "event": state.event, "receiver": receiver(state.url),
                 "error": error},
                outcome="failed",
            )
        )  # fmt: skip
