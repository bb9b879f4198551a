"""A node killed in the middle of a PATCH: another node (PostgreSQL), or the same one restarted
(SQLite), answers HEAD with the committed offset within 2 s, and the upload resumes there. The
dead node's lease goes with its database connection; nobody waits for it to lapse."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from tests.cluster.test_two_nodes import OCTET, Cluster, _create, _patch, _start, migrated_env
from tests.conftest import Keys
from tests.nodes import Node

MiB = 1 << 20


def _stalled_patch(url: str, headers: dict[str, str], first: bytes) -> threading.Thread:
    """A PATCH that sends `first`, then nothing (its connection stays open)."""

    def body() -> Iterator[bytes]:
        yield first
        time.sleep(60)

    def send() -> None:
        with contextlib.suppress(requests.RequestException):  # the node dies under it
            requests.patch(url, headers=headers, data=body(), timeout=90)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_killed_postgresql_node_s_upload_is_taken_over_in_2_s(
    tmp_path: Path, new_pg_database: Callable[[], str], keys: Keys
) -> None:
    # A long lock wait: waiting for the dead node's lease to lapse would show.
    env = migrated_env(new_pg_database(), tmp_path, keys, LOCK_TIMEOUT_SECONDS="30")
    a, b = _start(env, tmp_path / "a"), _start(env, tmp_path / "b")
    try:
        cluster = Cluster(a, b, tmp_path / "staging", tmp_path / "storage", keys.token("alice"))
        data = os.urandom(4 * MiB)
        path = _create(cluster, a, len(data))
        assert _patch(cluster, a, path, data[:MiB], 0).status_code == 204
        headers = cluster.headers(**{"Content-Type": OCTET, "Upload-Offset": str(MiB)})
        _stalled_patch(a.url + path, headers, data[MiB : 2 * MiB])
        time.sleep(1.0)  # the PATCH holds the lease and streams
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)

        started = time.monotonic()
        head = requests.head(b.url + path, headers=cluster.headers(), timeout=30)
        elapsed = time.monotonic() - started
        assert head.status_code == 200, head.text
        assert head.headers["Upload-Offset"] == str(MiB)  # nothing of the killed PATCH
        assert elapsed <= 2.0, f"HEAD took {elapsed:.2f} s"

        resumed = _patch(cluster, b, path, data[MiB:], MiB)
        assert resumed.status_code == 204, resumed.text
        survivor = Cluster(b, b, cluster.staging, cluster.storage, cluster.token)
        assert survivor.content(b.url + path) == data
    finally:
        for node in (a, b):
            if node.process.poll() is None:
                node.process.terminate()
                node.process.wait(15)


def test_a_restarted_sqlite_node_answers_head_in_2_s(tmp_path: Path, keys: Keys) -> None:
    node = Node(tmp_path / "data", keys, tmp_path / "node.log", LOCK_TIMEOUT_SECONDS="30")
    node.wait_ready()
    try:
        data = os.urandom(4 * MiB)
        upload_id = node.create(len(data))
        assert node.patch(upload_id, data[:MiB], 0).status_code == 204
        headers = node.headers(**{"Content-Type": OCTET, "Upload-Offset": str(MiB)})
        _stalled_patch(f"{node.url}/files/{upload_id}", headers, data[MiB : 2 * MiB])
        time.sleep(1.0)
        node.kill()
        node.stop()
        node = Node(tmp_path / "data", keys, tmp_path / "node.log", LOCK_TIMEOUT_SECONDS="30")
        node.wait_ready()
        started = time.monotonic()
        head = node.head(upload_id)
        assert time.monotonic() - started <= 2.0
        assert head.status_code == 200
        assert head.headers["Upload-Offset"] == str(MiB)
        assert node.patch(upload_id, data[MiB:], MiB).status_code == 204
    finally:
        node.stop()
