"""`DELETE /api/files/{id}` against reference SEs registered in Redis: a temporary file on an
edit element goes from the element, the catalog, the listing and the Admin Module; a permanent
one on an rw element (or on an element now read only) is refused with 400 and stays; a full
edit element still lets files go; a down one gets 202 and the deletion ends once it is back."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import redis
import requests

from tests.adminmodule import running_admin_module
from tests.nodes import Node
from tests.storage.conftest import Cluster
from tests.storage.rig import SEProcess, register
from tusingest.domain import Role

SIZE = 4 * 1024


def _api(node: Node, method: str, path: str, sub: str = "alice") -> requests.Response:
    return requests.request(
        method,
        f"{node.url}{path}",
        headers={"Authorization": f"Bearer {node.keys.token(sub)}"},
        timeout=30,
    )


def _se_metadata(se: SEProcess, file_id: str) -> requests.Response:
    """The SE's own metadata GET of the file (what any ArtStore client would read)."""
    token = se.keys.token("se-reader", Role.ADMIN)
    return requests.get(
        f"{se.url}/api/v1/files/{file_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _store(node: Node, **meta: str) -> dict[str, Any]:
    upload_id, response = node.upload(os.urandom(SIZE), filename="doc.bin", **meta)
    assert response.status_code == 204, response.text
    assert response.headers["X-Upload-Status"] == "stored", response.headers
    file: dict[str, Any] = node.session(upload_id)["file"]
    assert file["file_id"] == response.headers["X-File-Id"]
    return file


def _upload_id_of(node: Node, file_id: str) -> str:
    response = _api(node, "GET", f"/api/files/{file_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["upload_id"])


def _deleted_events(node: Node, file_id: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{node.url}/api/audit",
        params={"file_id": file_id},
        headers={"Authorization": f"Bearer {node.keys.token('ops', Role.ADMIN)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["action"] == "file_deleted"]


def test_a_file_on_an_edit_element_is_deleted(cluster: Cluster) -> None:
    edit = cluster.element("se-edit", priority=1)
    with running_admin_module(cluster.keys.private) as admin:
        node = cluster.node(ADMIN_MODULE_URL=admin.url)
        file = _store(node)
        file_id = file["file_id"]
        assert file["element_id"] == "se-edit"
        assert _se_metadata(edit, file_id).status_code == 200
        assert edit.file_ids() == {file_id}
        assert set(admin.files) == {file_id}

        response = _api(node, "DELETE", f"/api/files/{file_id}")
        assert response.status_code == 204, response.text
        gone = _se_metadata(edit, file_id)
        assert gone.status_code == 404, gone.text
        assert edit.file_ids() == set()
        # Unregistered from the Admin Module (which keeps the record, marked deleted).
        assert admin.files[file_id]["is_deleted"] is True
        assert admin.count("DELETE", f"/api/v1/files/{file_id}") == 1
        assert _api(node, "GET", f"/api/files/{file_id}").status_code == 404
        listed = _api(node, "GET", "/api/files").json()["files"]
        assert file_id not in {f["file_id"] for f in listed}
        assert [(e["user"], e["outcome"]) for e in _deleted_events(node, file_id)] == [
            ("alice", "success")
        ]
        assert _api(node, "DELETE", f"/api/files/{file_id}").status_code == 404


def test_a_file_on_an_rw_element_is_refused_and_stays(cluster: Cluster) -> None:
    cluster.element("se-edit", priority=1)
    rw = cluster.element("se-rw", mode="rw", priority=5)
    node = cluster.node()
    file = _store(node, retention_policy="permanent")
    file_id = file["file_id"]
    assert file["element_id"] == "se-rw"

    response = _api(node, "DELETE", f"/api/files/{file_id}")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "file_in_readonly_storage"
    assert _se_metadata(rw, file_id).status_code == 200
    assert rw.file_ids() == {file_id}
    kept = _api(node, "GET", f"/api/files/{file_id}")
    assert kept.status_code == 200, kept.text
    assert kept.json()["storage_element_id"] == "se-rw"
    assert _deleted_events(node, file_id) == []

    # Terminating the stored upload over tus is refused the same way; the upload stays too.
    upload_id = _upload_id_of(node, file_id)
    ended = requests.delete(f"{node.url}/files/{upload_id}", headers=node.headers(), timeout=30)
    assert ended.status_code == 400, ended.text
    assert node.head(upload_id).status_code == 200
    assert rw.file_ids() == {file_id}


def test_a_file_on_an_element_turned_read_only_is_refused_and_stays(cluster: Cluster) -> None:
    """The element took the file in edit mode and is read only (ro) now: the registry still
    knows it, so the answer is the read-only refusal, not "unavailable"."""
    edit = cluster.element("se-a", priority=1)
    node = cluster.node()
    file_id = _store(node)["file_id"]
    edit.kill()
    edit.mode = "ro"
    edit.start()
    register(cluster.redis.url, "", edit)
    client = redis.Redis.from_url(cluster.redis.url)
    assert client.hget("storage:elements:se-a", "mode") == b"ro"  # the registry knows it

    response = _api(node, "DELETE", f"/api/files/{file_id}")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "file_in_readonly_storage"
    assert _se_metadata(edit, file_id).status_code == 200
    assert _api(node, "GET", f"/api/files/{file_id}").status_code == 200


def test_a_file_on_a_full_edit_element_is_deleted(cluster: Cluster) -> None:
    """An edit element that became full (its quota cut below what it holds) is no longer
    offered for placement, but deleting from it is what frees it: the deletion goes ahead."""
    edit = cluster.element("se-full", priority=1)
    node = cluster.node()
    file_id = _store(node)["file_id"]
    edit.kill()
    edit.capacity = SIZE  # 100 % used
    edit.start()
    client = redis.Redis.from_url(cluster.redis.url)
    deadline = time.monotonic() + 10
    while client.hget("storage:elements:se-full", "capacity_status") != b"full":
        assert time.monotonic() < deadline, "the capacity monitor never saw se-full full"
        time.sleep(0.05)

    response = _api(node, "DELETE", f"/api/files/{file_id}")
    assert response.status_code == 204, response.text
    assert _se_metadata(edit, file_id).status_code == 404
    assert _api(node, "GET", f"/api/files/{file_id}").status_code == 404


def test_a_deletion_while_the_element_is_down_ends_once_it_is_back(cluster: Cluster) -> None:
    """The element does not answer: 202 `deleting`; the `delete` operation goes on durably and
    removes the file once the element is back."""
    edit = cluster.element("se-slow", priority=1)
    node = cluster.node(COMPLETION_WAIT_SECONDS="1")
    upload_id, response = node.upload(os.urandom(SIZE), filename="doc.bin")
    assert response.status_code == 204, response.text
    info = node.settled(upload_id)
    assert info["upload_status"] == "stored", info
    file_id = str(info["file_id"])
    edit.kill()

    started = _api(node, "DELETE", f"/api/files/{file_id}")
    assert started.status_code == 202, started.text
    assert started.json() == {"file_id": file_id, "status": "deleting"}

    edit.start()
    deadline = time.monotonic() + 20
    while _api(node, "GET", f"/api/files/{file_id}").status_code != 404:
        assert time.monotonic() < deadline, "the deletion did not end once the element was back"
        time.sleep(0.1)
    assert _se_metadata(edit, file_id).status_code == 404
    assert edit.file_ids() == set()
    assert [e["outcome"] for e in _deleted_events(node, file_id)] == ["success"]


def test_an_ingester_killed_mid_deletion_finishes_it_after_a_restart(cluster: Cluster) -> None:
    edit = cluster.element("se-edit", priority=1)
    node = cluster.node(TUSINGEST_CRASH_AT_STEP="delete_catalog")
    file_id = _store(node)["file_id"]
    # The node dies answering: the file is gone from the element, the catalog not updated yet.
    with contextlib.suppress(requests.ConnectionError):
        _api(node, "DELETE", f"/api/files/{file_id}")
    node.proc.wait(30)
    assert file_id not in edit.file_ids()

    node.stop()
    restarted = cluster.node()
    deadline = time.monotonic() + 30
    while _api(restarted, "GET", f"/api/files/{file_id}").status_code == 200:
        assert time.monotonic() < deadline, "the deletion did not resume"
        time.sleep(0.1)
    assert _api(restarted, "GET", f"/api/files/{file_id}").status_code == 404
    assert [e["outcome"] for e in _deleted_events(restarted, file_id)] == ["success"]
