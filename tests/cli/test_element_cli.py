"""`tusingest element serve`: the reference storage element as a real process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.tlscerts import TestCA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_element_serve_answers_info_and_capacity(tmp_path: Path) -> None:
    port = _free_port()
    root = tmp_path / "se"
    args = ["element", "serve", "--id", "se-07", "--mode", "rw", "--root", str(root)]
    args += ["--port", str(port), "--capacity", "1000000", "--priority", "3"]
    process = subprocess.Popen(
        [sys.executable, "-m", "tusingest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                info = requests.get(f"{base}/info", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # a busy machine: slow to answer
                assert time.monotonic() < deadline, "the element did not start"
                time.sleep(0.1)
        assert info.status_code == 200
        assert info.json()["mode"] == "rw"
        capacity = requests.get(f"{base}/capacity", timeout=5).json()
        assert "1000000" in str(capacity)
        assert root.is_dir()
    finally:
        process.terminate()
        process.wait(15)


def test_element_serve_refuses_a_bad_capacity(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tusingest", "element", "serve", "--id", "se-1", "--mode", "edit",
         "--root", str(tmp_path), "--port", "1", "--capacity", "0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "capacity" in done.stderr.lower()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "{cert}"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "{cert}", "--tls-key", "{other}"], "tusingest element:"),  # not its key
    ],
)
def test_element_serve_refuses_incomplete_tls(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    ca = TestCA(tmp_path, "test-ca")
    server, other = ca.issue("se-1"), ca.issue("se-2")
    paths = {"cert": server.cert, "other": other.key}
    done = subprocess.run(
        [sys.executable, "-m", "tusingest", "element", "serve", "--id", "se-1", "--mode", "edit",
         "--root", str(tmp_path / "se"), "--port", str(_free_port()), "--capacity", "1000",
         *(flag.format(**paths) for flag in flags)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
