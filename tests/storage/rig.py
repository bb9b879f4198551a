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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import Keys
from tests.nodes import free_port
from tests.tlscerts import Issued


def _wait(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError, requests.Timeout, redis.ConnectionError):
            if check():
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not come up in {seconds} s")


@dataclass(frozen=True)
class ServedTls:
    """An SE over HTTPS: its certificate, the CA file that verifies it and, to require client
    certificates, the CA they must chain to with one of its client certificates."""

    server: Issued
    ca: Path
    client_ca: Path | None = None
    client: Issued | None = None

    def args(self) -> list[str]:
        found = ["--tls-cert", str(self.server.cert), "--tls-key", str(self.server.key)]
        return found + ([] if self.client_ca is None else ["--tls-client-ca", str(self.client_ca)])

    def env(self) -> dict[str, str]:
        """What an ingester (or `tusingest elements`) needs to reach the SE."""
        found = {"STORAGE_ELEMENT_CA_FILE": str(self.ca)}
        if self.client is not None:
            found["STORAGE_ELEMENT_CLIENT_CERT_FILE"] = str(self.client.cert)
            found["STORAGE_ELEMENT_CLIENT_KEY_FILE"] = str(self.client.key)
        return found


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
        tls: ServedTls | None = None,
    ) -> None:
        self.element_id = element_id
        self.tls = tls
        self.root = root
        self.mode = mode
        self.capacity = capacity
        self.priority = priority
        self.keys = keys
        self.port = free_port()
        self.url = f"{'http' if tls is None else 'https'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = (root.parent / f"{element_id}.log").open("ab")

    def start(self) -> SEProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tusingest", "element", "serve",
                "--id", self.element_id, "--mode", self.mode, "--root", str(self.root),
                "--port", str(self.port), "--capacity", str(self.capacity),
                "--priority", str(self.priority), "--public-key", str(self.keys.public),
                *([] if self.tls is None else self.tls.args()),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait(
            lambda: (
                requests.get(f"{self.url}/health/ready", timeout=1, **self._tls()).status_code
                == 200
            ),
            f"SE {self.element_id}",
        )
        return self

    def _tls(self) -> dict[str, Any]:
        """How `requests` reaches the SE."""
        if self.tls is None:
            return {}
        client = self.tls.client
        cert = None if client is None else (str(client.cert), str(client.key))
        return {"verify": str(self.tls.ca), "cert": cert}

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


def elements_cli(
    redis_url: str, prefix: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`tusingest elements ...` against `redis_url` (what an operator runs), with `env` added."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "REDIS_KEY_PREFIX") and not k.startswith("STORAGE_ELEMENT_")
    }
    return subprocess.run(
        [sys.executable, "-m", "tusingest", "elements", *args],
        env={**base, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def register(
    redis_url: str, prefix: str, se: SEProcess, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`tusingest elements add` of `se` (an SE over HTTPS: with its `ServedTls.env()` unless
    `env` is given)."""
    if env is None:
        env = {} if se.tls is None else se.tls.env()
    done = elements_cli(
        redis_url, prefix, "add", "--id", se.element_id, "--mode", se.mode,
        "--endpoint", se.url, "--priority", str(se.priority), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done
