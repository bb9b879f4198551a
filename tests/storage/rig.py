"""Real processes for the storage tests: reference SEs (`tusingest element serve`), a private
Redis server that a test may stop, and the `tusingest elements` CLI that registers SEs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import Keys
from tests.nodes import free_port


def _wait(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError, redis.ConnectionError):
            if check():
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not come up in {seconds} s")


class SEProcess:
    """One reference storage element as a process; killed and restarted on the same port."""

    def __init__(
        self,
        element_id: str,
        root: Path,
        keys: Keys,
        *,
        mode: str = "edit",
        capacity: int = 1 << 30,
        priority: int = 100,
    ) -> None:
        self.element_id = element_id
        self.root = root
        self.mode = mode
        self.capacity = capacity
        self.priority = priority
        self.keys = keys
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = (root.parent / f"{element_id}.log").open("ab")

    def start(self) -> SEProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tusingest", "element", "serve",
                "--id", self.element_id, "--mode", self.mode, "--root", str(self.root),
                "--port", str(self.port), "--capacity", str(self.capacity),
                "--priority", str(self.priority), "--public-key", str(self.keys.public),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait(
            lambda: requests.get(f"{self.url}/health/ready", timeout=1).status_code == 200,
            f"SE {self.element_id}",
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self._log.close()

    def file_ids(self) -> set[str]:
        """The files the SE holds, from its attr.json files (what it would list)."""
        found: set[str] = set()
        for attr in self.root.rglob("*.attr.json"):
            found.add(json.loads(attr.read_text("utf-8"))["file_id"])
        return found


class RedisServer:
    """A private redis-server a test may stop and start again (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run scripts/services start redis")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(lambda: redis.Redis.from_url(self.url).ping(), "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def elements_cli(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`tusingest elements ...` against `redis_url` (what an operator runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_KEY_PREFIX")}
    return subprocess.run(
        [sys.executable, "-m", "tusingest", "elements", *args],
        env={**env, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix},
        capture_output=True,
        text=True,
        timeout=60,
    )


def register(redis_url: str, prefix: str, se: SEProcess) -> None:
    done = elements_cli(
        redis_url, prefix, "add", "--id", se.element_id, "--mode", se.mode,
        "--endpoint", se.url, "--priority", str(se.priority),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
