"""SIGTERM for a rolling deploy: readiness fails first, new requests get 503, the PATCH that was
streaming commits what arrived, and the node exits 0 without a traceback; the client resumes
from those bytes on the other node and the file is whole."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

from tests.cluster.test_two_nodes import OCTET, Cluster, _create, _start, migrated_env
from tests.conftest import Keys

MiB = 1 << 20
BLOCKS = 1024  # 1 GiB of one repeated random MiB


def _data(block: bytes, start: int, sent: list[int], halfway: threading.Event) -> Iterator[bytes]:
    """The file's bytes from `start` on, in 1 MiB pieces; `halfway` once 64 MiB went out."""
    first, skip = divmod(start, MiB)
    yield block[skip:]
    sent[0] += MiB - skip
    for _ in range(first + 1, BLOCKS):
        if sent[0] >= 64 * MiB:
            halfway.set()
        yield block
        sent[0] += MiB


def test_sigterm_during_a_1_gib_patch_commits_what_arrived(
    tmp_path: Path, new_pg_database: Callable[[], str], keys: Keys
) -> None:
    env = migrated_env(
        new_pg_database(),
        tmp_path,
        keys,
        LOG_LEVEL="INFO",
        SHUTDOWN_GRACE_SECONDS="10",
        MAX_FILE_SIZE_MB="2048",
    )
    a, b = _start(env, tmp_path / "a"), _start(env, tmp_path / "b")
    try:
        cluster = Cluster(b, b, tmp_path / "staging", tmp_path / "storage", keys.token("alice"))
        block = os.urandom(MiB)
        total = BLOCKS * MiB
        path = _create(cluster, a, total)
        sent, halfway = [0], threading.Event()
        outcome: list[requests.Response | Exception] = []

        def stream() -> None:
            headers = cluster.headers(**{"Content-Type": OCTET, "Upload-Offset": "0"})
            try:
                outcome.append(
                    requests.patch(
                        a.url + path, headers=headers, data=_data(block, 0, sent, halfway),
                        timeout=120,
                    )
                )  # fmt: skip
            except requests.RequestException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=stream, daemon=True)
        thread.start()
        assert halfway.wait(60), "the PATCH never got going"
        a.process.send_signal(signal.SIGTERM)
        # Readiness fails first, new requests are refused (until the listener closes).
        with contextlib.suppress(requests.ConnectionError):
            ready = requests.get(f"{a.url}/health/ready", timeout=3)
            assert ready.status_code == 503
        _, stderr = a.process.communicate(timeout=30)
        assert a.process.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        thread.join(30)
        assert outcome, "the PATCH never ended"

        head = requests.head(b.url + path, headers=cluster.headers(), timeout=10)
        assert head.status_code == 200
        committed = int(head.headers["Upload-Offset"])
        # What arrived was kept (what was sent, less what sat in socket buffers).
        assert 32 * MiB <= committed <= sent[0] < total, (committed, sent[0])
        headers = cluster.headers(**{"Content-Type": OCTET, "Upload-Offset": str(committed)})
        resumed = requests.patch(
            b.url + path, headers=headers, data=_data(block, committed, [0], threading.Event()),
            timeout=300,
        )  # fmt: skip
        assert resumed.status_code == 204, resumed.text
        info = requests.get(
            f"{b.url}/api/files/upload/session/{path.rsplit('/', 1)[-1]}",
            headers={"Authorization": f"Bearer {cluster.token}"},
            timeout=10,
        ).json()
        expected = hashlib.sha256()
        for _ in range(BLOCKS):
            expected.update(block)
        assert info["sha256"] == expected.hexdigest(), info
    finally:
        for node in (a, b):
            if node.process.poll() is None:
                node.process.terminate()
                node.process.wait(15)
