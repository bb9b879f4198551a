"""`tusingest serve` as a real process on a data dir, for tests that kill and restart it."""

from __future__ import annotations

import base64
import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TUS, Keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class Node:
    """One `tusingest serve` process on a data dir (SQLite), started and stopped by the test."""

    def __init__(
        self, data_dir: Path, keys: Keys, log: Path, *, open_files: int | None = None, **env: str
    ) -> None:
        self.data_dir = data_dir
        self.keys = keys
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "TUSINGEST_CRASH_AT_STEP")
            and not k.startswith(("STAGING_", "LOCAL_STORAGE", "VIRUS_", "ALLOWED_MIME"))
        }
        values = {
            "DATA_DIR": str(data_dir),
            "AUTH_PUBLIC_KEY_PATH": str(keys.public),
            "ALLOWED_MIME_TYPES": "*",
            "OPERATION_LEASE_SECONDS": "2",
            "COMPLETION_WAIT_SECONDS": "5",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tusingest", "serve", "--port", str(self.port)],
            env={**base, **values},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if open_files is None else lambda: _limit_files(open_files),
        )

    def wait_ready(self) -> Node:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tusingest serve exited {self.proc.returncode}: {self.log_text()}")
            # A node starting on a busy machine may be slow to answer its first request.
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                # Live, not ready: a node with no element to store on is up but not ready.
                if requests.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        pytest.fail(f"tusingest serve did not become ready: {self.log_text()}")

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """A refused or dropped connection fails the test with what the node said last and
        whether its process is still running: a node that died mid-test explains itself."""
        try:
            yield
        except requests.ConnectionError as exc:
            state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            pytest.fail(f"node {self.url} ({state}) did not answer: {exc}\n{self.log_text()}")

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return Path(self._log.name).read_text("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def headers(self, **extra: str) -> dict[str, str]:
        return {**TUS, "Authorization": f"Bearer {self.keys.token('alice')}", **extra}

    def create(self, length: int) -> str:
        response = requests.post(
            f"{self.url}/files/",
            headers=self.headers(**{"Upload-Length": str(length)}),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.headers["Location"].rsplit("/", 1)[-1]

    def patch(
        self, upload_id: str, data: bytes, offset: int, timeout: float = 30
    ) -> requests.Response:
        return requests.patch(
            f"{self.url}/files/{upload_id}",
            headers=self.headers(
                **{
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": str(offset),
                }
            ),
            data=data,
            timeout=timeout,
        )

    def head(self, upload_id: str) -> requests.Response:
        return requests.head(f"{self.url}/files/{upload_id}", headers=self.headers(), timeout=10)

    def session(self, upload_id: str) -> dict[str, Any]:
        with self.answering():
            response = requests.get(
                f"{self.url}/api/files/upload/session/{upload_id}",
                headers={"Authorization": f"Bearer {self.keys.token('alice')}"},
                timeout=10,
            )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def settled(self, upload_id: str, seconds: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            info = self.session(upload_id)
            if info["upload_status"] in ("stored", "rejected", "failed"):
                return info
            if time.monotonic() > deadline:
                pytest.fail(f"{upload_id} still {info['upload_status']} after {seconds} s: {info}")
            time.sleep(0.1)

    def upload(self, data: bytes, **meta: str) -> tuple[str, requests.Response]:
        """Create with `meta` (Upload-Metadata) and send `data` in one PATCH; the PATCH's
        response carries the pipeline's verdict."""
        encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        extra = {"Upload-Metadata": encoded} if encoded else {}
        response = requests.post(
            f"{self.url}/files/",
            headers=self.headers(**{"Upload-Length": str(len(data)), **extra}),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        upload_id = response.headers["Location"].rsplit("/", 1)[-1]
        return upload_id, self.patch(upload_id, data, 0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of GET /metrics (0 when absent)."""
        with self.answering():
            text = requests.get(f"{self.url}/metrics", timeout=10).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            metric, _, rest = series.partition("{")
            found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric == name and found == wanted:
                return float(value)
        return 0.0
