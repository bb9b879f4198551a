"""Running the JS client scripts of tests/js (Node, Chromium) from pytest, plus shared checks.

Missing tools fail the tests (never skip): CI installs them with scripts/js-deps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
MiB = 1 << 20


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the JS client tests need Node.js >= 20 (with npm)")
    if not (JS_DIR / "node_modules" / ".package-lock.json").is_file():
        pytest.fail(f"{JS_DIR}/node_modules is missing: run scripts/js-deps (npm ci in tests/js)")
    return node


def require_chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/js-deps (installs Debian's chromium)")
    return CHROMIUM


def run_node(script: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run a tests/js script; it must exit 0 and print one JSON line, which is returned."""
    node = require_node()
    try:
        proc = subprocess.run(
            [node, script, *args],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node {script} timed out after {timeout} s; stderr: {exc.stderr!r}")
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if proc.returncode != 0 or not result:
        pytest.fail(
            f"node {script} {' '.join(args)[:200]} exited {proc.returncode}\n"
            f"stdout: {proc.stdout[-4000:]}\nstderr: {proc.stderr[-4000:]}"
        )
    return result


def write_random(path: Path, size: int) -> str:
    """Write `size` random bytes to `path`; returns their SHA-256."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def assert_complete(server: Server, url: str, size: int, sha256: str) -> None:
    """The server's truth: HEAD says offset = length = size, the staged bytes are the source."""
    assert url.startswith(server.endpoint), url
    head = server.request("HEAD", url)
    assert head.status_code == 200, (head.status_code, head.text)
    assert head.headers["Upload-Offset"] == str(size)
    assert head.headers["Upload-Length"] == str(size)
    assert hashlib.sha256(server.content(url)).hexdigest() == sha256
