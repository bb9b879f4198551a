"""Transfers between reference storage elements over real HTTP: edit → rw keeps the file's name
and content type and leaves the source gone; an ingester killed mid-transfer resumes after a
restart with exactly one live copy; a destination killed mid-transfer rolls it back."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import requests

from tests.adminmodule import running_admin_module
from tests.nodes import Node
from tests.storage.conftest import Cluster
from tests.storage.rig import SEProcess

MiB = 1 << 20


def _auth(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.keys.token('alice')}"}


def _store(node: Node, data: bytes, name: str, content_type: str) -> dict[str, Any]:
    response = requests.post(
        f"{node.url}/api/files/upload",
        files={"file": (name, data, content_type)},
        data={"metadata": '{"retention_policy": "temporary", "description": "draft"}'},
        headers=_auth(node),
        timeout=60,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _transfer(node: Node, file_id: str, destination: str, **options: bool) -> requests.Response:
    return requests.post(
        f"{node.url}/api/files/{file_id}/transfer",
        json={"destination_storage_element_id": destination, **options},
        headers=_auth(node),
        timeout=30,
    )


def _finished(node: Node, transfer_id: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        response = requests.get(
            f"{node.url}/api/files/transfer/{transfer_id}", headers=_auth(node), timeout=10
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, f"transfer still {body['status']}: {body}"
        time.sleep(0.1)


def _se_metadata(se: SEProcess, node: Node, file_id: str) -> requests.Response:
    token = node.keys.token("tusingest-test", name="test")
    return requests.get(
        f"{se.url}/api/v1/files/{file_id}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _se_bytes(se: SEProcess, node: Node, file_id: str) -> bytes:
    token = node.keys.token("tusingest-test", name="test")
    response = requests.get(
        f"{se.url}/api/v1/files/{file_id}/download",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.content


def test_edit_to_rw_keeps_name_and_type_and_removes_the_source(cluster: Cluster) -> None:
    edit = cluster.element("se-edit", mode="edit", priority=1)
    rw = cluster.element("se-rw", mode="rw", priority=1)
    node = cluster.node()
    data = b"%PDF-1.4\n" + os.urandom(300_000)
    stored = _store(node, data, "contract.pdf", "application/pdf")
    file_id = stored["file_id"]
    assert stored["storage_element_id"] == "se-edit"

    response = _transfer(node, file_id, "se-rw", delete_source=True)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] == "in_progress"
    assert started["estimated_time_seconds"] >= 1
    done = _finished(node, started["transfer_id"])
    assert done["status"] == "completed", done
    assert done["source_storage_element_id"] == "se-edit"
    assert done["destination_storage_element_id"] == "se-rw"
    assert done["bytes_transferred"] == len(data)
    assert done["completed_at"] >= done["started_at"]

    moved = _se_metadata(rw, node, file_id)
    assert moved.status_code == 200, moved.text
    assert moved.json()["original_filename"] == "contract.pdf"
    assert moved.json()["content_type"] == "application/pdf"
    assert moved.json()["checksum"] == hashlib.sha256(data).hexdigest()
    assert _se_bytes(rw, node, file_id) == data
    assert _se_metadata(edit, node, file_id).status_code == 404
    assert file_id not in edit.file_ids()

    entry = requests.get(f"{node.url}/api/files/{file_id}", headers=_auth(node), timeout=10)
    assert entry.json()["storage_element_id"] == "se-rw"
    assert entry.json()["retention_policy"] == "permanent"
    assert entry.json()["sha256_hash"] == hashlib.sha256(data).hexdigest()


def test_bad_destinations_get_a_clear_code(cluster: Cluster) -> None:
    cluster.element("se-edit", mode="edit", priority=1)
    cluster.element("se-small", mode="rw", priority=1, capacity=64 * 1024)
    node = cluster.node()
    file_id = _store(node, os.urandom(200_000), "a.bin", "application/octet-stream")["file_id"]
    cases = [
        ("se-nowhere", 400, "unknown_destination"),
        ("se-edit", 409, "same_element"),
        ("se-small", 409, "destination_full"),
    ]
    for destination, status, code in cases:
        response = _transfer(node, file_id, destination)
        assert response.status_code == status, (destination, response.text)
        assert response.json()["error"] == code
    bad = requests.post(
        f"{node.url}/api/files/{file_id}/transfer", data=b"[1]", headers=_auth(node), timeout=10
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"
    unknown = _transfer(node, "00000000-0000-4000-8000-000000000000", "se-small")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "file_not_found"
    missing = requests.get(
        f"{node.url}/api/files/transfer/{'1' * 8}-1111-4111-8111-{'1' * 12}",
        headers=_auth(node),
        timeout=10,
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == "transfer_not_found"


def test_an_ingester_killed_mid_transfer_resumes_with_one_live_copy(cluster: Cluster) -> None:
    edit = cluster.element("se-edit", mode="edit", priority=1)
    rw = cluster.element("se-rw", mode="rw", priority=1)
    node = cluster.node(TUSINGEST_CRASH_AT_STEP="transfer_copied")
    data = os.urandom(2 * MiB)
    file_id = _store(node, data, "big.bin", "application/octet-stream")["file_id"]
    response = _transfer(node, file_id, "se-rw", delete_source=True)
    assert response.status_code == 202, response.text
    transfer_id = response.json()["transfer_id"]
    node.proc.wait(30)  # killed itself after the copy, before the catalog moved
    assert file_id in rw.file_ids()
    assert file_id in edit.file_ids()

    node.stop()
    restarted = cluster.node()
    done = _finished(restarted, transfer_id, 60)
    assert done["status"] == "completed", done
    assert file_id in rw.file_ids()
    assert file_id not in edit.file_ids()
    assert _se_bytes(rw, restarted, file_id) == data
    entry = requests.get(
        f"{restarted.url}/api/files/{file_id}", headers=_auth(restarted), timeout=10
    ).json()
    assert entry["storage_element_id"] == "se-rw"


def test_a_destination_killed_mid_transfer_rolls_back(cluster: Cluster) -> None:
    edit = cluster.element("se-edit", mode="edit", priority=1)
    rw = cluster.element("se-rw", mode="rw", priority=1)
    node = cluster.node(SAGA_RETRY_MAX_ATTEMPTS="2")
    data = os.urandom(8 * MiB)
    file_id = _store(node, data, "big.bin", "application/octet-stream")["file_id"]
    response = _transfer(node, file_id, "se-rw", delete_source=True)
    assert response.status_code == 202, response.text
    rw.kill()
    done = _finished(node, response.json()["transfer_id"], 60)
    assert done["status"] == "failed", done
    assert done["error"]
    entry = requests.get(f"{node.url}/api/files/{file_id}", headers=_auth(node), timeout=10)
    assert entry.json()["storage_element_id"] == "se-edit"
    assert _se_bytes(edit, node, file_id) == data

    rw.start()  # back: whatever the failed transfer left there is discarded
    deadline = time.monotonic() + 30
    while file_id in rw.file_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert file_id not in rw.file_ids()
    assert file_id in edit.file_ids()


def test_the_admin_module_registration_follows_the_file(cluster: Cluster) -> None:
    cluster.element("se-edit", mode="edit", priority=1)
    cluster.element("se-rw", mode="rw", priority=1)
    with running_admin_module(cluster.keys.private) as admin:
        node = cluster.node(ADMIN_MODULE_URL=admin.url)
        file_id = _store(node, os.urandom(100_000), "a.bin", "application/octet-stream")["file_id"]
        assert admin.files[file_id]["storage_element_id"] == "se-edit"
        response = _transfer(node, file_id, "se-rw", delete_source=True)
        assert response.status_code == 202, response.text
        assert _finished(node, response.json()["transfer_id"])["status"] == "completed"
        record = admin.files[file_id]
        assert record["storage_element_id"] == "se-rw"
        assert record["retention_policy"] == "permanent"
