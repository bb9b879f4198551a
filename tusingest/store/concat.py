"""tus concatenation: a final upload assembled from an owner's complete partials, the same final
for the same parts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from tusingest.domain import FINAL_PREFIX, Principal, Upload, UploadStatus
from tusingest.errors import BadRequest, Gone, NotFound
from tusingest.ports import Locker, SessionStore, Staging
from tusingest.randomids import uuid4

# A final in one of these states is not given out again: the same parts make a new one.
_GONE = (UploadStatus.TERMINATED, UploadStatus.EXPIRED)

Find = Callable[[Principal, str], Awaitable[Upload]]


def _final_id(owner: str, part_ids: Sequence[str]) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tusingest:final/{owner}/{','.join(part_ids)}").hex


class Concatenation:
    """Final uploads made of partials, for the `UploadStore`: `find` is its view of an upload
    (404/410), `check_size` its size limit, `on_complete` its announcement of a complete upload."""

    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        locker: Locker,
        *,
        find: Find,
        check_size: Callable[[int], None],
        clock: Callable[[], datetime],
        on_complete: Callable[[Upload], None],
    ) -> None:
        self._sessions = sessions
        self._staging = staging
        self._locker = locker
        self._find = find
        self._check_size = check_size
        self._clock = clock
        self._on_complete = on_complete

    async def create_final(
        self,
        principal: Principal,
        *,
        concat: str,
        part_ids: Sequence[tuple[str, str]],
        metadata_raw: str | None,
        address: str | None = None,
    ) -> Upload:
        """Concatenate complete partials (`(url, id)` in order) into a new, complete upload;
        the same owner and parts in the same order give the same final again (unless it was
        terminated or expired: then a new one). The partials stay until their own expiry.

        The partials' leases are held from the check to the final's creation, so a DELETE, the
        reaper or another final cannot take a partial away halfway (ids in sorted order: no
        deadlock).
        """
        # Check before taking leases: a bad reference must not disturb another upload's holder.
        for url, part_id in part_ids:
            await self._part(principal, url, part_id)
        async with contextlib.AsyncExitStack() as leases:
            for part_id in sorted({part_id for _, part_id in part_ids}):
                await leases.enter_async_context(self._locker.hold(part_id))
            parts = [await self._part(principal, url, part_id) for url, part_id in part_ids]
            # The same parts in the same order make the same final: a client whose answer was
            # lost retries and gets the upload it created (one file, not two).
            final_id = _final_id(principal.sub, [p.id for p in parts])
            earlier = await self._sessions.get(final_id)
            if earlier is not None and earlier.status not in _GONE:
                return earlier
            length = sum(part.length or 0 for part in parts)
            self._check_size(length)
            now = self._clock()
            final = Upload(
                id=final_id if earlier is None else uuid4().hex,
                owner=principal.sub,
                length=length,
                offset=length,
                metadata_raw=metadata_raw,
                status=UploadStatus.COMPLETE,
                created_at=now,
                updated_at=now,
                expires_at=None,
                concat=FINAL_PREFIX + concat,
                client_address=address,
            )
            # Bytes first, durably; the row makes them visible. A crash in between leaves a
            # file without a row, which the staging sweep removes.
            try:
                await self._staging.assemble(final.id, [(p.id, p.length or 0) for p in parts])
            except BaseException:
                await asyncio.shield(self._staging.delete(final.id))  # no half-built final
                raise
            await self._sessions.insert(final)
            # The partials stay until their own expiry: the final may be asked for again.
        self._on_complete(final)
        return final

    async def _part(self, principal: Principal, url: str, part_id: str) -> Upload:
        """The complete partial `url` refers to; 400 naming the URL otherwise."""
        try:
            part = await self._find(principal, part_id)
        except (NotFound, Gone):
            raise BadRequest(
                f"Upload-Concat references {url}, which is not an upload of yours",
                code="invalid_concat_part",
            ) from None
        if not part.is_partial:
            raise BadRequest(
                f"Upload-Concat references {url}, which is not a partial upload",
                code="invalid_concat_part",
            )
        if part.status is not UploadStatus.COMPLETE or part.length is None:
            raise BadRequest(
                f"Upload-Concat references {url}, which is not complete",
                code="concat_part_incomplete",
            )
        return part
