"""Health probes: liveness always; readiness aggregated over the database, Redis and the
writable elements (`ok`, `degraded`, `fail`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
import requests

from tests.conftest import Server, pg_admin_dsn
from tusingest.app import ProbeLog
from tusingest.settings.app import Settings
from tusingest.store import schema


def test_live(server: Server) -> None:
    response = requests.get(f"{server.url}/health/live", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_the_database_and_the_elements(server: Server) -> None:
    response = requests.get(f"{server.url}/health/ready", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"] == "ok"
    assert checks["registry"] == {"edit": "memory", "rw": "memory"}
    element = checks["elements"][server.settings.storage.local_element_id]
    assert element["usable"] is True
    assert element["breaker"] == "closed"
    assert "redis" not in checks  # not configured


def test_wrong_method_is_405_with_allow(server: Server) -> None:
    response = requests.post(f"{server.url}/health/live", timeout=30)
    assert response.status_code == 405
    assert "GET" in {m.strip() for m in response.headers["Allow"].split(",")}
    assert response.json()["error"] == "method_not_allowed"


def test_ready_is_503_when_the_database_is_gone(
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="tusingest.app")
    url = new_pg_database()
    asyncio.run(schema.upgrade(Settings.from_env({"DATABASE_URL": url}).database.url))
    server = make_server("postgres", DATABASE_URL=url)
    try:
        _ready_fails_once_the_database_is_dropped(server, url, caplog)
    finally:
        # Left running, its runner and reaper would retry (and log) for the rest of the run.
        server.stop()


def _ready_fails_once_the_database_is_dropped(
    server: Server, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert requests.get(f"{server.url}/health/ready", timeout=30).status_code == 200

    name = url.rsplit("/", 1)[-1]

    async def drop() -> None:
        conn = await asyncpg.connect(pg_admin_dsn(), timeout=5)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())

    response = requests.get(f"{server.url}/health/ready", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"].startswith("error: ")
    kind = body["checks"]["database"].removeprefix("error: ")
    # The answer names the kind of error; the log says what the database answered, once.
    again = requests.get(f"{server.url}/health/ready", timeout=30)
    assert again.status_code == 503
    said = [r.getMessage() for r in caplog.records if "readiness:" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"readiness: database fails: {kind}: "), said
    assert len(said[0]) > len(f"readiness: database fails: {kind}: ")
    # Liveness does not depend on the database: the process is fine, only not ready.
    assert requests.get(f"{server.url}/health/live", timeout=30).status_code == 200


def test_a_failing_component_is_logged_on_one_line_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="tusingest.app")
    probes = ProbeLog()
    failure = OSError("cannot reach http://svc:s3cret-pw@admin.example:8443/api\n  (refused)")
    for _ in range(3):
        probes.saw("admin_module", "error: OSError", failure)
    probes.saw("admin_module", "ok", None)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "readiness: admin_module fails: OSError: "
        "cannot reach http://admin.example:8443/api (refused)",
        "readiness: admin_module answers again",
    ]
