"""Readiness over real services: `ok` with every element up, `degraded` (still 200) when one
element stops but another can store, or when the Admin Module stops while Redis still lists
the elements, `fail` (503) when Redis is gone and no source lists an element, each component's
state in the body."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.adminmodule import running_admin_module
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


def test_readiness_names_the_admin_module(cluster: Cluster) -> None:
    se = cluster.element("se-1", priority=1)
    with running_admin_module(cluster.keys.private) as admin:
        admin.add_element("se-1", api_url=se.url, priority=1)
        node = cluster.node(ADMIN_MODULE_URL=admin.url)
        body = _until(node, "ok")
        assert body["checks"]["admin_module"] == "ok"

        admin.down = True  # Redis still lists the element: uploads can be stored
        body = _until(node, "degraded")
        assert body["checks"]["admin_module"].startswith("error")
        assert body["checks"]["elements"]["se-1"]["usable"] is True

        admin.down = False
        assert _until(node, "ok")["checks"]["admin_module"] == "ok"
