"""A single-valued tus header sent twice is refused with 400 naming it, before anything
happens: a proxy that reads the last copy must not see another request than the server."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server


def _send(server: Server, method: str, url: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest(method, parts.path)
        for name, value in [
            ("Authorization", server.headers()["Authorization"]),
            ("Content-Length", "0"),
            *headers,
        ]:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("Upload-Length", "10", "20"),
        ("Upload-Defer-Length", "1", "1"),
        ("Upload-Metadata", "filename YS50eHQ=", "filename Yi50eHQ="),
        ("Upload-Concat", "partial", "partial"),
        ("Tus-Resumable", "1.0.0", "1.0.0"),
    ],
)
def test_a_creation_header_sent_twice_is_400(
    server: Server, name: str, first: str, second: str
) -> None:
    base = [("Tus-Resumable", "1.0.0"), ("Upload-Length", "10")]
    headers = [h for h in base if h[0] != name] + [(name, first), (name, second)]
    status, body = _send(server, "POST", server.endpoint, headers)
    assert status == 400, body
    assert body.startswith("duplicate_header:")
    assert name in body


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("Upload-Offset", "0", "0"),
        (
            "Upload-Checksum",
            "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        ("X-HTTP-Method-Override", "PATCH", "DELETE"),
    ],
)
def test_a_patch_header_sent_twice_is_400_and_changes_nothing(
    server: Server, name: str, first: str, second: str
) -> None:
    url = server.create(10)
    base = [
        ("Tus-Resumable", "1.0.0"),
        ("Content-Type", "application/offset+octet-stream"),
        ("Upload-Offset", "0"),
    ]
    headers = [h for h in base if h[0] != name] + [(name, first), (name, second)]
    status, body = _send(server, "PATCH", url, headers)
    assert status == 400, body
    assert name in body
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "0"


def test_one_copy_of_each_is_fine(server: Server) -> None:
    status, body = _send(
        server,
        "POST",
        server.endpoint,
        [("Tus-Resumable", "1.0.0"), ("Upload-Length", "10"), ("Upload-Metadata", "a YQ==")],
    )
    assert status == 201, body
