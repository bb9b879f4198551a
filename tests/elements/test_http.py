"""HttpElement against the reference SE server over real HTTP: the file endpoints (upload,
metadata, download, delete) and the SE quirks the ingester works around."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.conftest import Keys
from tests.tokens import StaticToken
from tusingest.domain import ElementMode, FileToStore
from tusingest.elements.http import ElementMismatch, ElementRejected, HttpElement
from tusingest.elements.local import LocalElement
from tusingest.elements.token import MintedToken
from tusingest.errors import TransientError
from tusingest.ports import TokenSource
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ElementServerSettings

NAME = "отчёт 2025.pdf"
METADATA = {"retention_policy": "temporary", "md5": "ab" * 16, "upload_id": "u-1"}


def sa_token(keys: Keys, ttl: int = 600, **claims: Any) -> str:
    """A service-account token as the Admin Module issues it: RS256, the claims the SE checks."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": "sa-ingest",
        "name": "ingester",
        "role": "admin",
        "type": "service_account",
        "client_id": "sa_ingest",
        "jti": uuid.uuid4().hex,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + ttl,
    }
    return jwt.encode(body | claims, keys.private.read_bytes(), algorithm="RS256")


def _hidden(path: Path, root: Path) -> bool:
    """Under a dot directory of the element: its index of links, its incoming uploads."""
    return path.relative_to(root).parts[0].startswith(".")


@dataclass
class Running:
    url: str
    root: Path
    session: aiohttp.ClientSession

    def element(self, mode: ElementMode, token: TokenSource, **kw: Any) -> HttpElement:
        return HttpElement("se-01", self.url, mode, self.session, token, **kw)

    def files(self) -> list[Path]:
        """Everything the SE keeps (data and attr.json), temporaries included."""
        return [p for p in self.root.rglob("*") if p.is_file() and not _hidden(p, self.root)]


@asynccontextmanager
async def serve(tmp_path: Path, keys: Keys, mode: ElementMode) -> AsyncIterator[Running]:
    settings = ElementServerSettings(
        element_id="se-01",
        mode=mode,
        root=tmp_path / "se",
        capacity=1 << 40,
        priority=1,
        public_key=keys.public.read_bytes(),
    )
    runner = web.AppRunner(create_element_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(f"http://{host}:{port}", settings.root, session)
    finally:
        await runner.cleanup()


def make_file(tmp_path: Path, size: int = 5000, *, chunk: int = 1 << 20) -> tuple[Path, str]:
    path = tmp_path / f"src-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(chunk, left))
            f.write(data)
            digest.update(data)
            left -= len(data)
    return path, digest.hexdigest()


def item_for(
    source: Path, sha256: str, *, file_id: str | None = None, name: str = NAME
) -> FileToStore:
    return FileToStore(
        file_id=file_id or str(uuid.uuid4()),
        source=source,
        original_filename=name,
        content_type="application/pdf",
        size=source.stat().st_size,
        sha256=sha256,
        owner_sub="alice",
        owner_name="Alice",
        uploaded_at=datetime.now(UTC),
        metadata=METADATA,
    )


def test_store_utf8_name_verified_and_metadata_patched(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            element = se.element(ElementMode.EDIT, MintedToken(keys.private, name="ingester"))
            stored = await element.store(item)
            assert (stored.file_id, stored.element_id) == (item.file_id, "se-01")
            assert (stored.size, stored.sha256) == (item.size, sha)
            found = await element.metadata(item.file_id)
            assert found is not None
            assert found["original_filename"] == NAME  # raw UTF-8, not percent-encoded
            assert (found["file_size"], found["checksum"]) == (item.size, sha)
            assert found["content_type"] == "application/pdf"
            assert found["created_by_username"] == "ingester"  # the minted token's `name`
            assert (found["storage_filename"], found["storage_path"]) == (
                stored.storage_filename,
                stored.storage_path,
            )
            attr = await LocalElement(se.root, "se-01").read_attr(item.file_id)
            assert attr is not None
            assert attr["metadata"] == METADATA
            data = se.root / stored.storage_path / stored.storage_filename
            assert data.read_bytes() == source.read_bytes()

    asyncio.run(main())


def test_a_long_name_is_shortened_for_the_se_and_kept_in_metadata(
    tmp_path: Path, keys: Keys
) -> None:
    """A real storage element fails on names whose stem + its token's name + extension pass
    191 UTF-8 bytes: the name sent is cut to fit, the full one kept in attr metadata."""
    source, sha = make_file(tmp_path)
    long_name = "ж" * 150 + ' "quoted".pdf'  # 300 bytes of stem
    item = item_for(source, sha, name=long_name)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            element = se.element(ElementMode.EDIT, MintedToken(keys.private, name="ingester"))
            await element.store(item)
            found = await element.metadata(item.file_id)
            assert found is not None
            sent = found["original_filename"]
            assert sent.endswith(".pdf")
            assert sent.startswith("жжж")
            assert '"' not in sent
            assert len(sent.encode()) + len("ingester") <= 191
            attr = await LocalElement(se.root, "se-01").read_attr(item.file_id)
            assert attr is not None
            assert attr["metadata"]["original_filename"] == long_name

    asyncio.run(main())


def test_retry_returns_the_same_copy(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.RW) as se:
            element = se.element(ElementMode.RW, StaticToken(sa_token(keys)))
            first = await element.store(item)
            assert await element.store(item) == first
            assert len(se.files()) == 2  # one data file and its attr.json

    asyncio.run(main())


def test_mismatched_earlier_copy_is_replaced(tmp_path: Path, keys: Keys) -> None:
    other, other_sha = make_file(tmp_path)
    source, sha = make_file(tmp_path)
    file_id = str(uuid.uuid4())

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.RW) as se:
            element = se.element(ElementMode.RW, StaticToken(sa_token(keys)))
            await element.store(item_for(other, other_sha, file_id=file_id))
            stored = await element.store(item_for(source, sha, file_id=file_id))
            assert stored.sha256 == sha
            assert len(se.files()) == 2

    asyncio.run(main())


def test_delete_on_edit_element(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            element = se.element(ElementMode.EDIT, MintedToken(keys.private, name="ingester"))
            await element.store(item)
            await element.delete(item.file_id)
            assert await element.metadata(item.file_id) is None
            assert se.files() == []
            await element.delete(item.file_id)  # absent: not an error
            await element.delete("not-a-uuid")

    asyncio.run(main())


def test_delete_on_rw_element_goes_through_gc(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.RW) as se:
            element = se.element(ElementMode.RW, StaticToken(sa_token(keys)))
            await element.store(item)
            await element.delete(item.file_id)  # DELETE /files would be a 400 on rw
            assert await element.metadata(item.file_id) is None
            assert se.files() == []
            await element.delete(item.file_id)  # already_deleted
            # gc needs a service account: a user token is refused, clearly.
            user = se.element(ElementMode.RW, StaticToken(keys.token(sub="bob")))
            with pytest.raises(ElementRejected, match="403"):
                await user.delete(item.file_id)

    asyncio.run(main())


def test_wrong_checksum_leaves_nothing(tmp_path: Path, keys: Keys) -> None:
    source, _ = make_file(tmp_path)
    item = item_for(source, "0" * 64)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.RW) as se:
            element = se.element(ElementMode.RW, StaticToken(sa_token(keys)))
            with pytest.raises(ElementMismatch) as caught:
                await element.store(item)
            assert isinstance(caught.value, TransientError)
            assert await element.metadata(item.file_id) is None
            assert se.files() == []

    asyncio.run(main())


class Renewed:
    """Implements `TokenSource`: an expired token, until asked for a fresh one (if
    `renewable`), which is then kept."""

    def __init__(self, keys: Keys, *, renewable: bool = True) -> None:
        self.keys = keys
        self.renewable = renewable
        self.calls: list[bool] = []
        self.current = sa_token(keys, ttl=-5)

    async def token(self, *, fresh: bool = False) -> str:
        self.calls.append(fresh)
        if fresh and self.renewable:
            self.current = sa_token(self.keys)
        return self.current


def test_expired_token_is_refreshed_once(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)
    token = Renewed(keys)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            stored = await se.element(ElementMode.EDIT, token).store(item)
            assert stored.sha256 == sha
            # The expired token once, then the fresh one for every later call.
            assert token.calls[:2] == [False, True]
            assert token.calls.count(True) == 1

    asyncio.run(main())


def test_refused_fresh_token_does_not_loop(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    token = Renewed(keys, renewable=False)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            with pytest.raises(ElementRejected) as caught:
                await se.element(ElementMode.EDIT, token).store(item_for(source, sha))
            assert caught.value.code == "element_unauthorized"
            assert token.calls == [False, True]

    asyncio.run(main())


def test_server_down_is_transient_and_quick(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            element = HttpElement(
                "se-01",
                f"http://127.0.0.1:{port}/api/v1",
                ElementMode.RW,
                session,
                StaticToken(sa_token(keys)),
                timeout=2,
                max_retries=2,
                backoff=0.01,
            )
            started = time.monotonic()
            with pytest.raises(TransientError):
                await element.store(item_for(source, sha))
            with pytest.raises(TransientError):
                await element.delete(str(uuid.uuid4()))
            assert time.monotonic() - started < 3

    asyncio.run(main())


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_64_mib_is_streamed(tmp_path: Path, keys: Keys) -> None:
    size = 64 << 20
    source, sha = make_file(tmp_path, size)
    item = item_for(source, sha, name="big.bin")

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.RW) as se:
            element = se.element(ElementMode.RW, StaticToken(sa_token(keys)))
            await element.store(item_for(*make_file(tmp_path), name="warm.bin"))  # warm up
            before = _rss()
            peak = before
            done = False

            async def sample() -> None:
                nonlocal peak
                while not done:
                    peak = max(peak, _rss())
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            try:
                stored = await element.store(item)
            finally:
                done = True
                await sampler
            peak = max(peak, _rss())
            assert (stored.size, stored.sha256) == (size, sha)
            assert peak - before < 16 << 20, f"RSS grew by {(peak - before) >> 20} MiB"

    asyncio.run(main())


def test_only_idempotent_calls_are_retried(tmp_path: Path, keys: Keys) -> None:
    """GET is retried on 5xx (max_retries + 1 tries); the upload POST is sent once (the SE
    answers a repeated file_id with 500), then a GET checks whether the SE stored it anyway."""
    source, sha = make_file(tmp_path)
    hits: dict[str, int] = {"GET": 0, "POST": 0}
    answers = {"GET": 404}

    async def get(_request: web.Request) -> web.Response:
        hits["GET"] += 1
        return web.json_response({"detail": "x"}, status=answers["GET"])

    async def post(_request: web.Request) -> web.Response:
        hits["POST"] += 1
        await _request.read()
        return web.json_response({"detail": "File upload failed: disk"}, status=500)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/files/{file_id}", get)
        app.router.add_post("/api/v1/files/upload", post)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        try:
            async with aiohttp.ClientSession() as session:
                element = HttpElement(
                    "se-01",
                    f"http://{host}:{port}",
                    ElementMode.RW,
                    session,
                    StaticToken("t"),
                    max_retries=2,
                    backoff=0.01,
                )
                with pytest.raises(TransientError, match="disk"):
                    await element.store(item_for(source, sha))
                assert hits == {"GET": 2, "POST": 1}
                answers["GET"] = 503
                with pytest.raises(TransientError, match="503"):
                    await element.metadata(str(uuid.uuid4()))
                assert hits["GET"] == 2 + 3
        finally:
            await runner.cleanup()

    asyncio.run(main())
