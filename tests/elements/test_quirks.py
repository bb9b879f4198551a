"""The real storage element's measured quirks against the reference element over
real HTTP: a slow "not found" proves nothing (a stalled SE reports files absent), the name
budget comes from the token's actual `name`, and the service account's `sub` is a UUID."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.conftest import Keys
from tests.elements.test_http import item_for, make_file
from tusingest.domain import ElementMode, OperationKind, OperationStatus
from tusingest.elements.directory import ElementDirectory
from tusingest.elements.http import HttpElement
from tusingest.elements.token import MintedToken
from tusingest.errors import TransientError
from tusingest.observability import PrometheusMetrics
from tusingest.pipeline.discard import Discard
from tusingest.pipeline.runner import Runner, RunnerPolicy
from tusingest.pipeline.saga import DiscardState, Placement
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ELEMENT, ElementServerSettings, ElementState
from tusingest.settings.app import Settings
from tusingest.settings.storage import SERVICE_ACCOUNT_NAMESPACE, BreakerSettings
from tusingest.store import schema
from tusingest.store.catalog import SqlCatalog
from tusingest.store.db import open_database
from tusingest.store.operations import SqlOperationStore

SLOW = 0.3  # the client's threshold in these tests (STORAGE_ELEMENT_SLOW_ANSWER_SECONDS)
STALL = 0.8  # how long a stalled endpoint of the reference element takes to say "absent"


@dataclass
class Running:
    url: str
    root: Path
    state: ElementState
    session: aiohttp.ClientSession

    def element(self, mode: ElementMode, token: MintedToken, **kw: Any) -> HttpElement:
        return HttpElement("se-01", self.url, mode, self.session, token, slow_answer=SLOW, **kw)

    def holds(self, file_id: str) -> bool:
        """Whether the element's disk holds `file_id` (its attr.json names it)."""
        return any(file_id in p.name for p in self.root.rglob("*.attr.json"))


@asynccontextmanager
async def serve(tmp_path: Path, keys: Keys, mode: ElementMode) -> AsyncIterator[Running]:
    settings = ElementServerSettings(
        element_id="se-01",
        mode=mode,
        root=tmp_path / "se",
        capacity=1 << 40,
        priority=1,
        public_key=keys.public.read_bytes(),
    )
    app = create_element_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(f"http://{host}:{port}", settings.root, app[ELEMENT], session)
    finally:
        await runner.cleanup()


def token(keys: Keys, name: str = "ingester") -> MintedToken:
    return MintedToken(keys.private, name=name)


# A slow answer is no proof: a stalling SE reports existing files as absent.


def test_a_slow_gc_answer_counts_only_once_a_fast_lookup_confirms_it(
    tmp_path: Path, keys: Keys
) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.RW) as se:
            element = se.element(ElementMode.RW, token(keys))
            await element.store(item)
            # The stalled SE answers `already_deleted` after STALL seconds without deleting.
            se.state.stalls = {"gc_delete": STALL}
            with pytest.raises(TransientError, match="still holds"):
                await element.delete(item.file_id)
            assert se.holds(item.file_id)
            # Its lookup stalls too: nothing can be confirmed, so nothing is.
            se.state.stalls = {"gc_delete": STALL, "gc_exists": STALL}
            with pytest.raises(TransientError, match="stalling"):
                await element.delete(item.file_id)
            assert se.holds(item.file_id)
            se.state.stalls = {}
            await element.delete(item.file_id)
            assert not se.holds(item.file_id)
            # A slow `already_deleted` that a fast lookup confirms is done.
            se.state.stalls = {"gc_delete": STALL}
            started = time.monotonic()
            await element.delete(item.file_id)
            assert time.monotonic() - started >= STALL

    asyncio.run(main())


def test_a_slow_404_on_an_edit_element_is_no_proof(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            element = se.element(ElementMode.EDIT, token(keys))
            await element.store(item)
            se.state.stalls = {"delete": STALL}
            with pytest.raises(TransientError, match="still holds"):
                await element.delete(item.file_id)
            assert se.holds(item.file_id)
            se.state.stalls = {"delete": STALL, "metadata": STALL}
            with pytest.raises(TransientError):
                await element.delete(item.file_id)
            # The metadata lookup itself: a slow 404 is an error, a fast one an answer.
            with pytest.raises(TransientError, match="no proof of absence"):
                await element.metadata(item.file_id)
            assert se.holds(item.file_id)
            se.state.stalls = {}
            await element.delete(item.file_id)
            assert not se.holds(item.file_id)
            assert await element.metadata(item.file_id) is None

    asyncio.run(main())


def test_a_discard_on_a_stalling_element_is_retried_not_marked_done(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """The durable discard through the runner: while gc answers slowly (and a fast lookup
    still finds the copy) the operation stays queued; once the element recovers it is done."""
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)
    url = Settings.from_env({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}).database.url

    caplog.set_level(logging.WARNING, "tusingest.pipeline.runner")

    async def main() -> None:
        await schema.upgrade(url)
        db = await open_database(url)
        try:
            async with serve(tmp_path, keys, ElementMode.RW) as se:
                await scenario(se, SqlOperationStore(db), SqlCatalog(db))
        finally:
            await db.close()

    async def scenario(se: Running, operations: SqlOperationStore, catalog: SqlCatalog) -> None:
        await se.element(ElementMode.RW, token(keys)).store(item)
        elements = ElementDirectory(
            se.session,
            token(keys),
            BreakerSettings(failure_threshold=1000),
            timeout=10,
            max_retries=0,
            slow_answer=SLOW,
        )
        runner = Runner(
            operations,
            {OperationKind.DISCARD: Discard(elements, catalog, PrometheusMetrics(), 0.1)},
            RunnerPolicy(max_attempts=2, attempt_timeout=30, lease_seconds=30,
                         poll_seconds=0.1, base_delay=0.05, max_delay=0.1),
        )  # fmt: skip
        placement = Placement("se-01", se.url, ElementMode.RW, item.file_id)
        op_id = str(uuid.uuid4())
        se.state.stalls = {"gc_delete": STALL}
        await operations.enqueue(
            op_id, OperationKind.DISCARD, item.file_id, DiscardState(placement).to_json()
        )
        task = asyncio.create_task(runner.run_forever())
        try:
            # Time for more slow answers than max_attempts allows: each is waited out, none
            # uses up an attempt, none marks the operation done.
            await asyncio.sleep(3 * (STALL + 0.2) + 0.5)
            op = await operations.get(op_id)
            assert op is not None
            assert op.status in (OperationStatus.QUEUED, OperationStatus.RUNNING), op
            assert op.error is not None
            assert "still holds" in op.error, op.error
            assert op.state.get("discarded") is not True
            assert se.holds(item.file_id)
            retried = [r for r in caplog.records if r.name == "tusingest.pipeline.runner"]
            assert len(retried) > 2, [r.getMessage() for r in retried]

            se.state.stalls = {}
            runner.wake()
            deadline = time.monotonic() + 10
            while (op := await operations.get(op_id)) is not None and op.status in (
                OperationStatus.QUEUED,
                OperationStatus.RUNNING,
            ):
                assert time.monotonic() < deadline, op
                await asyncio.sleep(0.1)
            assert op is not None
            assert op.status is OperationStatus.DONE, op
            assert op.state["discarded"] is True
            assert not se.holds(item.file_id)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


# The name budget in bytes, from the token's actual `name`: the SE builds its storage
# filename from the stem, the uploader's name, a timestamp and the file id, and fails on names
# over 255 bytes on disk.


def test_a_300_byte_ascii_name_reaches_the_element_whole(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    name = "quarterly-report-" + "x" * 279 + ".pdf"
    assert len(name.encode()) == 300
    item = item_for(source, sha, name=name)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            element = se.element(ElementMode.EDIT, token(keys))
            await element.store(item)
            found = await element.metadata(item.file_id)
            assert found is not None
            assert found["original_filename"] == name
            # The element cuts its own storage name to 200 characters.
            assert len(found["storage_filename"]) == 200
            assert found["storage_filename"].endswith(f"_{item.file_id}.pdf")

    asyncio.run(main())


def test_a_long_non_ascii_name_is_cut_to_what_the_tokens_name_leaves(
    tmp_path: Path, keys: Keys
) -> None:
    """The element fails (500 "File name too long") when its storage name passes 245 bytes;
    the name sent is cut just enough, by the bytes of the token's own `name`."""
    source, sha = make_file(tmp_path)
    name = "отчёт-" + "ж" * 200 + ".pdf"

    async def sent_with(se: Running, account: str) -> str:
        item = item_for(source, sha, name=name)
        element = se.element(ElementMode.EDIT, token(keys, account))
        await element.store(item)
        found = await element.metadata(item.file_id)
        assert found is not None
        stored = found["storage_filename"]
        assert f"_{account}_" in stored
        assert len(stored.encode()) + len(".attr.json") <= 255
        return str(found["original_filename"])

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            # Sent whole, the element refuses it, as the real one does.
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("file", b"data", filename=name, content_type="application/pdf")
            bearer = {"Authorization": f"Bearer {await token(keys).token()}"}
            async with se.session.post(
                f"{se.url}/api/v1/files/upload", data=form, headers=bearer
            ) as response:
                assert response.status == 500
                assert "File name too long" in (await response.json())["detail"]

            short = await sent_with(se, "sa")
            long = await sent_with(se, "ingester-service-account")
            for sent in (short, long):
                assert sent.startswith("отчёт-жжж")
                assert sent.endswith(".pdf")
            # 22 more bytes of `name` cost 11 two-byte characters of the stem, no more.
            assert len(short) - len(long) == 11
            # Every byte the budget leaves is used: 245 = stem + name + ext + 54.
            assert 244 <= len(short.encode()) + len("sa") + 54 <= 245

    asyncio.run(main())


def test_the_metadata_patch_is_cut_to_the_4_kib_attr_json_describing_keys_last(
    tmp_path: Path, keys: Keys
) -> None:
    """A compressed file with a long name carries it twice (the codec-suffixed one and the
    original in metadata): the PATCH drops the client's bulky keys so that attr.json stays
    within 4096 bytes (the element answers 500 otherwise), and keeps what describes the file."""
    source, sha = make_file(tmp_path)
    original = "n" * 1500 + ".txt"
    item = replace(
        item_for(source, sha, name=original + ".br"),
        content_type="application/x-brotli",
        metadata={
            "upload_id": "u-1",
            "codec": "brotli",
            "original_filename": original,
            "original_content_type": "text/plain",
            "user_metadata": {"notes": "y" * 1500},
        },
    )

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            await se.element(ElementMode.EDIT, token(keys)).store(item)
            attr = await se.state.element.read_attr(item.file_id)
            assert attr is not None
            assert attr["original_filename"] == original + ".br"
            assert attr["metadata"] == {
                "upload_id": "u-1",
                "codec": "brotli",
                "original_filename": original,
                "original_content_type": "text/plain",
                "_truncated": True,
            }

    asyncio.run(main())


# The service account's `sub`: ArtStore records it as `created_by_id`, a UUID.


def test_minted_tokens_carry_a_uuid_sub(keys: Keys) -> None:
    def claims(source: MintedToken) -> dict[str, Any]:
        value = asyncio.run(source.token())
        decoded: dict[str, Any] = jwt.decode(value, options={"verify_signature": False})
        return decoded

    derived = claims(MintedToken(keys.private, name="tusingest"))
    assert derived["sub"] == str(uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, "tusingest"))
    assert derived["name"] == "tusingest"
    other = claims(MintedToken(keys.private, name="ingest-2"))
    assert other["sub"] != derived["sub"]
    chosen = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert claims(MintedToken(keys.private, name="tusingest", subject=chosen))["sub"] == chosen


def test_the_element_records_the_uuid_as_created_by_id(tmp_path: Path, keys: Keys) -> None:
    source, sha = make_file(tmp_path)
    item = item_for(source, sha)

    async def main() -> None:
        async with serve(tmp_path, keys, ElementMode.EDIT) as se:
            await se.element(ElementMode.EDIT, token(keys)).store(item)
            attr = await se.state.element.read_attr(item.file_id)
            assert attr is not None
            assert attr["created_by_id"] == str(uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, "ingester"))
            assert attr["created_by_username"] == "ingester"

    asyncio.run(main())
