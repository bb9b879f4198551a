"""A verdict and its audit note (with the webhook deliveries it brings along) are one
transaction: both or neither, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest

from tests.store.conftest import OpenSessions
from tests.store.test_session_store_contract import T0, new_upload
from tusingest.domain import AuditNote, NewOperation, OperationKind, UploadStatus
from tusingest.store.catalog import SqlCatalog
from tusingest.store.db import Database, Statement
from tusingest.store.sql import SqlSessionStore


class Deliveries:
    """An outbox that brings one webhook delivery along with every note."""

    def __init__(self) -> None:
        self.woken = 0

    def follow(self, note: AuditNote) -> list[NewOperation]:
        return [NewOperation(uuid.uuid4().hex, OperationKind.WEBHOOK, note.subject, {})]

    def queued(self) -> None:
        self.woken += 1


class Unrecordable:
    """Notes whose second statement fails (a table that does not exist)."""

    def __init__(self, catalog: SqlCatalog) -> None:
        self._catalog = catalog
        self.committed = 0

    def noted(self, note: AuditNote) -> Sequence[Statement]:
        return [*self._catalog.noted(note), ("INSERT INTO no_such_table (id) VALUES ($1)", [1])]

    def queued(self, noted: Sequence[Statement]) -> None:
        self.committed += 1


def _note(upload_id: str) -> AuditNote:
    return AuditNote("alice", "file_stored", upload_id, {"size": 10}, outcome="stored")


async def _recorded(db: Database, upload_id: str) -> tuple[int, int]:
    """(audit notes, operations other than ingest) about `upload_id`."""
    notes = await db.fetch("SELECT id FROM audit_events WHERE subject = $1", upload_id)
    ops = await db.fetch(
        "SELECT id FROM operations WHERE subject = $1 AND kind = $2",
        upload_id,
        OperationKind.WEBHOOK.value,
    )
    return len(notes), len(ops)


NOW = T0 + timedelta(seconds=1)


async def _inserted(store: SqlSessionStore) -> str:
    upload = new_upload()
    await store.insert(upload)
    return upload.id


async def _stored(store: SqlSessionStore, upload_id: str) -> bool:
    """The `stored` verdict, with its note."""
    return await store.settle(upload_id, status=UploadStatus.STORED, now=NOW, note=_note(upload_id))


async def _status(store: SqlSessionStore, upload_id: str) -> UploadStatus:
    got = await store.get(upload_id)
    assert got is not None
    return got.status


def test_a_verdict_commits_with_its_note_and_deliveries(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            outbox = Deliveries()
            store = SqlSessionStore(s.db, notes=SqlCatalog(s.db, outbox))
            upload_id = await _inserted(store)
            assert await _stored(store, upload_id)
            assert await _status(store, upload_id) is UploadStatus.STORED
            assert await _recorded(s.db, upload_id) == (1, 1)
            assert outbox.woken == 1

    asyncio.run(scenario())


def test_a_terminated_upload_gets_neither_verdict_nor_note(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            outbox = Deliveries()
            store = SqlSessionStore(s.db, notes=SqlCatalog(s.db, outbox))
            upload_id = await _inserted(store)
            assert await store.transition(
                upload_id,
                from_statuses=[UploadStatus.RECEIVING],
                to_status=UploadStatus.TERMINATED,
                now=NOW,
            )
            assert not await _stored(store, upload_id)
            assert await _status(store, upload_id) is UploadStatus.TERMINATED
            assert await _recorded(s.db, upload_id) == (0, 0)
            assert outbox.woken == 0

    asyncio.run(scenario())


def test_a_note_that_cannot_be_recorded_undoes_its_verdict(sessions: OpenSessions) -> None:
    async def scenario() -> None:
        async with sessions() as s:
            notes = Unrecordable(SqlCatalog(s.db, Deliveries()))
            store = SqlSessionStore(s.db, notes=notes)
            upload_id = await _inserted(store)
            with pytest.raises(Exception, match="no_such_table"):
                await _stored(store, upload_id)
            assert await _status(store, upload_id) is UploadStatus.RECEIVING
            assert await _recorded(s.db, upload_id) == (0, 0)
            assert notes.committed == 0

    asyncio.run(scenario())
