"""SIGKILL of the ingester at each step of the store saga on HTTP SEs with Admin Module
registration: after a restart every file is stored exactly once and no SE keeps an orphan
(the SEs' own file lists prove it)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from typing import Any

import pytest
import requests

from tests.adminmodule import running_admin_module
from tests.storage.conftest import Cluster
from tests.storage.rig import SEProcess
from tusingest.domain import Role

SIZE = 256 * 1024
SAGA_STEPS = ("store", "verify", "catalog", "register", "stored", "note", "cleanup")


def _crash_while_completing(cluster: Cluster, data: bytes, step: str, admin_url: str) -> str:
    node = cluster.node(ADMIN_MODULE_URL=admin_url, TUSINGEST_CRASH_AT_STEP=step)
    upload_id = node.create(len(data))
    try:
        answered = node.patch(upload_id, data, 0)
    except requests.ConnectionError:
        pass  # the connection died with the process
    else:
        # Only once the `stored` verdict and its note are committed (the cleanup follows)
        # may the completing request have its answer, and then it is that verdict.
        assert step == "cleanup", (step, answered.status_code, answered.headers)
        assert answered.headers.get("X-Upload-Status") == "stored", answered.headers
    try:
        node.proc.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not crash at {step}: {node.log_text()}")
    assert node.proc.returncode == -9
    return upload_id


def _settle_orphans(elements: list[SEProcess], keep: set[str], seconds: float = 20) -> None:
    """Until the SEs hold exactly `keep` (queued discards may still be running)."""
    deadline = time.monotonic() + seconds
    while True:
        held = set().union(*(se.file_ids() for se in elements))
        if held == keep:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the SEs hold {held}, expected only {keep}")
        time.sleep(0.1)


@pytest.mark.parametrize("step", SAGA_STEPS)
def test_a_crash_at_each_saga_step_stores_exactly_once(cluster: Cluster, step: str) -> None:
    first = cluster.element("se-1", priority=1)
    second = cluster.element("se-2", priority=2)
    data = os.urandom(SIZE)
    with running_admin_module(cluster.keys.private) as admin:
        upload_id = _crash_while_completing(cluster, data, step, admin.url)
        node = cluster.node(ADMIN_MODULE_URL=admin.url)
        info = node.settled(upload_id, 30)
        assert info["upload_status"] == "stored", info
        file_id = info["file_id"]
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        _settle_orphans([first, second], {file_id})
        assert set(admin.files) == {file_id}
        assert admin.count("POST", "/api/v1/files") >= 1
        # Noted once, with the verdict (a `file.stored` webhook is never sent twice).
        deadline = time.monotonic() + 20
        while not (actions := _actions(cluster, node.url, file_id)):
            assert time.monotonic() < deadline, "the stored file was never noted"
            time.sleep(0.1)
        time.sleep(0.5)  # a second note would follow at once
        assert _actions(cluster, node.url, file_id) == actions == ["file_stored"]
        # After a crash at cleanup the verdict is already out; the retry removes the bytes.
        staged = cluster.data_dir / "staging" / upload_id
        deadline = time.monotonic() + 15
        while staged.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not staged.exists()


def test_a_crash_after_upload_with_the_element_gone_leaves_no_orphan(cluster: Cluster) -> None:
    """The copy on the dead SE is abandoned; the file goes to the next SE, and the copy is
    discarded when the dead SE returns."""
    first = cluster.element("se-1", priority=1)
    second = cluster.element("se-2", priority=2)
    data = os.urandom(SIZE)
    with running_admin_module(cluster.keys.private) as admin:
        upload_id = _crash_while_completing(cluster, data, "verify", admin.url)
        assert len(first.file_ids()) == 1  # stored there, not yet recorded anywhere
        first.kill()
        node = cluster.node(ADMIN_MODULE_URL=admin.url)
        info = node.settled(upload_id, 30)
        assert info["upload_status"] == "stored", info
        assert info["file"]["element_id"] == "se-2"
        assert second.file_ids() == {info["file_id"]}
        first.start()
        _settle_orphans([first, second], {info["file_id"]}, seconds=30)
        assert set(admin.files) == {info["file_id"]}


def test_a_registration_failing_for_good_undoes_the_saga(cluster: Cluster) -> None:
    """Compensation in reverse: the catalog entry goes, the copy on the SE is discarded, and
    the staged bytes stay (nothing the client sent is lost)."""
    se = cluster.element("se-1", priority=1)
    data = os.urandom(SIZE)
    with running_admin_module(cluster.keys.private) as admin:
        admin.fail_registration = 100
        node = cluster.node(ADMIN_MODULE_URL=admin.url, SAGA_RETRY_MAX_ATTEMPTS="2")
        upload_id, response = node.upload(data)
        # The completing PATCH waits for the verdict: two attempts, then given up.
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "processing_failed"
        info = node.settled(upload_id, 30)
        assert info["upload_status"] == "failed", info
        assert info["file"] is None
        assert admin.count("POST", "/api/v1/files") == 2
        assert admin.files == {}
        _settle_orphans([se], set())
        staged = cluster.data_dir / "staging" / upload_id
        assert staged.read_bytes() == data
        head = requests.head(f"{node.url}/files/{upload_id}", headers=node.headers(), timeout=10)
        assert head.status_code == 503
        assert head.headers["X-Upload-Error"] == "processing_failed"
        # The file was never stored: no `file_stored` note, so no `file.stored` webhook.
        events = _audit(cluster, node.url)
        assert [e["action"] for e in events if e["action"] == "file_stored"] == []
        assert [e["subject"] for e in events if e["action"] == "upload_failed"] == [upload_id]


def _audit(cluster: Cluster, url: str, **params: str) -> list[dict[str, Any]]:
    token = cluster.keys.token("root", Role.ADMIN)
    audit = requests.get(
        f"{url}/api/audit",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert audit.status_code == 200, audit.text
    events: list[dict[str, Any]] = audit.json()["events"]
    return events


def _actions(cluster: Cluster, url: str, file_id: str) -> list[str]:
    return [e["action"] for e in _audit(cluster, url, file_id=file_id)]
