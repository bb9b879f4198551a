"""An upload streamed slowly from a thread (to watch it in flight), and a hostile filename."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator

import requests

from tests.conftest import Server

HOSTILE = '<script>alert("x")</script>.bin'


class SlowUpload:
    """A PATCH that sends `chunk` bytes every `pause` seconds until stopped (or done)."""

    def __init__(self, server: Server, url: str, length: int, chunk: int, pause: float) -> None:
        self._stop = threading.Event()
        self.response: requests.Response | None = None

        def body() -> Iterator[bytes]:
            sent = 0
            while sent < length and not self._stop.is_set():
                piece = os.urandom(min(chunk, length - sent))
                sent += len(piece)
                yield piece
                time.sleep(pause)

        def run() -> None:
            self.response = requests.patch(
                url,
                data=body(),
                headers={
                    **server.headers(),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": "0",
                },
                timeout=60,
            )

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def finish(self) -> None:
        self._thread.join(60)


def named(name: str) -> str:
    """`Upload-Metadata` carrying `name` as the filename."""
    return f"filename {base64.b64encode(name.encode()).decode()}"
