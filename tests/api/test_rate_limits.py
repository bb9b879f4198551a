"""Per-user rate limits over real HTTP: uploads started (tus creations, final concatenations,
multipart files) refused with 429, `Retry-After` and `rate_limited`; bodies paced to the byte
rate; admins never limited; nodes sharing Redis sharing the buckets."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
import requests

from tests.conftest import Server
from tests.rediskeys import redis_url
from tusingest.domain import Role

KiB = 1024
SLOW = "1"  # uploads a minute: nothing comes back within a test
FAST = "300"  # uploads a minute: 5 a second, one back every 200 ms


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def create(server: Server, sub: str, role: Role = Role.USER, **extra: str) -> requests.Response:
    headers = server.headers(sub, role, **{"Upload-Length": "10", **extra})
    return server.session.post(server.endpoint, headers=headers, timeout=60)


def form(server: Server, path: str, sub: str, files: list[tuple[str, bytes]]) -> requests.Response:
    field = "file" if path == "upload" else "files"
    return server.session.post(
        f"{server.url}/api/files/{path}",
        headers={"Authorization": f"Bearer {server.keys.token(sub)}"},
        files=[(field, (name, data, "application/octet-stream")) for name, data in files],
        timeout=60,
    )


@pytest.fixture(scope="module")
def limited(make_server: Callable[..., Server]) -> Server:
    """Two uploads at once, then one a minute; bytes unlimited."""
    return make_server("sqlite", RATE_LIMIT_UPLOADS_PER_MINUTE=SLOW, RATE_LIMIT_UPLOADS_BURST="2")


def test_tus_creations_past_the_burst_get_429_with_retry_after(limited: Server) -> None:
    sub = user()
    assert [create(limited, sub).status_code for _ in range(2)] == [201, 201]
    refused = create(limited, sub)
    assert refused.status_code == 429
    assert refused.text.startswith("rate_limited: ")
    assert refused.headers["Tus-Resumable"] == "1.0.0"
    assert "Location" not in refused.headers
    # The next token is a minute away (1 a minute), in whole seconds.
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    # Another user has a bucket of its own.
    assert create(limited, user()).status_code == 201


def test_admins_are_never_limited(limited: Server) -> None:
    statuses = [create(limited, "root", Role.ADMIN).status_code for _ in range(6)]
    assert statuses == [201] * 6


def test_a_final_concatenation_counts_as_an_upload_started(limited: Server) -> None:
    sub = user()
    partials = [create(limited, sub, **{"Upload-Concat": "partial"}) for _ in range(2)]
    assert [p.status_code for p in partials] == [201, 201]
    urls = " ".join(p.headers["Location"] for p in partials)
    final = limited.session.post(
        limited.endpoint,
        headers=limited.headers(sub, **{"Upload-Concat": f"final;{urls}"}),
        timeout=60,
    )
    assert final.status_code == 429, final.text
    assert final.text.startswith("rate_limited: ")


def test_a_multipart_upload_past_the_limit_is_429_json(limited: Server) -> None:
    sub = user()
    assert [
        form(limited, "upload", sub, [("a.bin", b"a" * 100)]).status_code for _ in range(2)
    ] == [
        201,
        201,
    ]
    refused = form(limited, "upload", sub, [("c.bin", b"c" * 100)])
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert 55 <= int(refused.headers["Retry-After"]) <= 60


def test_batch_files_past_the_limit_fail_alone(limited: Server) -> None:
    sub = user()
    files = [(f"{n}.bin", bytes([n]) * 100) for n in range(3)]
    response = form(limited, "batch/upload", sub, files)
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["success", "success", "failed"]
    assert results[2]["error"] == "rate_limited"
    assert 55 <= results[2]["retry_after_seconds"] <= 60
    assert response.headers["Retry-After"] == str(results[2]["retry_after_seconds"])


def test_the_limit_refills_over_time(make_server: Callable[..., Server]) -> None:
    server = make_server("sqlite", RATE_LIMIT_UPLOADS_PER_MINUTE=FAST, RATE_LIMIT_UPLOADS_BURST="1")
    sub = user()
    assert create(server, sub).status_code == 201
    refused = create(server, sub)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"  # 200 ms, rounded up to a whole second
    time.sleep(0.25)
    assert create(server, sub).status_code == 201


def test_nodes_sharing_redis_share_the_limit(
    make_server: Callable[..., Server], prefix: str
) -> None:
    env = {
        "RATE_LIMIT_UPLOADS_PER_MINUTE": SLOW,
        "RATE_LIMIT_UPLOADS_BURST": "1",
        "RATE_LIMIT_REDIS_URL": redis_url(),
        "REDIS_KEY_PREFIX": prefix,
    }
    one, two = make_server("postgres", **env), make_server("postgres", **env)
    sub = user()
    assert create(one, sub).status_code == 201
    refused = create(two, sub)
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert create(one, user()).status_code == 201


def test_bodies_are_paced_to_the_byte_rate(make_server: Callable[..., Server]) -> None:
    # 256 KiB/s with a burst of 256 KiB: 1 MiB takes at least 3 s (the first 256 KiB free).
    server = make_server("sqlite", RATE_LIMIT_BYTES_PER_SECOND=str(256 * KiB))
    data = os.urandom(1024 * KiB)
    sub = user()
    url = server.create(len(data), sub=sub)
    started = time.monotonic()
    response = server.patch(url, data, 0, sub=sub)
    paced = time.monotonic() - started
    assert response.status_code == 204, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    assert 2.9 <= paced < 8, paced
    # The same user's multipart file goes through the same bucket: 512 KiB at 256 KiB/s,
    # the bucket empty from the PATCH.
    started = time.monotonic()
    assert form(server, "upload", sub, [("f.bin", data[: 512 * KiB])]).status_code == 201
    assert time.monotonic() - started >= 1.9
    # An admin is not paced.
    admin = f"Bearer {server.keys.token('root', Role.ADMIN)}"
    url = server.create(len(data), Authorization=admin)
    started = time.monotonic()
    response = server.patch(url, data, 0, Authorization=admin)
    assert response.status_code == 204
    assert time.monotonic() - started < 1.5
