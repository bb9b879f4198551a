"""Crash safety of the completion pipeline with real `tusingest serve` processes: a node that
SIGKILLs itself at any step (TUSINGEST_CRASH_AT_STEP) leaves work that a restarted node
finishes exactly once; verdicts survive restarts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import Keys
from tests.nodes import Node
from tests.samples import EICAR, clamd_url

SIZE = 300 * 1024
# The ingest operation's fault-injection points (TUSINGEST_CRASH_AT_STEP), in order.
STEPS = (
    "validate",
    "scan",
    "compress",
    "store",
    "verify",
    "catalog",
    "register",
    "stored",
    "note",
    "cleanup",
)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    """Every Node a test starts, stopped (killed if need be) at its end."""
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()


def _start(nodes: list[Node], data_dir: Path, keys: Keys, tmp_path: Path, **env: str) -> Node:
    node = Node(data_dir, keys, tmp_path / "serve.log", **env)
    nodes.append(node)
    return node.wait_ready()


# Steps after the `stored` verdict and its note are committed: the completing request may have
# its answer (it does not wait for the cleanup that follows).
AFTER_VERDICT = ("cleanup",)


def _upload_and_crash(node: Node, data: bytes, step: str) -> str:
    """Upload `data` in one PATCH; the node kills itself while completing it (at `step`)."""
    upload_id = node.create(len(data))
    try:
        response = node.patch(upload_id, data, 0)
    except requests.RequestException:
        pass  # the connection died with the process
    else:
        # Whatever arrived must not claim a verdict the node never reached.
        status = response.headers.get("X-Upload-Status")
        assert status != "stored" or step in AFTER_VERDICT, (step, response.headers)
    try:
        node.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not crash: {node.log_text()}")
    assert node.proc.returncode == -9, (node.proc.returncode, node.log_text())
    return upload_id


def _files_in(root: Path) -> list[Path]:
    if not root.exists():
        return []
    # Not the element's index of links (a dot directory).
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).parts[0].startswith(".")
    )


def _catalog(data_dir: Path, upload_id: str) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(data_dir / "tusingest.db")) as db:
        return list(
            db.execute(
                "SELECT file_id, storage_filename FROM files WHERE upload_id = ?", (upload_id,)
            )
        )


def _operations(data_dir: Path, upload_id: str) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(data_dir / "tusingest.db")) as db:
        return list(
            db.execute("SELECT status, attempts FROM operations WHERE subject = ?", (upload_id,))
        )


def _operation_done(data_dir: Path, upload_id: str, seconds: float = 10) -> list[tuple[str, int]]:
    """The upload's operations once none is still queued or running (bounded wait): a crash
    after the verdict (at `cleanup`) leaves the staged bytes until a node takes the expired
    lease over and finishes the operation."""
    deadline = time.monotonic() + seconds
    while True:
        ops = _operations(data_dir, upload_id)
        if all(status in ("done", "failed") for status, _ in ops) or time.monotonic() > deadline:
            return ops
        time.sleep(0.1)


def _staging_leftovers(data_dir: Path, upload_id: str) -> list[Path]:
    return [p for p in _files_in(data_dir / "staging") if p.name.startswith(upload_id)]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_is_finished_exactly_once_after_a_restart(
    step: str, keys: Keys, tmp_path: Path, nodes: list[Node]
) -> None:
    data_dir = tmp_path / "data"
    data = os.urandom(SIZE)
    crashing = _start(nodes, data_dir, keys, tmp_path, TUSINGEST_CRASH_AT_STEP=step)
    upload_id = _upload_and_crash(crashing, data, step)

    node = _start(nodes, data_dir, keys, tmp_path)
    info = node.settled(upload_id)
    assert info["upload_status"] == "stored", (info, node.log_text())
    file_id = info["file_id"]
    assert info["file"]["file_id"] == file_id
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    [(status, attempts)] = _operation_done(data_dir, upload_id)
    assert status == "done"
    assert attempts >= 2  # the crashed attempt, then the one that finished

    assert _catalog(data_dir, upload_id) == [(file_id, info["file"]["storage_filename"])]
    stored = _files_in(data_dir / "storage")
    assert not [p for p in (data_dir / "storage").rglob(".tmp_*")], stored
    names = [p.name for p in stored]
    data_name = info["file"]["storage_filename"]
    assert file_id in data_name
    assert sorted(names) == sorted([data_name, data_name + ".attr.json"]), names
    [data_path] = [p for p in stored if p.name == data_name]
    assert data_path.read_bytes() == data
    assert _staging_leftovers(data_dir, upload_id) == []

    head = node.head(upload_id)
    assert head.status_code == 200, head.headers
    assert head.headers["X-Upload-Status"] == "stored"
    assert head.headers["X-File-Id"] == file_id
    assert head.headers["Upload-Offset"] == str(SIZE)


def test_eicar_crash_at_scan_is_rejected_after_a_restart(
    keys: Keys, tmp_path: Path, nodes: list[Node]
) -> None:
    data_dir = tmp_path / "data"
    scan = {"VIRUS_SCAN_ENABLED": "on", "CLAMD_URL": clamd_url()}
    crashing = _start(nodes, data_dir, keys, tmp_path, TUSINGEST_CRASH_AT_STEP="scan", **scan)
    upload_id = _upload_and_crash(crashing, EICAR, "scan")

    node = _start(nodes, data_dir, keys, tmp_path, **scan)
    info = node.settled(upload_id)
    assert info["upload_status"] == "rejected", info
    assert info["verdict"]["error"] == "virus_detected"
    assert info["file_id"] is None
    assert [s for s, _ in _operation_done(data_dir, upload_id)] == ["done"]
    assert _catalog(data_dir, upload_id) == []
    assert _files_in(data_dir / "storage") == []
    assert _staging_leftovers(data_dir, upload_id) == []
    head = node.head(upload_id)
    assert head.status_code == 422
    assert head.headers["X-Upload-Error"] == "virus_detected"


def test_verdicts_survive_a_restart(keys: Keys, tmp_path: Path, nodes: list[Node]) -> None:
    data_dir = tmp_path / "data"
    scan = {"VIRUS_SCAN_ENABLED": "on", "CLAMD_URL": clamd_url()}
    first = _start(nodes, data_dir, keys, tmp_path, **scan)
    data = os.urandom(SIZE)
    good = first.create(len(data))
    stored = first.patch(good, data, 0)
    assert stored.status_code == 204, stored.text
    assert stored.headers["X-Upload-Status"] == "stored"
    file_id = stored.headers["X-File-Id"]
    bad = first.create(len(EICAR))
    rejected = first.patch(bad, EICAR, 0)
    assert rejected.status_code == 422, rejected.text
    assert rejected.json()["error"] == "virus_detected"
    first.stop()
    assert first.proc.returncode is not None
    before = _files_in(data_dir / "storage")

    second = _start(nodes, data_dir, keys, tmp_path, **scan)
    head = second.head(good)
    assert head.status_code == 200
    assert (head.headers["X-Upload-Status"], head.headers["X-File-Id"]) == ("stored", file_id)
    again = second.patch(good, b"", len(data))
    assert again.status_code == 204, again.text
    assert (again.headers["X-Upload-Status"], again.headers["X-File-Id"]) == ("stored", file_id)

    head = second.head(bad)
    assert head.status_code == 422
    assert head.headers["X-Upload-Error"] == "virus_detected"
    again = second.patch(bad, b"", len(EICAR))
    assert again.status_code == 422, again.text
    assert again.json()["error"] == "virus_detected"

    # Nothing ran again: one finished operation each, no new files.
    assert _operations(data_dir, good) == [("done", 1)]
    assert _operations(data_dir, bad) == [("done", 1)]
    assert _files_in(data_dir / "storage") == before
    assert len(before) == 2
