"""tuspy, the real Python client: large chunked uploads, interruption and resume, end to end."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.storage.filestorage import FileStorage

from tests.conftest import Server
from tests.protocol.support import wait_until

MiB = 1 << 20


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """64 MiB of random bytes and their SHA-256."""
    path = tmp_path_factory.mktemp("src") / "payload.bin"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(64):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def _client(server: Server) -> tus_client.TusClient:
    token = server.keys.token("alice")
    return tus_client.TusClient(server.endpoint, headers={"Authorization": f"Bearer {token}"})


def test_tuspy_uploads_64mib_in_5mib_chunks(server: Server, source: tuple[Path, str]) -> None:
    path, sha = source
    uploader = _client(server).uploader(
        str(path), chunk_size=5 * MiB, metadata={"filename": "payload.bin"}
    )
    uploader.upload()
    head = server.request("HEAD", uploader.url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == str(64 * MiB)
    assert head.headers["Upload-Length"] == str(64 * MiB)
    assert hashlib.sha256(server.content(uploader.url)).hexdigest() == sha


def test_tuspy_resumes_from_stored_url(
    server: Server, source: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha = source
    storage = FileStorage(str(tmp_path / "urls.json"))
    first = _client(server).uploader(
        str(path), chunk_size=5 * MiB, store_url=True, url_storage=storage
    )
    first.upload(stop_at=32 * MiB)
    assert first.url is not None
    stopped_at = int(server.request("HEAD", first.url).headers["Upload-Offset"])
    assert 32 * MiB <= stopped_at < 64 * MiB

    # A new client process would do exactly this: find the URL by fingerprint, HEAD, go on.
    second = _client(server).uploader(
        str(path), chunk_size=5 * MiB, store_url=True, url_storage=storage
    )
    assert second.url == first.url
    assert second.offset == stopped_at
    second.upload()
    head = server.request("HEAD", first.url)
    assert head.headers["Upload-Offset"] == str(64 * MiB)
    assert hashlib.sha256(server.content(first.url)).hexdigest() == sha


def test_tuspy_without_metadata_sends_empty_header(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 1000)
    uploader = _client(server).uploader(str(path), chunk_size=300)
    uploader.upload()
    head = server.request("HEAD", uploader.url)
    assert head.headers["Upload-Offset"] == "1000"
    assert "Upload-Metadata" not in head.headers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tusingest serve` as a real process on its embedded defaults."""
    port = _free_port()
    data_dir = tmp_path / "data"
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DATA_DIR")
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tusingest",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if requests.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # a busy machine: slow to answer
                time.sleep(0.1)
        else:
            pytest.fail("tusingest serve did not become ready")
        yield url, data_dir
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_embedded_server_token_and_tuspy(embedded_server: tuple[str, Path], tmp_path: Path) -> None:
    url, data_dir = embedded_server
    token = subprocess.run(
        [sys.executable, "-m", "tusingest", "token", "--sub", "carol", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    path = tmp_path / "doc.txt"
    path.write_bytes(b"embedded defaults work\n" * 1000)
    client = tus_client.TusClient(f"{url}/files/", headers={"Authorization": f"Bearer {token}"})
    uploader = client.uploader(str(path), chunk_size=4096, metadata={"filename": "doc.txt"})
    uploader.upload()
    head = requests.head(
        uploader.url,
        headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == str(path.stat().st_size)
    # Completed, validated and stored in the embedded local storage element.
    assert head.headers["X-Upload-Status"] == "stored"
    upload_id = uploader.url.rsplit("/", 1)[-1]
    info = requests.get(
        f"{url}/api/files/upload/session/{upload_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert info["file"]["content_type"] == "text/plain"
    stored = data_dir / "storage" / info["file"]["storage_path"] / info["file"]["storage_filename"]
    assert stored.read_bytes() == path.read_bytes()
    wait_until(lambda: not (data_dir / "staging" / upload_id).exists())  # after the verdict


@pytest.fixture(scope="module")
def strict_server(make_server: Callable[..., Server]) -> Server:
    """A server with the default ALLOWED_MIME_TYPES (random bytes are not allowed)."""
    return make_server("sqlite", ALLOWED_MIME_TYPES="")


def test_tuspy_sees_the_rejection_code(strict_server: Server, tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(300_000))
    uploader = _client(strict_server).uploader(str(path), chunk_size=100_000)
    with pytest.raises(TusCommunicationError) as caught:
        uploader.upload()
    assert caught.value.status_code == 422
    assert b"mime_type_not_allowed" in caught.value.response_content
    upload_id = uploader.url.rsplit("/", 1)[-1]
    assert strict_server.status(uploader.url)["verdict"]["error"] == "mime_type_not_allowed"
    wait_until(lambda: not (strict_server.settings.uploads.staging_dir / upload_id).exists())
