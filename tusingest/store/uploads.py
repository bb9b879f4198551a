"""tus state transitions: create, append (stream → staging → durable commit), terminate, expire."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tusingest.domain import Principal, Upload, UploadStatus
from tusingest.errors import (
    BadRequest,
    BodyInterrupted,
    Conflict,
    Gone,
    NotFound,
    PayloadTooLarge,
)
from tusingest.ports import Locker, SessionStore, Staging, StagingWriter

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Upload ids are uuid4 hex; anything else (NUL bytes, huge strings) never reaches the database.
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UploadPolicy:
    ttl_seconds: float
    max_size: int
    lock_timeout: float


class UploadStore:
    """The tus state machine over a SessionStore, a Staging area and a Locker."""

    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        locker: Locker,
        policy: UploadPolicy,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._staging = staging
        self._locker = locker
        self._policy = policy
        self._clock = clock

    @property
    def policy(self) -> UploadPolicy:
        return self._policy

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._policy.ttl_seconds)

    async def create(
        self, principal: Principal, *, length: int | None, metadata_raw: str | None
    ) -> Upload:
        if length is not None and length > self._policy.max_size:
            raise PayloadTooLarge(
                f"Upload-Length {length} exceeds the maximum of {self._policy.max_size} bytes"
            )
        now = self._clock()
        complete = length == 0
        upload = Upload(
            id=uuid.uuid4().hex,
            owner=principal.sub,
            length=length,
            offset=0,
            metadata_raw=metadata_raw,
            status=UploadStatus.COMPLETE if complete else UploadStatus.RECEIVING,
            created_at=now,
            updated_at=now,
            expires_at=None if complete else self._expiry(now),
        )
        await self._staging.create(upload.id)
        await self._sessions.insert(upload)
        return upload

    async def find(self, principal: Principal, upload_id: str) -> Upload:
        """The upload as `principal` may see it: 404 unknown/foreign/terminated, 410 expired."""
        upload = await self._sessions.get(upload_id) if _UPLOAD_ID.fullmatch(upload_id) else None
        if (
            upload is None
            or not principal.may_access(upload.owner)
            or upload.status is UploadStatus.TERMINATED
        ):
            raise NotFound("upload not found")
        if upload.status is UploadStatus.EXPIRED or self._is_overdue(upload, self._clock()):
            raise Gone("upload expired")
        return upload

    @staticmethod
    def _is_overdue(upload: Upload, now: datetime) -> bool:
        return (
            upload.status is UploadStatus.RECEIVING
            and upload.expires_at is not None
            and upload.expires_at <= now
        )

    async def append(
        self,
        principal: Principal,
        upload_id: str,
        *,
        offset: int,
        length: int | None,
        content_length: int | None,
        body: AsyncIterator[bytes],
    ) -> Upload:
        """Apply one PATCH: check, stream the body to staging, fsync, commit the offset."""
        await self.find(principal, upload_id)
        async with self._locker.hold(upload_id, self._policy.lock_timeout):
            # Re-read under the lock: another request may have moved the offset meanwhile.
            upload = await self.find(principal, upload_id)
            if offset != upload.offset:
                raise Conflict(
                    f"Upload-Offset {offset} does not match the current offset {upload.offset}",
                    headers={"Upload-Offset": str(upload.offset)},
                )
            new_length = self._check_length(upload, length)
            limit = (new_length if new_length is not None else self._policy.max_size) - offset
            if content_length is not None and content_length > limit:
                raise PayloadTooLarge(
                    f"the body ({content_length} bytes) goes past the upload length"
                )
            if upload.status is not UploadStatus.RECEIVING:
                # Complete already: only an empty PATCH is meaningful (it reads the state).
                if await _has_data(body):
                    raise PayloadTooLarge("the upload is already complete")
                return upload
            return await self._receive(upload, new_length, limit, body)

    def _check_length(self, upload: Upload, length: int | None) -> int | None:
        if length is None:
            return upload.length
        if upload.length is not None:
            if length != upload.length:
                raise BadRequest(
                    f"Upload-Length {length} differs from the declared {upload.length}",
                    code="length_mismatch",
                )
            return length
        if length < upload.offset:
            raise BadRequest(
                f"Upload-Length {length} is below the current offset {upload.offset}",
                code="length_below_offset",
            )
        if length > self._policy.max_size:
            raise PayloadTooLarge(
                f"Upload-Length {length} exceeds the maximum of {self._policy.max_size} bytes"
            )
        return length

    async def _receive(
        self,
        upload: Upload,
        new_length: int | None,
        limit: int,
        body: AsyncIterator[bytes],
    ) -> Upload:
        writer: StagingWriter | None = None
        try:
            try:
                async for chunk in body:
                    if not chunk:
                        continue
                    if writer is None:
                        writer = await self._staging.writer(upload.id, upload.offset)
                    if writer.written + len(chunk) > limit:
                        await writer.discard()
                        raise PayloadTooLarge("the body goes past the upload length")
                    await writer.write(chunk)
            except (BodyInterrupted, asyncio.CancelledError):
                # Keep what arrived: commit it, then let the interruption propagate.
                await asyncio.shield(self._commit(upload, writer, new_length))
                raise
            return await self._commit(upload, writer, new_length)
        finally:
            if writer is not None:
                await writer.close()

    async def _commit(
        self, upload: Upload, writer: StagingWriter | None, new_length: int | None
    ) -> Upload:
        received = 0
        if writer is not None:
            await writer.sync()
            received = writer.written
        new_offset = upload.offset + received
        complete = new_length is not None and new_offset == new_length
        now = self._clock()
        committed = await self._sessions.advance(
            upload.id,
            expected_offset=upload.offset,
            new_offset=new_offset,
            length=new_length,
            status=UploadStatus.COMPLETE if complete else UploadStatus.RECEIVING,
            now=now,
            expires_at=None if complete else self._expiry(now),
        )
        if committed is None:
            current = await self._sessions.get(upload.id)
            raise Conflict(
                "the upload changed while this request was streaming",
                headers={"Upload-Offset": str(current.offset if current else upload.offset)},
            )
        return committed

    async def terminate(self, principal: Principal, upload_id: str) -> None:
        await self.find(principal, upload_id)
        async with self._locker.hold(upload_id, self._policy.lock_timeout):
            await self.find(principal, upload_id)
            await self._sessions.transition(
                upload_id,
                from_statuses=[s for s in UploadStatus if s is not UploadStatus.TERMINATED],
                to_status=UploadStatus.TERMINATED,
                now=self._clock(),
            )
            await self._staging.delete(upload_id)

    async def reap_expired(self, batch: int = 100) -> int:
        """Mark overdue uploads expired and delete their staging bytes; returns how many."""
        reaped = 0
        now = self._clock()
        for upload_id in await self._sessions.expired_ids(now, batch):
            try:
                async with self._locker.hold(upload_id, 0):
                    upload = await self._sessions.get(upload_id)
                    if upload is None or not self._is_overdue(upload, now):
                        continue
                    if await self._sessions.transition(
                        upload_id,
                        from_statuses=[UploadStatus.RECEIVING],
                        to_status=UploadStatus.EXPIRED,
                        now=now,
                    ):
                        await self._staging.delete(upload_id)
                        reaped += 1
            except Exception as exc:  # a busy or broken row must not stop the sweep
                log.info("reaper skipped %s: %s", upload_id, exc)
        return reaped


async def _has_data(body: AsyncIterator[bytes]) -> bool:
    async for chunk in body:
        if chunk:
            return True
    return False
