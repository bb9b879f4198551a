"""tus checksum extension against SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.conftest import Server
from tests.protocol.support import (
    OCTET,
    chunks,
    offset_of,
    sha256,
    staged_names,
    staged_since,
    upload_id,
    upload_row,
    wait_until,
)


def _checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _patch(server: Server, url: str, data: object, offset: int, checksum: str) -> requests.Response:
    return server.request(
        "PATCH",
        url,
        headers={"Content-Type": OCTET, "Upload-Offset": str(offset), "Upload-Checksum": checksum},
        data=data,
    )


def _open_request(
    server: Server,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    content_length: int,
) -> socket.socket:
    """Send a request head announcing `content_length` body bytes and only `body` of them;
    the connection stays open (the caller closes it)."""
    parts = urlsplit(server.url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in {**server.headers(), **headers}.items()]
    lines.append(f"Content-Length: {content_length}")
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def _read_status(sock: socket.socket) -> tuple[int, str, dict[str, str]]:
    """Status code, reason phrase and headers of the response on `sock` (timeout: fails)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    _, status, reason = head[0].split(" ", 2)
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), reason, headers


# --- discovery -------------------------------------------------------------------------------


def test_options_advertises_checksum_and_algorithms(server: Server) -> None:
    response = server.request("OPTIONS", server.endpoint)
    assert response.status_code == 204
    extensions = [e.strip() for e in response.headers["Tus-Extension"].split(",")]
    assert "checksum" in extensions
    # Trailers are not readable with aiohttp: checksum-trailer must not be claimed.
    assert "checksum-trailer" not in extensions
    assert response.headers["Tus-Checksum-Algorithm"] == "sha1,md5,sha256"


# --- verified PATCH ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_patch_with_correct_checksum_is_204(server: Server, algorithm: str) -> None:
    first, second = os.urandom(3000), os.urandom(2000)
    url = server.create(len(first) + len(second))
    response = _patch(server, url, first, 0, _checksum(algorithm, first))
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(first))
    response = _patch(server, url, second, len(first), _checksum(algorithm, second))
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(first) + len(second))
    assert server.content(url) == first + second


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_mismatch_is_460_and_discards_the_chunk(server: Server, algorithm: str) -> None:
    data = os.urandom(10_000)
    url = server.create(len(data))
    assert _patch(server, url, data[:4000], 0, _checksum(algorithm, data[:4000])).status_code == 204
    wrong = _checksum(algorithm, data[4000:7000] + b"!")
    response = _patch(server, url, data[4000:7000], 4000, wrong)
    assert response.status_code == 460, response.text
    assert response.reason == "Checksum Mismatch"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert offset_of(server, url) == 4000
    assert server.staged(url).stat().st_size == 4000
    assert server.content(url) == data[:4000]
    # The client retries the same chunk at the same offset, correctly this time.
    retry = _patch(server, url, data[4000:], 4000, _checksum(algorithm, data[4000:]))
    assert retry.status_code == 204, retry.text
    assert retry.headers["Upload-Offset"] == str(len(data))
    assert server.content(url) == data


def test_mismatch_reason_phrase_on_the_wire(server: Server) -> None:
    url = server.create(3)
    sock = _open_request(
        server,
        "PATCH",
        f"/files/{upload_id(url)}",
        {"Content-Type": OCTET, "Upload-Offset": "0", "Upload-Checksum": _checksum("sha1", b"x")},
        b"abc",
        3,
    )
    with sock:
        status, reason, headers = _read_status(sock)
    assert (status, reason) == (460, "Checksum Mismatch")
    assert headers["tus-resumable"] == "1.0.0"
    assert offset_of(server, url) == 0


def test_mismatch_on_the_completing_chunk_leaves_the_upload_incomplete(server: Server) -> None:
    url = server.create(6)
    assert _patch(server, url, b"abc", 0, _checksum("md5", b"abc")).status_code == 204
    response = _patch(server, url, b"def", 3, _checksum("md5", b"DEF"))
    assert response.status_code == 460
    head = server.request("HEAD", url)
    assert head.headers["Upload-Offset"] == "3"
    assert head.headers["Upload-Length"] == "6"
    assert upload_row(server, upload_id(url))["status"] == "receiving"  # type: ignore[index]
    assert _patch(server, url, b"def", 3, _checksum("md5", b"def")).status_code == 204
    assert server.content(url) == b"abcdef"


def test_checksum_over_chunked_body(server: Server) -> None:
    data = os.urandom(200_000)
    url = server.create(len(data) + 5)
    response = _patch(server, url, chunks(data, 7_000), 0, _checksum("sha256", data))
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    wrong = _patch(server, url, chunks(b"vwxyz", 2), len(data), _checksum("sha256", b"VWXYZ"))
    assert wrong.request.headers.get("Transfer-Encoding") == "chunked"
    assert wrong.status_code == 460
    assert offset_of(server, url) == len(data)
    assert server.staged(url).stat().st_size == len(data)
    assert sha256(server.content(url)) == sha256(data)


def test_checksum_of_an_empty_patch(server: Server) -> None:
    url = server.create(4)
    assert _patch(server, url, b"", 0, _checksum("sha1", b"")).status_code == 204
    assert _patch(server, url, b"", 0, _checksum("sha1", b"x")).status_code == 460
    assert offset_of(server, url) == 0


# --- unsupported or malformed Upload-Checksum ---------------------------------------------------


@pytest.mark.parametrize("algorithm", ["crc32", "sha512", "md4", "sha-1"])
def test_unknown_algorithm_is_400_before_the_body_is_read(server: Server, algorithm: str) -> None:
    url = server.create(100 << 20)
    assert server.patch(url, b"abc", 0).status_code == 204
    digest = base64.b64encode(b"\x00" * 64).decode()
    headers = {
        "Content-Type": OCTET,
        "Upload-Offset": "3",
        "Upload-Checksum": f"{algorithm} {digest}",
    }
    # 50 MiB announced, 1 KiB sent: a server waiting for the body would never answer.
    sock = _open_request(
        server, "PATCH", f"/files/{upload_id(url)}", headers, b"x" * 1024, 50 << 20
    )
    with sock:
        status, _, response_headers = _read_status(sock)
    assert status == 400
    assert response_headers["tus-resumable"] == "1.0.0"
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


def test_unknown_algorithm_on_creation_with_upload_is_400_before_the_body(server: Server) -> None:
    before = staged_names(server)
    headers = {
        "Content-Type": OCTET,
        "Upload-Length": str(100 << 20),
        "Upload-Checksum": "crc32 AAAAAA==",
    }
    sock = _open_request(server, "POST", "/files/", headers, b"x" * 1024, 50 << 20)
    with sock:
        status, _, response_headers = _read_status(sock)
    assert status == 400
    assert "location" not in response_headers
    assert not staged_since(server, before)


@pytest.mark.parametrize(
    "value",
    [
        "sha1",
        "sha1 ",
        "sha1 !!!notbase64!!!",
        "sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0",  # 27 characters: missing padding
        "sha1 " + base64.b64encode(b"\x01" * 16).decode(),  # an md5-sized digest
        "md5 " + base64.b64encode(b"\x01" * 20).decode(),
        "sha256 " + base64.b64encode(b"\x01" * 31).decode(),
        "sha256 " + base64.b64encode(hashlib.sha256(b"abc").digest()).decode() + " extra",
        "",
        "sha1 ====",
        "md5\t" + base64.b64encode(b"\x01" * 16).decode(),
    ],
)
def test_malformed_checksum_header_is_400(server: Server, value: str) -> None:
    url = server.create(6)
    assert server.patch(url, b"abc", 0).status_code == 204
    response = _patch(server, url, b"def", 3, value)
    assert response.status_code == 400, (value, response.status_code, response.text)
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


# --- interrupted bodies ----------------------------------------------------------------------


def test_interrupted_checksummed_patch_keeps_nothing(server: Server) -> None:
    data = os.urandom(8 << 20)
    url = server.create(len(data) + 3)
    assert server.patch(url, b"abc", 0).status_code == 204
    headers = {
        "Content-Type": OCTET,
        "Upload-Offset": "3",
        "Upload-Checksum": _checksum("sha1", data),
    }
    # More than one write batch: the server has staged bytes of this body before the drop.
    sent = 5 << 20
    sock = _open_request(
        server, "PATCH", f"/files/{upload_id(url)}", headers, data[:sent], len(data)
    )
    with sock:
        wait_until(lambda: server.staged(url).stat().st_size > 3, timeout=20)
        sock.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: server.staged(url).stat().st_size == 3, timeout=20)
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"
    response = _patch(server, url, data, 3, _checksum("sha1", data))
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data) + 3)
    assert sha256(server.content(url)) == sha256(b"abc" + data)


def test_small_interrupted_checksummed_patch_keeps_nothing(server: Server) -> None:
    url = server.create(100)
    assert server.patch(url, b"ab", 0).status_code == 204
    headers = {
        "Content-Type": OCTET,
        "Upload-Offset": "2",
        "Upload-Checksum": _checksum("md5", b"c" * 98),
    }
    sock = _open_request(server, "PATCH", f"/files/{upload_id(url)}", headers, b"c" * 40, 98)
    sock.close()
    # Without the checksum these 40 bytes would be kept: an interrupted PATCH keeps what it
    # received. A HEAD waits for a request still streaming into the upload, so this sees the
    # outcome.
    wait_until(lambda: server.request("HEAD", url).status_code == 200)
    assert offset_of(server, url) == 2
    assert server.patch(url, b"cd", 2).status_code == 204
    assert server.content(url) == b"abcd"


def test_checksummed_patch_taken_over_by_a_newer_one_keeps_nothing(server: Server) -> None:
    data = os.urandom(64 * 1024)
    url = server.create(len(data))
    streaming = threading.Event()
    release = threading.Event()
    results: dict[str, requests.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield data[:1024]
        streaming.set()
        release.wait(10)
        yield data[1024:]

    def send(name: str, body: object) -> None:
        headers = {
            "Content-Type": OCTET,
            "Upload-Offset": "0",
            "Upload-Checksum": _checksum("sha1", data),
        }
        results[name] = requests.request(
            "PATCH",
            url,
            headers={**server.headers(), **headers},
            data=body,  # type: ignore[arg-type]
            timeout=30,
        )

    slow = threading.Thread(target=send, args=("slow", slow_body()))
    slow.start()
    assert streaming.wait(10)
    time.sleep(0.2)  # let the server take the slow request's lease
    send("fast", data)
    release.set()
    slow.join(30)
    # The interrupted request cannot be verified, so nothing of it is kept: the newer request,
    # sent for the same offset, applies.
    assert results["slow"].status_code == 400, results["slow"].text
    assert results["slow"].text.startswith("upload_interrupted")
    assert results["fast"].status_code == 204, results["fast"].text
    assert results["fast"].headers["Upload-Offset"] == str(len(data))
    assert server.content(url) == data


def test_rejected_checksummed_chunks_leave_the_upload_digests_right(server: Server) -> None:
    data = os.urandom(6 << 20)
    url = server.create(len(data))
    assert _patch(server, url, data[:1000], 0, _checksum("md5", data[:1000])).status_code == 204
    mismatch = _patch(server, url, data[1000:5000], 1000, _checksum("md5", b"other"))
    assert mismatch.status_code == 460
    # An interrupted checksummed body, long enough to have been hashed and staged in part.
    headers = {
        "Content-Type": OCTET,
        "Upload-Offset": "1000",
        "Upload-Checksum": _checksum("md5", data[1000:]),
    }
    sock = _open_request(
        server, "PATCH", f"/files/{upload_id(url)}", headers, data[1000 : 5 << 20], len(data) - 1000
    )
    with sock:
        wait_until(lambda: server.staged(url).stat().st_size > 1000, timeout=20)
    wait_until(lambda: server.staged(url).stat().st_size == 1000, timeout=20)
    assert offset_of(server, url) == 1000
    done = _patch(server, url, data[1000:], 1000, _checksum("sha256", data[1000:]))
    assert done.status_code == 204, done.text
    assert done.headers["X-Upload-Status"] == "stored"
    row = upload_row(server, upload_id(url))
    assert row is not None
    assert row["status"] == "stored"
    assert row["md5"] == hashlib.md5(data).hexdigest()
    assert row["sha256"] == hashlib.sha256(data).hexdigest()


# --- creation-with-upload ----------------------------------------------------------------------


def _create_with(server: Server, body: bytes, length: int, checksum: str) -> requests.Response:
    return server.request(
        "POST",
        server.endpoint,
        headers={
            "Content-Type": OCTET,
            "Upload-Length": str(length),
            "Upload-Checksum": checksum,
        },
        data=body,
    )


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_creation_with_upload_and_correct_checksum_is_201(server: Server, algorithm: str) -> None:
    data = os.urandom(5000)
    response = _create_with(server, data, 8000, _checksum(algorithm, data))
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    url = urljoin(server.endpoint, response.headers["Location"])
    assert offset_of(server, url) == len(data)
    assert server.content(url) == data


def test_creation_with_upload_and_wrong_checksum_is_460_and_leaves_nothing(
    server: Server,
) -> None:
    before = staged_names(server)
    response = _create_with(server, b"hello", 11, _checksum("sha256", b"HELLO"))
    assert response.status_code == 460
    assert response.reason == "Checksum Mismatch"
    assert "Location" not in response.headers
    assert "Upload-Offset" not in response.headers
    assert not staged_since(server, before)


def test_creation_with_upload_malformed_checksum_is_400_and_creates_nothing(
    server: Server,
) -> None:
    before = staged_names(server)
    response = _create_with(server, b"hello", 11, "sha1 not-base64")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert not staged_since(server, before)
