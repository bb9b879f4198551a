"""Log lines name their request and user; the request id is echoed as `X-Request-ID` (the
client's own when it is a plain token); no token ever reaches a log line, even at DEBUG."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import requests

from tests.conftest import TUS, Keys
from tests.nodes import Node
from tusingest.domain import Role


def test_request_ids_and_users_on_log_lines_and_no_token_anywhere(
    tmp_path: Path, keys: Keys
) -> None:
    node = Node(tmp_path / "data", keys, tmp_path / "node.log", LOG_LEVEL="DEBUG").wait_ready()
    try:
        token = keys.token("alice")
        admin = keys.token("root", Role.ADMIN)
        expired = keys.token("alice", ttl=-10)
        forged = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
        auth = {"Authorization": f"Bearer {token}"}

        mine = requests.get(
            f"{node.url}/api/files", headers={**auth, "X-Request-ID": "rid-client-42"}, timeout=10
        )
        assert mine.headers["X-Request-ID"] == "rid-client-42"
        unsafe = requests.get(
            f"{node.url}/api/files", headers={**auth, "X-Request-ID": "bad id <script>"}, timeout=10
        )
        assert re.fullmatch(r"[0-9a-f]{16}", unsafe.headers["X-Request-ID"])
        fresh = requests.get(f"{node.url}/health/live", timeout=10)
        assert re.fullmatch(r"[0-9a-f]{16}", fresh.headers["X-Request-ID"])

        # An upload that logs (the pipeline's steps), and refusals of bad tokens.
        data = os.urandom(50_000)
        meta = "filename " + base64.b64encode(b"a.bin").decode()
        created = requests.post(
            f"{node.url}/files/",
            headers={**TUS, **auth, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
            timeout=10,
        )
        patched = requests.patch(
            f"{node.url}{created.headers['Location']}",
            headers={
                **TUS,
                **auth,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": "0",
                "X-Request-ID": "rid-upload-7",
            },
            data=data,
            timeout=30,
        )
        assert patched.status_code == 204, patched.text
        for bad in (expired, forged, "not-a-jwt"):
            refused = requests.get(
                f"{node.url}/api/files", headers={"Authorization": f"Bearer {bad}"}, timeout=10
            )
            assert refused.status_code == 401
        requests.get(
            f"{node.url}/api/audit", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
    finally:
        node.stop()
    log = Path(tmp_path / "node.log").read_text("utf-8", "replace")
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    # The completion the PATCH started names its request, user, upload and, once stored, file.
    stored = [line for line in log.splitlines() if "stored upload" in line]
    assert len(stored) == 1, log[-3000:]
    file_id = re.search(r"as file (\S+)", stored[0])
    assert file_id is not None
    assert f"[rid-upload-7 alice upload={upload_id} file={file_id[1]}]" in stored[0]
    for secret in (token, admin, expired, forged):
        assert secret not in log
        assert secret.split(".")[2] not in log  # not even the signature
    assert "Bearer" not in log
