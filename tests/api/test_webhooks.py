"""Webhooks end to end over real HTTP on SQLite and PostgreSQL: a receiver that hangs, then is
down, then answers 503, then comes up gets every event (stored, rejected, deleted) exactly once
per delivery id, signed; the uploads' verdicts never waited for it. A transfer between two
reference elements is delivered as `file.transferred`. Each event's data has the fields the
README's table lists, and the README's own `verify` accepts the signatures."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.api.test_files import api, upload_id
from tests.api.test_verdict import isolated_env, metadata
from tests.conftest import BACKENDS, Keys, Server
from tests.receiver import Received, Receiver
from tests.storage.conftest import Cluster
from tests.storage.test_transfer_e2e import _finished, _store, _transfer

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


README = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
WEBHOOKS = README[README.index("### Webhooks") : README.index("## Reliability")]


def _documented_fields() -> dict[str, set[str]]:
    """The README's table: each event type and the fields of its `data`."""
    rows = re.findall(r"^\| `([a-z]+\.[a-z]+)` \|[^|]*\|([^|]*)\|$", WEBHOOKS, re.MULTILINE)
    return {kind: set(re.findall(r"`([a-z0-9_]+)`", fields)) for kind, fields in rows}


def _readme_verify() -> Callable[[str, Mapping[str, str], bytes], bool]:
    """The README's receiver-side check, run as printed."""
    (code,) = re.findall(r"```python\n(.*?)```", WEBHOOKS, re.DOTALL)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    verify = scope["verify"]
    assert callable(verify)
    return verify


def _check_documented(events: list[Received]) -> None:
    """Each event's data has exactly the README's fields, and the README's `verify` accepts
    its signature (and no other body)."""
    documented = _documented_fields()
    assert set(documented) == {"file.stored", "upload.rejected", "file.deleted", "file.transferred"}
    verify = _readme_verify()
    for r in events:
        assert set(r.event["data"]) == documented[r.event["type"]], r.event
        assert verify(SECRET, r.headers, r.body)
        assert not verify(SECRET, r.headers, r.body.replace(b"}", b" }", 1))


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
    _check_documented(accepted)

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


def test_a_transfer_is_delivered_as_file_transferred(
    tmp_path: Path, keys: Keys, receiver: Receiver
) -> None:
    """A file stored on an edit element and moved to an rw one by the transfer API, between
    two reference elements registered in Redis: the receiver gets `file.stored`, then
    `file.transferred` naming both elements, signed."""
    receiver.start(answer=200)
    cluster = Cluster(tmp_path, keys)
    try:
        cluster.element("se-edit", mode="edit", priority=1)
        cluster.element("se-rw", mode="rw", priority=1)
        node = cluster.node(
            WEBHOOK_URLS=receiver.url,
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_RETRY_BASE_SECONDS="0.1",
            WEBHOOK_RETRY_MAX_SECONDS="0.5",
        )
        file_id = _store(node, b"%PDF-1.4\n" + os.urandom(50_000), "moved.pdf", "application/pdf")[
            "file_id"
        ]
        started = _transfer(node, file_id, "se-rw", delete_source=True)
        assert started.status_code == 202, started.text
        transfer_id = started.json()["transfer_id"]
        assert _finished(node, transfer_id)["status"] == "completed"
        accepted = receiver.wait_accepted(2)
        time.sleep(1.0)  # what comes late would be a second delivery
        accepted = receiver.accepted()
    finally:
        cluster.stop()
    assert [r.event["type"] for r in accepted] == ["file.stored", "file.transferred"]
    stored, moved = accepted
    assert stored.event["data"]["element_id"] == "se-edit"
    assert moved.event["data"] == {
        "file_id": file_id,
        "transfer_id": transfer_id,
        "from_element_id": "se-edit",
        "to_element_id": "se-rw",
        "source_deleted": True,
        "actor": "alice",
    }
    assert moved.headers["X-Tusingest-Event"] == "file.transferred"
    assert moved.event["id"] == moved.delivery
    assert moved.signed
    _check_documented(accepted)


def test_deliveries_in_flight_are_bounded_per_node(
    receiver: Receiver, make_server: Callable[..., Server]
) -> None:
    """WEBHOOK_CONCURRENCY=2 and a receiver that never answers: of three events, two are on
    their way and the third waits for one of them."""
    receiver.start(answer=0)
    server = make_server(
        "sqlite",
        WEBHOOK_URLS=receiver.url,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_CONCURRENCY="2",
        WEBHOOK_TIMEOUT_SECONDS=str(HUNG),
    )
    for n in range(3):
        rejected = server.request(
            "POST",
            server.endpoint,
            headers={"Upload-Length": "0", "Upload-Metadata": metadata(filename=f"e{n}.txt")},
        )
        assert rejected.status_code == 422, rejected.text
    _wait_for(lambda: len(receiver.received()) == 2, "two deliveries on their way")
    time.sleep(1.5)  # a third would have come meanwhile
    assert len(receiver.received()) == 2
    assert len({r.delivery for r in receiver.received()}) == 2
