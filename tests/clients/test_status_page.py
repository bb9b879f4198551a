"""The operators' status page in headless Chromium: an admin signs in with a token, an upload
the test streams meanwhile appears with a growing progress bar without a reload, a filename
with `<script>` shows as text and runs nothing; a screenshot is saved under the test output."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.clients.jsclients import require_chromium, run_node
from tests.conftest import Server
from tests.slowupload import HOSTILE, SlowUpload, named
from tusingest.domain import Role

# Where tests leave what a person may want to look at (git-ignored).
OUTPUT = Path(
    os.environ.get("TEST_OUTPUT_DIR", Path(__file__).resolve().parents[2] / "test-output")
)


def test_the_page_follows_an_upload_live(make_server: Callable[..., Server]) -> None:
    require_chromium()
    server = make_server("sqlite")
    length = 24 << 20
    upload = server.create(length, **{"Upload-Metadata": named(HOSTILE)})
    upload_id = upload.rsplit("/", 1)[-1]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    screenshot = OUTPUT / "status-page.png"
    screenshot.unlink(missing_ok=True)
    # About 2.5 MiB/s: the upload lasts ~10 s, long enough for three redraws of the page.
    slow = SlowUpload(server, upload, length, chunk=256 << 10, pause=0.1)
    try:
        result = run_node(
            "status_page.mjs",
            server.url,
            server.keys.token("root", Role.ADMIN),
            upload_id,
            str(screenshot),
            "30000",
            timeout=90,
        )
    finally:
        slow.stop()
    assert result["loginStatus"] == 401  # the sign-in form first
    progress = result["progress"]
    assert len(progress) >= 3, result
    assert progress == sorted(progress), result
    assert progress[-1] > progress[0], result
    assert result["reloaded"] is False
    assert result["filenameText"] == HOSTILE
    assert result["scriptsInTables"] == 0
    assert result["dialogs"] == []
    assert result["cookie"] == {"httpOnly": True, "sameSite": "Strict", "path": "/"}
    assert result["consoleErrors"] == []
    assert screenshot.stat().st_size > 10_000
