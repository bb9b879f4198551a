"""The operators' status queries on SQLite and PostgreSQL: the queue by state (a queued
operation with an error is retrying), uploads receiving (expired ones left out), verdicts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.store.conftest import OpenSessions
from tusingest.domain import AuditNote, OperationKind, Upload, UploadStatus
from tusingest.store.catalog import SqlCatalog
from tusingest.store.operations import SqlOperationStore
from tusingest.store.status import SqlStatusQueries


def _upload(upload_id: str, *, updated: datetime, expires: datetime) -> Upload:
    return Upload(
        id=upload_id,
        owner="alice",
        length=100,
        offset=10,
        metadata_raw="filename PHNjcmlwdD4uYmlu",  # "<script>.bin"
        status=UploadStatus.RECEIVING,
        created_at=updated,
        updated_at=updated,
        expires_at=expires,
    )


def test_the_queue_by_state(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            await s.db.execute("DELETE FROM audit_events")
            operations = SqlOperationStore(s.db)
            status = SqlStatusQueries(s.db)
            for n, kind in enumerate((OperationKind.INGEST, OperationKind.DISCARD)):
                await operations.enqueue(f"{n}" * 32, kind, f"subject-{n}", {})
            await operations.enqueue("9" * 32, OperationKind.DELETE, "gone", {})
            (first,) = await operations.claim("node-1", 30, 1, kinds={OperationKind.INGEST})
            await operations.retry(first, "node-1", "element down", 60)
            (second,) = await operations.claim("node-1", 30, 1, kinds={OperationKind.DISCARD})
            (third,) = await operations.claim("node-1", 30, 1, kinds={OperationKind.DELETE})
            await operations.fail(third, "node-1", "gave up")

            counts, items = await status.queue(10)
            assert counts == {"queued": 0, "retrying": 1, "running": 1, "failed": 1}
            by_id = {item.id: item for item in items}
            assert by_id[first.id].error == "element down"
            assert by_id[first.id].attempts == 1
            assert by_id[second.id].status.value == "running"
            assert by_id[third.id].error == "gave up"
            await operations.finish(second, "node-1", {})
            counts, items = await status.queue(10)
            assert counts["running"] == 0
            assert second.id not in {item.id for item in items}

    asyncio.run(scenario())


def test_uploads_receiving_and_the_latest_verdicts(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            await s.db.execute("DELETE FROM audit_events")
            now = datetime.now(UTC)
            status = SqlStatusQueries(s.db)
            older = _upload(
                "a" * 32, updated=now - timedelta(minutes=5), expires=now + timedelta(hours=1)
            )
            newer = _upload("b" * 32, updated=now, expires=now + timedelta(hours=2))
            expired = _upload("c" * 32, updated=now, expires=now - timedelta(seconds=1))
            for upload in (older, newer, expired):
                await s.store.insert(upload)
            listed = await status.receiving(now, 10)
            assert [(u.id, leased) for u, leased in listed] == [
                (newer.id, False),
                (older.id, False),
            ]
            assert listed[0][0].metadata_raw == newer.metadata_raw

            catalog = SqlCatalog(s.db)
            await catalog.audit(AuditNote("alice", "upload_rejected", older.id, {"code": "x"}))
            await catalog.audit(AuditNote("alice", "file_deleted", "f-1", {}))
            await catalog.audit(AuditNote("bob", "file_stored", "f-2", {"size": 5}))
            events = await status.outcomes(10)
            assert [(e.action, e.subject) for e in events] == [
                ("file_stored", "f-2"),
                ("upload_rejected", older.id),
            ]
            found = await status.uploads([older.id, "d" * 32])
            assert list(found) == [older.id]

    asyncio.run(scenario())
