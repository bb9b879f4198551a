"""Readiness over real services: `ok` with every element up, `degraded` (still 200) when one
element stops but another can store, `fail` (503) when Redis is gone and no source lists an
element, each component's state in the body."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.nodes import Node
from tests.storage.conftest import Cluster


def _ready(node: Node) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{node.url}/health/ready", timeout=10)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _until(node: Node, status: str, seconds: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        code, body = _ready(node)
        if body["status"] == status:
            assert code == (503 if status == "fail" else 200), body
            return body
        assert time.monotonic() < deadline, f"readiness still {body}"
        time.sleep(0.2)


def test_readiness_follows_the_elements_and_redis(cluster: Cluster) -> None:
    first = cluster.element("se-1", priority=1)
    cluster.element("se-2", priority=2)
    node = cluster.node()
    body = _until(node, "ok")
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["registry"] == {"edit": "redis", "rw": "none"}  # edit SEs only
    assert set(body["checks"]["elements"]) == {"se-1", "se-2"}

    first.kill()  # the capacity monitor marks it unhealthy within a poll
    body = _until(node, "degraded")
    elements = body["checks"]["elements"]
    assert elements["se-1"]["usable"] is False
    assert elements["se-2"]["usable"] is True

    cluster.redis.stop()  # no Admin Module configured: no source lists an element
    body = _until(node, "fail")
    assert body["checks"]["redis"].startswith("error")
    assert body["checks"]["database"] == "ok"
