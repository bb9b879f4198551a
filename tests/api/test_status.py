"""The operators' status feed (`GET /api/status`) and page (`/status`) over real HTTP: admins
only (bearer token or the page's HttpOnly cookie), an upload streaming now with its live bytes
and rate, the latest verdicts, the queue, the elements and the node's own figures."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.conftest import TUS, Server
from tests.slowupload import HOSTILE, SlowUpload, named
from tusingest.domain import Role


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
    (element,) = body["storage"]["elements"]
    assert element["mode"] == "rw"
    assert element["usable"] is True
    assert element["breaker"] == "closed"
    assert 0 <= element["used_percent"] <= 100
    assert element["capacity_total"] > 0
    assert body["storage"]["registry"]["sources"] == ["memory"]
    assert body["storage"]["registry"]["answered_by"]["rw"] == "memory"
    node = body["node"]
    assert node["version"]
    assert node["database"] == ("sqlite" if server.backend == "sqlite" else "postgresql")
    assert node["uptime_seconds"] >= 0
    assert node["window_seconds"] == 60


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
    assert session.get(f"{server.url}/api/status", timeout=10).status_code == 200

    out = session.post(f"{server.url}/status/logout", allow_redirects=False, timeout=10)
    assert out.status_code == 303
    assert "tusingest_status=" in out.headers["Set-Cookie"]
    assert "tusingest_status" not in session.cookies
    assert session.get(f"{server.url}/api/status", timeout=10).status_code == 401


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
