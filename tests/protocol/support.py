"""Helpers for the tus protocol tests: raw HTTP, HTTP dates, polling, reading upload rows."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import hashlib
import http.client
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import brotli

from tests.conftest import Server
from tusingest.settings.app import Settings
from tusingest.store import schema

OCTET = "application/offset+octet-stream"
IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$"
)


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    """A generator body: requests sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def http_date(value: str) -> datetime:
    """Parse an IMF-fixdate (GMT) header value, asserting the exact format."""
    assert IMF_FIXDATE.match(value), f"not an IMF-fixdate: {value!r}"
    return email.utils.parsedate_to_datetime(value)


def offset_of(server: Server, url: str) -> int:
    response = server.request("HEAD", url)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"])


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll `predicate` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(step)


def raw_request(
    server: Server,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> http.client.HTTPResponse:
    """One request with the path sent exactly as given (no client-side normalisation)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in {**server.headers(), **(headers or {})}.items():
        conn.putheader(name, value)
    if body or method in ("POST", "PATCH"):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def send_and_drop(
    server: Server, path: str, headers: Mapping[str, str], body: bytes, content_length: int
) -> None:
    """Send a request announcing `content_length` body bytes, send only `body`, then close."""
    parts = urlsplit(server.url)
    lines = [f"PATCH {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in {**server.headers(), **headers}.items()]
    lines.append(f"Content-Length: {content_length}")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head_bytes + body)
        sock.shutdown(socket.SHUT_WR)


def upload_status(server: Server, upload_id: str) -> str | None:
    """The `status` column of an upload row, read straight from the database."""
    url = server.settings.database.url
    if server.backend == "sqlite":
        path = url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            row = conn.execute("SELECT status FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        return None if row is None else str(row[0])

    async def fetch() -> str | None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            value = await conn.fetchval("SELECT status FROM uploads WHERE id = $1", upload_id)
        finally:
            await conn.close()
        return None if value is None else str(value)

    return asyncio.run(fetch())


def own_cluster(new_pg_database: Callable[[], str], tmp_path: Path) -> dict[str, str]:
    """Server settings for a PostgreSQL server apart from the shared test cluster.

    A reaper sweeps its whole database, and its orphan sweep deletes staged files its database
    has no row for: a server with a short session lifetime must neither share the database
    (it would expire the other servers' uploads, and theirs its own) nor the staging directory
    (it would delete every other server's staged bytes after a second).
    """
    url = new_pg_database()
    asyncio.run(schema.upgrade(Settings.from_env({"DATABASE_URL": url}).database.url))
    return {
        "DATABASE_URL": url,
        "STAGING_DIR": str(tmp_path / "staging"),
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }


def staged_names(server: Server) -> set[str]:
    """The ids of the uploads whose bytes are staged (the pipeline's work dir left out).

    PostgreSQL test servers form a cluster sharing one staging directory, and the pipeline
    deletes a stored or rejected upload's staged bytes just after recording its verdict: files
    of earlier tests and other nodes may leave the directory at any time. Nothing adds files
    there unasked, so tests compare the names against a snapshot (`staged_since`).
    """
    return {p.name for p in server.settings.uploads.staging_dir.iterdir() if p.is_file()}


def staged_since(server: Server, before: set[str]) -> set[str]:
    """Staged files that appeared since the snapshot `before` (`staged_names`)."""
    return staged_names(server) - before


def wait_unstaged(server: Server, url: str, timeout: float = 10.0) -> None:
    """Wait until `url`'s staged bytes are gone (the pipeline deletes them once it decided)."""
    wait_until(lambda: not server.staged(url).exists(), timeout=timeout)


def content_as(server: Server, url: str, sub: str) -> bytes:
    """`server.content(url)` for an upload owned by `sub`: stored bytes once stored, else staged."""
    info = server.status(url, sub=sub)
    if info["upload_status"] != "stored":
        staged = server.staged(url)
        # The staging file appears with the first bytes an upload receives.
        return staged.read_bytes() if staged.exists() else b""
    file = info["file"]
    path = server.settings.storage.local_storage_dir / file["storage_path"]
    data = (path / file["storage_filename"]).read_bytes()
    if file["codec"] == "gzip":
        return gzip.decompress(data)
    if file["codec"] == "brotli":
        return bytes(brotli.decompress(data))
    return data


def upload_ids(server: Server, owner: str = "alice") -> set[str]:
    """The ids of all of `owner`'s upload rows, read straight from the database.

    A creation the pipeline refuses at once (422) carries no Location: a snapshot taken before
    it finds the new upload's id.
    """
    url = server.settings.database.url
    if server.backend == "sqlite":
        path = url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT id FROM uploads WHERE owner = ?", (owner,)).fetchall()
        return {str(row[0]) for row in rows}

    async def fetch() -> set[str]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch("SELECT id FROM uploads WHERE owner = $1", owner)
        finally:
            await conn.close()
        return {str(row["id"]) for row in rows}

    return asyncio.run(fetch())


def upload_row(server: Server, upload_id: str) -> dict[str, Any] | None:
    """The whole `uploads` row of an upload (column → value), read straight from the database."""
    url = server.settings.database.url
    if server.backend == "sqlite":
        path = url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        return None if row is None else dict(row)

    async def fetch() -> dict[str, Any] | None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            record = await conn.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
        finally:
            await conn.close()
        return None if record is None else dict(record)

    return asyncio.run(fetch())
