"""A node with REDIS_URL and a reference SE that only the Admin Module's
`artstore:storage_elements` names (no legacy key anywhere): the upload waits while nothing is
published, is stored on the element once the Admin Module's event announces it, and the file
is deleted from it again (the element found by id in the published list)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
import requests

from tests.storage.conftest import Cluster
from tests.storage.rig import SEProcess

SIZE = 64 * 1024


def _as_published(se: SEProcess) -> dict[str, Any]:
    """The element's entry as the Admin Module writes it, from the SE's own /api/v1/info."""
    info = requests.get(f"{se.url}/api/v1/info", timeout=10).json()
    online = info["status"] == "operational"
    return {
        "id": 1,
        "name": info["display_name"],
        "api_url": se.url,
        "mode": info["mode"],
        "storage_type": info["storage_type"],
        "status": "online" if online else "offline",
        "base_path": info["base_path"],
        "capacity_bytes": info["capacity_bytes"],
        "used_bytes": info["used_bytes"],
        "file_count": info["file_count"],
        "retention_days": 30,
        "priority": info["priority"],
        "element_id": info["element_id"],
        "is_writable": online and info["mode"] in ("edit", "rw"),
        "is_available": online,
        "last_health_check": info["timestamp"],
    }


def test_a_node_stores_on_an_element_published_only_by_the_admin_module(
    cluster: Cluster,
) -> None:
    root = cluster.tmp_path / "se-published"
    root.mkdir()
    se = SEProcess("se-published", root, cluster.keys, priority=3).start()
    cluster.elements.append(se)  # stopped with the cluster; never registered the legacy way
    # A long cache and reload interval: only the Admin Module's event can reveal the element.
    node = cluster.node(
        REGISTRY_CACHE_SECONDS="3600", CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL="600"
    )
    client = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    try:
        upload_id, response = node.upload(os.urandom(SIZE), filename="waiting.bin")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "no_storage_available"

        # The Admin Module writes its list, then announces it (two steps: the key, then an event).
        entries = [_as_published(se)]
        document = {"version": 1, "timestamp": "2025-01-02T15:30:45Z", "count": 1,
                    "storage_elements": entries}  # fmt: skip
        client.set("artstore:storage_elements", json.dumps(document), ex=3600)
        time.sleep(2.5)  # a few deferred attempts (NO_STORAGE_RETRY_SECONDS=1), all cached
        assert node.session(upload_id)["upload_status"] == "processing"
        announced = {"event": "storage_element_config_updated",
                     "timestamp": "2025-01-02T15:30:46Z", "action": "created",
                     "version": 1, "count": 1, "storage_element_id": 1,
                     "storage_element_name": entries[0]["name"]}  # fmt: skip
        assert client.publish("artstore:service_discovery", json.dumps(announced)) >= 1

        info = node.settled(upload_id, 30)
        assert info["upload_status"] == "stored", info
        assert info["file"]["element_id"] == "se-published"
        assert se.file_ids() == {info["file_id"]}
        second, response = node.upload(os.urandom(SIZE), filename="direct.bin")
        assert response.status_code == 204, response.text
        assert response.headers["X-Upload-Status"] == "stored"
        assert node.session(second)["file"]["element_id"] == "se-published"
        assert node.metric("storage_selection_total", retention_policy="temporary",
                           status="success", source="redis") >= 2  # fmt: skip
        # Nothing came from the legacy keys: none exists.
        assert list(client.scan_iter(match="storage:*")) == []

        # Deleting finds the element by id in the published list (it must be edit).
        file_id = info["file_id"]
        deleted = requests.delete(
            f"{node.url}/api/files/{file_id}",
            headers={"Authorization": f"Bearer {node.keys.token('alice')}"},
            timeout=30,
        )
        assert deleted.status_code == 204, deleted.text
        assert file_id not in se.file_ids()
        assert len(se.file_ids()) == 1
    finally:
        client.close()
