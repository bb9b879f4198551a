"""The operators' status feed (`GET /api/status`) and page (`/status`) over real HTTP: admins
only (bearer token or the page's HttpOnly cookie), an upload streaming now with its live bytes
and rate, the latest verdicts, the queue, the elements and the node's own figures."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TUS, Server
from tests.nodes import free_port
from tests.slowupload import HOSTILE, SlowUpload, named
from tusingest.domain import CapacityStatus, ElementInfo, ElementMode, Role
from tusingest.elements.directory import ElementDirectory
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.memory import MemoryRegistry
from tusingest.settings.app import Settings
from tusingest.settings.storage import BreakerSettings
from tusingest.statusreport import NodeFacts, StatusReport, Throughput
from tusingest.store import schema
from tusingest.store.db import open_database
from tusingest.store.locks import MemoryLocker
from tusingest.store.sql import SqlSessionStore
from tusingest.store.staging import FileStaging
from tusingest.store.status import SqlStatusQueries
from tusingest.store.uploads import UploadPolicy, UploadStore


def _admin(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys.token('root', Role.ADMIN)}"}


def _status(server: Server) -> dict[str, Any]:
    response = requests.get(f"{server.url}/api/status", headers=_admin(server), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def test_the_feed_is_for_admins(server: Server) -> None:
    url = f"{server.url}/api/status"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"
    user = requests.get(url, headers={"Authorization": f"Bearer {server.keys.token()}"}, timeout=10)
    assert user.status_code == 403
    assert user.json()["error"] == "admin_required"
    forged = requests.get(url, cookies={"tusingest_status": "not-a-token"}, timeout=10)
    assert forged.status_code == 401


def test_an_upload_in_flight_then_its_verdict(server: Server) -> None:
    length = 4 << 20
    upload = server.create(length, **{"Upload-Metadata": named(HOSTILE)})
    upload_id = upload.rsplit("/", 1)[-1]
    slow = SlowUpload(server, upload, length, chunk=256 << 10, pause=0.15)
    try:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            body = _status(server)
            rows = [r for r in body["uploads"]["in_progress"] if r["upload_id"] == upload_id]
            if (
                rows
                and rows[0]["offset"] > 0
                and (not seen or rows[0]["offset"] > seen[-1]["offset"])
            ):
                seen.append(rows[0])
            time.sleep(0.3)
        assert len(seen) == 2, "the upload's live offset did not grow in the feed"
        row = seen[-1]
        assert row["filename"] == HOSTILE  # as sent; the page shows it as text
        assert row["owner"] == "alice"
        assert row["length"] == length
        assert 0 < row["percent"] < 100
        assert row["bytes_per_second"] > 0
        assert row["eta_seconds"] > 0
        assert row["node"] == body["node"]["id"]
        assert body["node"]["receiving_here"] >= 1
        slow.finish()
    finally:
        slow.stop()
    assert slow.response is not None
    assert slow.response.status_code == 204

    deadline = time.monotonic() + 30
    while True:
        recent = _status(server)["uploads"]["recent"]
        mine = [r for r in recent if r.get("upload_id") == upload_id]
        if mine:
            break
        assert time.monotonic() < deadline, recent
        time.sleep(0.2)
    stored = mine[0]
    assert stored["outcome"] == "stored"
    assert stored["filename"] == HOSTILE
    assert stored["size"] == length
    assert stored["element_id"]
    assert stored["file_id"]
    body = _status(server)
    assert upload_id not in {r["upload_id"] for r in body["uploads"]["in_progress"]}
    assert body["node"]["bytes_per_second"] > 0
    assert body["node"]["uploads_per_second"] > 0


@pytest.mark.parametrize("backend", ["postgres"])
def test_an_upload_streaming_into_another_node_and_an_idle_one(
    backend: str, make_server: Any
) -> None:
    """Two nodes on one database: each lists both uploads; the streaming one is this node's
    with its live figures on the node receiving it, `another node` on the other; the idle one
    has no node (the page says `idle`)."""
    here: Server = make_server(backend)
    there: Server = make_server(backend)
    idle = here.create(1 << 20).rsplit("/", 1)[-1]
    length = 4 << 20
    upload = here.create(length)
    streaming = upload.rsplit("/", 1)[-1]
    slow = SlowUpload(here, upload, length, chunk=128 << 10, pause=0.2)
    try:
        deadline = time.monotonic() + 20
        while True:
            body = _status(here)
            mine = {r["upload_id"]: r for r in body["uploads"]["in_progress"]}
            rows = {r["upload_id"]: r for r in _status(there)["uploads"]["in_progress"]}
            if (
                mine.get(streaming, {}).get("node") == body["node"]["id"]
                and rows.get(streaming, {}).get("node") == "another node"
            ):
                break
            assert time.monotonic() < deadline, (mine, rows)
            time.sleep(0.2)
        assert mine[streaming]["bytes_per_second"] is not None
        assert rows[streaming]["bytes_per_second"] is None  # no live figures from over there
        assert mine[idle]["node"] is None
        assert rows[idle]["node"] is None
    finally:
        slow.stop()


def test_a_rejection_shows_its_reason(server: Server) -> None:
    rejected = server.request(
        "POST", server.endpoint, headers={"Upload-Length": "0", "Upload-Metadata": named("e.txt")}
    )
    assert rejected.status_code == 422
    upload_id = rejected.headers["Location"].rsplit("/", 1)[-1]
    recent = _status(server)["uploads"]["recent"]
    (row,) = [r for r in recent if r.get("upload_id") == upload_id]
    assert row["outcome"] == "rejected"
    assert row["reason"] == "empty_file"
    assert row["filename"] == "e.txt"


def test_queue_elements_and_node(server: Server) -> None:
    body = _status(server)
    assert set(body["operations"]["counts"]) == {"queued", "retrying", "running", "failed"}
    assert isinstance(body["operations"]["items"], list)
    # The embedded element takes temporary and permanent files: listed under edit and rw.
    listed = body["storage"]["elements"]
    assert [(e["element_id"], e["mode"]) for e in listed] == [
        ("se-local", "edit"),
        ("se-local", "rw"),
    ]
    for element in listed:
        assert element["writable"] is True
        assert element["usable"] is True
        assert element["breaker"] == "closed"
        assert element["healthy"] is True
        assert 0 <= element["used_percent"] <= 100
        assert element["capacity_total"] > 0
        assert element["endpoint"].startswith("file://")
    registry = body["storage"]["registry"]
    # The JSON keeps the names of the metrics and readiness; people read `memory` as embedded.
    assert registry["sources"] == ["memory"]
    assert registry["answered_by"] == {"edit": "memory", "rw": "memory", "ro": "none", "ar": "none"}
    assert registry["labels"]["memory"] == "embedded"
    assert registry["labels"]["redis"] == "Redis"
    assert registry["labels"]["admin"] == "Admin Module"
    assert registry["reloaded_at"].endswith("Z")
    node = body["node"]
    assert node["version"]
    assert node["database"] == ("sqlite" if server.backend == "sqlite" else "postgresql")
    assert node["uptime_seconds"] >= 0
    assert node["window_seconds"] == 60


def _element(
    element_id: str,
    mode: ElementMode,
    *,
    priority: int = 1,
    status: CapacityStatus = CapacityStatus.OK,
    healthy: bool = True,
) -> ElementInfo:
    return ElementInfo(
        element_id, mode, priority, f"https://ops:s3cret@{element_id}.example:8010/", 1000, 400,
        600, status, healthy,
    )  # fmt: skip


def test_elements_of_every_mode_and_whether_uploads_can_go_there(tmp_path: Path) -> None:
    """The report over real components (SQLite, the registry chain, the element directory):
    every element the registry lists shows, read-only (ro) and archived (ar) ones too, each
    with its mode; only edit and rw ones take uploads, and only while healthy, not full and
    with a closed breaker."""
    url = Settings.from_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}).database.url
    registry = MemoryRegistry(
        [
            _element("se-edit", ElementMode.EDIT, priority=2),
            _element("se-edit-broken", ElementMode.EDIT, priority=1),
            _element("se-rw-full", ElementMode.RW, status=CapacityStatus.FULL),
            _element("se-ro", ElementMode.RO, priority=5),
            _element("se-ar", ElementMode.AR, healthy=False),
        ]
    )
    chain = ChainRegistry([("memory", registry)])
    elements = ElementDirectory(None, None, BreakerSettings(failure_threshold=1))
    elements.breaker("se-edit-broken").record_failure()

    async def scenario() -> dict[str, Any]:
        await schema.upgrade(url)
        db = await open_database(url)
        try:
            (tmp_path / "staging").mkdir()
            uploads = UploadStore(
                SqlSessionStore(db),
                FileStaging(tmp_path / "staging"),
                MemoryLocker(5),
                UploadPolicy(3600, 1 << 30),
            )
            report = StatusReport(
                SqlStatusQueries(db), uploads, chain, elements, None, Throughput(),
                NodeFacts("node-t", "0.0", "sqlite"),
            )  # fmt: skip
            return await report.snapshot()
        finally:
            await db.close()

    storage = asyncio.run(scenario())["storage"]
    rows = {(e["element_id"], e["mode"]): e for e in storage["elements"]}
    assert list(rows) == [
        ("se-edit-broken", "edit"),
        ("se-edit", "edit"),
        ("se-rw-full", "rw"),
        ("se-ro", "ro"),
        ("se-ar", "ar"),
    ]
    flags = {key[0]: (e["writable"], e["usable"]) for key, e in rows.items()}
    assert flags == {
        "se-edit": (True, True),
        "se-edit-broken": (True, False),  # its breaker is open
        "se-rw-full": (True, False),
        "se-ro": (False, False),
        "se-ar": (False, False),
    }
    assert rows[("se-edit-broken", "edit")]["breaker"] == "open"
    assert rows[("se-rw-full", "rw")]["capacity_status"] == "full"
    assert rows[("se-ar", "ar")]["healthy"] is False
    assert rows[("se-ro", "ro")]["used_percent"] == 40.0
    # Credentials in an endpoint are no business of the page.
    assert {e["endpoint"] for e in rows.values()} == {
        f"https://{key[0]}.example:8010/" for key in rows
    }
    assert storage["registry"]["answered_by"] == dict.fromkeys(("edit", "rw", "ro", "ar"), "memory")
    assert storage["registry"]["reloaded_at"] is None  # no periodic reload here
    # The status reads leave the chain's latest source as an upload's read of rw leaves it.
    assert chain.last_source == "memory"
    assert chain.last_errors == []


def test_the_page_signs_in_with_a_cookie(server: Server) -> None:
    session = requests.Session()
    login_page = session.get(f"{server.url}/status", timeout=10)
    assert login_page.status_code == 401
    assert 'name="token"' in login_page.text
    csp = login_page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'nonce-" in csp
    assert login_page.headers["X-Frame-Options"] == "DENY"

    user = session.post(
        f"{server.url}/status/login", data={"token": server.keys.token()}, timeout=10
    )
    assert user.status_code == 403
    assert "tusingest_status" not in session.cookies

    hostile = session.post(
        f"{server.url}/status/login", data={"token": "<script>alert(1)</script>"}, timeout=10
    )
    assert hostile.status_code == 401
    assert "<script>alert(1)" not in hostile.text

    admin = session.post(
        f"{server.url}/status/login",
        data={"token": server.keys.token("root", Role.ADMIN)},
        allow_redirects=False,
        timeout=10,
    )
    assert admin.status_code == 303
    assert admin.headers["Location"] == "/status"
    cookie = admin.headers["Set-Cookie"]
    assert cookie.startswith("tusingest_status=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 3600  # no longer than the token lives

    page = session.get(f"{server.url}/status", timeout=10)
    assert page.status_code == 200
    assert 'id="in-progress"' in page.text
    # Scripts and styles only with this answer's nonce; nothing loaded from anywhere else.
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["Content-Security-Policy"])
    assert nonce is not None
    assert f"style-src 'nonce-{nonce[1]}'" in page.headers["Content-Security-Policy"]
    assert re.findall(r"<(script|style)\b([^>]*)>", page.text) == [
        ("style", f' nonce="{nonce[1]}"'),
        ("script", f' nonce="{nonce[1]}"'),
    ]
    assert all(
        link.startswith("data:") for link in re.findall(r'(?:src|href)="([^"]*)"', page.text)
    )
    assert "const POLL_MS = 2000;" in page.text  # polls every 2 s
    assert session.get(f"{server.url}/api/status", timeout=10).status_code == 200

    out = session.post(f"{server.url}/status/logout", allow_redirects=False, timeout=10)
    assert out.status_code == 303
    assert "tusingest_status=" in out.headers["Set-Cookie"]
    assert "tusingest_status" not in session.cookies
    assert session.get(f"{server.url}/api/status", timeout=10).status_code == 401


def _cookie(response: requests.Response) -> tuple[int, list[str]]:
    """The status cookie's Max-Age and its other attributes."""
    assert response.status_code == 303, response.text
    name, *attributes = [part.strip() for part in response.headers["Set-Cookie"].split(";")]
    assert name.startswith("tusingest_status=")
    (max_age,) = [int(a.split("=")[1]) for a in attributes if a.startswith("Max-Age=")]
    return max_age, attributes


def test_the_cookie_lives_as_long_as_the_token_at_most_8_hours(server: Server) -> None:
    def sign_in(token: str, **headers: str) -> requests.Response:
        return requests.post(
            f"{server.url}/status/login",
            data={"token": token},
            headers=headers,
            allow_redirects=False,
            timeout=10,
        )

    short, _ = _cookie(sign_in(server.keys.token("root", Role.ADMIN, ttl=600)))
    assert 590 <= short <= 600
    day, attributes = _cookie(sign_in(server.keys.token("root", Role.ADMIN, ttl=86400)))
    assert day == 8 * 3600
    assert "Secure" not in attributes  # plain HTTP
    # Behind a proxy that ended TLS (and says so), the cookie goes over HTTPS only.
    proxied = sign_in(server.keys.token("root", Role.ADMIN), **{"X-Forwarded-Proto": "https"})
    assert "Secure" in _cookie(proxied)[1]
    hostile = sign_in(
        server.keys.token("root", Role.ADMIN), **{"X-Forwarded-Proto": "http, https; x=<b>"}
    )
    assert "Secure" not in _cookie(hostile)[1]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_without_authentication_the_page_opens_at_once(backend: str, make_server: Any) -> None:
    open_server: Server = make_server(backend, AUTH_ENABLED="off")
    page = requests.get(f"{open_server.url}/status", timeout=10)
    assert page.status_code == 200
    assert 'id="in-progress"' in page.text
    assert 'name="token"' not in page.text  # no sign-in form
    feed = requests.get(f"{open_server.url}/api/status", timeout=10)
    assert feed.status_code == 200
    assert feed.json()["node"]["version"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_latest_20_verdicts_and_50_operations(backend: str, make_server: Any) -> None:
    """Each rejection queues a webhook delivery to a receiver that is not there (retried in
    an hour): 51 verdicts and 51 operations, of which the feed lists the latest 20 and 50."""
    quiet: Server = make_server(
        backend,
        WEBHOOK_URLS=f"http://127.0.0.1:{free_port()}/hook",
        WEBHOOK_SECRET="a-secret-long-enough-0123456789",
        WEBHOOK_RETRY_BASE_SECONDS="3600",
        WEBHOOK_RETRY_MAX_SECONDS="3600",
    )
    rejected: list[str] = []
    for n in range(51):
        response = quiet.request(
            "POST",
            quiet.endpoint,
            headers={"Upload-Length": "0", "Upload-Metadata": named(f"e{n}.txt")},
        )
        assert response.status_code == 422, response.text
        rejected.append(response.headers["Location"].rsplit("/", 1)[-1])
    # A rejection is answered once its verdict is committed; its ingest operation ends (and
    # leaves the counts) just after.
    deadline = time.monotonic() + 10
    while sum((body := _status(quiet))["operations"]["counts"].values()) > 51:
        assert time.monotonic() < deadline, body["operations"]["counts"]
        time.sleep(0.05)
    recent = body["uploads"]["recent"]
    assert len(recent) == 20
    assert {r["upload_id"] for r in recent} == set(rejected[-20:])
    assert [r["at"] for r in recent] == sorted((r["at"] for r in recent), reverse=True)
    operations = body["operations"]
    assert sum(operations["counts"].values()) == 51
    assert len(operations["items"]) == 50
    assert {item["kind"] for item in operations["items"]} == {"webhook"}
    changed = [item["updated_at"] for item in operations["items"]]
    assert changed == sorted(changed, reverse=True)  # the most recently changed first


def test_a_huge_token_is_refused_before_it_is_read(server: Server) -> None:
    response = requests.post(
        f"{server.url}/status/login", data={"token": "x" * (64 << 10)}, timeout=10
    )
    assert response.status_code == 413


@pytest.mark.parametrize("backend", ["sqlite"])
def test_metrics_can_be_switched_off(backend: str, make_server: Any) -> None:
    quiet: Server = make_server(backend, PROMETHEUS_METRICS_ENABLED="false")
    response = requests.get(f"{quiet.url}/metrics", timeout=10)
    assert response.status_code == 404
    assert requests.get(f"{quiet.url}/health/live", headers=TUS, timeout=10).status_code == 200
