"""The reference SE server over real HTTP: its API's fields, status codes, modes, auth."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from aiohttp import web

from tests.conftest import Keys
from tusingest.artstore import hour_path
from tusingest.domain import ElementMode, Role
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ElementServerSettings

CAPACITY = 1_000_000
FID = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"


class ElementThread:
    """The SE app on 127.0.0.1:0 in its own thread and event loop."""

    def __init__(self, settings: ElementServerSettings) -> None:
        self.settings = settings
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._main(),), daemon=True
        )

    async def _main(self) -> None:
        runner = web.AppRunner(create_element_app(self.settings))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/api/v1"
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> ElementThread:
        self._thread.start()
        assert self._started.wait(30)
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


class SE:
    def __init__(self, thread: ElementThread, keys: Keys) -> None:
        self.url = thread.url
        self.root = thread.settings.root
        self.keys = keys

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        base: dict[str, Any] = {
            "sub": "sa-ingest",
            "name": "ingester",
            "role": "admin",
            "type": "service_account",
        }
        base |= {"jti": uuid.uuid4().hex, "iat": now, "nbf": now, "exp": now + 600}
        return jwt.encode(base | claims, self.keys.private.read_bytes(), algorithm="RS256")

    def call(self, method: str, path: str, token: str | None = "", **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token()}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def upload(
        self, data: bytes = b"hello world", name: str = "report.pdf", **fields: str
    ) -> requests.Response:
        files = {"file": (name, data, "application/pdf")}
        return self.call("POST", "/files/upload", files=files, data=fields)


@pytest.fixture
def make_se(tmp_path: Path, keys: Keys) -> Iterator[Callable[..., SE]]:
    threads: list[ElementThread] = []

    def make(mode: ElementMode = ElementMode.EDIT, *, auth: bool = True) -> SE:
        settings = ElementServerSettings(
            element_id="se-01",
            mode=mode,
            root=tmp_path / f"se-{len(threads)}",
            capacity=CAPACITY,
            priority=10,
            public_key=keys.public.read_bytes() if auth else None,
        )
        threads.append(ElementThread(settings).start())
        return SE(threads[-1], keys)

    yield make
    for thread in threads:
        thread.stop()


@pytest.fixture
def se(make_se: Callable[..., SE]) -> SE:
    return make_se()


def test_upload_answers_the_contract_body_and_writes_the_layout(se: SE) -> None:
    name = "отчёт 2024 «итог».pdf"  # raw UTF-8 in the multipart header, not percent-encoded
    response = se.upload(b"x" * 1000, name, file_id=FID, description="quarterly", version="v1")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "file_id": FID,
        "original_filename": name,
        "file_size": 1000,
        "checksum": hashlib.sha256(b"x" * 1000).hexdigest(),
        "message": "File uploaded successfully",
    }
    meta = se.call("GET", f"/files/{FID}").json()
    assert meta["original_filename"] == name
    assert meta["storage_filename"].startswith("отчёт 2024 «итог»_ingester_")
    assert meta["storage_filename"].endswith(f"_{FID}.pdf")
    assert meta["storage_path"] == hour_path(datetime.fromisoformat(meta["created_at"]))
    assert meta["created_at"].endswith("+00:00")
    assert meta["content_type"] == "application/pdf"
    assert (meta["description"], meta["version"]) == ("quarterly", "v1")
    assert meta["created_by_username"] == "ingester"
    assert meta["created_by_fullname"] is None
    assert meta["checksum"] == hashlib.sha256(b"x" * 1000).hexdigest()
    assert meta["cache_expired"] is False
    assert {"cache_updated_at", "cache_ttl_hours"} <= meta.keys()
    data = se.root / meta["storage_path"] / meta["storage_filename"]
    assert data.read_bytes() == b"x" * 1000
    attr = json.loads(Path(f"{data}.attr.json").read_text("utf-8"))
    assert attr["created_by_id"] == "sa-ingest"
    assert attr["description"] == "quarterly"
    assert not list((se.root / ".incoming").iterdir())  # the spooled body is gone


def test_upload_without_file_id_assigns_one(se: SE) -> None:
    response = se.upload()
    assert response.status_code == 201
    assert uuid.UUID(response.json()["file_id"])


def test_upload_errors(se: SE) -> None:
    assert se.upload(file_id=FID).status_code == 201
    duplicate = se.upload(file_id=FID)
    assert duplicate.status_code == 500
    assert duplicate.json() == {"detail": f"File with ID {FID} already exists"}
    bad = se.upload(file_id="not-a-uuid")
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("Invalid file_id format: ")
    assert se.upload(b"", file_id=str(uuid.uuid4())).status_code == 500
    no_name = se.call("POST", "/files/upload", files={"file": (None, b"abc")})
    assert no_name.status_code == 422
    no_file = se.call("POST", "/files/upload", files={"description": (None, "x")})
    assert no_file.status_code == 422
    assert se.upload(version="v" * 51).status_code == 422
    assert se.call("POST", "/files/upload", data=b"x").status_code == 422


@pytest.mark.parametrize("mode", [ElementMode.RO, ElementMode.AR])
def test_read_only_modes_refuse_writes(make_se: Callable[..., SE], mode: ElementMode) -> None:
    se = make_se(mode)
    response = se.upload()
    assert response.status_code == 400
    assert response.json() == {"detail": f"File upload not allowed in {mode.value} mode"}
    assert se.call("PATCH", f"/files/{FID}", json={"description": "x"}).status_code == 400
    assert se.call("DELETE", f"/files/{FID}").status_code == 400
    assert se.call("DELETE", f"/gc/{FID}").json()["status"] == "already_deleted"


def test_download_streams_the_bytes_with_the_contract_headers(se: SE) -> None:
    body = bytes(range(256)) * 100
    assert se.upload(body, "data file.bin", file_id=FID).status_code == 201
    response = se.call("GET", f"/files/{FID}/download")
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Content-Disposition"] == 'attachment; filename="data file.bin"'
    assert "ETag" not in response.headers
    ranged = se.call("GET", f"/files/{FID}/download", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 200
    assert ranged.content == body
    assert se.call("HEAD", f"/files/{FID}/download").status_code == 405
    assert se.call("GET", f"/files/{uuid.uuid4()}/download").status_code == 404


def test_download_of_a_non_latin1_name_fails_like_the_se(se: SE) -> None:
    assert se.upload(b"abc", "файл.txt", file_id=FID).status_code == 201
    assert se.call("GET", f"/files/{FID}/download").status_code == 500


def test_metadata_errors(se: SE) -> None:
    missing = se.call("GET", f"/files/{FID}")
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"File {FID} not found"}
    assert se.call("GET", "/files/nope").status_code == 422


def test_patch_rewrites_attr_json(se: SE) -> None:
    assert se.upload(file_id=FID).status_code == 201
    patch = {"description": "new", "version": "2", "metadata": {"uploaded_by": "alice"}}
    response = se.call("PATCH", f"/files/{FID}", json=patch)
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "new"
    meta = se.call("GET", f"/files/{FID}").json()
    attr_path = se.root / meta["storage_path"] / f"{meta['storage_filename']}.attr.json"
    attr = json.loads(attr_path.read_text("utf-8"))
    assert attr["metadata"] == {"uploaded_by": "alice"}
    assert (attr["description"], attr["version"]) == ("new", "2")
    assert attr["updated_at"] > attr["created_at"]
    assert se.call("PATCH", f"/files/{uuid.uuid4()}", json=patch).status_code == 404
    assert se.call("PATCH", f"/files/{FID}", json={"version": 3}).status_code == 422


def test_delete_and_gc_delete(se: SE) -> None:
    assert se.upload(file_id=FID).status_code == 201
    user = se.token(role="user")
    denied = se.call("DELETE", f"/files/{FID}", token=user)
    assert denied.status_code == 403
    assert denied.json() == {"detail": "Operator or admin access required"}
    assert se.call("DELETE", f"/files/{FID}").status_code == 204
    assert se.call("GET", f"/files/{FID}").status_code == 404
    assert se.call("DELETE", f"/files/{FID}").status_code == 404
    other = str(uuid.uuid4())
    assert se.upload(file_id=other).status_code == 201
    assert se.call("GET", f"/gc/{other}/exists").json() == {"exists": True, "file_id": other}
    gc = se.call("DELETE", f"/gc/{other}", json={"reason": "gc_cleanup", "cleanup_type": None})
    assert gc.status_code == 200
    assert gc.json()["status"] == "deleted"
    assert {"deleted_at", "deleted_by", "reason"} <= gc.json().keys()
    assert se.call("DELETE", f"/gc/{other}").json()["status"] == "already_deleted"
    assert se.call("GET", f"/files/{other}").status_code == 404
    no_sa = se.call("DELETE", f"/gc/{other}", token=se.token(type="admin_user"))
    assert no_sa.status_code == 403


def test_rw_refuses_plain_delete_but_allows_gc(make_se: Callable[..., SE]) -> None:
    se = make_se(ElementMode.RW)
    assert se.upload(file_id=FID).status_code == 201
    response = se.call("DELETE", f"/files/{FID}")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "File deletion not allowed in rw mode. Only EDIT mode allows deletion."
    }
    assert se.call("DELETE", f"/gc/{FID}").json()["status"] == "deleted"


def test_capacity_and_info_follow_uploads(se: SE) -> None:
    empty = se.call("GET", "/capacity", token=None).json()
    assert empty["storage_id"] == "se-01"
    assert empty["mode"] == "edit"
    assert empty["capacity"] == {
        "total": CAPACITY,
        "used": 0,
        "available": CAPACITY,
        "percent_used": 0.0,
    }
    assert empty["health"] == "healthy"
    assert empty["last_update"].endswith("Z")
    assert se.upload(b"a" * 12345).status_code == 201
    assert se.upload(b"b" * 100).status_code == 201
    capacity = se.call("GET", "/capacity", token=None).json()["capacity"]
    assert capacity == {
        "total": CAPACITY,
        "used": 12445,
        "available": CAPACITY - 12445,
        "percent_used": 1.24,
    }
    info = se.call("GET", "/info", token=None).json()
    assert (info["capacity_bytes"], info["used_bytes"], info["file_count"]) == (CAPACITY, 12445, 2)
    assert (info["status"], info["priority"], info["element_id"]) == ("operational", 10, "se-01")
    assert "Z" not in info["timestamp"]
    assert "+" not in info["timestamp"]
    listed = se.call("GET", "/files?limit=1").json()
    assert listed["total"] == 2
    assert len(listed["files"]) == 1
    base = se.url.removesuffix("/api/v1")
    assert requests.get(f"{base}/health/live", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{base}/health/ready", timeout=10).json()["status"] == "ready"


def test_archive_mode_reports_maintenance(make_se: Callable[..., SE]) -> None:
    se = make_se(ElementMode.AR)
    assert se.call("GET", "/info", token=None).json()["status"] == "maintenance"


def test_auth_errors(se: SE, keys: Keys) -> None:
    missing = se.call("GET", f"/files/{FID}", token=None)
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Not authenticated"}
    for token in ("garbage", se.token(exp=int(time.time()) - 10)):
        bad = se.call("GET", f"/files/{FID}", token=token)
        assert bad.status_code == 401
        assert bad.json() == {"detail": "Invalid or expired token"}
        assert bad.headers["WWW-Authenticate"] == "Bearer"
    # A token of tusingest's own dev keys (no `type`) is valid for the file endpoints.
    plain = keys.token("bob", Role.ADMIN, name="Bob")
    assert se.call("GET", f"/files/{FID}", token=plain).status_code == 404
    assert se.call("DELETE", f"/gc/{FID}", token=plain).status_code == 403


def test_auth_disabled_accepts_anonymous_calls(make_se: Callable[..., SE]) -> None:
    se = make_se(auth=False)
    response = se.call("POST", "/files/upload", token=None, files={"file": ("a.txt", b"abc")})
    assert response.status_code == 201
    file_id = response.json()["file_id"]
    meta = se.call("GET", f"/files/{file_id}", token=None).json()
    assert meta["created_by_username"] == "anonymous"
    assert meta["content_type"] == "application/octet-stream"
    assert se.call("DELETE", f"/gc/{file_id}", token=None).json()["status"] == "deleted"
