"""Two `tusingest serve` processes sharing one PostgreSQL database and one staging directory."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import TUS, Keys

MiB = 1 << 20
OCTET = "application/offset+octet-stream"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    url: str
    process: subprocess.Popen[str]


@dataclass
class Cluster:
    a: Node
    b: Node
    staging: Path
    storage: Path
    token: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {**TUS, "Authorization": f"Bearer {self.token}", **extra}

    def staged(self, upload_url: str) -> Path:
        return self.staging / upload_url.rsplit("/", 1)[-1]

    def content(self, upload_url: str) -> bytes:
        """The upload's bytes: from the shared storage element once stored, else staged."""
        upload_id = upload_url.rsplit("/", 1)[-1]
        info = requests.get(
            f"{self.a.url}/api/files/upload/session/{upload_id}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        ).json()
        if info["upload_status"] != "stored":
            return self.staged(upload_url).read_bytes()
        file = info["file"]
        return (self.storage / file["storage_path"] / file["storage_filename"]).read_bytes()


def _start(env: dict[str, str], data_dir: Path) -> Node:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tusingest", "serve", "--port", str(port), "--data-dir",
         str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"node exited: {process.communicate()[1]}")
        try:
            if requests.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return Node(url, process)
        except (requests.ConnectionError, requests.Timeout):  # a busy machine: slow to answer
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("node did not become ready")
        time.sleep(0.1)


def migrated_env(database: str, root: Path, keys: Keys, **extra: str) -> dict[str, str]:
    """The environment of nodes sharing `database` (migrated here), one staging directory and
    one storage element under `root`."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": database,
        "STAGING_DIR": str(root / "staging"),
        "LOCAL_STORAGE_DIR": str(root / "storage"),
        "ALLOWED_MIME_TYPES": "*",
        "AUTH_PUBLIC_KEY_PATH": str(keys.public),
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    subprocess.run(
        [sys.executable, "-m", "tusingest", "migrate"], env=env, check=True, timeout=60,
        capture_output=True,
    )  # fmt: skip
    return env


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, new_pg_database: Callable[[], str], keys: Keys
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    staging = root / "staging"
    env = migrated_env(new_pg_database(), root, keys, LOCK_TIMEOUT_SECONDS="5")
    nodes: list[Node] = []
    try:
        nodes.append(_start(env, root / "a"))
        nodes.append(_start(env, root / "b"))
        yield Cluster(nodes[0], nodes[1], staging, root / "storage", keys.token("alice"))
    finally:
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            try:
                node.process.wait(15)
            except subprocess.TimeoutExpired:
                node.process.kill()


def _create(cluster: Cluster, node: Node, length: int) -> str:
    response = requests.post(
        f"{node.url}/files/", headers=cluster.headers(**{"Upload-Length": str(length)}), timeout=10
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def _patch(cluster: Cluster, node: Node, path: str, data: bytes, offset: int) -> requests.Response:
    return requests.patch(
        node.url + path,
        headers=cluster.headers(**{"Content-Type": OCTET, "Upload-Offset": str(offset)}),
        data=data,
        timeout=60,
    )


def _head(cluster: Cluster, node: Node, path: str) -> requests.Response:
    return requests.head(node.url + path, headers=cluster.headers(), timeout=30)


def test_upload_moves_between_nodes_and_is_terminated_from_the_first(cluster: Cluster) -> None:
    data = os.urandom(3 * MiB)
    path = _create(cluster, cluster.a, len(data))
    assert _patch(cluster, cluster.a, path, data[:MiB], 0).status_code == 204
    head = _head(cluster, cluster.b, path)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == str(MiB)
    finished = _patch(cluster, cluster.b, path, data[MiB:], MiB)
    assert finished.status_code == 204, finished.text
    assert _head(cluster, cluster.a, path).headers["Upload-Offset"] == str(len(data))
    assert cluster.content(path) == data

    deleted = requests.delete(cluster.a.url + path, headers=cluster.headers(), timeout=10)
    assert deleted.status_code == 204
    assert _head(cluster, cluster.b, path).status_code == 404
    assert not cluster.staged(path).exists()


def test_racing_clients_on_two_nodes_never_corrupt_the_upload(cluster: Cluster) -> None:
    data = os.urandom(8 * MiB)
    chunk = 256 * 1024
    path = _create(cluster, cluster.a, len(data))
    statuses: list[int] = []
    lock = threading.Lock()

    def client(node: Node) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            head = _head(cluster, node, path)
            with lock:
                statuses.append(head.status_code)
            if head.status_code == 423:
                continue
            offset = int(head.headers["Upload-Offset"])
            if offset == len(data):
                return
            response = _patch(cluster, node, path, data[offset : offset + chunk], offset)
            with lock:
                statuses.append(response.status_code)

    threads = [threading.Thread(target=client, args=(n,)) for n in (cluster.a, cluster.b) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(s >= 500 for s in statuses), statuses
    assert set(statuses) <= {200, 204, 400, 409, 423}, set(statuses)
    assert _head(cluster, cluster.b, path).headers["Upload-Offset"] == str(len(data))
    assert hashlib.sha256(cluster.content(path)).digest() == (hashlib.sha256(data).digest())


def test_client_cut_off_from_one_node_resumes_on_the_other_at_once(cluster: Cluster) -> None:
    data = os.urandom(4 * MiB)
    sent = MiB + 12345
    path = _create(cluster, cluster.a, len(data))
    node_a = urlsplit(cluster.a.url)
    stalled = socket.create_connection((node_a.hostname, node_a.port), timeout=30)
    try:
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: {node_a.netloc}\r\n"
            + "".join(
                f"{k}: {v}\r\n"
                for k, v in cluster.headers(
                    **{
                        "Content-Type": OCTET,
                        "Upload-Offset": "0",
                        "Content-Length": str(len(data)),
                    }
                ).items()
            )
            + "\r\n"
        )
        stalled.sendall(head.encode() + data[:sent])
        # The stalled client neither finishes nor closes: like a client whose network died.
        time.sleep(0.3)
        started = time.monotonic()
        resumed = _head(cluster, cluster.b, path)
        waited = time.monotonic() - started
        assert resumed.status_code == 200
        assert resumed.headers["Upload-Offset"] == str(sent)
        assert waited < 2.0, f"HEAD waited {waited:.2f}s for the release"
        finished = _patch(cluster, cluster.b, path, data[sent:], sent)
        assert finished.status_code == 204, finished.text
        assert cluster.content(path) == data
        # Node A told the stalled request why it was cut off.
        stalled.settimeout(5)
        answer = stalled.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"upload_interrupted" in answer
    finally:
        stalled.close()
