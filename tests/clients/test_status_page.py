"""The operators' status page in headless Chromium: an admin signs in with a token, an upload
the test streams meanwhile appears with a growing progress bar without a reload, a filename
with `<script>` shows as text and runs nothing; a screenshot is saved under the test output."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import requests

from tests.api.test_verdict import isolated_env
from tests.clients.jsclients import require_chromium, run_node
from tests.conftest import Server, pg_admin_dsn
from tests.slowupload import HOSTILE, SlowUpload, named
from tusingest.domain import Role

# Where tests leave what a person may want to look at (git-ignored).
OUTPUT = Path(
    os.environ.get("TEST_OUTPUT_DIR", Path(__file__).resolve().parents[2] / "test-output")
)


def test_the_page_follows_an_upload_live(make_server: Callable[..., Server]) -> None:
    require_chromium()
    server = make_server("sqlite")
    length = 256 << 20
    upload = server.create(length, **{"Upload-Metadata": named(HOSTILE)})
    upload_id = upload.rsplit("/", 1)[-1]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    screenshot = OUTPUT / "status-page.png"
    screenshot.unlink(missing_ok=True)
    # About 2.5 MiB/s, 1 % of the length a second: distinct progress at each redraw, and the
    # upload (~100 s) outlasts the page however slowly the browser starts (it is stopped).
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


# Too long for a phone's width, in one unbroken run, and markup besides.
LONG_HOSTILE = '<img src=x onerror=alert("y")>' + "W" * 160 + "<script>alert(1)</script>.bin"
SECTIONS = ("header", "#in-progress", "#recent", "#queue", "#elements")

# Looks at the page as an admin, run as an ES module from tests/js (for its browser.mjs):
#   node --input-type=module -e PAGE <server-url> <admin-token> <width> <height> <png>
#        <timeout-ms> <selectors as a JSON list> <sections as a JSON list>
# Waits for each selector (playwright syntax) after signing in, then for one more redraw.
# Prints ONE JSON line: the widths of the sign-in form and of the page (viewport, client,
# scroll), each section's box, visibility and text, the text of each selector's first match,
# the status line before and after that redraw, dialogs and console errors; exits 1 on any
# error.
PAGE = r"""
import { openBrowser } from './browser.mjs'

const [base, token, width, height, screenshot, timeoutArg, selectorsArg, sectionsArg] =
  process.argv.slice(1)
const timeout = Number(timeoutArg)
const selectors = JSON.parse(selectorsArg)
const sections = JSON.parse(sectionsArg)
const consoleErrors = []
const dialogs = []
let browser
let output
const widths = () => ({
  viewport: window.innerWidth,
  client: document.documentElement.clientWidth,
  scroll: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
})
try {
  const phone = Number(width) < 640
  browser = await openBrowser({
    viewport: { width: Number(width), height: Number(height) },
    deviceScaleFactor: phone ? 2 : 1, isMobile: phone, hasTouch: phone,
  })
  const page = browser.page
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()) })
  page.on('pageerror', (err) => consoleErrors.push(String(err)))
  page.on('dialog', async (dialog) => { dialogs.push(dialog.message()); await dialog.dismiss() })
  await page.goto(`${base}/status`, { timeout })
  const login = await page.evaluate(widths)
  await page.fill('#token', token)
  await Promise.all([
    page.waitForURL(`${base}/status`, { timeout }),
    page.click('button[type=submit]'),
  ])
  consoleErrors.length = 0 // the sign-in form's own 401 is logged as a failed load
  const texts = []
  for (const selector of selectors) {
    await page.waitForSelector(selector, { timeout })
    texts.push(await page.textContent(selector))
  }
  const before = await page.textContent('#state')
  await page.waitForFunction(
    (seen) => document.getElementById('state').textContent !== seen, before, { timeout })
  const after = await page.textContent('#state')
  const boxes = await page.evaluate((ids) => {
    const found = {}
    for (const id of ids) {
      const node = document.querySelector(id)
      const box = node.getBoundingClientRect()
      found[id] = {
        left: box.left, right: box.right, width: box.width, height: box.height,
        shown: node.checkVisibility({ visibilityProperty: true }), text: node.innerText,
      }
    }
    return found
  }, sections)
  const signedIn = await page.evaluate(widths)
  const scripts = await page.evaluate(
    () => document.querySelectorAll('main script, main img').length)
  const stale = await page.getAttribute('#state', 'class')
  await page.screenshot({ path: screenshot, fullPage: true })
  output = {
    login, signedIn, sections: boxes, texts, state: [before, after], stale, scripts, dialogs,
    consoleErrors,
  }
} catch (err) {
  output = { error: String(err), consoleErrors, dialogs }
  process.exitCode = 1
} finally {
  await browser?.close()
}
console.log(JSON.stringify(output))
"""


def look(
    server: Server, size: tuple[int, int], screenshot: Path, selectors: list[str]
) -> dict[str, Any]:
    """Sign in to `server`'s page in a browser window of `size`, wait for `selectors` and one
    more redraw; what `PAGE` prints."""
    screenshot.unlink(missing_ok=True)
    result = run_node(
        "--input-type=module",
        "-e",
        PAGE,
        server.url,
        server.keys.token("root", Role.ADMIN),
        str(size[0]),
        str(size[1]),
        str(screenshot),
        "30000",
        json.dumps(selectors),
        json.dumps(SECTIONS),
        timeout=90,
    )
    assert screenshot.stat().st_size > 10_000
    return result


def test_the_page_fits_a_phone(make_server: Callable[..., Server]) -> None:
    """On a 390 × 844 phone every section shows within the screen's width and the document
    never scrolls sideways, with a long hostile filename in the uploads tables (a wide table
    scrolls within its section)."""
    require_chromium()
    server = make_server("sqlite")
    # One upload waiting for its bytes (in progress, idle) and one stored (a verdict).
    waiting = server.create(1 << 20, **{"Upload-Metadata": named(LONG_HOSTILE)})
    stored = server.create(10, **{"Upload-Metadata": named(LONG_HOSTILE)})
    assert server.patch(stored, b"0123456789", 0).headers["X-Upload-Status"] == "stored"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    row = f'#in-progress tr[data-upload="{waiting.rsplit("/", 1)[-1]}"]'
    result = look(
        server,
        (390, 844),
        OUTPUT / "status-page-phone.png",
        [f"{row} td.name", "#recent td.name", "#elements td.name", "#registry"],
    )
    for state in ("login", "signedIn"):
        widths = result[state]
        assert widths["viewport"] == 390, result  # the phone's width, not a desktop layout
        assert widths["scroll"] <= widths["client"], (state, result)
    for name, box in result["sections"].items():
        assert box["shown"], (name, result)
        assert box["width"] > 0, (name, result)
        assert box["height"] > 0, (name, result)
        assert box["left"] >= 0, (name, result)
        assert box["right"] <= result["signedIn"]["client"], (name, result)
    uploading, verdict, element, registry = result["texts"]
    assert uploading == verdict == LONG_HOSTILE  # as text: no markup made of it
    assert element.startswith("se-local")
    # The embedded registry by the name people know it by (`memory` in the JSON).
    assert registry.startswith("(registry embedded; edit: embedded, rw: embedded, ro: none")
    assert result["scripts"] == 0
    assert result["dialogs"] == []
    assert result["consoleErrors"] == []


async def _admit(database_url: str, allowed: bool) -> None:
    """Let a database take connections again, or refuse new ones and end those it has."""
    name = database_url.rsplit("/", 1)[-1]
    conn = await asyncpg.connect(pg_admin_dsn(), timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
    finally:
        await conn.close()


def _feed(server: Server) -> dict[str, Any]:
    response = requests.get(
        f"{server.url}/api/status",
        headers={"Authorization": f"Bearer {server.keys.token('root', Role.ADMIN)}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _settled_down(server: Server) -> dict[str, Any]:
    """The feed once the database's refusal has settled: while the pool's connections are
    being cut, the first answers may name another error than the one the page then shows."""
    deadline = time.monotonic() + 15
    previous = None
    while True:
        feed = _feed(server)
        error = feed["uploads"]["in_progress"]
        error = error.get("error") if isinstance(error, dict) else None
        if error is not None and error == previous:
            return feed
        assert time.monotonic() < deadline, feed
        previous = error
        time.sleep(0.3)


def test_a_section_that_cannot_be_read_shows_its_error_while_the_others_update(
    make_server: Callable[..., Server],
    new_pg_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """PostgreSQL refusing the node's connections: the feed still answers 200, the sections
    read from the database carry their error and the page shows it, while the node's figures
    and the storage elements keep being redrawn; the sections come back with the database."""
    require_chromium()
    env = isolated_env("postgres", tmp_path, new_pg_database)
    server = make_server("postgres", **env)
    server.create(1 << 20, **{"Upload-Metadata": named("waiting.bin")})
    assert len(_feed(server)["uploads"]["in_progress"]) == 1
    asyncio.run(_admit(env["DATABASE_URL"], False))
    try:
        down = _settled_down(server)
        for section in (
            down["uploads"]["in_progress"],
            down["uploads"]["recent"],
            down["operations"],
        ):
            assert set(section) == {"error"}, down
            assert section["error"], down
        assert down["storage"]["elements"][0]["element_id"] == "se-local"
        assert down["node"]["uptime_seconds"] > 0
        OUTPUT.mkdir(parents=True, exist_ok=True)
        unread = 'td.empty:has-text("could not be read: ")'
        result = look(
            server,
            (1280, 900),
            OUTPUT / "status-page-database-down.png",
            [
                f"#in-progress {unread}",
                f"#recent {unread}",
                f"#queue {unread}",
                "#elements td.name",
            ],
        )
    finally:
        asyncio.run(_admit(env["DATABASE_URL"], True))
    in_progress, recent, queue, element = result["texts"]
    assert in_progress == f"could not be read: {down['uploads']['in_progress']['error']}"
    assert recent.startswith("could not be read: ")
    assert queue.startswith("could not be read: ")
    assert element.startswith("se-local")
    before, after = result["state"]
    assert before.startswith("updated ")
    assert after.startswith("updated ")
    assert before != after  # redrawn meanwhile, not stalled
    assert result["stale"] in (None, "")
    assert result["consoleErrors"] == []

    deadline = time.monotonic() + 20
    while True:
        back = _feed(server)
        if isinstance(back["uploads"]["in_progress"], list):
            break
        assert time.monotonic() < deadline, back
        time.sleep(0.2)
    assert len(back["uploads"]["in_progress"]) == 1
    assert isinstance(back["operations"]["items"], list)
