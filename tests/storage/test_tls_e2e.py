"""TLS to storage elements and the Admin Module over real connections: reference SEs served over
HTTPS with a test CA, an ingester trusting that CA (STORAGE_ELEMENT_CA_FILE) or another one,
client certificates an SE requires, and the Admin Module stand-in over HTTPS."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import requests

from tests.adminmodule import running_admin_module
from tests.nodes import Node
from tests.storage.conftest import Cluster
from tests.storage.rig import SEProcess, ServedTls, register
from tests.tlscerts import TestCA

SIZE = 96 * 1024


def _stored_sha256(se: SEProcess, file_id: str) -> str:
    """The SHA-256 of the bytes the SE holds for `file_id` (beside its attr.json)."""
    for attr in se.root.rglob("*.attr.json"):
        if json.loads(attr.read_text("utf-8"))["file_id"] == file_id:
            stored = attr.with_name(attr.name.removesuffix(".attr.json"))
            return hashlib.sha256(stored.read_bytes()).hexdigest()
    raise AssertionError(f"{se.element_id} holds no {file_id}")


def _element_state(node: Node, element_id: str, seconds: float = 15) -> dict[str, Any]:
    """The element's entry in readiness once it is no longer usable."""
    deadline = time.monotonic() + seconds
    while True:
        body = requests.get(f"{node.url}/health/ready", timeout=10).json()
        state: dict[str, Any] = body["checks"]["elements"].get(element_id, {})
        if state.get("usable") is False:
            return state
        assert time.monotonic() < deadline, f"{element_id} still usable: {body}"
        time.sleep(0.2)


def test_https_element_and_admin_module_verified_with_the_test_ca(
    cluster: Cluster, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path, "test-ca")
    se = cluster.element("se-tls", priority=1, tls=ServedTls(ca.issue("se-tls"), ca.cert))
    assert se.url.startswith("https://127.0.0.1:")
    with running_admin_module(
        cluster.keys.private, ssl_context=ca.server_context("admin-module")
    ) as admin:
        assert admin.url.startswith("https://")
        admin.add_element("se-tls", api_url=se.url, priority=1)
        node = cluster.node(
            STORAGE_ELEMENT_CA_FILE=str(ca.cert),
            ADMIN_MODULE_URL=admin.url,
            # Tokens from the Admin Module's token endpoint, over HTTPS.
            SERVICE_ACCOUNT_PRIVATE_KEY_PATH="",
            SERVICE_ACCOUNT_CLIENT_ID="sa_ingest",
            SERVICE_ACCOUNT_CLIENT_SECRET="secret",
        )

        data = os.urandom(SIZE)
        upload_id, response = node.upload(data, filename="over-tls.bin")
        assert response.status_code == 204, response.text + node.log_text()
        assert response.headers["X-Upload-Status"] == "stored"
        file_id = node.session(upload_id)["file_id"]
        assert _stored_sha256(se, file_id) == hashlib.sha256(data).hexdigest()
        assert admin.count("POST", "/api/v1/auth/token") >= 1
        assert admin.files[file_id]["checksum_sha256"] == hashlib.sha256(data).hexdigest()

        # Redis gone: the Admin Module lists the element, over HTTPS too.
        cluster.redis.stop()
        data = os.urandom(SIZE)
        upload_id, response = node.upload(data, filename="fallback.bin")
        assert response.status_code == 204, response.text + node.log_text()
        assert node.metric("storage_selection_total", retention_policy="temporary",
                           status="success", source="admin") >= 1  # fmt: skip
        file_id = node.session(upload_id)["file_id"]
        assert _stored_sha256(se, file_id) == hashlib.sha256(data).hexdigest()


def test_an_element_whose_certificate_the_ca_file_does_not_verify_gets_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    ca, other = TestCA(tmp_path, "test-ca"), TestCA(tmp_path, "other-ca")
    se = cluster.element("se-tls", priority=1, tls=ServedTls(ca.issue("se-tls"), ca.cert))
    # The ingester trusts another CA. Its capacity monitor is off, so the element stays
    # published healthy (as `tusingest elements add` with the right CA found it) and the store
    # itself meets the certificate.
    node = cluster.node(STORAGE_ELEMENT_CA_FILE=str(other.cert), CAPACITY_MONITOR_ENABLED="off")

    upload_id, response = node.upload(os.urandom(SIZE), filename="refused.bin")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "no_storage_available"
    assert node.session(upload_id)["upload_status"] == "processing"  # kept for a retry
    assert se.file_ids() == set()
    log = (tmp_path / "serve.log").read_text("utf-8", "replace")
    assert "on se-tls: TLS to 127.0.0.1" in log
    assert "CERTIFICATE_VERIFY_FAILED" in log
    state = _element_state(node, "se-tls")
    assert state["breaker"] == "open"

    # The operator's probe with that CA refuses the element the same way.
    done = register(cluster.redis.url, "", se, {"STORAGE_ELEMENT_CA_FILE": str(other.cert)})
    assert "failed its probe" in done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert se.file_ids() == set()


def test_an_element_requiring_client_certificates(cluster: Cluster, tmp_path: Path) -> None:
    ca = TestCA(tmp_path, "test-ca")
    client = ca.issue("ingester", client=True)
    tls = ServedTls(ca.issue("se-mtls"), ca.cert, client_ca=ca.cert, client=client)
    se = cluster.element("se-mtls", priority=1, tls=tls)

    # Without a client certificate the handshake fails.
    done = register(cluster.redis.url, "", se, {"STORAGE_ELEMENT_CA_FILE": str(ca.cert)})
    # TLS 1.3 checks the client's certificate after the handshake: the element hangs up (seen
    # as a disconnect or a reset, whichever the client meets first).
    assert re.search(
        r"failed its probe \(/api/v1/capacity: (Server disconnected|.*Connection reset by peer)\)",
        done.stderr,
    ), done.stderr
    # With it the element is healthy again, and takes files.
    done = register(cluster.redis.url, "", se)
    assert "healthy" in done.stdout, done.stdout + done.stderr
    assert "failed its probe" not in done.stderr

    # An ingester that speaks nothing older than TLS 1.3 stores there too.
    node = cluster.node(**tls.env(), STORAGE_ELEMENT_TLS_MIN_VERSION="1.3")
    data = os.urandom(SIZE)
    upload_id, response = node.upload(data, filename="mtls.bin")
    assert response.status_code == 204, response.text + node.log_text()
    file_id = node.session(upload_id)["file_id"]
    assert _stored_sha256(se, file_id) == hashlib.sha256(data).hexdigest()


def _wait_log(path: Path, needle: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = path.read_text("utf-8", "replace")
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not logged: {text[-3000:]}"
        time.sleep(0.1)


def test_an_admin_module_whose_certificate_the_ca_file_does_not_verify(
    cluster: Cluster, tmp_path: Path
) -> None:
    ca, other = TestCA(tmp_path, "test-ca"), TestCA(tmp_path, "other-ca")
    se = cluster.element("se-01", priority=1)  # plain HTTP, listed in Redis
    with running_admin_module(
        cluster.keys.private, ssl_context=ca.server_context("admin-module")
    ) as admin:
        admin.add_element("se-01", api_url=se.url, priority=1)
        # Service-account tokens minted locally (the cluster's key): only the Admin Module's
        # own calls meet its certificate. Attempts are many, to outlast the first node.
        wrong = cluster.node(
            STORAGE_ELEMENT_CA_FILE=str(other.cert),
            ADMIN_MODULE_URL=admin.url,
            COMPLETION_WAIT_SECONDS="2",
            SAGA_RETRY_MAX_ATTEMPTS="50",
        )
        ready = requests.get(f"{wrong.url}/health/ready", timeout=10)
        assert ready.status_code == 200  # elements from Redis: uploads can still be stored
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["admin_module"] == "error: TransientError"

        data = os.urandom(SIZE)
        upload_id, response = wrong.upload(data, filename="unregistered.bin")
        # Stored on the element, but not registered: no verdict yet, the saga retries.
        assert response.headers.get("X-Upload-Status") == "processing", response.headers
        host = admin.url.removeprefix("https://").rstrip("/")
        log = _wait_log(
            tmp_path / "serve.log",
            f"Admin Module unreachable (POST /files): TLS to {host} refused: "
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
        )
        assert "attempt 1 failed" in log
        assert wrong.session(upload_id)["upload_status"] == "processing"
        assert admin.requests == []  # no request got past the handshake
        assert admin.files == {}
        wrong.stop()

        # The same data dir, trusting the right CA: the upload is registered and stored.
        right = cluster.node(
            STORAGE_ELEMENT_CA_FILE=str(ca.cert),
            ADMIN_MODULE_URL=admin.url,
            SAGA_RETRY_MAX_ATTEMPTS="50",
        )
        info = right.settled(upload_id, seconds=60)
        assert info["upload_status"] == "stored", info
        file_id = info["file_id"]
        assert admin.files[file_id]["checksum_sha256"] == hashlib.sha256(data).hexdigest()
        assert _stored_sha256(se, file_id) == hashlib.sha256(data).hexdigest()
        ready = requests.get(f"{right.url}/health/ready", timeout=10).json()
        assert (ready["status"], ready["checks"]["admin_module"]) == ("ok", "ok"), ready
