"""tus creation-defer-length extension against SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import requests

from tests.conftest import BACKENDS, Server
from tests.protocol.support import OCTET, chunks, offset_of, sha256


@pytest.fixture(scope="module", params=BACKENDS)
def small(request: pytest.FixtureRequest, make_server: Callable[..., Server]) -> Server:
    """A server whose Tus-Max-Size is 1 MiB."""
    return make_server(request.param, MAX_FILE_SIZE_MB="1")


def _declare(
    server: Server, url: str, length: int | str, offset: int, data: bytes = b""
) -> requests.Response:
    return server.patch(url, data, offset, **{"Upload-Length": str(length)})


def test_head_carries_defer_length_while_unknown(server: Server) -> None:
    url = server.create(None)
    assert server.patch(url, b"abc", 0).status_code == 204
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers
    assert head.headers["Upload-Offset"] == "3"


def test_patch_with_upload_length_sets_it(server: Server) -> None:
    url = server.create(None)
    response = _declare(server, url, 10, 0, b"abc")
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"
    head = server.request("HEAD", url)
    assert head.headers["Upload-Length"] == "10"
    assert "Upload-Defer-Length" not in head.headers
    # The declared length now bounds the upload.
    assert server.patch(url, b"0123456789", 3).status_code == 413
    assert offset_of(server, url) == 3


def test_repeating_the_same_length_is_accepted(server: Server) -> None:
    url = server.create(None)
    assert _declare(server, url, 6, 0, b"ab").status_code == 204
    again = _declare(server, url, 6, 2, b"cd")
    assert again.status_code == 204
    assert again.headers["Upload-Offset"] == "4"
    assert server.request("HEAD", url).headers["Upload-Length"] == "6"


def test_same_length_on_a_non_deferred_upload_is_accepted(server: Server) -> None:
    url = server.create(6)
    assert _declare(server, url, 6, 0, b"ab").status_code == 204


@pytest.mark.parametrize("deferred", [True, False])
def test_changing_a_known_length_is_400(server: Server, deferred: bool) -> None:
    url = server.create(None if deferred else 6)
    if deferred:
        assert _declare(server, url, 6, 0).status_code == 204
    response = _declare(server, url, 7, 0, b"ab")
    assert response.status_code == 400
    assert offset_of(server, url) == 0
    assert server.request("HEAD", url).headers["Upload-Length"] == "6"
    assert server.content(url) == b""


def test_length_below_offset_is_400(server: Server) -> None:
    url = server.create(None)
    assert server.patch(url, b"abcdef", 0).status_code == 204
    response = _declare(server, url, 5, 6)
    assert response.status_code == 400
    head = server.request("HEAD", url)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert head.headers["Upload-Offset"] == "6"


@pytest.mark.parametrize("value", ["abc", "-1", "", "1.0"])
def test_malformed_length_on_patch_is_400(server: Server, value: str) -> None:
    url = server.create(None)
    response = _declare(server, url, value, 0, b"ab")
    assert response.status_code == 400
    assert offset_of(server, url) == 0
    assert server.request("HEAD", url).headers["Upload-Defer-Length"] == "1"


def test_length_above_max_size_is_413(server: Server) -> None:
    url = server.create(None)
    response = _declare(server, url, server.settings.uploads.max_file_size + 1, 0, b"ab")
    assert response.status_code == 413
    assert offset_of(server, url) == 0
    assert server.request("HEAD", url).headers["Upload-Defer-Length"] == "1"


def test_empty_patch_only_declares_the_length(server: Server) -> None:
    url = server.create(None)
    assert server.patch(url, b"abc", 0).status_code == 204
    response = _declare(server, url, 5, 3)
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "3"
    assert "Upload-Expires" in response.headers
    head = server.request("HEAD", url)
    assert head.headers["Upload-Length"] == "5"
    assert head.headers["Upload-Offset"] == "3"
    assert server.patch(url, b"de", 3).status_code == 204
    assert server.content(url) == b"abcde"


def test_upload_completes_when_offset_reaches_declared_length(server: Server) -> None:
    data = os.urandom(30_000)
    url = server.create(None)
    assert server.patch(url, data[:10_000], 0).status_code == 204
    assert _declare(server, url, len(data), 10_000, data[10_000:20_000]).status_code == 204
    last = server.patch(url, data[20_000:], 20_000)
    assert last.status_code == 204
    assert last.headers["Upload-Offset"] == str(len(data))
    assert "Upload-Expires" not in last.headers  # complete: no longer expires
    head = server.request("HEAD", url)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert sha256(server.content(url)) == sha256(data)
    assert server.patch(url, b"x", len(data)).status_code == 413


def test_declaring_length_equal_to_offset_completes_the_upload(server: Server) -> None:
    url = server.create(None)
    assert server.patch(url, b"abc", 0).status_code == 204
    assert _declare(server, url, 3, 3).status_code == 204
    head = server.request("HEAD", url)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "3"
    assert server.patch(url, b"d", 3).status_code == 413


def test_deferred_body_past_max_size_is_413(small: Server) -> None:
    limit = small.settings.uploads.max_file_size
    assert limit == 1024 * 1024
    assert small.request("OPTIONS", small.endpoint).headers["Tus-Max-Size"] == str(limit)
    url = small.create(None)
    assert small.patch(url, b"a" * 1000, 0).status_code == 204
    too_much = os.urandom(limit - 1000 + 1)
    assert small.patch(url, too_much, 1000).status_code == 413
    chunked = small.request(
        "PATCH",
        url,
        headers={"Content-Type": OCTET, "Upload-Offset": "1000"},
        data=chunks(too_much, 64 * 1024),
    )
    assert chunked.status_code == 413
    assert offset_of(small, url) == 1000
    assert small.staged(url).stat().st_size == 1000
    # Exactly up to the maximum is fine, and the length can then be declared.
    assert small.patch(url, too_much[:-1], 1000).status_code == 204
    assert _declare(small, url, limit, limit).status_code == 204
    head = small.request("HEAD", url)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(limit)
