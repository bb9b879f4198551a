"""tus state transitions: create, append (stream → staging → durable commit), concatenate
(`concat.py` assembles the final), terminate, expire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tusingest.domain import PARTIAL, Checksum, Principal, Upload, UploadStatus
from tusingest.errors import (
    BadRequest,
    BodyInterrupted,
    Conflict,
    Forbidden,
    Gone,
    Locked,
    NotFound,
    PayloadTooLarge,
)
from tusingest.ports import Locker, ReleaseRequest, SessionStore, Staging
from tusingest.randomids import uuid4
from tusingest.store.concat import Concatenation
from tusingest.store.digests import InlineDigests, UploadDigest
from tusingest.store.receive import BufferPool, Receiver

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Upload ids are uuid4 hex; anything else (NUL bytes, huge strings) never reaches the database.
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_upload_id(value: str) -> bool:
    return _UPLOAD_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class UploadPolicy:
    ttl_seconds: float
    max_size: int
    md5: bool = True  # MD5 computed inline beside SHA-256
    max_batch_files: int = 100  # files in one batch upload request
    max_batch_bytes: int = 1 << 30  # bytes of one batch upload request
    body_timeout: float = 60.0  # seconds a request body may send nothing before it is ended


@dataclass(frozen=True)
class Streaming:
    """A request streaming into an upload on this node, as of now."""

    upload: Upload  # as it was when the request began
    received: int  # bytes this request has handed to staging so far
    seconds: float  # since the request began streaming

    @property
    def offset(self) -> int:
        return self.upload.offset + self.received


class UploadStore:
    """The tus state machine over a SessionStore, a Staging area and a Locker."""

    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        locker: Locker,
        policy: UploadPolicy,
        clock: Clock = utcnow,
        on_complete: Callable[[Upload], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self._on_complete = on_complete or (lambda _upload: None)
        self._on_bytes = on_bytes
        self._streaming: dict[str, tuple[Upload, Receiver, float]] = {}
        self._sessions = sessions
        self._staging = staging
        self._locker = locker
        self._policy = policy
        self._clock = clock
        self._digests = InlineDigests(md5=policy.md5)
        self._buffers = BufferPool()
        # Concatenation is a concept of its own: `create_final` is `Concatenation.create_final`.
        self.create_final = Concatenation(
            sessions,
            staging,
            locker,
            find=self.find,
            check_size=self._check_size,
            clock=clock,
            on_complete=self._on_complete,
        ).create_final

    @property
    def policy(self) -> UploadPolicy:
        return self._policy

    def streaming(self) -> list[Streaming]:
        """The requests streaming into uploads on this node now (the operators' live view)."""
        now = time.monotonic()
        return [
            Streaming(upload, receiver.received, now - began)
            for upload, receiver, began in self._streaming.values()
        ]

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._policy.ttl_seconds)

    def _check_size(self, length: int) -> None:
        if length > self._policy.max_size:
            raise PayloadTooLarge(
                f"Upload-Length {length} exceeds the maximum of {self._policy.max_size} bytes"
            )

    async def create(
        self,
        principal: Principal,
        *,
        length: int | None,
        metadata_raw: str | None,
        partial: bool = False,
        address: str | None = None,
    ) -> Upload:
        if length is not None:
            self._check_size(length)
        now = self._clock()
        complete = length == 0
        upload = Upload(
            id=uuid4().hex,
            owner=principal.sub,
            length=length,
            offset=0,
            metadata_raw=metadata_raw,
            status=UploadStatus.COMPLETE if complete else UploadStatus.RECEIVING,
            created_at=now,
            updated_at=now,
            # Partials stay expirable when complete: only a final makes them worth keeping.
            expires_at=None if complete and not partial else self._expiry(now),
            concat=PARTIAL if partial else None,
            client_address=address,
        )
        if length == 0:  # complete at once: its (empty) file must exist to be checked
            await self._staging.create(upload.id)
        await self._sessions.insert(upload)
        if complete and not partial:
            self._on_complete(upload)
        return upload

    async def find(self, principal: Principal, upload_id: str) -> Upload:
        """The upload as `principal` may see it: 404 unknown/foreign/terminated, 410 expired."""
        upload = await self._sessions.get(upload_id) if is_upload_id(upload_id) else None
        return self._visible(principal, upload)

    def _visible(self, principal: Principal, upload: Upload | None) -> Upload:
        if (
            upload is None
            or not principal.may_access(upload.owner)
            or upload.status is UploadStatus.TERMINATED
        ):
            raise NotFound("upload not found")
        if upload.status is UploadStatus.EXPIRED or upload.is_overdue(self._clock()):
            raise Gone("upload expired")
        return upload

    async def current(self, principal: Principal, upload_id: str) -> Upload:
        """Like `find`, but a request streaming into the upload is first asked to commit what
        it has received, so a resuming client sees every byte that arrived (tusd semantics)."""
        found, leased = (
            await self._sessions.get_leased(upload_id) if is_upload_id(upload_id) else (None, False)
        )
        upload = self._visible(principal, found)
        busy = leased or self._locker.held_here(upload_id)
        if upload.status is UploadStatus.RECEIVING and busy:
            async with self._locker.hold(upload_id):
                upload = await self.find(principal, upload_id)
        return upload

    async def append(
        self,
        principal: Principal,
        upload_id: str,
        *,
        offset: int,
        length: int | None,
        content_length: int | None,
        body: AsyncIterator[bytes],
        checksum: Checksum | None = None,
        on_release: ReleaseRequest | None = None,
    ) -> Upload:
        """Apply one PATCH: check, stream the body to staging, fsync, commit the offset."""
        async with self._lease(principal, upload_id, on_release):
            # Read under the lease: another request may have moved the offset meanwhile.
            upload = await self.find(principal, upload_id)
            if upload.is_final:
                raise Forbidden("a final upload cannot be patched", code="final_upload")
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
            return await self._receive(upload, new_length, limit, body, checksum, content_length)

    @contextlib.asynccontextmanager
    async def _lease(
        self, principal: Principal, upload_id: str, on_release: ReleaseRequest | None
    ) -> AsyncIterator[None]:
        """The upload's lease: taken at once when free; when another request holds it, that
        one is asked to release it, but only by someone who may see the upload."""
        if not is_upload_id(upload_id):
            raise NotFound("upload not found")
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(
                    self._locker.hold(upload_id, on_release=on_release, patient=False)
                )
            except Locked:
                await self.find(principal, upload_id)
                await stack.enter_async_context(self._locker.hold(upload_id, on_release=on_release))
            yield

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
        self._check_size(length)
        return length

    async def _receive(
        self,
        upload: Upload,
        new_length: int | None,
        limit: int,
        body: AsyncIterator[bytes],
        checksum: Checksum | None,
        expected: int | None,
    ) -> Upload:
        before = self._digests.take(upload.id, upload.offset)
        running = before.copy() if before is not None else None
        receiver = Receiver(
            lambda: self._staging.writer(upload.id, upload.offset, reserve=new_length),
            self._buffers,
            limit=limit,
            expected=expected,
            digest=running,
            checksum=checksum,
            on_bytes=self._on_bytes,
        )
        kept = False
        self._streaming[upload.id] = (upload, receiver, time.monotonic())
        try:
            try:
                await receiver.receive(body)
                if checksum is not None:
                    await receiver.hashed()
                    receiver.verify()
            except (BodyInterrupted, asyncio.CancelledError):
                if checksum is None:
                    # Keep what arrived: commit it, then let the interruption propagate.
                    kept = True
                    await asyncio.shield(self._commit(upload, receiver, new_length, running))
                raise
            kept = True
            return await self._commit(upload, receiver, new_length, running)
        finally:
            self._streaming.pop(upload.id, None)
            if not kept:
                await asyncio.shield(receiver.settle())
                if receiver.writer is not None:
                    await asyncio.shield(receiver.writer.discard())
                if before is not None:
                    self._digests.put(upload.id, before)
            await asyncio.shield(receiver.settle())
            receiver.release()
            if receiver.writer is not None:
                await receiver.writer.close()

    async def _commit(
        self,
        upload: Upload,
        receiver: Receiver,
        new_length: int | None,
        digest: UploadDigest | None,
    ) -> Upload:
        await asyncio.gather(receiver.durable(), receiver.hashed())
        new_offset = upload.offset + receiver.received
        complete = new_length is not None and new_offset == new_length
        if digest is not None:
            digest.offset = new_offset
        digests = digest.hexdigests() if complete and digest is not None else None
        now = self._clock()
        committed = await self._sessions.advance(
            upload.id,
            expected_offset=upload.offset,
            new_offset=new_offset,
            length=new_length,
            status=UploadStatus.COMPLETE if complete else UploadStatus.RECEIVING,
            now=now,
            expires_at=self._expiry(now) if not complete or upload.is_partial else None,
            digests=digests,
        )
        if committed is None:
            current = await self._sessions.get(upload.id)
            raise Conflict(
                "the upload changed while this request was streaming",
                headers={"Upload-Offset": str(current.offset if current else upload.offset)},
            )
        if digest is not None and not complete:
            self._digests.put(upload.id, digest)
        if complete and not upload.is_partial:
            self._on_complete(committed)
        return committed

    async def finish(
        self, principal: Principal, upload_id: str, *, metadata_raw: str | None = None
    ) -> Upload:
        """Complete a deferred-length upload at the bytes it holds (a form upload whose file
        part has ended), setting `metadata_raw` when given (form fields after the file)."""
        async with self._lease(principal, upload_id, None):
            upload = await self.find(principal, upload_id)
            if upload.status is not UploadStatus.RECEIVING or upload.length is not None:
                raise Conflict("the upload's length is declared already", code="length_declared")
            running = self._digests.take(upload.id, upload.offset)
            if upload.offset == 0:  # an empty file: it must exist to be checked
                await self._staging.create(upload.id)
            now = self._clock()
            committed = await self._sessions.advance(
                upload.id,
                expected_offset=upload.offset,
                new_offset=upload.offset,
                length=upload.offset,
                status=UploadStatus.COMPLETE,
                now=now,
                expires_at=self._expiry(now) if upload.is_partial else None,
                digests=running.hexdigests() if running is not None else None,
                metadata_raw=metadata_raw,
            )
            if committed is None:
                raise Conflict("the upload changed while it was being completed")
            if not upload.is_partial:
                self._on_complete(committed)
            return committed

    async def terminate(self, principal: Principal, upload_id: str) -> None:
        await self.find(principal, upload_id)
        async with self._locker.hold(upload_id):
            await self.find(principal, upload_id)
            await self._sessions.transition(
                upload_id,
                from_statuses=[s for s in UploadStatus if s is not UploadStatus.TERMINATED],
                to_status=UploadStatus.TERMINATED,
                now=self._clock(),
            )
            await self._staging.delete(upload_id)
            self._digests.drop(upload_id)

    def forget(self, upload_id: str) -> None:
        """Drop what this node keeps in memory about an upload (its running digests)."""
        self._digests.drop(upload_id)


async def _has_data(body: AsyncIterator[bytes]) -> bool:
    async for chunk in body:
        if chunk:
            return True
    return False
