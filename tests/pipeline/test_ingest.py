"""The ingest operation end to end on real stores: SQLite and PostgreSQL sessions, the local
storage element on disk, real clamd, and the durable runner."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.samples import EICAR, PDF, clamd_url
from tusingest.domain import (
    CapacityStatus,
    ElementInfo,
    ElementMode,
    OperationKind,
    Principal,
    Role,
    ScanResult,
    Upload,
    UploadStatus,
)
from tusingest.elements.directory import ElementDirectory
from tusingest.elements.local import LocalElement
from tusingest.observability import PrometheusMetrics
from tusingest.pipeline.discard import Discard
from tusingest.pipeline.ingest import Ingest, IngestPolicy
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.saga import SagaPolicy, StoreSaga
from tusingest.pipeline.scan import ClamdScanner
from tusingest.ports import Scanner
from tusingest.registry.chain import ChainRegistry
from tusingest.registry.memory import MemoryRegistry
from tusingest.settings.app import Settings
from tusingest.settings.env import Env
from tusingest.settings.pipeline import parse_compression, parse_validation
from tusingest.settings.storage import BreakerSettings
from tusingest.store import schema
from tusingest.store.catalog import SqlCatalog
from tusingest.store.db import Database, open_database
from tusingest.store.locks import MemoryLocker
from tusingest.store.operations import SqlOperationStore
from tusingest.store.sql import SqlSessionStore
from tusingest.store.staging import FileStaging
from tusingest.store.uploads import UploadPolicy, UploadStore

ALICE = Principal(sub="alice", name="Alice", role=Role.USER)


@dataclass
class Rig:
    uploads: UploadStore
    sessions: SqlSessionStore
    db: Database
    element_root: Path
    staging: Path
    runner: Runner
    element: LocalElement
    registry: MemoryRegistry

    async def upload(self, data: bytes, **meta: str) -> Upload:
        raw = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        upload = await self.uploads.create(ALICE, length=len(data), metadata_raw=raw or None)

        async def body() -> AsyncIterator[bytes]:
            yield data

        if data:
            upload = await self.uploads.append(
                ALICE, upload.id, offset=0, length=None, content_length=len(data), body=body()
            )
        self.runner.wake()
        return upload

    async def settled(self, upload: Upload) -> Upload:
        for _ in range(200):
            current = await self.sessions.get(upload.id)
            assert current is not None
            if current.status in (
                UploadStatus.STORED,
                UploadStatus.REJECTED,
                UploadStatus.FAILED,
            ):
                return current
            await asyncio.sleep(0.05)
        pytest.fail(f"upload {upload.id} never settled")


def local_info(root: Path) -> ElementInfo:
    """The local element as the embedded registry lists it (temporary files)."""
    return ElementInfo(
        element_id="se-local",
        mode=ElementMode.EDIT,
        priority=100,
        endpoint=root.as_uri(),
        capacity_total=1 << 40,
        capacity_used=0,
        capacity_free=1 << 40,
        status=CapacityStatus.OK,
        healthy=True,
    )


@asynccontextmanager
async def rig(
    url: str,
    root: Path,
    scanner_url: str | Scanner | None,
    *,
    max_attempts: int = 3,
    empty: bool = False,
    decided: Callable[[Upload], None] | None = None,
) -> AsyncIterator[Rig]:
    await schema.upgrade(url)
    db = await open_database(url)
    catalog = SqlCatalog(db)
    sessions = SqlSessionStore(db, notes=catalog)
    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    uploads = UploadStore(
        sessions, FileStaging(staging), MemoryLocker(5), UploadPolicy(3600, 1 << 30)
    )
    element = LocalElement(root / "se", "se-local")
    operations = SqlOperationStore(db)
    registry = MemoryRegistry([] if empty else [local_info(element.root)])
    elements = ElementDirectory(None, None, BreakerSettings())
    saga = StoreSaga(
        ChainRegistry([("memory", registry)]),
        elements,
        operations,
        PrometheusMetrics(),
        SagaPolicy(thresholds={}, retry_after=1),
    )
    ingest = Ingest(
        sessions,
        FileStaging(staging),
        catalog,
        saga,
        None,
        ClamdScanner(scanner_url, timeout=5) if isinstance(scanner_url, str) else scanner_url,
        IngestPolicy(
            validation=parse_validation(Env({"ALLOWED_MIME_TYPES": "*"}), 1 << 30),
            compression=parse_compression(Env({})),
            workdir=staging,
        ),
        decided=decided,
    )
    runner = Runner(
        operations,
        {
            OperationKind.INGEST: ingest,
            OperationKind.DISCARD: Discard(elements, SqlCatalog(db), PrometheusMetrics(), 0.1),
        },
        RunnerPolicy(max_attempts=max_attempts, attempt_timeout=30, lease_seconds=30,
                     poll_seconds=0.1, base_delay=0.05, max_delay=0.1),
    )  # fmt: skip
    task = asyncio.create_task(runner.run_forever())
    try:
        yield Rig(uploads, sessions, db, root / "se", staging, runner, element, registry)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()


@pytest.fixture(params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path: Path, new_pg_database: Callable[[], str]
) -> str:
    raw = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else new_pg_database()
    return Settings.from_env({"DATABASE_URL": raw}).database.url


def _stored_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not p.name.endswith(".json")
        and not p.relative_to(root).parts[0].startswith(".")
    )


def test_a_clean_pdf_is_stored_with_its_attr_json(database: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, clamd_url()) as r:
            upload = await r.upload(PDF, filename="report.pdf", filetype="text/plain")
            done = await r.settled(upload)
            assert done.status is UploadStatus.STORED, (done.error, done.error_detail)
            assert done.file_id is not None
            assert done.sha256 == hashlib.sha256(PDF).hexdigest()
            assert done.md5 == hashlib.md5(PDF).hexdigest()
            [stored] = _stored_files(r.element_root)
            assert stored.read_bytes() == PDF
            assert stored.name.startswith("report_alice_")
            assert stored.name.endswith(".pdf")
            attr = json.loads(stored.with_name(stored.name + ".attr.json").read_text())
            assert attr["file_id"] == done.file_id
            assert attr["content_type"] == "application/pdf"  # detected, not declared
            assert attr["checksum"] == hashlib.sha256(PDF).hexdigest()
            assert attr["metadata"]["upload_id"] == upload.id
            assert not (r.staging / upload.id).exists()

    asyncio.run(scenario())


def test_the_verdict_is_announced_with_its_note_before_the_cleanup(tmp_path: Path) -> None:
    """The completing request hears of the verdict once it and its `file_stored` note are
    committed, before the staged bytes' removal and the operation's end, and is handed the
    upload exactly as committed (it need not read the row back)."""
    path = tmp_path / "db.sqlite"
    seen: list[tuple[str, str, int, bool]] = []
    handed: list[Upload] = []

    def decided(upload: Upload) -> None:
        conn = sqlite3.connect(path)
        try:
            [status] = conn.execute("SELECT status FROM uploads WHERE id = ?", (upload.id,))
            [notes] = conn.execute("SELECT count(*) FROM audit_events WHERE action = 'file_stored'")
        finally:
            conn.close()
        staged = (tmp_path / "staging" / upload.id).exists()
        seen.append((upload.id, status[0], notes[0], staged))
        handed.append(upload)

    async def scenario() -> None:
        url = Settings.from_env({"DATABASE_URL": f"sqlite:///{path}"}).database.url
        async with rig(url, tmp_path, None, decided=decided) as r:
            upload = await r.upload(PDF, filename="report.pdf", filetype="text/plain")
            assert (await r.settled(upload)).status is UploadStatus.STORED
            empty = await r.upload(b"", filename="empty.txt")
            assert (await r.settled(empty)).status is UploadStatus.REJECTED
            for _ in range(500):  # the status shows a verdict a moment before it is announced
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.01)
            assert seen[0] == (upload.id, "stored", 1, True)
            assert seen[1][:2] == (empty.id, "rejected")
            assert handed == [await r.sessions.get(upload.id), await r.sessions.get(empty.id)]
            assert handed[0].file_id is not None
            assert handed[0].sha256 == hashlib.sha256(PDF).hexdigest()

    asyncio.run(scenario())


def test_eicar_is_rejected_and_stored_nowhere(database: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, clamd_url()) as r:
            upload = await r.upload(b"prefix " + EICAR + b" suffix", filename="x.txt")
            done = await r.settled(upload)
            assert done.status is UploadStatus.REJECTED
            assert done.error == "virus_detected"
            assert done.error_detail is not None
            assert "EICAR" in done.error_detail
            assert _stored_files(r.element_root) == []
            assert not (r.staging / upload.id).exists()
            events = await r.db.fetch(
                "SELECT action FROM audit_events WHERE subject = $1", upload.id
            )
            assert [e["action"] for e in events] == ["upload_rejected"]

    asyncio.run(scenario())


def test_an_empty_file_is_rejected(database: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, None) as r:
            done = await r.settled(await r.upload(b""))
            assert (done.status, done.error) == (UploadStatus.REJECTED, "empty_file")

    asyncio.run(scenario())


def test_a_declared_checksum_that_does_not_match_is_rejected(database: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, None) as r:
            upload = await r.upload(b"some text\n", checksum="sha256 " + "0" * 64)
            done = await r.settled(upload)
            assert (done.status, done.error) == (UploadStatus.REJECTED, "checksum_mismatch")

    asyncio.run(scenario())


def test_a_scanner_that_is_down_is_retried_then_the_upload_fails(
    database: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, "tcp://127.0.0.1:9", max_attempts=3) as r:
            upload = await r.upload(b"hello\n")
            done = await r.settled(upload)
            assert done.status is UploadStatus.FAILED
            assert done.error == "processing_failed"
            assert _stored_files(r.element_root) == []
            # The runner records the operation's end just after the handler gave up.
            for _ in range(100):
                op = await r.db.fetchrow(
                    "SELECT status, attempts, error FROM operations WHERE subject = $1", upload.id
                )
                if op is not None and op["status"] != "running":
                    break
                await asyncio.sleep(0.05)
            assert op is not None
            assert (op["status"], op["attempts"]) == ("failed", 3)
            assert "ScannerUnavailable" in op["error"]
            # The bytes stay staged: nothing was decided about them.
            assert (r.staging / upload.id).exists()
            # The audit trail says so (written just after the verdict).
            for _ in range(100):
                event = await r.db.fetchrow(
                    "SELECT action, outcome FROM audit_events WHERE subject = $1", upload.id
                )
                if event is not None:
                    break
                await asyncio.sleep(0.05)
            assert event is not None
            assert (event["action"], event["outcome"]) == ("upload_failed", "failed")

    asyncio.run(scenario())


def test_completion_enqueues_exactly_one_operation_and_partials_none(
    database: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, None) as r:
            upload = await r.upload(b"abc")
            partial = await r.uploads.create(ALICE, length=0, metadata_raw=None, partial=True)
            await r.settled(upload)
            for _ in range(200):  # the operation ends a moment after the verdict
                kinds = await r.db.fetch("SELECT subject, status FROM operations")
                if all(k["status"] == "done" for k in kinds):
                    break
                await asyncio.sleep(0.05)
            assert [(k["subject"], k["status"]) for k in kinds] == [(upload.id, "done")]
            assert partial.id not in {k["subject"] for k in kinds}

    asyncio.run(scenario())


def test_waiting_for_storage_keeps_the_checks_and_stores_once_an_element_appears(
    database: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with rig(database, tmp_path, clamd_url(), empty=True) as r:
            upload = await r.upload(PDF, filename="report.pdf")
            for _ in range(200):
                current = await r.sessions.get(upload.id)
                assert current is not None
                if current.error == "no_storage_available":
                    break
                await asyncio.sleep(0.05)
            assert current.status is UploadStatus.PROCESSING
            row = await r.db.fetchrow(
                "SELECT result, attempts FROM operations WHERE subject = $1", upload.id
            )
            assert row is not None
            # Validated and scanned once: a retry reuses the verdict; waiting costs no attempt.
            assert (
                json.loads(row["result"])["validated"]["sha256"] == hashlib.sha256(PDF).hexdigest()
            )
            assert row["attempts"] == 0
            r.registry.put(local_info(r.element_root))
            done = await r.settled(upload)
            assert done.status is UploadStatus.STORED, (done.error, done.error_detail)
            [stored] = _stored_files(r.element_root)
            assert stored.read_bytes() == PDF

    asyncio.run(scenario())


class TerminatingScanner:
    """A `Scanner` double: while it "scans", the upload's row turns `terminated` (a client's
    DELETE landing in the middle of the pipeline, before it removed the staged bytes); then it
    says clean, and the ingest goes on to store the file."""

    def __init__(self) -> None:
        self.sessions: SqlSessionStore | None = None

    async def scan(self, path: Path) -> ScanResult:
        assert self.sessions is not None
        await self.sessions.transition(
            path.name,
            from_statuses=[UploadStatus.PROCESSING],
            to_status=UploadStatus.TERMINATED,
            now=datetime.now(UTC),
        )
        return ScanResult(clean=True)

    async def ping(self) -> None:
        return None


def test_an_upload_terminated_while_processed_is_not_stored(database: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        scanner = TerminatingScanner()
        async with rig(database, tmp_path, scanner) as r:
            scanner.sessions = r.sessions
            upload = await r.upload(b"terminated in the middle\n" * 100)
            for _ in range(200):
                op = await r.db.fetchrow(
                    "SELECT status, result FROM operations WHERE subject = $1", upload.id
                )
                if op is not None and op["status"] == "done":
                    break
                await asyncio.sleep(0.05)
            assert op is not None
            assert op["status"] == "done"
            assert json.loads(op["result"])["verdict"] == "terminated"
            current = await r.sessions.get(upload.id)
            assert current is not None
            assert current.status is UploadStatus.TERMINATED  # not overwritten by "stored"
            entry = await r.db.fetchrow("SELECT 1 FROM files WHERE upload_id = $1", upload.id)
            assert entry is None
            for _ in range(100):  # the copy it placed is discarded
                if not _stored_files(r.element_root):
                    break
                await asyncio.sleep(0.05)
            assert _stored_files(r.element_root) == []

    asyncio.run(scenario())
