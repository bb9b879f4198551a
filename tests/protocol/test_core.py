"""tus 1.0 core protocol against SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests

from tests.conftest import TUS, Server
from tests.protocol.support import (
    OCTET,
    chunks,
    offset_of,
    raw_request,
    send_and_drop,
    sha256,
    staged_names,
    staged_since,
    upload_id,
    wait_until,
)

EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,expiration,termination,"
    "checksum,concatenation"
)


def _no_version(server: Server, **extra: str) -> dict[str, str]:
    headers = server.headers(**extra)
    del headers["Tus-Resumable"]
    return headers


def _bare(
    server: Server, method: str, url: str, headers: dict[str, str], **kw: object
) -> requests.Response:
    """A request with exactly `headers` (no Tus-Resumable added)."""
    return requests.request(method, url, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


# --- 2.1 version negotiation -------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0", "2.0.0", ""])
def test_patch_with_missing_or_wrong_version_is_412_and_changes_nothing(
    server: Server, version: str | None
) -> None:
    url = server.create(10)
    assert server.patch(url, b"abc", 0).status_code == 204
    headers = _no_version(server, **{"Content-Type": OCTET, "Upload-Offset": "3"})
    if version is not None:
        headers["Tus-Resumable"] = version
    response = _bare(server, "PATCH", url, headers, data=b"defg")
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


@pytest.mark.parametrize("version", [None, "0.2.2"])
def test_post_with_missing_or_wrong_version_is_412_and_creates_nothing(
    server: Server, version: str | None
) -> None:
    before = staged_names(server)
    headers = _no_version(server, **{"Upload-Length": "10"})
    if version is not None:
        headers["Tus-Resumable"] = version
    response = _bare(server, "POST", server.endpoint, headers)
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert "Location" not in response.headers
    assert not staged_since(server, before)


@pytest.mark.parametrize("method", ["HEAD", "DELETE"])
def test_head_and_delete_without_version_are_412(server: Server, method: str) -> None:
    url = server.create(10)
    response = _bare(server, method, url, _no_version(server))
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert "Upload-Offset" not in response.headers
    assert server.request("HEAD", url).status_code == 200  # DELETE did not run
    assert server.status(url)["upload_status"] == "receiving"


@pytest.mark.parametrize("version", [None, "1.0.0", "0.2.2"])
@pytest.mark.parametrize("target", ["collection", "resource"])
def test_options_ignores_tus_resumable(server: Server, version: str | None, target: str) -> None:
    url = server.endpoint if target == "collection" else server.create(10)
    headers = {} if version is None else {"Tus-Resumable": version}
    response = _bare(server, "OPTIONS", url, headers)
    assert response.status_code in (200, 204)
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"


def test_tus_resumable_on_every_response_including_errors(server: Server) -> None:
    url = server.create(5)
    responses = {
        "201": server.request("POST", server.endpoint, headers={"Upload-Length": "1"}),
        "200": server.request("HEAD", url),
        "204": server.patch(url, b"ab", 0),
        "400": server.request("POST", server.endpoint),
        "401": _bare(server, "HEAD", url, dict(TUS)),
        "404": server.request("HEAD", f"{server.endpoint}{'0' * 32}"),
        "405": server.request("GET", url),
        "409": server.patch(url, b"x", 0),
        "412": _bare(server, "HEAD", url, {}),
        "413": server.patch(url, b"too long", 2),
        "415": server.patch(url, b"x", 2, **{"Content-Type": "text/plain"}),
    }
    for status, response in responses.items():
        assert str(response.status_code) == status, (status, response.text)
        assert response.headers.get("Tus-Resumable") == "1.0.0", status


# --- 2.2 OPTIONS ---------------------------------------------------------------------------


def test_options_advertises_version_extensions_and_max_size(server: Server) -> None:
    response = server.request("OPTIONS", server.endpoint)
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"] == EXTENSIONS
    assert response.headers["Tus-Max-Size"] == str(server.settings.uploads.max_file_size)
    assert response.headers["Tus-Checksum-Algorithm"] == "sha1,md5,sha256"
    assert response.content == b""


# --- 2.3 HEAD ------------------------------------------------------------------------------


def test_head_reports_offset_zero_length_and_no_store(server: Server) -> None:
    url = server.create(10)
    response = server.request("HEAD", url)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "10"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Upload-Defer-Length" not in response.headers
    assert "Upload-Metadata" not in response.headers
    assert response.content == b""


def test_head_reports_offset_of_complete_upload(server: Server) -> None:
    url = server.create(4)
    assert server.patch(url, b"data", 0).status_code == 204
    response = server.request("HEAD", url)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "4"
    assert response.headers["Upload-Length"] == "4"
    assert response.headers["Cache-Control"] == "no-store"


def test_head_of_deferred_upload_carries_defer_length(server: Server) -> None:
    url = server.create(None)
    response = server.request("HEAD", url)
    assert response.status_code == 200
    assert response.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in response.headers
    assert response.headers["Upload-Offset"] == "0"


def test_head_echoes_metadata_byte_for_byte(server: Server) -> None:
    raw = "filename d29ybGRfZG9taW5hdGlvbi5wZGY=,is_confidential,empty ,b Yg=="
    url = server.create(10, **{"Upload-Metadata": raw})
    assert server.request("HEAD", url).headers["Upload-Metadata"] == raw


def test_head_of_unknown_upload_is_404_without_offset(server: Server) -> None:
    response = server.request("HEAD", f"{server.endpoint}{'0' * 32}")
    assert response.status_code == 404
    assert "Upload-Offset" not in response.headers


# --- 2.4 PATCH -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "application/octet-stream", "text/plain", "application/offset"]
)
def test_patch_with_wrong_content_type_is_415(server: Server, content_type: str | None) -> None:
    url = server.create(10)
    headers = {"Upload-Offset": "0"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = server.request("PATCH", url, headers=headers, data=b"abc")
    assert response.status_code == 415
    assert offset_of(server, url) == 0
    assert server.content(url) == b""


@pytest.mark.parametrize("offset", [None, "", "abc", "-1", "1.5", "0x1", "+1", "1 2"])
def test_patch_with_missing_or_malformed_offset_is_400(server: Server, offset: str | None) -> None:
    url = server.create(10)
    headers = {"Content-Type": OCTET}
    if offset is not None:
        headers["Upload-Offset"] = offset
    response = server.request("PATCH", url, headers=headers, data=b"abc")
    assert response.status_code == 400, response.text
    assert offset_of(server, url) == 0


@pytest.mark.parametrize("sent", [0, 2, 4, 10**18])
def test_patch_offset_mismatch_is_409_with_current_offset(server: Server, sent: int) -> None:
    url = server.create(10)
    assert server.patch(url, b"abc", 0).status_code == 204
    response = server.patch(url, b"xyz", sent)
    assert response.status_code == 409
    assert response.headers["Upload-Offset"] == "3"
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


def test_patch_returns_204_with_new_offset_and_stores_bytes(server: Server) -> None:
    url = server.create(11)
    first = server.patch(url, b"hello", 0)
    assert first.status_code == 204
    assert first.headers["Upload-Offset"] == "5"
    assert first.content == b""
    second = server.patch(url, b" world", 5)
    assert second.status_code == 204
    assert second.headers["Upload-Offset"] == "11"
    assert server.content(url) == b"hello world"


def test_patch_with_chunked_body(server: Server) -> None:
    data = os.urandom(300_000)
    url = server.create(len(data))
    response = server.request(
        "PATCH",
        url,
        headers={"Content-Type": OCTET, "Upload-Offset": "0"},
        data=chunks(data, 7_000),
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert sha256(server.content(url)) == sha256(data)


def test_patch_past_length_with_content_length_is_413_offset_unchanged(server: Server) -> None:
    url = server.create(10)
    assert server.patch(url, b"abcd", 0).status_code == 204
    response = server.patch(url, b"0123456789", 4)
    assert response.status_code == 413
    assert offset_of(server, url) == 4
    assert server.content(url) == b"abcd"


def test_patch_past_length_with_chunked_body_is_413_offset_unchanged(server: Server) -> None:
    url = server.create(10)
    assert server.patch(url, b"abcd", 0).status_code == 204
    response = server.request(
        "PATCH",
        url,
        headers={"Content-Type": OCTET, "Upload-Offset": "4"},
        data=chunks(b"0123456789", 3),
    )
    assert response.status_code == 413
    assert offset_of(server, url) == 4
    assert server.content(url) == b"abcd"
    # The upload still accepts the right bytes afterwards.
    assert server.patch(url, b"efghij", 4).status_code == 204
    assert server.content(url) == b"abcdefghij"


def test_empty_patch_is_204_offset_unchanged(server: Server) -> None:
    url = server.create(10)
    assert server.patch(url, b"abc", 0).status_code == 204
    response = server.patch(url, b"", 3)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"
    assert offset_of(server, url) == 3


def test_patch_on_complete_upload(server: Server) -> None:
    url = server.create(3)
    assert server.patch(url, b"abc", 0).status_code == 204
    empty = server.patch(url, b"", 3)
    assert empty.status_code == 204
    assert empty.headers["Upload-Offset"] == "3"
    assert server.patch(url, b"more", 3).status_code == 413
    assert server.patch(url, b"x", 0).status_code == 409
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


def test_interrupted_patch_keeps_what_arrived(server: Server) -> None:
    data = os.urandom(200_000)
    url = server.create(len(data))
    path = f"/files/{upload_id(url)}"
    sent = 70_001
    send_and_drop(
        server, path, {"Content-Type": OCTET, "Upload-Offset": "0"}, data[:sent], len(data)
    )
    wait_until(lambda: offset_of(server, url) != 0)
    assert offset_of(server, url) == sent
    assert server.content(url) == data[:sent]
    response = server.patch(url, data[sent:], sent)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == str(len(data))
    assert sha256(server.content(url)) == sha256(data)


def test_tiny_interrupted_patch_keeps_its_single_byte(server: Server) -> None:
    url = server.create(100)
    assert server.patch(url, b"ab", 0).status_code == 204
    send_and_drop(
        server,
        f"/files/{upload_id(url)}",
        {"Content-Type": OCTET, "Upload-Offset": "2"},
        b"c",
        98,
    )
    wait_until(lambda: offset_of(server, url) != 2)
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


def test_interrupted_patch_before_any_body_byte_changes_nothing(server: Server) -> None:
    url = server.create(100)
    assert server.patch(url, b"ab", 0).status_code == 204
    send_and_drop(
        server, f"/files/{upload_id(url)}", {"Content-Type": OCTET, "Upload-Offset": "2"}, b"", 98
    )
    assert server.patch(url, b"cd", 2).status_code == 204
    assert server.content(url) == b"abcd"


def test_bytes_past_committed_offset_are_discarded_before_next_write(server: Server) -> None:
    url = server.create(10)
    assert server.patch(url, b"abc", 0).status_code == 204
    # A crash between writing and committing leaves bytes that no request acknowledged.
    with server.staged(url).open("ab") as staged:
        staged.write(b"GARBAGE-NEVER-COMMITTED")
    response = server.patch(url, b"de", 3)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "5"
    assert server.content(url) == b"abcde"


# --- 2.5 X-HTTP-Method-Override ------------------------------------------------------------


def _override(
    server: Server, url: str, method: str, headers: dict[str, str] | None = None, **kw: object
) -> requests.Response:
    return server.request(
        "POST",
        url,
        headers={"X-HTTP-Method-Override": method, **(headers or {})},
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("spelling", ["PATCH", "patch"])
def test_override_patch_sent_as_post(server: Server, spelling: str) -> None:
    url = server.create(6)
    response = _override(
        server, url, spelling, {"Content-Type": OCTET, "Upload-Offset": "0"}, data=b"abc"
    )
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"
    assert server.content(url) == b"abc"


def test_override_head_sent_as_post(server: Server) -> None:
    url = server.create(6)
    assert server.patch(url, b"ab", 0).status_code == 204
    response = _override(server, url, "HEAD")
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "2"
    assert response.headers["Upload-Length"] == "6"
    assert response.headers["Cache-Control"] == "no-store"


def test_override_delete_sent_as_post(server: Server) -> None:
    url = server.create(6)
    response = _override(server, url, "DELETE")
    assert response.status_code == 204
    assert server.request("HEAD", url).status_code == 404
    assert not server.staged(url).exists()


def test_override_options_sent_as_post_ignores_version(server: Server) -> None:
    url = server.create(6)
    response = _bare(server, "POST", url, {"X-HTTP-Method-Override": "OPTIONS"})
    assert response.status_code == 204
    assert response.headers["Tus-Extension"] == EXTENSIONS
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_override_checks_apply_to_the_effective_method(server: Server) -> None:
    url = server.create(6)
    headers = _no_version(
        server,
        **{"X-HTTP-Method-Override": "PATCH", "Content-Type": OCTET, "Upload-Offset": "0"},
    )
    no_version = _bare(server, "POST", url, headers, data=b"abc")
    assert no_version.status_code == 412
    assert no_version.headers["Tus-Version"] == "1.0.0"
    wrong_type = _override(
        server, url, "PATCH", {"Content-Type": "text/plain", "Upload-Offset": "0"}, data=b"abc"
    )
    assert wrong_type.status_code == 415
    head_no_version = _bare(
        server, "POST", url, _no_version(server, **{"X-HTTP-Method-Override": "HEAD"})
    )
    assert head_no_version.status_code == 412
    assert offset_of(server, url) == 0
    assert server.content(url) == b""


def test_plain_post_to_upload_url_is_405(server: Server) -> None:
    url = server.create(6)
    response = server.request("POST", url, headers={"Content-Type": OCTET}, data=b"abc")
    assert response.status_code == 405
    assert offset_of(server, url) == 0


# --- concurrency -----------------------------------------------------------------------------


def test_a_newer_patch_takes_over_and_both_never_apply(server: Server) -> None:
    size = 64 * 1024
    slow_data, fast_data = os.urandom(size), os.urandom(size)
    url = server.create(size)
    streaming = threading.Event()
    release = threading.Event()
    results: dict[str, requests.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield slow_data[:1024]
        streaming.set()
        release.wait(10)
        yield slow_data[1024:]

    def send(name: str, body: object) -> None:
        results[name] = requests.request(
            "PATCH",
            url,
            headers=server.headers(**{"Content-Type": OCTET, "Upload-Offset": "0"}),
            data=body,  # type: ignore[arg-type]
            timeout=30,
        )

    slow = threading.Thread(target=send, args=("slow", slow_body()))
    slow.start()
    assert streaming.wait(10)
    time.sleep(0.2)  # let the server take the slow request's lock
    fast = threading.Thread(target=send, args=("fast", fast_data))
    fast.start()
    fast.join(30)
    release.set()
    slow.join(30)
    fast.join(30)

    # The newer request asks the streaming one to release the upload (tusd semantics): the
    # slow request commits what it had received and is told so; the fast one, sent for offset
    # 0, then finds the offset moved and gets 409. Never do both apply.
    statuses = {name: r.status_code for name, r in results.items()}
    assert statuses["slow"] == 400, statuses
    assert results["slow"].text.startswith("upload_interrupted"), results["slow"].text
    assert statuses["fast"] == 409, statuses
    kept = int(results["fast"].headers["Upload-Offset"])
    assert 1024 <= kept < size
    assert offset_of(server, url) == kept
    assert server.content(url) == slow_data[:kept]
    # The client that lost continues from the committed offset and finishes.
    finish = server.patch(url, fast_data[kept:], kept)
    assert finish.status_code == 204, finish.text
    assert sha256(server.content(url)) == sha256(slow_data[:kept] + fast_data[kept:])


# --- unknown ids and methods -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_id",
    [
        "0" * 32,
        "F" * 32,
        "..%2Fetc",
        "%2E%2E%2Fetc%2Fpasswd",
        "..",
        "x" * 4000,
        "%00",
        "abc%00def",
        "%FF%FE",
        "%C3%A9t%C3%A9",
        "a%20b",
        quote("'; DROP TABLE uploads; --", safe=""),
    ],
)
def test_unknown_or_weird_ids_are_404(server: Server, raw_id: str) -> None:
    patch = {"Content-Type": OCTET, "Upload-Offset": "0"}
    for method, headers, body in [("HEAD", {}, b""), ("PATCH", patch, b"x"), ("DELETE", {}, b"")]:
        response = raw_request(server, method, f"/files/{raw_id}", headers, body)
        assert response.status == 404, (method, response.status)
        assert response.getheader("Upload-Offset") is None
        assert response.getheader("Tus-Resumable") == "1.0.0"


def test_someone_elses_upload_is_404(server: Server) -> None:
    url = server.create(10, sub="alice")
    assert server.patch(url, b"abc", 0, sub="alice").status_code == 204
    assert server.request("HEAD", url, sub="mallory").status_code == 404
    assert server.patch(url, b"def", 3, sub="mallory").status_code == 404
    assert server.request("DELETE", url, sub="mallory").status_code == 404
    assert offset_of(server, url) == 3
    assert server.content(url) == b"abc"


def test_dot_dot_path_is_not_an_upload(server: Server) -> None:
    response = raw_request(server, "HEAD", "/files/../etc/passwd")
    assert response.status == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "TRACE", "PROPFIND"])
def test_unsupported_methods_on_upload_are_405(server: Server, method: str) -> None:
    url = server.create(3)
    response = server.request(method, url)
    assert response.status_code == 405
    assert response.headers["Tus-Resumable"] == "1.0.0"
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"HEAD", "PATCH", "DELETE", "OPTIONS"} <= allowed
    assert method not in allowed


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE", "HEAD"])
def test_unsupported_methods_on_collection_are_405(server: Server, method: str) -> None:
    response = server.request(method, server.endpoint)
    assert response.status_code == 405
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_unsupported_override_is_405(server: Server) -> None:
    url = server.create(3)
    response = _override(server, url, "PUT")
    assert response.status_code == 405
    assert offset_of(server, url) == 0
