"""Uppy (@uppy/core + @uppy/tus, bundled locally) in headless Debian Chromium, cross-origin.

The page (tests/js/uppy_page.mjs, bundled by esbuild into a temp dir) is served from its own
127.0.0.1 port, so every tus request is a CORS request to the server's origin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.clients.jsclients import assert_complete
from tests.clients.uppypage import FILES, Page, upload_with_uppy, uppy_page
from tests.conftest import Server


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    with uppy_page(tmp_path_factory.mktemp("uppy-page")) as built:
        yield built


def _upload(
    server: Server, page: Page, files: list[str], parallel: list[str], retry: str = "0,200,1000"
) -> dict[str, Any]:
    assert urlsplit(page.url).port != urlsplit(server.url).port  # cross-origin on purpose
    return upload_with_uppy(page, server.endpoint, server.keys.token(), files, parallel, retry)


def _check(server: Server, page: Page, result: dict[str, Any], files: list[str]) -> None:
    assert result["error"] is None
    assert result["failed"] == []
    by_name = {f["name"]: f for f in result["successful"]}
    assert sorted(by_name) == sorted(Path(p).name for p in files)
    for path in files:
        uploaded = by_name[Path(path).name]
        assert uploaded["size"] == FILES[path]
        assert_complete(server, uploaded["uploadURL"], FILES[path], page.sha256[path])


def test_uppy_uploads_several_files_cross_origin(server: Server, page: Page) -> None:
    files = ["data/small.bin", "data/medium.bin", "data/large.bin"]
    result = _upload(server, page, files, parallel=[])
    _check(server, page, result, files)
    # No CORS or other error reached the console (a blocked response would log one).
    assert result["consoleErrors"] == []
    for path in files:
        methods = [m for m, _ in result["requests"][Path(path).name]]
        assert methods[0] == "POST"
        assert set(methods[1:]) == {"PATCH"}


def test_uppy_with_one_parallel_upload(server: Server, page: Page) -> None:
    # Needs the concatenation extension: parallel.bin goes as 3 partial uploads + a final one.
    files = ["data/small.bin", "data/medium.bin", "data/parallel.bin"]
    result = _upload(server, page, files, parallel=["data/parallel.bin"])
    _check(server, page, result, files)
    concat = [c for m, c in result["requests"]["parallel.bin"] if m == "POST"]
    assert concat[:3] == ["partial"] * 3
    assert concat[3].startswith("final;")
    final = next(f for f in result["successful"] if f["name"] == "parallel.bin")
    head = server.request("HEAD", final["uploadURL"])
    assert head.headers["Upload-Concat"].startswith("final;")


def test_uppy_retries_uploads_past_the_rate_limit(
    make_server: Callable[..., Server], page: Page
) -> None:
    # One upload started a second, no burst: Uppy pauses its queue on each 429 and goes on.
    server = make_server("sqlite", RATE_LIMIT_UPLOADS_PER_MINUTE="60", RATE_LIMIT_UPLOADS_BURST="1")
    files = ["data/small.bin", "data/medium.bin", "data/large.bin"]
    result = _upload(server, page, files, parallel=[], retry="1000,1000,1000,1000,1000")
    _check(server, page, result, files)
    posts = result["statuses"]["POST"]
    assert posts.count(201) == 3
    assert posts.count(429) >= 1, posts
