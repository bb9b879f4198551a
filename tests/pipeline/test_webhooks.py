"""Webhook events and their delivery: which audit notes are events, delivery ids, the
signature scheme, the bounded backoff, retries by the delivery's age (not by a count of
attempts), and a give-up that is recorded. The runner and the stores are real; the receiver is
a real HTTP server, or a `WebhookSender` of the test's own."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BACKENDS
from tests.receiver import Receiver, verify
from tusingest.domain import (
    AuditNote,
    CatalogEntry,
    Operation,
    OperationKind,
    OperationStatus,
    StoredFile,
)
from tusingest.errors import Exhausted, ReceiverUnavailable, TransientError
from tusingest.pipeline.delivery import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Deliver,
    DeliveryState,
    backoff,
    receiver,
    signature,
)
from tusingest.pipeline.jobstate import JobState
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.webhooks import EVENT_TYPES, WebhookOutbox, event_of
from tusingest.receivers.http import HttpWebhookSender
from tusingest.settings.app import Settings
from tusingest.settings.pipeline import WebhookSettings
from tusingest.store import schema
from tusingest.store.catalog import SqlCatalog
from tusingest.store.db import Database, open_database
from tusingest.store.operations import SqlOperationStore

SECRET = "a-secret-of-some-length"
URL = "https://hooks.example.com/in/T0KEN?sig=abc"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

STORED = AuditNote(
    "alice",
    "file_stored",
    "3f0c8a52-6a8e-4a54-9a1e-1c2d3e4f5a6b",
    {"upload_id": "u" * 32, "element_id": "se-01", "filename": "a.pdf", "size": 3,
     "sha256": "ab" * 32, "md5": "cd" * 16, "content_type": "application/pdf",
     "retention_policy": "temporary"},
    address="10.0.0.1",
)  # fmt: skip


def _transferred(transfer_id: str) -> AuditNote:
    return AuditNote(
        "ops",
        "file_transferred",
        STORED.subject,
        {"from": "se-01", "to": "se-02", "delete_source": True, "transfer_id": transfer_id},
    )


# --- events -----------------------------------------------------------------------------------


def test_the_notes_of_the_four_events_are_events_and_no_other() -> None:
    stored = event_of(STORED)
    assert stored is not None
    assert stored.type == "file.stored"
    assert stored.data == {
        "file_id": STORED.subject, "upload_id": "u" * 32, "filename": "a.pdf", "size": 3,
        "sha256": "ab" * 32, "md5": "cd" * 16, "content_type": "application/pdf",
        "retention_policy": "temporary", "element_id": "se-01", "owner": "alice",
    }  # fmt: skip
    rejected = event_of(
        AuditNote("bob", "upload_rejected", "u" * 32,
                  {"code": "virus_detected", "message": "EICAR", "filename": "x.txt", "size": 9},
                  outcome="rejected")
    )  # fmt: skip
    assert rejected is not None
    assert rejected.type == "upload.rejected"
    assert rejected.data == {
        "upload_id": "u" * 32, "reason": "virus_detected", "message": "EICAR",
        "filename": "x.txt", "size": 9, "owner": "bob",
    }  # fmt: skip
    deleted = event_of(AuditNote("ops", "file_deleted", STORED.subject, {"element_id": "se-01"}))
    assert deleted is not None
    assert deleted.data == {"file_id": STORED.subject, "element_id": "se-01", "actor": "ops"}
    moved = event_of(_transferred("t" * 32))
    assert moved is not None
    assert moved.data == {"file_id": STORED.subject, "transfer_id": "t" * 32,
                          "from_element_id": "se-01", "to_element_id": "se-02",
                          "source_deleted": True, "actor": "ops"}  # fmt: skip
    assert {e.type for e in (stored, rejected, deleted, moved)} == set(EVENT_TYPES)

    failed_delete = AuditNote("ops", "file_deleted", "f", {"error": "x"}, outcome="failed")
    for note in (
        failed_delete,
        AuditNote("alice", "upload_failed", "u", {"error": "x"}, outcome="failed"),
        AuditNote("tusingest", "webhook_failed", "f", {}, outcome="failed"),
        AuditNote("tusingest", "discard_failed", "f", {}, outcome="failed"),
    ):
        assert event_of(note) is None, note


def test_a_delivery_id_is_one_per_event_and_receiver() -> None:
    woken: list[bool] = []
    outbox = WebhookOutbox([URL, "http://10.0.0.9:8080/"], lambda: woken.append(True))
    first = outbox.follow(STORED)
    again = outbox.follow(STORED)  # the same event noted twice (a retried step)
    assert [op.id for op in first] == [op.id for op in again]
    assert len({op.id for op in first}) == 2
    assert all(len(op.id) == 32 and int(op.id, 16) >= 0 for op in first)
    for op in first:
        assert op.kind is OperationKind.WEBHOOK
        assert op.subject == STORED.subject
        state = DeliveryState.from_json(op.state)
        body = json.loads(state.body)
        assert body["id"] == op.id
        assert body["type"] == state.event == "file.stored"
        assert body["data"]["file_id"] == STORED.subject
        assert datetime.fromisoformat(body["occurred_at"]) == datetime.fromisoformat(
            state.queued_at
        )
    assert [DeliveryState.from_json(op.state).url for op in first] == [
        URL,
        "http://10.0.0.9:8080/",
    ]
    # Two transfers of one file are two events.
    one, two = outbox.follow(_transferred("a" * 32)), outbox.follow(_transferred("b" * 32))
    assert {op.id for op in one}.isdisjoint(op.id for op in two)
    assert outbox.follow(AuditNote("a", "upload_failed", "u", {}, outcome="failed")) == []
    assert woken == []
    outbox.queued()
    assert woken == [True]


# --- signature and backoff --------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"x","type":"file.stored"}'
    expected = hmac.new(SECRET.encode(), b"1767323045." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1767323045", body) == f"sha256={expected}"
    headers = {TIMESTAMP_HEADER: "1767323045", SIGNATURE_HEADER: f"sha256={expected}"}
    assert verify(SECRET, headers, body)
    assert not verify(SECRET, headers, body + b" ")
    assert not verify("another-secret-of-length", headers, body)
    assert not verify(SECRET, {**headers, TIMESTAMP_HEADER: "1767323046"}, body)


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    def longest(low: float, high: float) -> float:
        return high

    def shortest(low: float, high: float) -> float:
        return low

    assert [backoff(n, 1, 300, longest) for n in range(1, 11)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300,
    ]  # fmt: skip
    assert backoff(1, 1, 300, shortest) == 0.75
    assert backoff(100_000, 1, 300, longest) == 300  # no overflow after a long outage
    for tries in range(1, 40):
        delay = backoff(tries, 0.5, 60)
        full = min(60, 0.5 * 2 ** (tries - 1))
        assert 0.75 * full <= delay <= full


def test_logs_name_a_receiver_by_scheme_host_and_port_only() -> None:
    assert receiver(URL) == "https://hooks.example.com"
    assert receiver("http://user:pw@10.0.0.9:8080/x?t=1") == "http://10.0.0.9:8080"
    assert receiver("http://[::1]:9000/h") == "http://[::1]:9000"


# --- the HTTP sender -------------------------------------------------------------------------


def test_the_http_sender_answers_the_status_and_follows_no_redirect() -> None:
    headers = {TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: signature(SECRET, "1", b"{}")}

    async def scenario() -> None:
        receiver_ = Receiver(SECRET).start(answer=307)
        try:
            async with aiohttp.ClientSession() as session:
                sender = HttpWebhookSender(session, 5)
                assert await sender.post(receiver_.url, b"{}", headers) == 307
                receiver_.answer = 202
                assert await sender.post(receiver_.url, b"{}", headers) == 202
                receiver_.answer = 0  # hangs
                fast = HttpWebhookSender(session, 0.3)
                with pytest.raises(TransientError, match="no answer in time"):
                    await fast.post(receiver_.url, b"{}", headers)
        finally:
            receiver_.stop()
        assert [r.status for r in receiver_.received()] == [307, 202, 0]
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TransientError) as refused:  # nobody listens any more
                await HttpWebhookSender(session, 5).post(receiver_.url, b"{}", headers)
        assert "ClientConnectorError" in refused.value.message
        assert str(receiver_.port) not in refused.value.message  # nor any part of the URL

    asyncio.run(scenario())


# --- the handler, with a sender of the test's own ---------------------------------------------


class Sender:
    """Implements `WebhookSender`: answers `status`, or no answer at all for None."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.sent.append((url, body, dict(headers)))
        if self.status is None:
            raise TransientError("gave no answer (ClientConnectorError)")
        return self.status


def _operation(state: dict[str, object] | None = None) -> tuple[Operation, DeliveryState]:
    [new] = WebhookOutbox([URL], lambda: None, clock=lambda: T0).follow(STORED)
    op = Operation(
        new.id, new.kind, new.subject, OperationStatus.RUNNING, None, 1, state or new.state
    )
    return op, DeliveryState.from_json(op.state)


class Progress:
    def __init__(self) -> None:
        self.saved: list[tuple[str, DeliveryState]] = []

    async def __call__(self, step: str, state: JobState) -> None:
        assert isinstance(state, DeliveryState)
        self.saved.append((step, state))


def _sqlite(tmp_path: Path) -> str:
    return Settings.from_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}).database.url


@pytest.fixture(params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path: Path, new_pg_database: Callable[[], str]
) -> str:
    """A fresh database on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        return _sqlite(tmp_path)
    return Settings.from_env({"DATABASE_URL": new_pg_database()}).database.url


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    await schema.upgrade(url)
    db = await open_database(url)
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def _catalog(tmp_path: Path) -> AsyncIterator[SqlCatalog]:
    async with _database(_sqlite(tmp_path)) as db:
        yield SqlCatalog(db)


def _at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def _config(**settings: float) -> WebhookSettings:
    return WebhookSettings(urls=(URL,), secret=SECRET, **settings)  # type: ignore[arg-type]


def test_a_delivery_sends_the_frozen_body_signed(tmp_path: Path) -> None:
    async def scenario() -> None:
        op, state = _operation()
        sender = Sender(204)
        at = T0 + timedelta(seconds=3)
        async with _catalog(tmp_path) as catalog:
            done = await Deliver(sender, catalog, _config(), clock=lambda: at).run(op, Progress())
        assert done.delivered_at == at.isoformat()
        assert (done.tries, done.status) == (1, 204)
        [(url, body, headers)] = sender.sent
        assert url == URL
        assert body == state.body.encode()
        assert headers[DELIVERY_HEADER] == op.id
        assert headers[EVENT_HEADER] == "file.stored"
        assert headers[TIMESTAMP_HEADER] == str(int(at.timestamp()))
        assert headers["Content-Type"] == "application/json"
        assert verify(SECRET, headers, body)

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [None, 302, 404, 500, 503])
def test_a_receiver_down_for_an_hour_is_tried_again_until_a_day_has_passed(
    tmp_path: Path, status: int | None
) -> None:
    """Retries are bounded by the delivery's age (WEBHOOK_MAX_AGE_SECONDS, a day by default),
    not by a count of attempts; each waits at most WEBHOOK_RETRY_MAX_SECONDS."""

    async def scenario() -> None:
        op, _ = _operation()
        sender = Sender(status)
        config = _config()
        async with _catalog(tmp_path) as catalog:
            for tries, later in enumerate((timedelta(seconds=1), timedelta(minutes=59),
                                           timedelta(hours=23, minutes=59)), 1):  # fmt: skip
                progress = Progress()
                deliver = Deliver(sender, catalog, config, clock=_at(T0 + later))
                with pytest.raises(ReceiverUnavailable) as waiting:
                    await deliver.run(op, progress)
                assert waiting.value.retry_after is not None
                assert 0 < waiting.value.retry_after <= config.retry_max_seconds
                [(step, saved)] = progress.saved
                assert (step, saved.tries, saved.status) == ("retrying", tries, status)
                assert saved.delivered_at is None
                op = replace(op, state=saved.to_json())
            expired = Deliver(sender, catalog, config, clock=_at(T0 + timedelta(days=1)))
            with pytest.raises(Exhausted, match="given up after 4 tries"):
                await expired.run(op, Progress())
        assert len(sender.sent) == 4
        assert "T0KEN" not in str(waiting.value)  # the URL's path is no part of messages

    asyncio.run(scenario())


def test_a_delivery_that_runs_out_of_time_fails_and_is_noted(tmp_path: Path) -> None:
    """Over real HTTP to a receiver answering 500, with the durable runner: far more tries than
    the runner's attempts, then the operation fails at once and the audit trail says so."""

    async def scenario() -> None:
        receiver_ = Receiver(SECRET).start(answer=500)
        config = WebhookSettings(
            urls=(receiver_.url,), secret=SECRET, timeout_seconds=5, max_age_seconds=1.5,
            retry_base_seconds=0.05, retry_max_seconds=0.1,
        )  # fmt: skip
        try:
            async with _database(_sqlite(tmp_path)) as db, aiohttp.ClientSession() as session:
                catalog = SqlCatalog(db)
                operations = SqlOperationStore(db)
                runner = Runner(
                    operations,
                    {OperationKind.WEBHOOK: Deliver(HttpWebhookSender(session, 5), catalog,
                                                    config)},
                    # A failed attempt would wait 30 s: giving up must not count on attempts.
                    RunnerPolicy(max_attempts=5, attempt_timeout=10, lease_seconds=30,
                                 poll_seconds=0.05, base_delay=30, max_delay=30),
                )  # fmt: skip
                woken = WebhookOutbox(config.urls, runner.wake)
                noted = SqlCatalog(db, woken)
                await noted.audit(STORED)
                task = asyncio.create_task(runner.run_forever())
                try:
                    [new] = woken.follow(STORED)
                    op = await operations.get(new.id)
                    for _ in range(200):
                        assert op is not None
                        if op.status is OperationStatus.FAILED:
                            break
                        await asyncio.sleep(0.05)
                        op = await operations.get(new.id)
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                assert op is not None
                assert op.status is OperationStatus.FAILED, op
                assert op.error is not None
                assert op.error.startswith("Exhausted: ")
                [note] = await catalog.events(subject=STORED.subject, actor="tusingest")
                assert note.action == "webhook_failed"
                assert note.outcome == "failed"
                assert note.detail["delivery_id"] == new.id
                assert note.detail["receiver"] == f"http://127.0.0.1:{receiver_.port}"
        finally:
            receiver_.stop()
        tries = receiver_.received()
        assert len(tries) > 5  # more than the runner's max_attempts
        assert {r.delivery for r in tries} == {new.id}
        assert all(r.signed and r.status == 500 for r in tries)

    asyncio.run(scenario())


def test_deliveries_are_queued_with_their_note_and_once(database: str) -> None:

    async def scenario() -> None:
        async with _database(database) as db:
            woken: list[bool] = []
            outbox = WebhookOutbox([URL, "http://10.0.0.9/"], lambda: woken.append(True))
            catalog = SqlCatalog(db, outbox)
            operations = SqlOperationStore(db)
            await catalog.audit(STORED)
            await catalog.audit(STORED)  # noted again: the same deliveries, queued once
            await catalog.audit(AuditNote("alice", "upload_failed", "u", {}, outcome="failed"))
            ids = [op.id for op in outbox.follow(STORED)]
            for op_id in ids:
                op = await operations.get(op_id)
                assert op is not None
                assert (op.kind, op.status, op.attempts) == (
                    OperationKind.WEBHOOK, OperationStatus.QUEUED, 0,
                )  # fmt: skip
            rows = await db.fetch("SELECT id FROM operations WHERE kind = 'webhook'")
            assert sorted(r["id"] for r in rows) == sorted(ids)
            notes = await catalog.events(subject=STORED.subject)
            assert [n.action for n in notes] == ["file_stored", "file_stored"]
            assert woken == [True, True]

    asyncio.run(scenario())


def test_a_file_stored_moved_and_deleted_queues_one_delivery_per_event(database: str) -> None:
    """The catalog's own changes bring their events along, and only when they change it."""
    entry = CatalogEntry(
        file_id=STORED.subject, upload_id="u" * 32, element_id="se-01",
        storage_filename="a_alice_x.pdf", storage_path="2026/01/02/03/", original_filename="a.pdf",
        content_type="application/pdf", declared_type=None, size=3, stored_size=3, codec=None,
        md5="cd" * 16, sha256="ab" * 32, stored_sha256="ab" * 32, retention_policy="temporary",
        owner="alice", created_at=T0,
    )  # fmt: skip
    moved = StoredFile(STORED.subject, "se-02", "a_alice_x.pdf", "2026/01/02/03/", 3, "ab" * 32)

    async def scenario() -> list[str]:
        async with _database(database) as db:
            catalog = SqlCatalog(db, WebhookOutbox([URL], lambda: None))
            await catalog.record(entry, STORED)
            await catalog.record(entry, STORED)  # recorded already: nothing more
            note = _transferred("t" * 32)
            assert await catalog.relocate(STORED.subject, "se-01", moved, "temporary", note)
            assert not await catalog.relocate(STORED.subject, "se-01", moved, "temporary", note)
            gone = AuditNote("alice", "file_deleted", STORED.subject, {"element_id": "se-02"})
            await catalog.mark_deleted(STORED.subject, T0, gone)
            await catalog.mark_deleted(STORED.subject, T0, gone)  # deleted already
            rows = await db.fetch(
                "SELECT result FROM operations WHERE kind = 'webhook' AND subject = $1",
                STORED.subject,
            )
            return sorted(DeliveryState.from_json(json.loads(r["result"])).event for r in rows)

    assert asyncio.run(scenario()) == ["file.deleted", "file.stored", "file.transferred"]
