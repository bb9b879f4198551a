"""Multipart uploads (`POST /api/files/upload`) and batches (`POST /api/files/batch/upload`)
over real HTTP: streamed into staging, the same pipeline and verdicts as tus, nothing left
behind by a refused or cut-off form."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.api.test_verdict import isolated_env, storage_files
from tests.conftest import BACKENDS, Keys, Server
from tests.nodes import Node
from tests.rediskeys import redis_url
from tests.samples import EICAR, clamd_url

MiB = 1 << 20


@pytest.fixture(scope="module", params=BACKENDS)
def forms(
    request: pytest.FixtureRequest,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    """A server of its own (its storage and staging are looked at), with clamd, 1 MiB files
    and batches of at most 4 files and 3 MiB."""
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"forms-{backend}")
    return make_server(
        backend,
        VIRUS_SCAN_ENABLED="on",
        CLAMD_URL=clamd_url(),
        MAX_FILE_SIZE_MB="1",
        MAX_BATCH_FILES="4",
        MAX_BATCH_SIZE_MB="3",
        COMPLETION_WAIT_SECONDS="20",
        **isolated_env(backend, root, new_pg_database),
    )


def _auth(server: Server, sub: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys.token(sub)}"}


def _post(server: Server, path: str, files: Any, data: Any = None, **headers: str) -> Any:
    return requests.post(
        f"{server.url}{path}",
        files=files,
        data=data,
        headers={**_auth(server), **headers},
        timeout=60,
    )


def _staged(server: Server) -> list[Path]:
    staging = server.settings.uploads.staging_dir
    return sorted(p for p in staging.iterdir() if p.is_file()) if staging.exists() else []


def _left_staged(server: Server, seconds: float = 10) -> list[Path]:
    """What stays staged: the answer comes with the verdict, the cleanup follows it."""
    deadline = time.monotonic() + seconds
    while (staged := _staged(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return staged


def _attr(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    entry = requests.get(
        f"{server.url}/api/files/{body['file_id']}", headers=_auth(server), timeout=10
    ).json()
    root = server.settings.storage.local_storage_dir
    path = root / entry["storage_path"] / (entry["storage_filename"] + ".attr.json")
    result: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return result


def test_a_file_is_stored_with_its_digests_and_metadata(forms: Server) -> None:
    data = os.urandom(300_000)
    meta = {"retention_policy": "temporary", "description": "scan", "project": "alpha", "n": 3}
    response = _post(
        forms,
        "/api/files/upload",
        files={"file": ("report.bin", data, "application/octet-stream")},
        data={"metadata": json.dumps(meta)},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) >= {
        "file_id", "storage_element_id", "storage_filename", "size_bytes", "md5_hash",
        "sha256_hash", "uploaded_at",
    }  # fmt: skip
    assert body["size_bytes"] == len(data)
    assert body["md5_hash"] == hashlib.md5(data).hexdigest()
    assert body["sha256_hash"] == hashlib.sha256(data).hexdigest()
    assert body["storage_element_id"] == forms.settings.storage.local_element_id
    assert body["file_id"] in body["storage_filename"]
    attr = _attr(forms, body)
    assert attr["original_filename"] == "report.bin"
    assert attr["metadata"]["description"] == "scan"
    assert attr["metadata"]["user_metadata"] == {"project": "alpha", "n": "3"}
    assert attr["metadata"]["retention_policy"] == "temporary"
    session = requests.get(
        f"{forms.url}/api/files/upload/session/{body['upload_session_id']}",
        headers=_auth(forms),
        timeout=10,
    ).json()
    assert session["status"] == "completed"
    assert session["bytes_uploaded"] == session["bytes_total"] == len(data)
    assert not _left_staged(forms)


def test_metadata_after_the_file_still_counts(forms: Server) -> None:
    boundary = "b0undary"
    data = os.urandom(10_000)
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += data
    body += (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        f'{{"description": "after"}}\r\n--{boundary}--\r\n'
    ).encode()
    response = requests.post(
        f"{forms.url}/api/files/upload",
        data=body,
        headers={**_auth(forms), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert _attr(forms, response.json())["metadata"]["description"] == "after"


def test_a_virus_is_refused_with_its_code(forms: Server) -> None:
    before = storage_files(forms)
    response = _post(forms, "/api/files/upload", files={"file": ("eicar.txt", EICAR)})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "virus_detected"
    assert storage_files(forms) == before
    assert not _left_staged(forms)


@pytest.mark.parametrize(
    ("files", "data", "headers", "status", "code"),
    [
        ({"file": ("a.bin", b"x" * 10)}, None, {"X-Upload-Session-ID": "abc"}, 400,
         "resumable_multipart_unsupported"),
        ({"other": ("a.bin", b"x" * 10)}, None, {}, 400, "missing_file"),
        ({"file": ("a.bin", b"x" * 10)}, {"metadata": "[1, 2]"}, {}, 400, "invalid_metadata"),
        ({"file": ("a.bin", b"x" * 10)}, {"metadata": '{"a b": "c"}'}, {}, 400,
         "invalid_metadata"),
        ({"file": ("a.bin", b"x" * 10)}, {"metadata": "x" * 20_000}, {}, 413,
         "metadata_too_large"),
        ({"file": ("a.bin", b"x" * 10), "files": ("b.bin", b"y")}, None, {}, 413,
         "too_many_files"),
    ],
)  # fmt: skip
def test_bad_forms_get_a_clear_4xx(
    forms: Server,
    files: dict[str, Any],
    data: dict[str, str] | None,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    before = storage_files(forms)
    response = _post(forms, "/api/files/upload", files=files, data=data, **headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert storage_files(forms) == before
    assert not _left_staged(forms)


def test_not_a_form_is_415(forms: Server) -> None:
    response = requests.post(
        f"{forms.url}/api/files/upload", data=b"raw", headers=_auth(forms), timeout=10
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"


def _raw_request(server: Server, path: str, head: str, body: bytes) -> tuple[socket.socket, str]:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    request = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n"
    sock.sendall(request.encode() + body)
    return sock, ""


def test_too_large_is_413_before_the_body_is_read(forms: Server) -> None:
    headers = (
        f"Authorization: {_auth(forms)['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n"
        f"Content-Length: {20 * MiB}\r\n"
    )
    sock, _ = _raw_request(forms, "/api/files/upload", headers, b"")
    with sock:
        reply = sock.recv(4096).decode("latin-1")  # answered without one byte of the body
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "file_too_large" in reply


def test_a_body_cut_off_leaves_nothing(forms: Server) -> None:
    before = storage_files(forms)
    start = (
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    ) + os.urandom(200_000)
    headers = (
        f"Authorization: {_auth(forms)['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n"
        f"Content-Length: {len(start) + 300_000}\r\n"
    )
    sock, _ = _raw_request(forms, "/api/files/upload", headers, start)
    sock.close()
    assert not _left_staged(forms)
    assert storage_files(forms) == before
    listed = requests.get(f"{forms.url}/api/files?limit=1000", headers=_auth(forms), timeout=10)
    assert all(f["original_filename"] != "cut.bin" for f in listed.json()["files"])


def test_a_batch_reports_each_file(forms: Server) -> None:
    good = [os.urandom(50_000), os.urandom(70_000)]
    response = _post(
        forms,
        "/api/files/batch/upload",
        files=[
            ("files", ("one.bin", good[0])),
            ("files", ("big.bin", os.urandom(MiB + 1))),
            ("files", ("eicar.txt", EICAR)),
            ("files", ("two.bin", good[1])),
        ],
    )
    assert response.status_code == 207, response.text
    body = response.json()
    results = {r["filename"]: r for r in body["results"]}
    assert [r["filename"] for r in body["results"]] == [
        "one.bin",
        "big.bin",
        "eicar.txt",
        "two.bin",
    ]
    assert body["summary"] == {"total": 4, "succeeded": 2, "failed": 2, "processing": 0}
    assert results["big.bin"]["status"] == "failed"
    assert results["big.bin"]["error"] == "file_too_large"
    assert results["eicar.txt"]["status"] == "failed"
    assert results["eicar.txt"]["error"] == "virus_detected"
    for name, data in (("one.bin", good[0]), ("two.bin", good[1])):
        result = results[name]
        assert result["status"] == "success", result
        assert result["size_bytes"] == len(data)
        assert result["sha256_hash"] == hashlib.sha256(data).hexdigest()
        assert re_uuid(result["file_id"])
    assert not _left_staged(forms)


def re_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ([("files", (f"f{i}.bin", os.urandom(1000))) for i in range(5)], "too_many_files"),
        ([("files", (f"f{i}.bin", os.urandom(MiB - 10))) for i in range(4)], "batch_too_large"),
    ],
)
def test_a_batch_over_its_limits_stores_nothing(
    forms: Server, files: list[tuple[str, tuple[str, bytes]]], code: str
) -> None:
    before = storage_files(forms)
    response = _post(forms, "/api/files/batch/upload", files=files)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == code
    assert storage_files(forms) == before
    assert not _left_staged(forms)


def test_a_batch_declared_too_large_is_refused_before_reading(forms: Server) -> None:
    headers = (
        f"Authorization: {_auth(forms)['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n"
        f"Content-Length: {50 * MiB}\r\n"
    )
    sock, _ = _raw_request(forms, "/api/files/batch/upload", headers, b"")
    with sock:
        reply = sock.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "batch_too_large" in reply


def test_no_storage_is_503_with_retry_after(
    make_server: Callable[..., Server], prefix: str
) -> None:
    # A registry that lists no element at all.
    server = make_server(
        "sqlite", REDIS_URL=redis_url(), REDIS_KEY_PREFIX=prefix, COMPLETION_WAIT_SECONDS="2"
    )
    response = _post(server, "/api/files/upload", files={"file": ("a.bin", os.urandom(5000))})
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "no_storage_available"
    assert int(response.headers["Retry-After"]) >= 1


def _form_stream(block: bytes, count: int, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for _ in range(count):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def test_a_1_gib_form_upload_keeps_server_memory_flat(keys: Keys, tmp_path: Path) -> None:
    node = Node(
        tmp_path / "data", keys, tmp_path / "node.log", COMPLETION_WAIT_SECONDS="60"
    ).wait_ready()
    try:
        block = os.urandom(MiB)
        count = 1024
        sha = hashlib.sha256()
        for _ in range(count):
            sha.update(block)
        before = _rss(node.proc.pid)
        response = requests.post(
            f"{node.url}/api/files/upload",
            data=_form_stream(block, count, "zz"),
            headers={
                "Authorization": f"Bearer {keys.token('alice')}",
                "Content-Type": "multipart/form-data; boundary=zz",
            },
            timeout=300,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["size_bytes"] == count * MiB
        assert body["sha256_hash"] == sha.hexdigest()
        peak = _hwm(node.proc.pid)
        assert peak - before < 64 * MiB, f"RSS grew by {(peak - before) // MiB} MiB"
    finally:
        node.stop()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def _rss(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def _hwm(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def test_a_batch_file_whose_name_cannot_be_stored_fails_alone(forms: Server) -> None:
    response = _post(
        forms,
        "/api/files/batch/upload",
        files=[
            ("files", ("report." + "x" * 250, b"refused before its bytes are staged")),
            ("files", ("fine.bin", os.urandom(1000))),
        ],
    )
    assert response.status_code == 207, response.text
    first, second = response.json()["results"]
    assert (first["status"], first["error"]) == ("failed", "filename_too_long")
    assert second["status"] == "success", second
    assert not _left_staged(forms)
