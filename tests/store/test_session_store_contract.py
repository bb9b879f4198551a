"""The SessionStore contract (compare-and-set offsets, queued ingest), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.store.conftest import OpenSessions
from tusingest.domain import FINAL_PREFIX, PARTIAL, Upload, UploadStatus
from tusingest.ports import SessionStore

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
DIGESTS = (hashlib.md5(b"hello").hexdigest(), hashlib.sha256(b"hello").hexdigest())
INGEST = "ingest"


def new_upload(**changes: Any) -> Upload:
    """A fresh receiving upload created at T0, expiring an hour later; `changes` override."""
    upload = Upload(
        id=uuid.uuid4().hex,
        owner="alice",
        length=10,
        offset=0,
        metadata_raw="filename cmVwb3J0LnBkZg==",
        status=UploadStatus.RECEIVING,
        created_at=T0,
        updated_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    return dataclasses.replace(upload, **changes)


async def complete(
    store: SessionStore,
    upload: Upload,
    *,
    expected_offset: int,
    now: datetime = T0,
    expires_at: datetime | None = None,
) -> Upload | None:
    """Advance `upload` from `expected_offset` to its whole length, recording DIGESTS."""
    assert upload.length is not None
    return await store.advance(
        upload.id,
        expected_offset=expected_offset,
        new_offset=upload.length,
        length=upload.length,
        status=UploadStatus.COMPLETE,
        now=now,
        expires_at=expires_at,
        digests=DIGESTS,
    )


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_an_inserted_upload_reads_back_equal_with_utc_timestamps(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            uploads = [
                new_upload(),
                new_upload(length=None, metadata_raw=None, expires_at=None),  # deferred length
                new_upload(concat=PARTIAL, owner="bob"),
            ]
            for upload in uploads:
                await s.store.insert(upload)
            for upload in uploads:
                read = await s.store.get(upload.id)
                assert read == upload
                assert read is not None
                assert is_utc(read.created_at)
                assert is_utc(read.updated_at)
                assert read.expires_at is None or is_utc(read.expires_at)
                assert await s.queued(upload.id) == []  # nothing complete, nothing to ingest

    asyncio.run(scenario())


def test_timestamps_keep_their_instant_whatever_the_offset(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            plus_two = T0.astimezone(timezone(timedelta(hours=2)))
            upload = new_upload(
                created_at=plus_two, updated_at=plus_two, expires_at=plus_two + timedelta(hours=1)
            )
            await s.store.insert(upload)
            read = await s.store.get(upload.id)
            assert read is not None
            assert read.created_at == T0, "the same instant must come back"
            assert is_utc(read.created_at)
            assert read.expires_at == T0 + timedelta(hours=1)
            # ...so expiry compares instants too.
            assert await s.store.expired_ids(T0 + timedelta(minutes=59), 10) == []
            assert await s.store.expired_ids(T0 + timedelta(hours=1), 10) == [upload.id]

    asyncio.run(scenario())


def test_an_unknown_upload_is_none(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            await s.store.insert(new_upload())
            assert await s.store.get(uuid.uuid4().hex) is None

    asyncio.run(scenario())


def test_advance_moves_a_receiving_upload_from_the_expected_offset(
    sessions: OpenSessions,
) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(length=None)
            await s.store.insert(upload)
            later = T0 + timedelta(seconds=5)
            advanced = await s.store.advance(
                upload.id,
                expected_offset=0,
                new_offset=4,
                length=10,
                status=UploadStatus.RECEIVING,
                now=later,
                expires_at=later + timedelta(hours=1),
            )
            expected = dataclasses.replace(
                upload,
                offset=4,
                length=10,
                updated_at=later,
                expires_at=later + timedelta(hours=1),
            )
            assert advanced == expected
            assert advanced is not None
            assert is_utc(advanced.updated_at)
            assert await s.store.get(upload.id) == expected
            assert await s.queued(upload.id) == []

    asyncio.run(scenario())


def test_advance_from_a_wrong_offset_changes_nothing(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(offset=3)
            await s.store.insert(upload)
            for wrong in (0, 2, 4, 10):
                result = await s.store.advance(
                    upload.id,
                    expected_offset=wrong,
                    new_offset=10,
                    length=10,
                    status=UploadStatus.COMPLETE,
                    now=T0 + timedelta(seconds=1),
                    expires_at=None,
                    digests=DIGESTS,
                )
                assert result is None
            assert await s.store.get(upload.id) == upload
            assert await s.queued(upload.id) == []

    asyncio.run(scenario())


def test_advance_applies_only_to_receiving_uploads(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(offset=3)
            await s.store.insert(upload)
            assert await s.store.transition(
                upload.id,
                from_statuses=[UploadStatus.RECEIVING],
                to_status=UploadStatus.TERMINATED,
                now=T0,
            )
            terminated = await s.store.get(upload.id)
            result = await s.store.advance(
                upload.id,
                expected_offset=3,
                new_offset=5,
                length=10,
                status=UploadStatus.RECEIVING,
                now=T0 + timedelta(seconds=1),
                expires_at=None,
            )
            assert result is None
            assert await s.store.get(upload.id) == terminated
            missing = await s.store.advance(
                uuid.uuid4().hex,
                expected_offset=0,
                new_offset=5,
                length=10,
                status=UploadStatus.RECEIVING,
                now=T0,
                expires_at=None,
            )
            assert missing is None

    asyncio.run(scenario())


def test_concurrent_advances_from_one_offset_have_one_winner(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(length=100)
            await s.store.insert(upload)
            results = await asyncio.gather(
                *(
                    s.store.advance(
                        upload.id,
                        expected_offset=0,
                        new_offset=step,
                        length=100,
                        status=UploadStatus.RECEIVING,
                        now=T0 + timedelta(seconds=step),
                        expires_at=None,
                    )
                    for step in (10, 20, 30, 40)
                )
            )
            winners = [result for result in results if result is not None]
            assert len(winners) == 1
            assert await s.store.get(upload.id) == winners[0]

    asyncio.run(scenario())


def test_concurrent_completions_queue_one_ingest(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(length=10, offset=5)
            await s.store.insert(upload)
            results = await asyncio.gather(
                *(
                    s.store.advance(
                        upload.id,
                        expected_offset=5,
                        new_offset=10,
                        length=10,
                        status=UploadStatus.COMPLETE,
                        now=T0 + timedelta(seconds=1),
                        expires_at=None,
                        digests=DIGESTS,
                    )
                    for _ in range(3)
                )
            )
            assert sum(result is not None for result in results) == 1
            assert await s.queued(upload.id) == [(INGEST, upload.id, "queued")]

    asyncio.run(scenario())


def test_completion_records_the_digests_and_queues_one_ingest(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(length=10, offset=4)
            other = new_upload()
            await s.store.insert(upload)
            await s.store.insert(other)
            done = T0 + timedelta(seconds=9)
            completed = await complete(s.store, upload, expected_offset=4, now=done)
            expected = dataclasses.replace(
                upload,
                offset=10,
                status=UploadStatus.COMPLETE,
                updated_at=done,
                expires_at=None,
                md5=DIGESTS[0],
                sha256=DIGESTS[1],
            )
            assert completed == expected
            assert await s.store.get(upload.id) == expected
            assert await s.queued(upload.id) == [(INGEST, upload.id, "queued")]
            assert await s.queued(other.id) == []
            # A completed upload is no longer receiving: a replay of the same step is refused.
            again = await complete(s.store, upload, expected_offset=4, now=done)
            assert again is None
            assert await s.queued(upload.id) == [(INGEST, upload.id, "queued")]

    asyncio.run(scenario())


def test_a_completed_partial_queues_no_ingest(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            part = new_upload(concat=PARTIAL, length=10)
            await s.store.insert(part)
            expires = T0 + timedelta(hours=2)
            completed = await complete(s.store, part, expected_offset=0, expires_at=expires)
            expected = dataclasses.replace(
                part,
                offset=10,
                status=UploadStatus.COMPLETE,
                expires_at=expires,
                md5=DIGESTS[0],
                sha256=DIGESTS[1],
            )
            assert completed == expected
            assert await s.store.get(part.id) == expected
            assert await s.queued(part.id) == []

    asyncio.run(scenario())


def test_an_upload_complete_at_creation_queues_its_ingest(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            empty = new_upload(length=0, status=UploadStatus.COMPLETE, expires_at=None)
            final = new_upload(
                length=20,
                offset=20,
                status=UploadStatus.COMPLETE,
                expires_at=None,
                concat=f"{FINAL_PREFIX}/files/a /files/b",
            )
            empty_part = new_upload(length=0, status=UploadStatus.COMPLETE, concat=PARTIAL)
            for upload in (empty, final, empty_part):
                await s.store.insert(upload)
                assert await s.store.get(upload.id) == upload
            assert await s.queued(empty.id) == [(INGEST, empty.id, "queued")]
            assert await s.queued(final.id) == [(INGEST, final.id, "queued")]
            assert await s.queued(empty_part.id) == []

    asyncio.run(scenario())


def test_settle_records_the_pipeline_verdict(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload(length=10)
            rejected = new_upload(length=10)
            for row in (upload, rejected):
                await s.store.insert(row)
            t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
            await s.store.settle(upload.id, status=UploadStatus.PROCESSING, now=t1)
            assert await s.store.get(upload.id) == dataclasses.replace(
                upload, status=UploadStatus.PROCESSING, updated_at=t1
            )
            file_id = str(uuid.uuid4())
            await s.store.settle(
                upload.id, status=UploadStatus.STORED, now=t2, file_id=file_id, digests=DIGESTS
            )
            stored = await s.store.get(upload.id)
            assert stored == dataclasses.replace(
                upload,
                status=UploadStatus.STORED,
                updated_at=t2,
                file_id=file_id,
                md5=DIGESTS[0],
                sha256=DIGESTS[1],
            )
            await s.store.settle(
                rejected.id,
                status=UploadStatus.REJECTED,
                now=t2,
                error="virus_detected",
                detail="Eicar-Test-Signature",
            )
            assert await s.store.get(rejected.id) == dataclasses.replace(
                rejected,
                status=UploadStatus.REJECTED,
                updated_at=t2,
                error="virus_detected",
                error_detail="Eicar-Test-Signature",
            )
            assert await s.store.get(upload.id) == stored  # the other row is untouched

    asyncio.run(scenario())


def test_transition_moves_only_from_the_listed_statuses(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload()
            await s.store.insert(upload)
            t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
            moved = await s.store.transition(
                upload.id,
                from_statuses=[UploadStatus.COMPLETE, UploadStatus.PROCESSING],
                to_status=UploadStatus.EXPIRED,
                now=t1,
            )
            assert moved is False
            assert await s.store.get(upload.id) == upload
            moved = await s.store.transition(
                upload.id,
                from_statuses=[UploadStatus.COMPLETE, UploadStatus.RECEIVING],
                to_status=UploadStatus.EXPIRED,
                now=t1,
            )
            assert moved is True
            expired = dataclasses.replace(upload, status=UploadStatus.EXPIRED, updated_at=t1)
            assert await s.store.get(upload.id) == expired
            moved = await s.store.transition(
                upload.id,
                from_statuses=[UploadStatus.RECEIVING],
                to_status=UploadStatus.TERMINATED,
                now=t2,
            )
            assert moved is False
            assert await s.store.get(upload.id) == expired
            unknown = await s.store.transition(
                uuid.uuid4().hex,
                from_statuses=list(UploadStatus),
                to_status=UploadStatus.TERMINATED,
                now=t2,
            )
            assert unknown is False

    asyncio.run(scenario())


def test_expired_ids_lists_overdue_receiving_uploads_and_unused_partials(
    sessions: OpenSessions,
) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            now = T0 + timedelta(days=1)

            def expiring(minutes: float, **changes: Any) -> Upload:
                return new_upload(expires_at=now + timedelta(minutes=minutes), **changes)

            complete = {"length": 0, "status": UploadStatus.COMPLETE}
            overdue_3 = expiring(-3)
            overdue_1 = expiring(-1)
            partial_2 = expiring(-2, concat=PARTIAL, **complete)
            due_now = expiring(0)
            rows = [
                overdue_1,
                expiring(1),  # not yet
                partial_2,
                expiring(-4, **complete),  # complete, not a partial: it is being ingested
                overdue_3,
                expiring(-5, status=UploadStatus.PROCESSING),
                new_upload(expires_at=None),
                due_now,
            ]
            stored = expiring(-6)
            terminated = expiring(-7)
            for row in [*rows, stored, terminated]:
                await s.store.insert(row)
            await s.store.settle(stored.id, status=UploadStatus.STORED, now=now)
            await s.store.transition(
                terminated.id,
                from_statuses=[UploadStatus.RECEIVING],
                to_status=UploadStatus.TERMINATED,
                now=now,
            )
            expected = [overdue_3.id, partial_2.id, overdue_1.id, due_now.id]  # by expiry
            assert await s.store.expired_ids(now, 100) == expected
            # The same set the domain calls overdue.
            overdue = [row for row in rows if row.is_overdue(now)]
            assert sorted(row.id for row in overdue) == sorted(expected)
            assert await s.store.expired_ids(now, 2) == expected[:2]
            assert await s.store.expired_ids(now - timedelta(minutes=10), 100) == []

    asyncio.run(scenario())


def test_ping_answers(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            await asyncio.wait_for(s.store.ping(), 5)
            upload = new_upload()
            await s.store.insert(upload)
            await asyncio.wait_for(s.store.ping(), 5)
            assert await s.store.get(upload.id) == upload

    asyncio.run(scenario())


def test_get_leased_reports_a_live_lease_recorded_in_the_database(
    sessions: OpenSessions,
) -> None:
    """The read HEAD makes: the upload and, in the same query, whether a lease is recorded
    (the PostgreSQL locker keeps its leases in `upload_locks`)."""

    async def scenario() -> None:
        async with sessions() as s:
            upload = new_upload()
            await s.store.insert(upload)
            assert await s.store.get_leased(upload.id) == (upload, False)
            assert await s.store.get_leased(uuid.uuid4().hex) == (None, False)
            later = datetime.now(UTC) + timedelta(minutes=1)
            await s.db.execute(
                "INSERT INTO upload_locks (key, holder, expires_at) VALUES ($1, 'x', $2)",
                upload.id,
                later,
            )
            assert await s.store.get_leased(upload.id) == (upload, True)
            await s.db.execute(
                "UPDATE upload_locks SET expires_at = $1 WHERE key = $2",
                datetime.now(UTC) - timedelta(seconds=1),
                upload.id,
            )
            assert await s.store.get_leased(upload.id) == (upload, False)  # lapsed

    asyncio.run(scenario())
