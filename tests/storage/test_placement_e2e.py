"""Sequential fill over real SEs registered in Redis: the lowest priority number fills first,
and files spill over to the next SE once the first cannot take them."""

from __future__ import annotations

import os
import time

import redis

from tests.storage.conftest import Cluster

SIZE = 300 * 1024


def _wait_used(cluster: Cluster, element_id: str, at_least: int) -> None:
    """Until the capacity monitor has published the SE's new usage."""
    client = redis.Redis.from_url(cluster.redis.url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        used = client.hget(f"storage:elements:{element_id}", "capacity_used")
        if used is not None and int(used) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{element_id} never showed {at_least} bytes used")


def test_sequential_fill_then_spill_over(cluster: Cluster) -> None:
    first = cluster.element("se-1", capacity=1_000_000, priority=1)
    second = cluster.element("se-2", capacity=100_000_000, priority=2)
    node = cluster.node()
    placed: list[str] = []
    for n in range(5):
        upload_id, response = node.upload(os.urandom(SIZE), filename=f"part-{n}.bin")
        assert response.status_code == 204, response.text
        assert response.headers["X-Upload-Status"] == "stored"
        info = node.session(upload_id)
        placed.append(info["file"]["element_id"])
        if placed[-1] == "se-1":
            _wait_used(cluster, "se-1", SIZE * placed.count("se-1"))
    # 3 × 300 KB fit the 1 MB SE (90 % used); a 4th would pass 98 %: it goes to se-2.
    assert placed == ["se-1", "se-1", "se-1", "se-2", "se-2"]
    assert len(first.file_ids()) == 3
    assert len(second.file_ids()) == 2
    assert (
        node.metric(
            "storage_selection_total",
            retention_policy="temporary",
            status="success",
            source="redis",
        )
        >= 5
    )


def test_permanent_files_go_to_rw_elements(cluster: Cluster) -> None:
    edit = cluster.element("se-edit", priority=1)
    rw = cluster.element("se-rw", mode="rw", priority=5)
    node = cluster.node()
    upload_id, response = node.upload(os.urandom(SIZE), retention_policy="permanent")
    assert response.status_code == 204, response.text
    assert node.session(upload_id)["file"]["element_id"] == "se-rw"
    assert len(rw.file_ids()) == 1
    assert edit.file_ids() == set()
