"""Expiry: overdue sessions become `expired` and lose their staging bytes; staged files no
session owns are removed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from tusingest.domain import UploadStatus
from tusingest.ports import Locker, SessionStore, Staging

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        locker: Locker,
        *,
        ttl_seconds: float,
        clock: Callable[[], datetime],
        forget: Callable[[str], None],
    ) -> None:
        self._sessions = sessions
        self._staging = staging
        self._locker = locker
        self._ttl = ttl_seconds
        self._clock = clock
        self._forget = forget

    async def reap(self, batch: int = 100) -> int:
        """Mark overdue uploads expired and delete their staging bytes; returns how many."""
        reaped = 0
        now = self._clock()
        for upload_id in await self._sessions.expired_ids(now, batch):
            try:
                async with self._locker.hold(upload_id, patient=False):
                    upload = await self._sessions.get(upload_id)
                    if upload is None or not upload.is_overdue(now):
                        continue
                    if await self._sessions.transition(
                        upload_id,
                        from_statuses=[upload.status],
                        to_status=UploadStatus.EXPIRED,
                        now=now,
                    ):
                        await self._staging.delete(upload_id)
                        self._forget(upload_id)
                        reaped += 1
            except Exception as exc:  # a busy or broken row must not stop the sweep
                log.info("reaper skipped %s: %s", upload_id, exc)
        return reaped + await self._sweep_orphans()

    async def run_forever(self, interval: float) -> None:
        """Reap every `interval` seconds; a failed round is logged and retried next time."""
        while True:
            await asyncio.sleep(interval)
            try:
                reaped = await self.reap()
                if reaped:
                    log.info("expired %d upload(s)", reaped)
            except Exception:
                log.exception("upload reaper failed; retrying next interval")

    async def _sweep_orphans(self) -> int:
        """Delete staged files that no session row owns (a crash between writing the bytes of
        a new upload and inserting its row); only files older than a session's lifetime."""
        swept = 0
        for upload_id in await self._staging.stale(self._ttl):
            if await self._sessions.get(upload_id) is None:
                await self._staging.delete(upload_id)
                swept += 1
        return swept
