from __future__ import annotations

from tests.conftest import Server


def test_create_patch_head_roundtrip(server: Server) -> None:
    url = server.create(11)
    response = server.patch(url, b"hello world", 0)
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == "11"
    head = server.request("HEAD", url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "11"
    assert server.content(url) == b"hello world"
