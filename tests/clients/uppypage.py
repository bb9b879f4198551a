"""The Uppy page of tests/js/uppy_page.mjs, bundled by esbuild and served with its files from
an origin of its own, and one upload run in headless Chromium (uppy_run.mjs)."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.clients.jsclients import (
    JS_DIR,
    MiB,
    require_chromium,
    require_node,
    run_node,
    write_random,
)

FILES = {  # path on the page's origin -> size
    "data/small.bin": 300 * 1024 + 1,
    "data/medium.bin": MiB + 77,
    "data/large.bin": 2 * MiB + MiB // 2,
    "data/parallel.bin": 3 * MiB + 5,
}
INDEX = (
    '<!doctype html><meta charset="utf-8"><title>tusingest uppy</title>'
    '<link rel="icon" href="data:,"><script type="module" src="uppy_page.js"></script>\n'
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Page:
    url: str
    sha256: dict[str, str]


@contextlib.contextmanager
def uppy_page(root: Path) -> Iterator[Page]:
    """The bundled Uppy page and its files in `root`, on a static server of its own (another
    origin than the server's)."""
    require_node()
    require_chromium()
    built = subprocess.run(
        [
            str(JS_DIR / "node_modules" / ".bin" / "esbuild"),
            "uppy_page.mjs",
            "--bundle",
            "--format=esm",
            "--platform=browser",
            "--log-level=warning",
            f"--outfile={root / 'uppy_page.js'}",
        ],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    (root / "index.html").write_text(INDEX)
    (root / "data").mkdir()
    sha256 = {path: write_random(root / path, size) for path, size in FILES.items()}
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Page(url=f"http://127.0.0.1:{httpd.server_address[1]}/index.html", sha256=sha256)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def upload_with_uppy(
    page: Page,
    endpoint: str,
    token: str,
    files: list[str],
    parallel: list[str],
    retry: str = "0,200,1000",
) -> dict[str, Any]:
    """Upload `files` (paths of FILES) with Uppy to the tus `endpoint`; those in `parallel`
    as parallel uploads (partials and a final); `retry`: Uppy's retry delays (ms)."""
    query = urlencode(
        {
            "endpoint": endpoint,
            "token": token,
            "files": ",".join(files),
            "parallel": ",".join(parallel),
            "retry": retry,
        }
    )
    return run_node("uppy_run.mjs", f"{page.url}?{query}", "60000", timeout=90)
