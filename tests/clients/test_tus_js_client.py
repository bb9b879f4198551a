"""tus-js-client in Node (tests/js/tus_node.mjs), end to end, checked against the server's truth."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients.jsclients import MiB, assert_complete, run_node, write_random
from tests.conftest import Server
from tests.samples import EICAR, clamd_url

CHUNK = 256 * 1024  # tus_node.mjs's chunkSize
SIZES = {
    "chunked": 2 * MiB + 12345,
    "resume": 3 * MiB + 7,
    "parallel": 3 * MiB + 1,
    "deferred": MiB + 333,
    "abort_terminate": 2 * MiB,
    "override": MiB + 5,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """One file of random bytes per scenario, with its SHA-256."""
    root = tmp_path_factory.mktemp("js-src")
    return {
        name: (root / f"{name}.bin", write_random(root / f"{name}.bin", size))
        for name, size in SIZES.items()
    }


def _run(server: Server, scenario: str, sources: dict[str, tuple[Path, str]]) -> dict[str, Any]:
    path, _ = sources[scenario]
    return run_node("tus_node.mjs", scenario, server.endpoint, server.keys.token(), str(path))


def _methods(result: dict[str, Any]) -> list[str]:
    return [method for method, _ in result["responses"]]


def _statuses_ok(result: dict[str, Any]) -> None:
    bad = [r for r in result["responses"] if not 200 <= r[1] < 300]
    assert not bad, f"non-2xx responses (retried by the client): {bad}"


def test_chunked_upload(server: Server, sources: dict[str, tuple[Path, str]]) -> None:
    result = _run(server, "chunked", sources)
    _statuses_ok(result)
    size = SIZES["chunked"]
    assert _methods(result) == ["POST"] + ["PATCH"] * math.ceil(size / CHUNK)
    assert_complete(server, result["url"], size, sources["chunked"][1])
    head = server.request("HEAD", result["url"])
    meta = dict(pair.split(" ") for pair in head.headers["Upload-Metadata"].split(","))
    assert base64.b64decode(meta["filename"]) == b"chunked.bin"


def test_resume_from_previous_upload(server: Server, sources: dict[str, tuple[Path, str]]) -> None:
    result = _run(server, "resume", sources)
    _statuses_ok(result)
    size = SIZES["resume"]
    # The second Upload found the first by fingerprint and went on where the server stood.
    assert result["stored"] == 1
    assert result["previous"] == 1
    assert result["url"] == result["first_url"]
    assert 0 < result["aborted_at"] < size
    assert result["resumed_from"] == result["aborted_at"]
    methods = _methods(result)
    assert methods.count("POST") == 1
    assert methods.count("HEAD") == 1
    patches_after_head = methods[methods.index("HEAD") + 1 :]
    assert patches_after_head == ["PATCH"] * math.ceil((size - result["resumed_from"]) / CHUNK)
    assert_complete(server, result["url"], size, sources["resume"][1])


def test_parallel_uploads_concatenate(server: Server, sources: dict[str, tuple[Path, str]]) -> None:
    # Needs the concatenation extension: 3 partial uploads, then one final POST.
    result = _run(server, "parallel", sources)
    _statuses_ok(result)
    concat = [r["concat"] for r in result["requests"] if r["method"] == "POST"]
    assert concat[:3] == ["partial"] * 3
    assert concat[3].startswith("final;")
    partials = concat[3].removeprefix("final;").split()
    assert len(partials) == 3
    assert_complete(server, result["url"], SIZES["parallel"], sources["parallel"][1])
    head = server.request("HEAD", result["url"])
    assert head.headers["Upload-Concat"].startswith("final;")
    for partial in partials:
        # Partials MAY be deleted once concatenated; if kept, they still say what they are.
        part = server.request("HEAD", partial)
        assert part.status_code in (200, 404), part.status_code
        if part.status_code == 200:
            assert part.headers["Upload-Concat"] == "partial"


def test_deferred_length_from_stream(server: Server, sources: dict[str, tuple[Path, str]]) -> None:
    result = _run(server, "deferred", sources)
    _statuses_ok(result)
    size = SIZES["deferred"]
    post, *patches = result["requests"]
    assert (post["method"], post["defer"], post["length"]) == ("POST", "1", None)
    # The length travels with the last PATCH, once the stream ended.
    assert [p["length"] for p in patches if p["length"] is not None] == [str(size)]
    assert_complete(server, result["url"], size, sources["deferred"][1])


def test_abort_true_terminates(server: Server, sources: dict[str, tuple[Path, str]]) -> None:
    result = _run(server, "abort_terminate", sources)
    _statuses_ok(result)
    assert 0 < result["aborted_at"] < SIZES["abort_terminate"]
    assert result["responses"][-1] == ["DELETE", 204]
    assert server.request("HEAD", result["url"]).status_code == 404
    assert not server.staged(result["url"]).exists()


def test_override_patch_method(server: Server, sources: dict[str, tuple[Path, str]]) -> None:
    result = _run(server, "override", sources)
    _statuses_ok(result)
    size = SIZES["override"]
    requests = result["requests"]
    assert {r["method"] for r in requests} == {"POST"}
    assert [r["override"] for r in requests] == [None] + ["PATCH"] * math.ceil(size / CHUNK)
    assert_complete(server, result["url"], size, sources["override"][1])


def test_eicar_is_refused_with_onerror(make_server: Callable[..., Server], tmp_path: Path) -> None:
    # SQLite only: the client's reaction does not depend on the backend, and a PostgreSQL
    # node shares its operations with the session's other (non-scanning) nodes.
    server = make_server("sqlite", VIRUS_SCAN_ENABLED="on", CLAMD_URL=clamd_url())
    path = tmp_path / "eicar.txt"
    path.write_bytes(EICAR)
    result = run_node("tus_node.mjs", "eicar", server.endpoint, server.keys.token(), str(path))
    assert result["success"] is False, result
    error = result["error"]
    assert error["status"] == 422, result
    assert "virus_detected" in error["body"]
    assert error["upload_status"] == "rejected"
    # The final PATCH was answered once with 422: no retry, no new upload.
    assert result["responses"] == [["POST", 201], ["PATCH", 422]]
    info = server.status(result["url"])
    assert (info["upload_status"], info["verdict"]["error"]) == ("rejected", "virus_detected")


def test_uploads_past_the_rate_limit_succeed_after_retrying_the_429(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    # One upload started a second, no burst: of three started at once, two are refused first.
    server = make_server("sqlite", RATE_LIMIT_UPLOADS_PER_MINUTE="60", RATE_LIMIT_UPLOADS_BURST="1")
    path = tmp_path / "limited.bin"
    sha256 = write_random(path, 100_000)
    result = run_node(
        "tus_node.mjs", "rate_limited", server.endpoint, server.keys.token(), str(path)
    )
    posts = [status for method, status in result["responses"] if method == "POST"]
    assert posts.count(201) == 3
    assert posts.count(429) >= 2
    # Each retry waited what the server's Retry-After said.
    assert len(result["retried"]) == posts.count(429)
    assert {r["retry_after"] for r in result["retried"]} == {1}
    assert len(set(result["urls"])) == 3
    for url in result["urls"]:
        assert_complete(server, url, 100_000, sha256)
