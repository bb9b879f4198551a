"""Shared fixtures: real servers over real HTTP on SQLite and PostgreSQL, test keys, clients."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import brotli
import pytest
import requests
from aiohttp import web

from tests.rediskeys import drop_keys, new_prefix, require_redis
from tusingest.app import create_app
from tusingest.domain import Role
from tusingest.keys import ensure_dev_keys, mint_token
from tusingest.settings.app import Settings
from tusingest.store import schema

TUS = {"Tus-Resumable": "1.0.0"}
BACKENDS = ("sqlite", "postgres")


def pg_admin_dsn() -> str:
    """The server the tests create their databases in: TEST_DATABASE_URL (a given server), else
    DATABASE_URL (`scripts/services start pg` exports its private cluster's; `scripts/test` does
    this), else the machine's server on 5432, which other clients share."""
    dsn = (
        os.environ.get("TEST_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


async def _create_database(name: str) -> str:
    admin = pg_admin_dsn()
    try:
        conn = await asyncpg.connect(admin, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is required for the tests and not reachable at {admin}: {exc} "
            '(eval "$(scripts/services start pg)" starts a private one, or set TEST_DATABASE_URL)'
        )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin.rpartition("/")
    return f"{base}/{name}"


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(pg_admin_dsn(), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def new_pg_database() -> Iterator[Callable[[], str]]:
    """Factory for fresh, empty PostgreSQL databases, dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"tusingest_t_{uuid.uuid4().hex[:12]}"
        url = asyncio.run(_create_database(name))
        created.append(name)
        return url

    yield make
    for name in created:
        asyncio.run(_drop_database(name))


@pytest.fixture(scope="session")
def pg_url(new_pg_database: Callable[[], str]) -> str:
    """One migrated PostgreSQL database shared by the session's servers."""
    url = new_pg_database()
    asyncio.run(schema.upgrade(Settings.from_env({"DATABASE_URL": url}).database.url))
    return url


@dataclass
class Keys:
    private: Path
    public: Path
    _tokens: dict[tuple[str, Role, int, str | None], str] = field(default_factory=dict)

    def token(
        self, sub: str = "alice", role: Role = Role.USER, ttl: int = 3600, name: str | None = None
    ) -> str:
        # Signing parses the RSA key (~25 ms): reuse tokens, they outlive the session.
        key = (sub, role, ttl, name)
        if key not in self._tokens:
            self._tokens[key] = mint_token(
                self.private, sub=sub, name=name, role=role, ttl_seconds=ttl
            )
        return self._tokens[key]


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """An RSA key pair generated for this test session (never committed)."""
    private = tmp_path_factory.mktemp("keys") / "jwt_private.pem"
    return Keys(private=private, public=ensure_dev_keys(private))


class ServerThread:
    """A real tusingest app on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        runner = web.AppRunner(create_app(self.settings))
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            await runner.cleanup()
            return
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@dataclass
class Server:
    """A running server plus what tests need to talk to it."""

    url: str
    backend: str
    settings: Settings
    keys: Keys
    session: requests.Session = field(default_factory=requests.Session)
    # Stops it before the session ends (a test that breaks its database, say).
    stop: Callable[[], None] = lambda: None

    @property
    def endpoint(self) -> str:
        return f"{self.url}/files/"

    def headers(self, sub: str = "alice", role: Role = Role.USER, **extra: str) -> dict[str, str]:
        return {**TUS, "Authorization": f"Bearer {self.keys.token(sub, role)}", **extra}

    def request(
        self,
        method: str,
        url: str,
        *,
        sub: str = "alice",
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A tus request as `sub` (Tus-Resumable and bearer token added; `headers` win)."""
        merged = self.headers(sub)
        merged.update(headers or {})
        full = url if url.startswith("http") else f"{self.url}{url}"
        return self.session.request(method, full, headers=merged, timeout=60, **kwargs)

    def create(self, length: int | None = 10, *, sub: str = "alice", **headers: str) -> str:
        """POST a new upload; returns its absolute URL."""
        h = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
        h.update(headers)
        response = self.request("POST", self.endpoint, sub=sub, headers=h)
        assert response.status_code == 201, response.text
        return f"{self.url}{response.headers['Location']}"

    def patch(
        self, url: str, data: bytes, offset: int, *, sub: str = "alice", **headers: str
    ) -> requests.Response:
        h = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
        h.update(headers)
        return self.request("PATCH", url, sub=sub, headers=h, data=data)

    def staged(self, url: str) -> Path:
        return self.settings.uploads.staging_dir / url.rstrip("/").rsplit("/", 1)[-1]

    def status(self, url: str, sub: str = "alice") -> dict[str, Any]:
        """The upload's JSON status (`GET /api/files/upload/session/{id}`)."""
        upload_id = url.rstrip("/").rsplit("/", 1)[-1]
        response = self.session_http(f"/api/files/upload/session/{upload_id}", sub)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def session_http(self, path: str, sub: str = "alice") -> requests.Response:
        return self.session.get(
            f"{self.url}{path}",
            headers={"Authorization": f"Bearer {self.keys.token(sub)}"},
            timeout=60,
        )

    def stored(self, url: str) -> Path:
        """Where the local storage element holds a stored upload's bytes."""
        info = self.status(url)
        assert info["upload_status"] == "stored", info
        file = info["file"]
        storage: Path = self.settings.storage.local_storage_dir
        return storage / str(file["storage_path"]) / str(file["storage_filename"])

    def content(self, url: str) -> bytes:
        """An upload's bytes: stored ones once the pipeline stored it, else the staged ones."""
        info = self.status(url)
        if info["upload_status"] != "stored":
            staged = self.staged(url)
            # The staging file appears with the first bytes an upload receives.
            return staged.read_bytes() if staged.exists() else b""
        data = self.stored(url).read_bytes()
        codec = info["file"]["codec"]
        if codec == "gzip":
            return gzip.decompress(data)
        if codec == "brotli":
            return bytes(brotli.decompress(data))
        return data


@pytest.fixture(scope="session")
def make_server(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, pg_url: str
) -> Iterator[Callable[..., Server]]:
    """Start servers: `make_server(backend, **env)`; all stopped at the end of the session."""
    threads: list[ServerThread] = []
    shared = tmp_path_factory.mktemp("pg-cluster")

    def make(backend: str = "sqlite", **env: str) -> Server:
        data_dir = tmp_path_factory.mktemp(f"data-{backend}")
        values = {
            "DATA_DIR": str(data_dir),
            "AUTH_PUBLIC_KEY_PATH": str(keys.public),
            "LOG_LEVEL": "WARNING",
            # Most tests upload random bytes (application/octet-stream); the pipeline's type
            # checks have their own tests with the default list.
            "ALLOWED_MIME_TYPES": "*",
        }
        if backend == "postgres" and "DATABASE_URL" not in env:
            # Servers sharing a database form a cluster: any node may run any node's completion
            # work, so they share the staging directory and the storage element too.
            values["DATABASE_URL"] = pg_url
            values["STAGING_DIR"] = str(shared / "staging")
            values["LOCAL_STORAGE_DIR"] = str(shared / "storage")
        values.update(env)
        settings = Settings.from_env(values)
        thread = ServerThread(settings).start()
        threads.append(thread)
        return Server(
            url=thread.url, backend=backend, settings=settings, keys=keys, stop=thread.stop
        )

    yield make
    for thread in threads:
        thread.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, make_server: Callable[..., Server]) -> Server:
    """A default-configured server, once per backend and test module."""
    backend: str = request.param
    return make_server(backend)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh Redis key prefix for one test; its keys are dropped afterwards."""
    require_redis()
    value = new_prefix()
    try:
        yield value
    finally:
        drop_keys(value)
