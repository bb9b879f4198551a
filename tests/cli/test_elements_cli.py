"""`tusingest elements list|add|rm` as real processes against real Redis and a real SE process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from tests.rediskeys import redis_url

CAPACITY = 2_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def element(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tusingest element serve` (rw, 2 MB) holding one 500 kB file; yields its base URL."""
    port = _free_port()
    root = tmp_path_factory.mktemp("se")
    process = subprocess.Popen(
        [sys.executable, "-m", "tusingest", "element", "serve", "--id", "se-c1", "--mode", "rw",
         "--root", str(root), "--port", str(port), "--capacity", str(CAPACITY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                requests.get(f"{base}/health/ready", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # a busy machine: slow to answer
                assert time.monotonic() < deadline, "the element did not start"
                time.sleep(0.1)
        files = {"file": ("a.bin", b"x" * 500_000, "application/octet-stream")}
        assert requests.post(f"{base}/api/v1/files/upload", files=files, timeout=10).ok
        yield base
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url(), decode_responses=True, socket_timeout=5)
    yield client
    client.close()


def cli(prefix: str, *args: str, redis_set: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env |= {"REDIS_KEY_PREFIX": prefix, "CAPACITY_MONITOR_INTERVAL": "40"}
    if redis_set:
        env["REDIS_URL"] = redis_url()
    return subprocess.run(
        [sys.executable, "-m", "tusingest", "elements", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def listed(raw: redis.Redis, prefix: str, mode: str) -> list[str]:
    return [str(m) for m in raw.zrange(f"{prefix}storage:{mode}:by_priority", 0, -1)]


def json_list(prefix: str) -> list[dict[str, Any]]:
    done = cli(prefix, "list", "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_add_list_rm(element: str, prefix: str, raw: redis.Redis) -> None:
    pubsub = raw.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(f"{prefix}artstore:service_discovery")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"

    def actions() -> list[str]:
        found = []
        while (message := pubsub.get_message(timeout=0.3)) is not None:
            found.append(json.loads(message["data"])["action"])
        return found

    try:
        endpoint = element + "/api/v1"
        done = cli(prefix, "add", "--id", "se-c1", "--mode", "rw", "--endpoint", endpoint,
                   "--priority", "7")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "added se-c1" in done.stdout
        assert actions() == ["created"]
        fields = raw.hgetall(f"{prefix}storage:elements:se-c1")
        assert fields["health_status"] == "healthy"
        assert (fields["capacity_total"], fields["capacity_used"]) == ("2000000", "500000")
        assert 110 < raw.ttl(f"{prefix}storage:elements:se-c1") <= 120  # 3 × 40 s
        assert listed(raw, prefix, "rw") == ["se-c1"]

        table = cli(prefix, "list")
        assert table.returncode == 0, table.stderr
        header, line = table.stdout.splitlines()
        assert header.split()[:4] == ["ID", "MODE", "PRIO", "ENDPOINT"]
        cells = line.split()
        assert cells[:8] == ["se-c1", "rw", "7", element + "/api/v1", "488.3", "KiB/1.9", "MiB",
                             "25.00"]  # fmt: skip
        assert cells[8:11] == ["ok", "healthy", "yes"]

        [row] = json_list(prefix)
        assert row == {
            "id": "se-c1",
            "mode": "rw",
            "priority": 7,
            "endpoint": element + "/api/v1",
            "capacity_used": 500_000,
            "capacity_total": CAPACITY,
            "capacity_percent": 25.0,
            "capacity_status": "ok",
            "health_status": "healthy",
            "listed": True,
            "last_updated": fields["last_updated"],
        }

        again = cli(prefix, "add", "--id", "se-c1", "--mode", "rw", "--endpoint", element)
        assert again.returncode == 0, again.stderr
        assert "updated se-c1" in again.stdout
        assert actions() == ["updated"]
        assert json_list(prefix)[0]["priority"] == 100  # the default

        done = cli(prefix, "rm", "se-c1")
        assert done.returncode == 0, done.stderr
        assert actions() == ["deleted"]
        assert raw.exists(f"{prefix}storage:elements:se-c1") == 0
        assert listed(raw, prefix, "rw") == []
        assert json_list(prefix) == []
    finally:
        pubsub.close()


def test_an_unreachable_element_is_added_unhealthy(prefix: str, raw: redis.Redis) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    done = cli(prefix, "add", "--id", "se-dead", "--mode", "edit", "--endpoint", endpoint)
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr
    assert "se-dead" in done.stderr
    assert raw.hget(f"{prefix}storage:elements:se-dead", "health_status") == "unhealthy"
    assert listed(raw, prefix, "edit") == []
    [row] = json_list(prefix)
    assert (row["health_status"], row["listed"]) == ("unhealthy", False)


def test_an_element_without_a_hash_shows_as_expired(
    element: str, prefix: str, raw: redis.Redis
) -> None:
    done = cli(prefix, "add", "--id", "se-c1", "--mode", "rw", "--endpoint", element)
    assert done.returncode == 0, done.stderr
    raw.delete(f"{prefix}storage:elements:se-c1")  # as when nobody refreshed it for 120 s
    [row] = json_list(prefix)
    assert row["capacity_status"] == "expired"
    assert row["capacity_used"] is None
    assert row["last_updated"] is None
    table = cli(prefix, "list")
    assert table.stdout.splitlines()[1].split()[4:7] == ["-", "-", "expired"]


@pytest.mark.parametrize("endpoint", ["ftp://se:8010", "se:8010", "http://"])
def test_add_refuses_a_bad_endpoint(prefix: str, raw: redis.Redis, endpoint: str) -> None:
    done = cli(prefix, "add", "--id", "se-bad", "--mode", "rw", "--endpoint", endpoint)
    assert done.returncode == 2
    assert "endpoint" in done.stderr
    assert raw.keys(f"{prefix}*") == []


def test_rm_of_an_unknown_element(prefix: str) -> None:
    done = cli(prefix, "rm", "se-nope")
    assert done.returncode == 1
    assert "se-nope" in done.stderr


def test_list_when_empty(prefix: str) -> None:
    done = cli(prefix, "list")
    assert (done.returncode, done.stdout) == (0, "")
    assert "no storage elements configured" in done.stderr
    assert json_list(prefix) == []


@pytest.mark.parametrize(
    "args",
    [["list"], ["rm", "se-1"], ["add", "--id", "se-1", "--mode", "rw", "--endpoint", "http://x"]],
)
def test_without_redis_url(prefix: str, raw: redis.Redis, args: list[str]) -> None:
    done = cli(prefix, *args, redis_set=False)
    assert done.returncode == 2
    assert "REDIS_URL" in done.stderr
    assert "embedded" in done.stderr
    assert raw.keys(f"{prefix}*") == []


def test_unreachable_redis(prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env["REDIS_URL"] = f"redis://:secret@127.0.0.1:{_free_port()}/0"
    done = subprocess.run(
        [sys.executable, "-m", "tusingest", "elements", "list"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Redis" in done.stderr
    assert "secret" not in done.stderr
