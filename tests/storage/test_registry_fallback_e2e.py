"""The registry chain over real services: Redis stopped → the Admin Module (a contract-faithful
stand-in) keeps selection working; both down → 503 no_storage_available with Retry-After, the
upload's bytes kept, and stored once storage is back."""

from __future__ import annotations

import hashlib
import os
import time

import requests

from tests.adminmodule import running_admin_module
from tests.storage.conftest import Cluster

SIZE = 150 * 1024


def test_redis_down_then_admin_down(cluster: Cluster) -> None:
    se = cluster.element("se-1", priority=1)
    with running_admin_module(cluster.keys.private) as admin:
        admin.add_element("se-1", api_url=se.url, priority=1)
        node = cluster.node(ADMIN_MODULE_URL=admin.url)

        first, response = node.upload(os.urandom(SIZE), filename="one.bin")
        assert response.status_code == 204, response.text
        assert node.metric("storage_selection_total", retention_policy="temporary",
                           status="success", source="redis") >= 1  # fmt: skip
        fallbacks = node.metric("ingester_capacity_fallback_total")

        cluster.redis.stop()
        second, response = node.upload(os.urandom(SIZE), filename="two.bin")
        assert response.status_code == 204, response.text
        assert response.headers["X-Upload-Status"] == "stored"
        assert node.metric("storage_selection_total", retention_policy="temporary",
                           status="success", source="admin") >= 1  # fmt: skip
        # Redis failed, the Admin Module answered: a fallback, counted.
        assert node.metric("ingester_capacity_fallback_total") > fallbacks
        # Both files are registered with the Admin Module, temporary with a TTL.
        ids = {node.session(u)["file_id"] for u in (first, second)}
        assert set(admin.files) == ids
        assert all(admin.files[i]["ttl_days"] == 30 for i in ids)
        assert all(admin.files[i]["storage_element_id"] == "se-1" for i in ids)

        admin.down = True
        data = os.urandom(SIZE)
        third, response = node.upload(data, filename="three.bin")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "no_storage_available"
        assert response.headers["Retry-After"] == "1"
        head = requests.head(f"{node.url}/files/{third}", headers=node.headers(), timeout=10)
        assert head.status_code == 503
        assert head.headers["X-Upload-Error"] == "no_storage_available"
        staged = cluster.data_dir / "staging" / third
        assert staged.stat().st_size == SIZE  # the bytes are kept for the retry

        admin.down = False
        info = node.settled(third, 30)
        assert info["upload_status"] == "stored", info
        assert info["file"]["element_id"] == "se-1"
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["file_id"] in se.file_ids()
        deadline = time.monotonic() + 10
        while staged.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not staged.exists()


def test_no_element_anywhere_is_503_not_a_failure(cluster: Cluster) -> None:
    node = cluster.node()
    upload_id, response = node.upload(os.urandom(SIZE))
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "no_storage_available"
    assert int(response.headers["Retry-After"]) >= 1
    # The upload is not failed: it waits for storage.
    assert node.session(upload_id)["upload_status"] == "processing"
    se = cluster.element("se-late", priority=1)  # registered while the upload waits
    info = node.settled(upload_id, 30)
    assert info["upload_status"] == "stored", info
    assert se.file_ids() == {info["file_id"]}
