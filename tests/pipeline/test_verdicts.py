"""A completing request waits for its upload's verdict: handed the upload as committed when
this node decides it (no read of the row back), and reading the row when it was decided
elsewhere, or before the request began to wait."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.store.test_session_store_contract import DIGESTS, complete, new_upload
from tusingest.domain import Upload, UploadStatus
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.verdicts import Verdicts
from tusingest.store.database import open_checked
from tusingest.store.operations import SqlOperationStore
from tusingest.store.sql import SqlSessionStore


@dataclasses.dataclass
class CountingSessions:
    """A SessionStore that counts the rows read back (`get`), over the real one."""

    store: SqlSessionStore
    reads: int = 0

    async def get(self, upload_id: str) -> Upload | None:
        self.reads += 1
        return await self.store.get(upload_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_verdict_decided_here_reaches_the_waiting_request_without_a_read(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        db = await open_checked(f"sqlite+aiosqlite:///{tmp_path / 'verdicts.db'}")
        try:
            store = SqlSessionStore(db)
            sessions = CountingSessions(store)
            runner = Runner(
                SqlOperationStore(db),
                {},
                RunnerPolicy(max_attempts=1, attempt_timeout=1, lease_seconds=1),
            )
            verdicts = Verdicts(runner, sessions, wait_seconds=5, retry_after=1)

            async def completed() -> Upload:
                upload = new_upload()
                await store.insert(upload)
                done = await complete(store, upload, expected_offset=0)
                assert done is not None
                assert done.status is UploadStatus.COMPLETE
                return done

            upload = await completed()
            stored = await store.settle(
                upload.id,
                status=UploadStatus.STORED,
                now=datetime.now(UTC),
                file_id="f-1",
                digests=DIGESTS,
            )
            assert stored is not None
            assert stored.status is UploadStatus.STORED
            # The request still holds the upload as it completed it, and waits; the verdict
            # reaches it at once (long before its first look at the row, a quarter second on).
            waiting = asyncio.create_task(verdicts.settle(upload))
            await asyncio.sleep(0)
            assert not waiting.done()
            verdicts.decided(stored)
            answered = await asyncio.wait_for(waiting, 2)
            assert answered == stored
            assert answered == await store.get(upload.id)
            assert sessions.reads == 0

            # Decided before anyone waited: not kept; the request that comes later reads
            # the row (within the quarter second it waits between looks).
            early = await completed()
            decided = await store.settle(
                early.id, status=UploadStatus.REJECTED, now=early.created_at
            )
            assert decided is not None
            verdicts.decided(decided)
            late = await asyncio.wait_for(verdicts.settle(early), 2)
            assert late.status is UploadStatus.REJECTED
            assert sessions.reads == 1
        finally:
            await db.close()

    asyncio.run(scenario())
