"""tus creation-with-upload extension against SQLite and PostgreSQL."""

from __future__ import annotations

import os
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import Server
from tests.protocol.support import (
    OCTET,
    chunks,
    http_date,
    offset_of,
    sha256,
    staged_names,
    staged_since,
)


def _create_with(
    server: Server, body: object, content_type: str | None = OCTET, **headers: str
) -> requests.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return server.request("POST", server.endpoint, headers=headers, data=body)


def _location(server: Server, response: requests.Response) -> str:
    return urljoin(server.endpoint, response.headers["Location"])


def test_partial_body_is_accepted_and_staged(server: Server) -> None:
    response = _create_with(server, b"hello", **{"Upload-Length": "11"})
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == "5"
    http_date(response.headers["Upload-Expires"])
    url = _location(server, response)
    assert server.content(url) == b"hello"
    assert offset_of(server, url) == 5
    assert server.patch(url, b" world", 5).status_code == 204
    assert server.content(url) == b"hello world"


def test_whole_body_completes_the_upload(server: Server) -> None:
    data = os.urandom(100_000)
    response = _create_with(server, data, **{"Upload-Length": str(len(data))})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == str(len(data))
    assert "Upload-Expires" not in response.headers
    url = _location(server, response)
    head = server.request("HEAD", url)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert sha256(server.content(url)) == sha256(data)


def test_chunked_body(server: Server) -> None:
    data = os.urandom(50_000)
    response = _create_with(server, chunks(data, 4096), **{"Upload-Length": str(len(data))})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == str(len(data))
    assert sha256(server.content(_location(server, response))) == sha256(data)


def test_body_with_deferred_length(server: Server) -> None:
    response = _create_with(server, b"abc", **{"Upload-Defer-Length": "1"})
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "3"
    url = _location(server, response)
    head = server.request("HEAD", url)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert head.headers["Upload-Offset"] == "3"


def test_body_with_metadata(server: Server) -> None:
    response = _create_with(
        server, b"abc", **{"Upload-Length": "3", "Upload-Metadata": "filename YS50eHQ="}
    )
    assert response.status_code == 201
    head = server.request("HEAD", _location(server, response))
    assert head.headers["Upload-Metadata"] == "filename YS50eHQ="


@pytest.mark.parametrize(
    "content_type", [None, "application/octet-stream", "text/plain", "multipart/form-data"]
)
def test_non_empty_body_with_other_content_type_is_415(
    server: Server, content_type: str | None
) -> None:
    before = staged_names(server)
    response = _create_with(server, b"abc", content_type, **{"Upload-Length": "3"})
    assert response.status_code == 415, response.text
    assert "Location" not in response.headers
    assert not staged_since(server, before)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", OCTET])
def test_empty_body_with_any_content_type_is_plain_creation(
    server: Server, content_type: str
) -> None:
    response = _create_with(server, b"", content_type, **{"Upload-Length": "3"})
    assert response.request.headers["Content-Length"] == "0"
    assert response.status_code == 201, response.text
    assert response.headers.get("Upload-Offset", "0") == "0"
    url = _location(server, response)
    assert offset_of(server, url) == 0
    assert server.content(url) == b""


@pytest.mark.parametrize("content_type", ["text/plain", OCTET])
def test_empty_chunked_body_with_any_content_type_is_plain_creation(
    server: Server, content_type: str
) -> None:
    response = _create_with(server, iter([b""]), content_type, **{"Upload-Length": "3"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 201, response.text
    assert offset_of(server, _location(server, response)) == 0


def test_body_longer_than_length_is_413_and_creates_nothing(server: Server) -> None:
    before = staged_names(server)
    response = _create_with(server, b"0123456789", **{"Upload-Length": "4"})
    assert response.status_code == 413
    assert "Location" not in response.headers
    assert not staged_since(server, before)


def test_chunked_body_longer_than_length_is_413_and_leaves_nothing(server: Server) -> None:
    before = staged_names(server)
    response = _create_with(server, chunks(b"0123456789", 3), **{"Upload-Length": "4"})
    assert response.status_code == 413
    assert "Location" not in response.headers
    assert not staged_since(server, before)


def test_body_on_zero_length_upload_is_413(server: Server) -> None:
    before = staged_names(server)
    response = _create_with(server, b"x", **{"Upload-Length": "0"})
    assert response.status_code == 413
    assert not staged_since(server, before)


def test_body_with_length_above_max_size_is_413(server: Server) -> None:
    before = staged_names(server)
    response = _create_with(
        server, b"abc", **{"Upload-Length": str(server.settings.uploads.max_file_size + 1)}
    )
    assert response.status_code == 413
    assert not staged_since(server, before)
