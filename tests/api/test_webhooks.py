"""Webhooks end to end over real HTTP on SQLite and PostgreSQL: a receiver that hangs, then is
down, then answers 503, then comes up gets every event (stored, rejected, deleted) exactly once
per delivery id, signed; the uploads' verdicts never waited for it."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.test_files import api, upload_id
from tests.api.test_verdict import isolated_env, metadata
from tests.conftest import BACKENDS, Server
from tests.receiver import Receiver

SECRET = "test-webhook-secret-0123456789"
# A delivery that waited on the receiver would take this long (or end as `processing`).
HUNG = 60


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(SECRET)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(params=BACKENDS)
def hooked(
    request: pytest.FixtureRequest,
    receiver: Receiver,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    """A server of its own whose events go to `receiver`, tried every 0.1 to 0.5 s."""
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"webhooks-{backend}")
    return make_server(
        backend,
        **isolated_env(backend, root, new_pg_database),
        WEBHOOK_URLS=receiver.url,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_TIMEOUT_SECONDS=str(HUNG),
        WEBHOOK_RETRY_BASE_SECONDS="0.1",
        WEBHOOK_RETRY_MAX_SECONDS="0.5",
    )


def _upload(server: Server, data: bytes, **meta: str) -> tuple[str, dict[str, str], float]:
    """Create and send a whole upload; its URL, the completing PATCH's headers and seconds."""
    url = server.create(len(data), **{"Upload-Metadata": metadata(**meta)})
    started = time.monotonic()
    response = server.patch(url, data, 0)
    return url, dict(response.headers), time.monotonic() - started


def _wait_for(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_receiver_down_then_up_gets_every_event_once_signed(
    hooked: Server, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    receiver.start(answer=0)  # hangs: takes every request and never answers
    files = [os.urandom(700 + i) for i in range(3)]
    stored: dict[str, bytes] = {}
    for i, data in enumerate(files):
        _, headers, seconds = _upload(hooked, data, filename=f"f{i}.bin")
        assert headers["X-Upload-Status"] == "stored", headers
        assert seconds < HUNG / 4, f"the verdict took {seconds:.1f} s"
        stored[headers["X-File-Id"]] = data
    wrong = "0" * 64
    rejected_url, headers, seconds = _upload(
        hooked, b"not what was declared", filename="r.bin", checksum=f"sha256 {wrong}"
    )
    assert headers["X-Upload-Status"] == "rejected", headers
    assert seconds < HUNG / 4, f"the verdict took {seconds:.1f} s"
    _wait_for(lambda: len(receiver.received()) == 4, "4 deliveries tried while it hung")
    assert all(r.status == 0 for r in receiver.received())

    receiver.stop()  # down: the port refuses connections, held requests are cut
    deleted = next(iter(stored))
    response = api(hooked, "DELETE", f"/api/files/{deleted}", sub="alice")
    assert response.status_code == 204, response.text
    time.sleep(1.0)  # several tries meet a closed port

    receiver.start(answer=503)
    _wait_for(lambda: any(r.status == 503 for r in receiver.received()), "tries meet a 503")
    time.sleep(1.0)
    assert not receiver.accepted()

    receiver.answer = 200
    accepted = receiver.wait_accepted(5)
    time.sleep(1.5)  # what comes late would be a second delivery
    accepted = receiver.accepted()

    per_delivery = Counter(r.delivery for r in accepted)
    assert len(accepted) == 5, [r.event for r in accepted]
    assert set(per_delivery.values()) == {1}
    for r in receiver.received():
        assert r.signed, r.headers
        assert r.headers["Content-Type"] == "application/json"
        assert r.event["id"] == r.delivery
        assert r.event["type"] == r.headers["X-Tusingest-Event"]
        age = abs(time.time() - int(r.headers["X-Tusingest-Timestamp"]))
        assert age < 120
    # Every try sends the same bytes: the body is frozen when the event happens.
    for delivery in per_delivery:
        assert len({r.body for r in receiver.received() if r.delivery == delivery}) == 1

    events = {(r.event["type"], r.event["data"].get("file_id")): r.event for r in accepted}
    for file_id, data in stored.items():
        event = events[("file.stored", file_id)]
        assert event["data"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert event["data"]["md5"] == hashlib.md5(data).hexdigest()
        assert event["data"]["size"] == len(data)
        assert event["data"]["owner"] == "alice"
        assert event["data"]["element_id"] == "se-local"
        assert event["data"]["filename"].startswith("f")
        occurred = datetime.fromisoformat(event["occurred_at"])
        assert datetime.now(UTC) - occurred < timedelta(minutes=2)
    rejected = events[("upload.rejected", None)]
    assert rejected["data"]["upload_id"] == upload_id(rejected_url)
    assert rejected["data"]["reason"] == "checksum_mismatch"
    assert rejected["data"]["filename"] == "r.bin"
    gone = events[("file.deleted", deleted)]
    assert gone["data"]["actor"] == "alice"
    assert gone["data"]["element_id"] == "se-local"
    assert len(events) == 5

    # The failed tries were logged, naming the receiver but neither the secret nor its URL's
    # path and query (which may hold a token). Not the receiver's own access log, of course.
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records if r.name != "aiohttp.access"
    )
    assert "answered 503" in logged
    assert f"127.0.0.1:{receiver.port}" in logged
    assert SECRET not in logged
    assert "t0ps3cret" not in logged
    assert "/hooks/" not in logged
