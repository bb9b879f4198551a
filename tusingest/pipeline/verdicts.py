"""The completion pipeline's verdict on an upload, as the requests that ask for it see it: the
completing request waits for it a bounded time; the bytes of a file waiting for storage stay."""

from __future__ import annotations

import asyncio

from tusingest.domain import Upload, UploadStatus
from tusingest.errors import NoStorageAvailable
from tusingest.pipeline.runner import Runner
from tusingest.ports import SessionStore

_PENDING = (UploadStatus.COMPLETE, UploadStatus.PROCESSING)


def awaits_verdict(upload: Upload) -> bool:
    """Complete (not a partial) and not decided yet."""
    return upload.status in _PENDING and not upload.is_partial


def waits_for_storage(upload: Upload) -> bool:
    """The file is fine but no storage element can take it now: the operation retries."""
    return awaits_verdict(upload) and upload.error == NoStorageAvailable.code


class Verdicts:
    """Waits for verdicts; `retry_after` is what a client waiting for storage is told."""

    def __init__(
        self,
        runner: Runner,
        sessions: SessionStore,
        *,
        wait_seconds: float,
        retry_after: float,
    ) -> None:
        self._runner = runner
        self._sessions = sessions
        self._wait = wait_seconds
        self.retry_after = retry_after
        self._waiting: dict[str, int] = {}  # upload id: requests waiting for its verdict
        self._decided: dict[str, Upload] = {}  # verdicts committed here, for those waiting

    def decided(self, upload: Upload) -> None:
        """This node committed a verdict on `upload` (the row as committed): the requests
        waiting for it answer from it without reading the row back."""
        if upload.id in self._waiting:
            self._decided[upload.id] = upload
        self._runner.announce(upload.id)

    async def settle(self, upload: Upload) -> Upload:
        """`upload` once the pipeline decided, or as it is after the wait (COMPLETION_WAIT)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        upload_id = upload.id
        self._waiting[upload_id] = self._waiting.get(upload_id, 0) + 1
        try:
            while (
                awaits_verdict(upload) and not waits_for_storage(upload) and loop.time() < deadline
            ):
                # Usually this node runs the operation and wakes us with the verdict; in a
                # cluster another node may have claimed it, so look at the row every quarter
                # second as well.
                await self._runner.wait(upload_id, min(0.25, deadline - loop.time()))
                upload = (
                    self._decided.get(upload_id) or await self._sessions.get(upload_id) or upload
                )
        finally:
            left = self._waiting.pop(upload_id) - 1
            if left:
                self._waiting[upload_id] = left
            else:
                self._decided.pop(upload_id, None)
        return upload
