"""`tusingest upload` as the server sees it: the real client (a subprocess) talks to a real
server through a reverse proxy on 127.0.0.1 that records every request and plays the faults a
test asks for (an error status instead of the server's answer, a connection cut after the
server took a PATCH, a header taken off an answer)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.appthread import serving
from tests.cli.test_cli import COMMAND_TIMEOUT, _env
from tests.conftest import Server
from tests.nodes import free_port
from tests.rediskeys import redis_url
from tusingest.client.resume import ResumeStore, cache_file, fingerprint

SUB = "wire-uploader"
MiB = 1 << 20
# Headers that belong to one hop, or that aiohttp sets again for the body it sends.
_HOP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)


@dataclass(frozen=True)
class Seen:
    """One request the proxy got, and the status and headers the client got (0: cut off)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    status: int
    answered: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """What the `nth` request (from 1) of `method` meets: `answer` instead of the server's
    answer (not forwarded), else forwarded and then the connection cut (`cut`) or `strip`'s
    header taken off the server's answer."""

    method: str
    nth: int
    answer: int = 0
    body: str = ""
    cut: bool = False
    strip: str | None = None


@dataclass
class Wire:
    """The proxy: `url` stands for `target`; `seen` in order of arrival."""

    target: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]

    def _fault(self, method: str) -> Fault | None:
        count = sum(s.method == method for s in self.seen) + 1
        return next((f for f in self.faults if f.method == method and f.nth == count), None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        fault = self._fault(request.method)
        if fault is not None and fault.answer:
            back = {"Tus-Resumable": "1.0.0"}
            self._saw(request, headers, body, fault.answer, back)
            return web.Response(status=fault.answer, text=fault.body, headers=back)
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, self.target + request.path_qs, headers=headers, data=body
            ) as answer,
        ):
            content = await answer.read()
            status = answer.status
            back = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        if "Location" in back:
            back["Location"] = back["Location"].replace(self.target, self.url)
        if fault is not None and fault.cut:
            self._saw(request, headers, body, 0, {})
            assert request.transport is not None
            request.transport.abort()  # the server took the PATCH; its answer is lost
            return web.Response(status=status)
        if fault is not None and fault.strip is not None:
            back.pop(fault.strip, None)
        self._saw(request, headers, body, status, back)
        return web.Response(status=status, headers=back, body=content or None)

    def _saw(
        self,
        request: web.Request,
        headers: dict[str, str],
        body: bytes,
        status: int,
        answered: dict[str, str],
    ) -> None:
        self.seen.append(Seen(request.method, request.path, headers, body, status, answered))


@contextmanager
def running(wire: Wire) -> Iterator[Wire]:
    """The proxy served from its own thread and event loop while the block runs."""

    def app() -> web.Application:
        proxy = web.Application(client_max_size=64 * MiB)
        proxy.router.add_route("*", "/{tail:.*}", wire._handle)
        return proxy

    with serving(app, wire.port):
        yield wire


@pytest.fixture(scope="module")
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("sqlite")


@pytest.fixture
def wire(server: Server) -> Iterator[Wire]:
    with running(Wire(server.url)) as started:
        yield started


def _upload(
    wire: Wire, server: Server, tmp_path: Path, files: list[Path], *args: str
) -> subprocess.CompletedProcess[str]:
    token = server.keys.token(SUB)
    endpoint = f"{wire.url}/files/"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tusingest",
            "upload",
            *map(str, files),
            "--endpoint",
            endpoint,
            *args,
        ],
        cwd=tmp_path,
        env=_env(XDG_CACHE_HOME=str(tmp_path / "cache"), TUSINGEST_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert token not in completed.stdout + completed.stderr
    return completed


def _random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _offsets(wire: Wire) -> list[int]:
    return [int(s.headers["Upload-Offset"]) for s in wire.requests("PATCH")]


def _one_result(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    [result] = json.loads(completed.stdout)
    assert result["status"] == "stored", result
    return dict(result)


def test_each_patch_is_a_chunk_with_the_sha256_of_its_bytes(
    wire: Wire, server: Server, tmp_path: Path
) -> None:
    path = _random_file(tmp_path / "chunks.bin", 600_000)
    result = _one_result(_upload(wire, server, tmp_path, [path], "--chunk-size", "0.25", "--json"))
    patches = wire.requests("PATCH")
    assert _offsets(wire) == [0, 262_144, 524_288]
    assert [len(p.body) for p in patches] == [262_144, 262_144, 75_712]
    assert b"".join(p.body for p in patches) == path.read_bytes()
    for patch in patches:
        digest = base64.b64encode(hashlib.sha256(patch.body).digest()).decode()
        assert patch.headers["Upload-Checksum"] == f"sha256 {digest}"
        assert patch.headers["Tus-Resumable"] == "1.0.0"
        assert patch.headers["Authorization"] == f"Bearer {server.keys.token(SUB)}"
    assert [p.status for p in patches] == [204, 204, 204]
    # The completing PATCH said `stored`; the session adds the element and the digest.
    assert patches[-1].answered["X-Upload-Status"] == "stored"
    assert [s.path for s in wire.requests("GET")] == [
        f"/api/files/upload/session/{result['upload_url'].rsplit('/', 1)[-1]}"
    ]
    assert result["sha256"] == _sha256(path.read_bytes())
    assert result["element_id"] == "se-local"


def test_default_chunks_are_8_mib_and_no_checksum_sends_none(
    wire: Wire, server: Server, tmp_path: Path
) -> None:
    path = _random_file(tmp_path / "nine.bin", 9 * MiB)
    result = _one_result(_upload(wire, server, tmp_path, [path], "--no-checksum", "--json"))
    patches = wire.requests("PATCH")
    assert [len(p.body) for p in patches] == [8 * MiB, 1 * MiB]
    assert all("Upload-Checksum" not in p.headers for p in patches)
    assert result["sha256"] == _sha256(path.read_bytes())


@pytest.mark.parametrize(
    ("status", "body"), [(503, "unavailable: try later"), (423, "locked: the upload is busy")]
)
def test_a_patch_answered_5xx_or_423_goes_again_from_the_servers_offset(
    wire: Wire, server: Server, tmp_path: Path, status: int, body: str
) -> None:
    wire.faults.append(Fault("PATCH", nth=2, answer=status, body=body))
    path = _random_file(tmp_path / "busy.bin", 600_000)
    completed = _upload(wire, server, tmp_path, [path], "--chunk-size", "0.25")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    # The refused chunk goes again, after a HEAD asked where the upload stands.
    assert _offsets(wire) == [0, 262_144, 262_144, 524_288]
    methods = [s.method for s in wire.seen]
    assert methods[:5] == ["POST", "PATCH", "PATCH", "HEAD", "PATCH"]
    code = body.split(":")[0]
    retry = next(line for line in completed.stdout.splitlines() if "retrying in" in line)
    assert retry.startswith("  busy.bin: retrying in ")
    assert f"after PATCH {wire.url}/files/" in retry
    assert retry.endswith(f": {status} {code}: {body.split(': ')[1]}"), retry
    assert f"stored {path} → file_id " in completed.stdout
    stored = b"".join(p.body for p in wire.requests("PATCH") if p.status == 204)
    assert stored == path.read_bytes()


def test_a_patch_cut_off_after_the_server_took_it_is_not_sent_again(
    wire: Wire, server: Server, tmp_path: Path
) -> None:
    wire.faults.append(Fault("PATCH", nth=1, cut=True))
    path = _random_file(tmp_path / "cut.bin", 600_000)
    result = _one_result(_upload(wire, server, tmp_path, [path], "--chunk-size", "0.25", "--json"))
    # The first chunk arrived though its answer did not: HEAD says 262144, the client goes on
    # from there instead of from where its own count stood.
    assert [s.status for s in wire.requests("PATCH")] == [0, 204, 204]
    assert _offsets(wire) == [0, 262_144, 524_288]
    assert [s.method for s in wire.seen][:4] == ["POST", "PATCH", "HEAD", "PATCH"]
    assert result["sha256"] == _sha256(path.read_bytes())
    info = server.status(result["upload_url"], sub=SUB)
    assert info["file"]["sha256"] == _sha256(path.read_bytes())


def test_without_a_verdict_on_the_patch_the_session_is_asked(
    wire: Wire, server: Server, tmp_path: Path
) -> None:
    wire.faults.append(Fault("PATCH", nth=1, strip="X-Upload-Status"))
    path = _random_file(tmp_path / "asked.bin", 50_000)
    result = _one_result(_upload(wire, server, tmp_path, [path], "--json"))
    [patch] = wire.requests("PATCH")
    assert patch.status == 204
    assert "X-Upload-Status" not in patch.answered
    upload_id = result["upload_url"].rsplit("/", 1)[-1]
    assert [s.path for s in wire.requests("GET")] == [f"/api/files/upload/session/{upload_id}"]
    assert result["file_id"] == server.status(result["upload_url"], sub=SUB)["file_id"]


def test_a_rejection_on_the_patch_needs_no_session(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    typed = make_server("sqlite", ALLOWED_MIME_TYPES="")  # random bytes are not accepted
    path = _random_file(tmp_path / "noise.bin", 50_000)
    with running(Wire(typed.url)) as wire:
        completed = _upload(wire, typed, tmp_path, [path], "--json")
    assert completed.returncode == 1
    [result] = json.loads(completed.stdout)
    assert result["status"] == "rejected"
    assert result["error"] == "mime_type_not_allowed"
    [patch] = wire.requests("PATCH")
    assert patch.status == 422, patch
    assert patch.answered["X-Upload-Status"] == "rejected"
    assert wire.requests("GET") == []


def test_a_verdict_not_come_within_wait_fails_and_keeps_the_upload(
    make_server: Callable[..., Server], prefix: str, tmp_path: Path
) -> None:
    # A registry listing no element: the pipeline waits for storage, the upload stays
    # `processing`, and the completing PATCH ends without a verdict.
    waiting = make_server(
        "sqlite", REDIS_URL=redis_url(), REDIS_KEY_PREFIX=prefix, COMPLETION_WAIT_SECONDS="1"
    )
    path = _random_file(tmp_path / "later.bin", 50_000)
    with running(Wire(waiting.url)) as wire:
        completed = _upload(wire, waiting, tmp_path, [path], "--wait", "1.5", "--json")
    assert completed.returncode == 1
    [result] = json.loads(completed.stdout)
    assert result["status"] == "failed"
    assert result["error"] == "verdict_timeout"
    assert result["message"] == "not judged after 1.5 s; run again to wait more"
    # The completing PATCH: 503 no_storage_available, with `X-Upload-Status: processing`: not
    # sent again, the session polled instead.
    [patch] = wire.requests("PATCH")
    assert (patch.status, patch.answered["X-Upload-Status"]) == (503, "processing")
    sessions = [s for s in wire.requests("GET") if s.path.startswith("/api/files/upload/session/")]
    assert len(sessions) >= 2
    assert waiting.status(result["upload_url"], sub=SUB)["upload_status"] == "processing"
    # Not judged: the next run resumes it rather than uploading it again.
    store = ResumeStore(cache_file({"XDG_CACHE_HOME": str(tmp_path / "cache")}))
    key = fingerprint(path).key(f"{wire.url}/files/")
    assert store.get(key) == result["upload_url"]
