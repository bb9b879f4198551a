"""A storage cluster per test: reference SEs, a private Redis, ingester processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys
from tests.nodes import Node
from tests.storage.rig import RedisServer, SEProcess, register


class Cluster:
    """What one test starts; everything is stopped (killed) at its end."""

    def __init__(self, tmp_path: Path, keys: Keys) -> None:
        self.tmp_path = tmp_path
        self.keys = keys
        self.redis = RedisServer(tmp_path).start()
        self.elements: list[SEProcess] = []
        self.nodes: list[Node] = []
        self.data_dir = tmp_path / "ingester"

    def element(self, element_id: str, **kw: object) -> SEProcess:
        root = self.tmp_path / element_id
        root.mkdir()
        se = SEProcess(element_id, root, self.keys, **kw).start()  # type: ignore[arg-type]
        self.elements.append(se)
        register(self.redis.url, "", se)
        return se

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            "SERVICE_ACCOUNT_PRIVATE_KEY_PATH": str(self.keys.private),
            "CAPACITY_MONITOR_INTERVAL": "0.5",
            "REGISTRY_CACHE_SECONDS": "0",
            "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "1",
            "CIRCUIT_BREAKER_TIMEOUT_SECONDS": "2",
            "NO_STORAGE_RETRY_SECONDS": "1",
            "STORAGE_ELEMENT_TIMEOUT": "5",
            "STORAGE_ELEMENT_MAX_RETRIES": "1",
            "COMPLETION_WAIT_SECONDS": "20",
            **extra,
        }

    def node(self, **extra: str) -> Node:
        node = Node(self.data_dir, self.keys, self.tmp_path / "serve.log", **self.env(**extra))
        self.nodes.append(node)
        return node.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for se in self.elements:
            se.stop()
        self.redis.stop()


@pytest.fixture
def cluster(tmp_path: Path, keys: Keys) -> Iterator[Cluster]:
    started = Cluster(tmp_path, keys)
    try:
        yield started
    finally:
        started.stop()
