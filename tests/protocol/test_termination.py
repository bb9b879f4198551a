"""tus termination extension against SQLite and PostgreSQL."""

from __future__ import annotations

from tests.conftest import Server
from tests.protocol.support import upload_id, upload_ids, upload_status


def test_delete_incomplete_upload(server: Server) -> None:
    url = server.create(10)
    assert server.patch(url, b"abcd", 0).status_code == 204
    assert server.staged(url).exists()
    response = server.request("DELETE", url)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert not server.staged(url).exists()
    assert upload_status(server, upload_id(url)) == "terminated"


def test_requests_after_delete_are_404(server: Server) -> None:
    url = server.create(10)
    assert server.patch(url, b"abcd", 0).status_code == 204
    assert server.request("DELETE", url).status_code == 204
    head = server.request("HEAD", url)
    assert head.status_code == 404
    assert "Upload-Offset" not in head.headers
    assert server.patch(url, b"efgh", 4).status_code == 404
    assert server.patch(url, b"", 4).status_code == 404
    assert server.request("DELETE", url).status_code == 404
    assert not server.staged(url).exists()


def test_delete_complete_upload(server: Server) -> None:
    url = server.create(3)
    assert server.patch(url, b"abc", 0).status_code == 204
    assert server.request("DELETE", url).status_code == 204
    assert not server.staged(url).exists()
    assert server.request("HEAD", url).status_code == 404


def test_delete_zero_length_and_deferred_uploads(server: Server) -> None:
    before = upload_ids(server)
    # A zero-length upload is complete at creation and refused by the pipeline (empty_file).
    created = server.request("POST", server.endpoint, headers={"Upload-Length": "0"})
    assert created.status_code == 422, created.text
    (zero,) = upload_ids(server) - before
    zero_url = f"{server.endpoint}{zero}"
    head = server.request("HEAD", zero_url)
    assert head.status_code == 422
    assert head.headers["X-Upload-Error"] == "empty_file"
    for url in (zero_url, server.create(None)):
        assert server.request("DELETE", url).status_code == 204
        assert server.request("HEAD", url).status_code == 404
        assert server.request("DELETE", url).status_code == 404
        assert not server.staged(url).exists()
        assert upload_status(server, upload_id(url)) == "terminated"


def test_delete_unknown_upload_is_404(server: Server) -> None:
    response = server.request("DELETE", f"{server.endpoint}{'0' * 32}")
    assert response.status_code == 404
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_delete_of_one_upload_leaves_others_alone(server: Server) -> None:
    doomed, kept = server.create(5), server.create(5)
    assert server.patch(kept, b"keep", 0).status_code == 204
    assert server.request("DELETE", doomed).status_code == 204
    assert server.request("HEAD", kept).headers["Upload-Offset"] == "4"
    assert server.content(kept) == b"keep"


def test_termination_is_advertised(server: Server) -> None:
    extensions = server.request("OPTIONS", server.endpoint).headers["Tus-Extension"]
    assert "termination" in extensions.split(",")
