"""The completion pipeline's verdict over HTTP: the completing request waits for it (stored →
X-Upload-Status/X-File-Id, rejected → 422 JSON), HEAD and a retried PATCH repeat it, and the
session JSON describes it; on a real clamd, the default MIME list and the local element."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.conftest import BACKENDS, Server
from tests.samples import ATTR_KEYS, EICAR, PDF, clamd_url
from tusingest.settings.app import Settings
from tusingest.store import schema

ORIGIN = "http://app.example"


def isolated_env(backend: str, root: Path, new_pg_database: Callable[[], str]) -> dict[str, str]:
    """A PostgreSQL server of its own: a fresh database, staging and storage, so that the
    session's other (differently configured) nodes never claim this server's operations."""
    if backend != "postgres":
        return {}
    url = new_pg_database()
    asyncio.run(schema.upgrade(Settings.from_env({"DATABASE_URL": url}).database.url))
    return {
        "DATABASE_URL": url,
        "STAGING_DIR": str(root / "staging"),
        "LOCAL_STORAGE_DIR": str(root / "storage"),
    }


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def storage_files(server: Server) -> list[Path]:
    root = server.settings.storage.local_storage_dir
    if not root.exists():
        return []
    # Not the element's index of links (a dot directory).
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).parts[0].startswith(".")
    )


def expose(response: requests.Response) -> set[str]:
    raw = response.headers.get("Access-Control-Expose-Headers", "")
    return {part.strip().lower() for part in raw.split(",") if part.strip()}


@pytest.fixture(scope="module", params=BACKENDS)
def scanning(
    request: pytest.FixtureRequest,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    """A server with clamd and the default ALLOWED_MIME_TYPES (empty = the default list)."""
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"verdict-{backend}")
    return make_server(
        backend,
        VIRUS_SCAN_ENABLED="on",
        CLAMD_URL=clamd_url(),
        ALLOWED_MIME_TYPES="",
        COMPLETION_WAIT_SECONDS="20",
        **isolated_env(backend, root, new_pg_database),
    )


def test_default_mime_list_applies(scanning: Server) -> None:
    validation = scanning.settings.pipeline.validation
    assert validation.mime_validation
    assert "application/pdf" in validation.allowed_mime_types
    assert "*" not in validation.allowed_mime_types
    assert scanning.settings.pipeline.virus_scan_enabled


def test_a_clean_pdf_is_stored(scanning: Server) -> None:
    url = scanning.create(len(PDF), **{"Upload-Metadata": metadata(filename="report.pdf")})
    first = scanning.patch(url, PDF[:100], 0)
    assert first.status_code == 204, first.text
    assert "X-Upload-Status" not in first.headers  # not complete: nothing to say yet
    last = scanning.patch(url, PDF[100:], 100, Origin=ORIGIN)
    assert last.status_code == 204, last.text
    assert last.headers["X-Upload-Status"] == "stored"
    file_id = last.headers["X-File-Id"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", file_id)
    assert last.headers["Upload-Offset"] == str(len(PDF))
    assert {"x-upload-status", "x-file-id"} <= expose(last)

    head = scanning.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["X-Upload-Status"] == "stored"
    assert head.headers["X-File-Id"] == file_id
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(PDF))

    info = scanning.status(url)
    assert info["upload_status"] == "stored"
    assert info["verdict"] is None
    assert info["file_id"] == file_id
    assert info["md5"] == hashlib.md5(PDF).hexdigest()
    assert info["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert info["file"]["file_id"] == file_id
    assert info["file"]["content_type"] == "application/pdf"
    assert info["file"]["size"] == len(PDF)

    stored = scanning.stored(url)
    assert stored.read_bytes() == PDF
    assert file_id in stored.name
    assert stored.name.endswith(".pdf")
    attr = json.loads(stored.with_name(stored.name + ".attr.json").read_text("utf-8"))
    assert list(attr) == ATTR_KEYS
    assert attr["file_id"] == file_id
    assert attr["storage_filename"] == stored.name
    assert attr["original_filename"] == "report.pdf"
    assert attr["file_size"] == len(PDF)
    assert attr["content_type"] == "application/pdf"
    assert attr["checksum"] == hashlib.sha256(PDF).hexdigest()
    assert attr["created_by_id"] == "alice"
    assert attr["storage_path"] == info["file"]["storage_path"]
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\d{2}/", attr["storage_path"])
    assert not scanning.staged(url).exists()


def test_eicar_is_rejected_and_stored_nowhere(scanning: Server) -> None:
    before = storage_files(scanning)
    url = scanning.create(len(EICAR), **{"Upload-Metadata": metadata(filename="eicar.txt")})
    last = scanning.patch(url, EICAR, 0, Origin=ORIGIN)
    assert last.status_code == 422, last.text
    assert last.headers["Content-Type"].startswith("application/json")
    body = last.json()
    assert body["error"] == "virus_detected"
    assert body["message"]
    assert last.headers["X-Upload-Status"] == "rejected"
    assert last.headers["X-Upload-Error"] == "virus_detected"
    assert "X-File-Id" not in last.headers
    assert {"x-upload-status", "x-upload-error", "x-file-id"} <= expose(last)

    head = scanning.request("HEAD", url)
    assert head.status_code == 422
    assert head.headers["X-Upload-Status"] == "rejected"
    assert head.headers["X-Upload-Error"] == "virus_detected"

    retried = scanning.patch(url, b"", len(EICAR))
    assert retried.status_code == 422, retried.text
    assert retried.json()["error"] == "virus_detected"
    assert retried.headers["X-Upload-Error"] == "virus_detected"

    info = scanning.status(url)
    assert info["upload_status"] == "rejected"
    assert info["verdict"]["error"] == "virus_detected"
    assert info["file_id"] is None
    assert info["file"] is None
    assert storage_files(scanning) == before
    assert not scanning.staged(url).exists()


def test_random_bytes_are_not_an_allowed_type(scanning: Server) -> None:
    data = os.urandom(4096)
    url = scanning.create(len(data), **{"Upload-Metadata": metadata(filename="blob.bin")})
    last = scanning.patch(url, data, 0)
    assert last.status_code == 422, last.text
    assert last.json()["error"] == "mime_type_not_allowed"
    assert last.headers["X-Upload-Error"] == "mime_type_not_allowed"
    assert scanning.request("HEAD", url).status_code == 422
    assert scanning.status(url)["verdict"]["error"] == "mime_type_not_allowed"
    assert not scanning.staged(url).exists()


def test_creation_with_upload_of_a_whole_pdf(scanning: Server) -> None:
    response = scanning.request(
        "POST",
        scanning.endpoint,
        headers={
            "Upload-Length": str(len(PDF)),
            "Upload-Metadata": metadata(filename="whole.pdf"),
            "Content-Type": "application/offset+octet-stream",
        },
        data=PDF,
    )
    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith("/files/")
    assert response.headers["Upload-Offset"] == str(len(PDF))
    assert response.headers["X-Upload-Status"] == "stored"
    url = f"{scanning.url}{response.headers['Location']}"
    assert scanning.status(url)["file_id"] == response.headers["X-File-Id"]
    assert scanning.content(url) == PDF


def test_a_wrong_declared_checksum_is_rejected(scanning: Server) -> None:
    wrong = hashlib.sha256(PDF + b"x").hexdigest()
    url = scanning.create(
        len(PDF), **{"Upload-Metadata": metadata(filename="c.pdf", checksum=f"sha256 {wrong}")}
    )
    last = scanning.patch(url, PDF, 0)
    assert last.status_code == 422, last.text
    assert last.json()["error"] == "checksum_mismatch"
    assert scanning.request("HEAD", url).headers["X-Upload-Error"] == "checksum_mismatch"

    # The right one is accepted (the check is not just "any checksum fails").
    right = hashlib.sha256(PDF).hexdigest()
    url = scanning.create(
        len(PDF), **{"Upload-Metadata": metadata(filename="c.pdf", checksum=f"sha256 {right}")}
    )
    assert scanning.patch(url, PDF, 0).headers["X-Upload-Status"] == "stored"


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_waiting_head_answers_423_until_stored(
    backend: str,
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    server = make_server(
        backend,
        COMPLETION_WAIT_SECONDS="0",
        VIRUS_SCAN_ENABLED="on",
        CLAMD_URL=clamd_url(),
        **isolated_env(backend, tmp_path, new_pg_database),
    )
    data = os.urandom(256 * 1024)
    url = server.create(len(data))
    last = server.patch(url, data, 0, Origin=ORIGIN)
    assert last.status_code == 204, last.text
    assert last.headers["X-Upload-Status"] in ("processing", "stored")
    assert {"x-upload-status", "x-file-id"} <= expose(last)
    if last.headers["X-Upload-Status"] == "processing":
        assert "X-File-Id" not in last.headers

    seen: list[int] = []
    deadline = time.monotonic() + 20
    while True:
        head = server.request("HEAD", url)
        seen.append(head.status_code)
        if head.status_code == 200:
            break
        assert head.status_code == 423, (head.status_code, head.text)
        assert head.headers["X-Upload-Status"] == "processing"
        assert "Retry-After" in head.headers
        assert time.monotonic() < deadline, f"still processing after 20 s: {seen}"
        time.sleep(0.05)
    assert head.headers["X-Upload-Status"] == "stored"
    assert head.headers["Upload-Offset"] == str(len(data))
    file_id = head.headers["X-File-Id"]
    if last.headers["X-Upload-Status"] == "stored":
        assert last.headers["X-File-Id"] == file_id
    info = server.status(url)
    assert (info["upload_status"], info["file_id"]) == ("stored", file_id)
    assert server.content(url) == data
    # A retried empty PATCH repeats the verdict; the pipeline does not run again.
    again = server.patch(url, b"", len(data))
    assert again.status_code == 204
    assert (again.headers["X-Upload-Status"], again.headers["X-File-Id"]) == ("stored", file_id)
    assert len([p for p in storage_files(server) if file_id in p.name]) == 2
