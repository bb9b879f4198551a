"""`scripts/cluster`: two nodes behind nginx, with PostgreSQL, Redis and two reference elements,
used through the load balancer as a client would: Uppy's parallel uploads spread over both
nodes; `tusingest upload` through the load balancer, its verdict line naming the file id and
element, the bytes on that element's disk of the right SHA-256; a node SIGKILLed in the middle
of a large upload, the client resumes through the load balancer and the file is stored once
with the right SHA-256; the benchmark's W1 and W2 through the load balancer and against one
node direct."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.clients.uppypage import upload_with_uppy, uppy_page
from tests.conftest import TUS
from tests.nodes import free_port
from tusingest.artstore import ATTR_SUFFIX
from tusingest.domain import Role
from tusingest.keys import mint_token
from tusingest.sizes import format_size

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
PATCH_ROUTE = "/files/{upload_id}"
# The test run's own services stay its own: the cluster starts (and stops) its own.
_NOT_INHERITED = ("TUSINGEST_PG_DIR", "TEST_DATABASE_URL", "DATABASE_URL", "CLAMD_URL")


@dataclass
class LocalCluster:
    url: str
    state: Path

    def token(self, sub: str, role: Role = Role.USER) -> str:
        private = self.state / "data" / "keys" / "jwt_private.pem"
        return mint_token(private, sub=sub, role=role, ttl_seconds=3600)

    def auth(self, sub: str) -> dict[str, str]:
        return {**TUS, "Authorization": f"Bearer {self.token(sub)}"}

    def node_url(self, node: str) -> str:
        return f"http://127.0.0.1:{(self.state / f'{node}.port').read_text().strip()}"

    def pid(self, node: str) -> int:
        return int((self.state / f"{node}.pid").read_text())

    def metric(self, node: str, name: str, **labels: str) -> float:
        text = requests.get(f"{self.node_url(node)}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            metric, _, rest = series.partition("{")
            found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
            if metric == name and all(found.get(k) == v for k, v in labels.items()):
                total += float(value)
        return total

    def settled(self, upload_url: str, sub: str, seconds: float = 60) -> dict[str, Any]:
        upload_id = upload_url.rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + seconds
        while True:
            info: dict[str, Any] = requests.get(
                f"{self.url}/api/files/upload/session/{upload_id}",
                headers={"Authorization": f"Bearer {self.token(sub)}"},
                timeout=10,
            ).json()
            if info.get("upload_status") in ("stored", "rejected", "failed"):
                return info
            assert time.monotonic() < deadline, info
            time.sleep(0.2)


def _cluster(command: str, state: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(TUSINGEST_CLUSTER_DIR=str(state), CLUSTER_PORT=str(port), CLUSTER_CLAMD="off")
    env.update(ALLOWED_MIME_TYPES="*", LOG_LEVEL="WARNING")  # random bytes are the test data
    return subprocess.run(
        [str(ROOT / "scripts" / "cluster"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    state = tmp_path_factory.mktemp("cluster") / "state"
    port = free_port()
    up = _cluster("up", state, port)
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        assert up.stdout.strip() == f"http://127.0.0.1:{port}"
        status = _cluster("status", state, port)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("running") == 5, status.stdout
        yield LocalCluster(url=up.stdout.strip(), state=state)
    finally:
        down = _cluster("down", state, port)
        assert down.returncode == 0, down.stderr
    assert not state.exists()


def test_uppy_parallel_uploads_spread_over_both_nodes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    files = ["data/small.bin", "data/medium.bin", "data/parallel.bin"]
    before = {n: cluster.metric(n, "artstore_ingester_http_requests_total", route=PATCH_ROUTE,
                                method="PATCH") for n in ("node-1", "node-2")}  # fmt: skip
    with uppy_page(tmp_path / "page") as page:
        result = upload_with_uppy(
            page, f"{cluster.url}/files/", cluster.token("uppy"), files, ["data/parallel.bin"]
        )
        sha256 = page.sha256
    assert result["error"] is None, result
    assert result["failed"] == []
    for uploaded in result["successful"]:
        path = next(p for p in files if p.endswith(uploaded["name"]))
        info = cluster.settled(uploaded["uploadURL"], "uppy")
        assert info["upload_status"] == "stored", info
        assert info["sha256"] == sha256[path]
    for node in ("node-1", "node-2"):
        patches = cluster.metric(node, "artstore_ingester_http_requests_total",
                                 route=PATCH_ROUTE, method="PATCH")  # fmt: skip
        assert patches > before[node], f"{node} served no PATCH"


def test_the_upload_cli_through_the_load_balancer(cluster: LocalCluster, tmp_path: Path) -> None:
    """`tusingest upload FILE --endpoint http://<lb>/files/`, as the README shows it."""
    data = os.urandom(5 * MiB + 12345)
    path = tmp_path / "cli.bin"
    path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(TUSINGEST_TOKEN=cluster.token("cli"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    run = subprocess.run(
        [
            sys.executable, "-m", "tusingest", "upload", str(path),
            "--endpoint", f"{cluster.url}/files/", "--chunk-size", "1",  # 6 PATCHes
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    lines = run.stdout.splitlines()
    verdict = next((line for line in lines if line.startswith("stored ")), None)
    assert verdict is not None, run.stdout
    found = re.fullmatch(
        rf"stored {re.escape(str(path))} → file_id (\S+) on (se-edit|se-rw) "
        rf"\({re.escape(format_size(len(data)))}\)",
        verdict,
    )
    assert found is not None, verdict
    file_id, element = found.groups()
    assert lines[-1] == f"1 file: 1 stored; {format_size(len(data))} sent"
    # The bytes on the element's disk (its root is STATE/<element id>), next to their attr.json.
    stored = [
        attr_path.with_name(attr["storage_filename"])
        for attr_path in (cluster.state / element).rglob(f"*{ATTR_SUFFIX}")
        if (attr := json.loads(attr_path.read_text())).get("file_id") == file_id
    ]
    assert len(stored) == 1, stored
    assert hashlib.sha256(stored[0].read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    described = requests.get(
        f"{cluster.url}/api/files/{file_id}",
        headers={"Authorization": f"Bearer {cluster.token('cli')}"},
        timeout=10,
    )
    assert described.status_code == 200, described.text
    assert described.json()["sha256_hash"] == hashlib.sha256(data).hexdigest()


def test_a_node_killed_mid_upload_the_client_resumes_through_the_load_balancer(
    cluster: LocalCluster,
) -> None:
    data = os.urandom(48 * MiB)
    auth = cluster.auth("resumer")
    created = requests.post(
        f"{cluster.url}/files/", headers={**auth, "Upload-Length": str(len(data))}, timeout=30
    )
    assert created.status_code == 201, created.text
    url = f"{cluster.url}{created.headers['Location']}"
    patch_headers = {**auth, "Content-Type": "application/offset+octet-stream"}
    first = requests.patch(
        url, data=data[: 16 * MiB], headers={**patch_headers, "Upload-Offset": "0"}, timeout=60
    )
    assert first.status_code == 204, first.text

    stop = threading.Event()
    failure: list[BaseException] = []

    def slow_rest() -> None:
        def body() -> Iterator[bytes]:
            for start in range(16 * MiB, len(data), 256 << 10):
                if stop.is_set():
                    return
                yield data[start : start + (256 << 10)]
                time.sleep(0.05)

        try:
            requests.patch(
                url, data=body(), headers={**patch_headers, "Upload-Offset": str(16 * MiB)},
                timeout=60,
            )  # fmt: skip
        except requests.RequestException as exc:
            failure.append(exc)

    sender = threading.Thread(target=slow_rest, daemon=True)
    sender.start()
    deadline = time.monotonic() + 20
    receiving = None
    while receiving is None:
        for node in ("node-1", "node-2"):
            if cluster.metric(node, "artstore_ingester_uploads_in_progress") >= 1:
                receiving = node
        assert time.monotonic() < deadline, "no node reported the upload in progress"
        time.sleep(0.1)
    time.sleep(0.5)  # some bytes of the second PATCH on the node's disk
    os.kill(cluster.pid(receiving), signal.SIGKILL)
    sender.join(60)
    stop.set()

    # Through the load balancer, the other node answers at once with the committed offset.
    started = time.monotonic()
    head = requests.head(url, headers=auth, timeout=30)
    took = time.monotonic() - started
    assert head.status_code == 200, head.text
    offset = int(head.headers["Upload-Offset"])
    assert 16 * MiB <= offset < len(data)
    assert took <= 2.0, took
    rest = requests.patch(
        url, data=data[offset:], headers={**patch_headers, "Upload-Offset": str(offset)},
        timeout=120,
    )  # fmt: skip
    assert rest.status_code == 204, rest.text

    info = cluster.settled(url, "resumer")
    assert info["upload_status"] == "stored", info
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    files = requests.get(
        f"{cluster.url}/api/files", headers={"Authorization": auth["Authorization"]}, timeout=10
    ).json()
    assert [f["file_id"] for f in files["files"]] == [info["file_id"]]  # stored once


def test_the_benchmark_through_the_load_balancer_and_one_node_direct(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    token = cluster.token("bench")
    for name, url in (("lb", cluster.url), ("node", _live_node(cluster))):
        run = subprocess.run(
            [
                sys.executable, "-m", "benchmarks", "--url", url, "--token", token,
                "--staging-dir", str(cluster.state / "staging"),
                "--storage-dir", str(cluster.state / "se-edit"), "--workloads", "W1,W2",
                "--quick", "--repeat", "1", "--json", str(tmp_path / f"{name}.json"),
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert run.returncode == 0, f"{name}: {run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        assert "RESULT: verified" in run.stdout, run.stdout[-3000:]


def _live_node(cluster: LocalCluster) -> str:
    for node in ("node-1", "node-2"):
        try:
            os.kill(cluster.pid(node), 0)
        except ProcessLookupError:
            continue
        return cluster.node_url(node)
    raise AssertionError("no node is alive")
