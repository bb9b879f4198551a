"""A storage element killed during a stream of uploads: its breaker opens, uploads land on the
next SE with none failing; restarted, it is half-open, then closed and selected again."""

from __future__ import annotations

import os
import time

from tests.storage.conftest import Cluster

SIZE = 200 * 1024


def _store(node, data: bytes) -> str:  # type: ignore[no-untyped-def]
    upload_id, response = node.upload(data)
    assert response.status_code == 204, response.text
    assert response.headers["X-Upload-Status"] == "stored"
    info = node.session(upload_id)
    element: str = info["file"]["element_id"]
    return element


def test_a_killed_element_is_bypassed_and_rejoins(cluster: Cluster) -> None:
    first = cluster.element("se-1", priority=1)
    second = cluster.element("se-2", priority=2)
    # A slow monitor: the breaker, not the capacity poll, must notice the dead SE.
    node = cluster.node(CAPACITY_MONITOR_INTERVAL="30")
    assert [_store(node, os.urandom(SIZE)) for _ in range(3)] == ["se-1"] * 3

    first.kill()
    assert _store(node, os.urandom(SIZE)) == "se-2"  # tried se-1, compensated, went on
    assert node.metric("ingester_se_circuit_breaker_state", element_id="se-1") == 2  # open
    assert node.metric("ingester_lazy_se_config_reload_total", reason="unavailable",
                       status="success") >= 1  # fmt: skip
    assert [_store(node, os.urandom(SIZE)) for _ in range(4)] == ["se-2"] * 4

    first.start()
    time.sleep(2.5)  # CIRCUIT_BREAKER_TIMEOUT_SECONDS=2: half-open now
    assert node.metric("ingester_se_circuit_breaker_state", element_id="se-1") == 1  # half-open
    # Two successes close it (a queued discard of the abandoned attempt may be one of them).
    assert [_store(node, os.urandom(SIZE)) for _ in range(2)] == ["se-1"] * 2
    assert node.metric("ingester_se_circuit_breaker_state", element_id="se-1") == 0  # closed
    assert len(first.file_ids()) == 5
    assert len(second.file_ids()) == 5
