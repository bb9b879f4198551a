"""tus expiration extension against SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import BACKENDS, Server
from tests.protocol.support import (
    http_date,
    own_cluster,
    upload_id,
    upload_ids,
    upload_row,
    upload_status,
    wait_until,
)

TTL = 1.0  # seconds, for the short-lived servers below


@pytest.fixture(scope="module")
def short_lived(
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, float], Server]:
    """Start a server whose sessions live `TTL` seconds: `short_lived(backend, reaper_seconds)`."""

    def make(backend: str, reaper_seconds: float) -> Server:
        env = {
            "UPLOAD_SESSION_TTL_HOURS": str(TTL / 3600),
            "UPLOAD_REAPER_INTERVAL_SECONDS": str(reaper_seconds),
        }
        if backend == "postgres":
            # Every test server's reaper sweeps its whole database (each minute) and staging
            # directory: in the shared cluster they would reap these uploads behind the tests'
            # backs, and this server's reaper theirs.
            tmp = tmp_path_factory.mktemp("short-lived")
            env.update(own_cluster(new_pg_database, tmp))
        return make_server(backend, **env)

    return make


@pytest.fixture(scope="module", params=BACKENDS)
def unreaped(request: pytest.FixtureRequest, short_lived: Callable[[str, float], Server]) -> Server:
    """Sessions live 1 s; the reaper practically never runs."""
    return short_lived(request.param, 3600)


@dataclass
class Reaped:
    server: Server
    incomplete: str
    deferred: str
    complete: str


@pytest.fixture(scope="module", params=BACKENDS)
def reaped(request: pytest.FixtureRequest, short_lived: Callable[[str, float], Server]) -> Reaped:
    """Sessions live 1 s, the reaper runs every 0.1 s; returns uploads after one reaping."""
    server = short_lived(request.param, 0.1)
    complete = server.create(3)
    assert server.patch(complete, b"abc", 0).status_code == 204
    incomplete = server.create(10)
    assert server.patch(incomplete, b"abcd", 0).status_code == 204
    deferred = server.create(None)
    # A deferred upload with no byte yet has no staged file: its row says when it is reaped
    # (the reaper marks a row, then deletes its bytes).
    wait_until(
        lambda: all(
            upload_status(server, upload_id(url)) == "expired" and not server.staged(url).exists()
            for url in (incomplete, deferred)
        ),
        timeout=15,
    )
    return Reaped(server, incomplete, deferred, complete)


def _near_window(value: str, server: Server) -> datetime:
    expires = http_date(value)
    window = timedelta(seconds=server.settings.uploads.session_ttl_seconds)
    now = datetime.now(UTC)
    assert now + window - timedelta(seconds=5) <= expires <= now + window + timedelta(seconds=1)
    return expires


# --- Upload-Expires on responses -------------------------------------------------------------


def test_upload_expires_on_201_and_every_patch_while_incomplete(server: Server) -> None:
    response = server.request("POST", server.endpoint, headers={"Upload-Length": "6"})
    assert response.status_code == 201
    _near_window(response.headers["Upload-Expires"], server)
    url = f"{server.url}{response.headers['Location']}"
    for data, offset in [(b"ab", 0), (b"", 2), (b"cd", 2)]:
        patched = server.patch(url, data, offset)
        assert patched.status_code == 204
        _near_window(patched.headers["Upload-Expires"], server)


def test_upload_expires_on_deferred_upload_patches(server: Server) -> None:
    url = server.create(None)
    patched = server.patch(url, b"ab", 0)
    _near_window(patched.headers["Upload-Expires"], server)
    declared = server.patch(url, b"", 2, **{"Upload-Length": "4"})
    _near_window(declared.headers["Upload-Expires"], server)


def test_upload_expires_moves_forward_with_activity(server: Server) -> None:
    response = server.request("POST", server.endpoint, headers={"Upload-Length": "6"})
    created = http_date(response.headers["Upload-Expires"])
    url = f"{server.url}{response.headers['Location']}"
    time.sleep(1.02 - time.time() % 1)  # into the next wall-clock second (dates have 1 s steps)
    patched = server.patch(url, b"ab", 0)
    after_patch = http_date(patched.headers["Upload-Expires"])
    assert after_patch > created


def test_upload_expires_absent_once_complete(server: Server) -> None:
    url = server.create(4)
    assert "Upload-Expires" in server.patch(url, b"ab", 0).headers
    last = server.patch(url, b"cd", 2)
    assert last.status_code == 204
    assert "Upload-Expires" not in last.headers
    assert "Upload-Expires" not in server.request("HEAD", url).headers
    again = server.patch(url, b"", 4)
    assert again.status_code == 204
    assert "Upload-Expires" not in again.headers


def test_zero_length_upload_has_no_expiry(server: Server) -> None:
    before = upload_ids(server)
    response = server.request("POST", server.endpoint, headers={"Upload-Length": "0"})
    # Complete at creation, so judged at once: the pipeline refuses empty files.
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "empty_file"
    assert "Upload-Expires" not in response.headers
    (created,) = upload_ids(server) - before
    row = upload_row(server, created)
    assert row is not None
    assert (row["status"], row["expires_at"]) == ("rejected", None)
    head = server.request("HEAD", f"{server.endpoint}{created}")
    assert head.status_code == 422
    assert "Upload-Expires" not in head.headers


# --- expiry ------------------------------------------------------------------------------------


def test_activity_postpones_expiry_then_overdue_upload_is_410(unreaped: Server) -> None:
    server = unreaped
    created = time.monotonic()
    url = server.create(10)
    time.sleep(TTL * 0.5)
    assert server.patch(url, b"abcd", 0).status_code == 204
    patched = time.monotonic()
    time.sleep(max(0.0, created + TTL * 1.2 - time.monotonic()))
    # Past the creation deadline, but the PATCH moved it.
    assert server.request("HEAD", url).status_code == 200
    time.sleep(max(0.0, patched + TTL * 1.1 - time.monotonic()))
    head = server.request("HEAD", url)
    assert head.status_code == 410
    assert head.headers["Tus-Resumable"] == "1.0.0"
    assert "Upload-Offset" not in head.headers
    assert server.patch(url, b"ef", 4).status_code == 410
    assert server.request("DELETE", url).status_code == 410
    # Refused by its deadline alone: the reaper has not run yet.
    assert upload_status(server, upload_id(url)) == "receiving"
    assert server.staged(url).read_bytes() == b"abcd"


@pytest.mark.parametrize("which", ["incomplete", "deferred"])
def test_expired_upload_is_410_on_head_patch_delete(reaped: Reaped, which: str) -> None:
    server, url = reaped.server, getattr(reaped, which)
    head = server.request("HEAD", url)
    assert head.status_code == 410
    assert "Upload-Offset" not in head.headers
    patch = server.patch(url, b"ef", 4 if which == "incomplete" else 0)
    assert patch.status_code == 410
    assert patch.headers["Tus-Resumable"] == "1.0.0"
    assert server.request("DELETE", url).status_code == 410
    assert server.request("HEAD", url).status_code == 410  # DELETE did not turn it into 404


@pytest.mark.parametrize("which", ["incomplete", "deferred"])
def test_reaper_deletes_staged_bytes_and_marks_expired(reaped: Reaped, which: str) -> None:
    url = getattr(reaped, which)
    assert not reaped.server.staged(url).exists()
    assert upload_status(reaped.server, upload_id(url)) == "expired"


def test_complete_upload_does_not_expire(reaped: Reaped) -> None:
    server, url = reaped.server, reaped.complete
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "3"
    assert head.headers["X-Upload-Status"] == "stored"
    assert server.content(url) == b"abc"
    assert upload_status(server, upload_id(url)) == "stored"
    assert server.request("DELETE", url).status_code == 204
