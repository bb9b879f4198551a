"""tus creation extension against SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin

import pytest
import requests

from tests.conftest import Server
from tests.protocol.support import (
    http_date,
    staged_names,
    staged_since,
    upload_ids,
    upload_row,
    wait_unstaged,
)


def _post(server: Server, url: str | None = None, **headers: str) -> requests.Response:
    return server.request("POST", url or server.endpoint, headers=headers)


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="neither"),
        pytest.param({"Upload-Length": "10", "Upload-Defer-Length": "1"}, id="both"),
        pytest.param({"Upload-Length": "ten"}, id="length-not-a-number"),
        pytest.param({"Upload-Length": ""}, id="length-empty"),
        pytest.param({"Upload-Length": "-1"}, id="length-negative"),
        pytest.param({"Upload-Length": "1.5"}, id="length-fraction"),
        pytest.param({"Upload-Length": "1e3"}, id="length-exponent"),
        pytest.param({"Upload-Length": "1,2"}, id="length-list"),
        pytest.param({"Upload-Length": "99999999999999999999"}, id="length-too-many-digits"),
        pytest.param({"Upload-Defer-Length": "0"}, id="defer-0"),
        pytest.param({"Upload-Defer-Length": "2"}, id="defer-2"),
        pytest.param({"Upload-Defer-Length": "true"}, id="defer-true"),
        pytest.param({"Upload-Defer-Length": ""}, id="defer-empty"),
        pytest.param({"Upload-Defer-Length": "-1"}, id="defer-negative"),
    ],
)
def test_length_headers_must_be_exactly_one_valid_value(
    server: Server, headers: dict[str, str]
) -> None:
    before = staged_names(server)
    response = _post(server, **headers)
    assert response.status_code == 400, response.text
    assert "Location" not in response.headers
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert not staged_since(server, before)


def test_length_above_max_size_is_413(server: Server) -> None:
    before = staged_names(server)
    response = _post(server, **{"Upload-Length": str(server.settings.uploads.max_file_size + 1)})
    assert response.status_code == 413
    assert "Location" not in response.headers
    assert not staged_since(server, before)


def test_length_equal_to_max_size_is_accepted(server: Server) -> None:
    response = _post(server, **{"Upload-Length": str(server.settings.uploads.max_file_size)})
    assert response.status_code == 201


def test_created_with_location_and_expiry(server: Server) -> None:
    before = datetime.now(UTC)
    response = _post(server, **{"Upload-Length": "10"})
    assert response.status_code == 201
    assert response.content == b""
    url = urljoin(server.endpoint, response.headers["Location"])
    assert url.startswith(f"{server.url}/files/")
    expires = http_date(response.headers["Upload-Expires"])
    window = timedelta(seconds=server.settings.uploads.session_ttl_seconds)
    assert window == timedelta(hours=2)
    assert before + window - timedelta(seconds=2) <= expires <= datetime.now(UTC) + window
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "10"
    assert server.content(url) == b""


def test_each_creation_gets_its_own_location(server: Server) -> None:
    locations = {_post(server, **{"Upload-Length": "1"}).headers["Location"] for _ in range(3)}
    assert len(locations) == 3


def test_post_without_trailing_slash(server: Server) -> None:
    response = _post(server, f"{server.url}/files", **{"Upload-Length": "3"})
    assert response.status_code == 201
    url = urljoin(f"{server.url}/files", response.headers["Location"])
    assert url.startswith(f"{server.url}/files/")
    assert server.patch(url, b"abc", 0).status_code == 204
    assert server.content(url) == b"abc"


def test_zero_length_upload_is_complete_at_creation_and_rejected(server: Server) -> None:
    before = upload_ids(server)
    response = _post(server, **{"Upload-Length": "0"})
    # Complete at creation, so the POST waits for the pipeline, which refuses empty files.
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "empty_file"
    assert response.headers["X-Upload-Status"] == "rejected"
    assert response.headers["X-Upload-Error"] == "empty_file"
    assert "Upload-Expires" not in response.headers
    (created,) = upload_ids(server) - before
    row = upload_row(server, created)
    assert row is not None
    assert (row["status"], row["error"]) == ("rejected", "empty_file")
    assert row["length"] == row["upload_offset"] == 0
    url = f"{server.endpoint}{created}"
    wait_unstaged(server, url)  # the cleanup follows the verdict
    head = server.request("HEAD", url)
    assert head.status_code == 422
    assert head.headers["X-Upload-Status"] == "rejected"
    assert head.headers["X-Upload-Error"] == "empty_file"
    assert head.content == b""
    assert server.patch(url, b"x", 0).status_code == 413
    again = server.patch(url, b"", 0)
    assert again.status_code == 422
    assert again.json()["error"] == "empty_file"


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param("filename !!!!", id="not-base64"),
        pytest.param("filename YQ", id="missing-padding"),
        pytest.param("filename YQ=", id="short-padding"),
        pytest.param("filename Y===", id="too-much-padding"),
        pytest.param("filename YQ==YQ==", id="padding-inside"),
        pytest.param("filename YQ-_", id="urlsafe-alphabet"),
        pytest.param("filename YQ== extra", id="three-parts"),
        pytest.param("filename  YQ==", id="two-spaces"),
        pytest.param("a YQ==,a Yg==", id="duplicate-key"),
        pytest.param("a,a", id="duplicate-bare-key"),
        pytest.param(",a YQ==", id="empty-first-pair"),
        pytest.param("a YQ==,,b Yg==", id="empty-middle-pair"),
        pytest.param("a YQ==,", id="empty-last-pair"),
    ],
)
def test_malformed_metadata_is_400(server: Server, metadata: str) -> None:
    before = staged_names(server)
    response = _post(server, **{"Upload-Length": "10", "Upload-Metadata": metadata})
    assert response.status_code == 400, response.text
    assert "Location" not in response.headers
    assert not staged_since(server, before)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param("filename d29ybGRfZG9taW5hdGlvbi5wZGY=", id="one-pair"),
        pytest.param("filename YQ==,is_confidential", id="key-without-value"),
        pytest.param("empty ,name Yg==", id="empty-value"),
        pytest.param(
            f"filename {_b64('Ärger über Öl — 日本語.txt')},filetype {_b64('text/plain')}",
            id="non-ascii-utf8",
        ),
        pytest.param(
            f"name {_b64('x.bin')},type {_b64('')},relativePath {_b64('null')}", id="uppy-style"
        ),
    ],
)
def test_valid_metadata_is_echoed_byte_for_byte(server: Server, metadata: str) -> None:
    response = _post(server, **{"Upload-Length": "10", "Upload-Metadata": metadata})
    assert response.status_code == 201, response.text
    url = urljoin(server.endpoint, response.headers["Location"])
    head = server.request("HEAD", url)
    assert head.headers["Upload-Metadata"] == metadata


def test_non_ascii_metadata_value_round_trips(server: Server) -> None:
    name = "Ärger über Öl — 日本語.txt"
    url = server.create(10, **{"Upload-Metadata": f"filename {_b64(name)}"})
    echoed = server.request("HEAD", url).headers["Upload-Metadata"]
    key, value = echoed.split(" ")
    assert key == "filename"
    assert base64.b64decode(value).decode() == name


def test_empty_metadata_header_means_no_metadata(server: Server) -> None:
    response = _post(server, **{"Upload-Length": "10", "Upload-Metadata": ""})
    assert response.request.headers["Upload-Metadata"] == ""
    assert response.status_code == 201
    url = urljoin(server.endpoint, response.headers["Location"])
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert "Upload-Metadata" not in head.headers


@pytest.mark.parametrize("concat", ["", "partial;x", "final;", "final", "whole"])
def test_malformed_upload_concat_is_400_and_creates_nothing(server: Server, concat: str) -> None:
    before = staged_names(server)
    response = _post(server, **{"Upload-Length": "10", "Upload-Concat": concat})
    assert response.status_code == 400
    assert response.text.startswith("invalid_concat")
    assert not staged_since(server, before)
