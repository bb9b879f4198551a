"""OpenTelemetry tracing over real HTTP: a tus upload and a transfer on an ingester whose spans
go to an in-memory exporter, two reference storage elements and the Admin Module stand-in that
record the `traceparent` they receive; and the same with tracing off."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.adminmodule import AdminModule, serve_admin_module
from tests.conftest import TUS, Keys
from tests.rediskeys import redis_url
from tusingest.app import create_app
from tusingest.domain import ElementMode, Role
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ElementServerSettings
from tusingest.registry.configs import ElementConfig, RedisElementConfigs
from tusingest.registry.redis import publish
from tusingest.services import open_element_admin
from tusingest.settings.app import Settings

UPLOAD = "artstore.ingester.upload"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@dataclass
class Element:
    """A reference element on this loop, with the headers of every request it received."""

    element_id: str
    url: str = ""
    seen: list[tuple[str, str, Mapping[str, str]]] = field(default_factory=list)

    def traceparents(self, method: str, path: str) -> list[str | None]:
        return [h.get("traceparent") for m, p, h in self.seen if (m, p) == (method, path)]


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def element(root: Path, keys: Keys, element_id: str, mode: str) -> AsyncIterator[Element]:
    found = Element(element_id)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        found.seen.append((request.method, request.path, request.headers))
        return await handler(request)

    (root / element_id).mkdir()
    app = create_element_app(
        ElementServerSettings(
            element_id, ElementMode(mode), root / element_id, 1 << 30, 100, keys.public.read_bytes()
        )
    )
    app.middlewares.insert(0, record)
    async with serve(app) as url:
        found.url = url
        yield found


@dataclass
class Rig:
    url: str
    keys: Keys
    admin: AdminModule
    elements: dict[str, Element]
    http: aiohttp.ClientSession

    def auth(self, role: Role = Role.USER) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.token('alice', role)}"}

    async def upload(
        self,
        data: bytes,
        *,
        create: Mapping[str, str] | None = None,
        patch: Mapping[str, str] | None = None,
    ) -> tuple[str, aiohttp.ClientResponse]:
        """A tus upload in one PATCH: the upload id and the final PATCH's response; `create`
        and `patch` are more headers for the POST and the PATCH."""
        headers = {**TUS, **self.auth(), "Upload-Length": str(len(data)),
                   "Upload-Metadata": "filename dHJhY2VkLmJpbg==", **(create or {})}  # fmt: skip
        async with self.http.post(f"{self.url}/files/", headers=headers) as created:
            assert created.status == 201, await created.text()
            location = created.headers["Location"]
        headers = {**TUS, **self.auth(), "Upload-Offset": "0",
                   "Content-Type": "application/offset+octet-stream", **(patch or {})}  # fmt: skip
        async with self.http.patch(f"{self.url}{location}", headers=headers, data=data) as patched:
            await patched.read()
        return location.rsplit("/", 1)[-1], patched

    async def session(self, upload_id: str) -> dict[str, Any]:
        path = f"/api/files/upload/session/{upload_id}"
        async with self.http.get(f"{self.url}{path}", headers=self.auth()) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body


async def _register(settings: Settings, found: Element, mode: str) -> None:
    """What `tusingest elements add` does: configure the element in Redis, probe, publish."""
    async with open_element_admin(settings) as (client, monitor):
        config = ElementConfig(found.element_id, ElementMode(mode), found.url, 1)
        await RedisElementConfigs(client, settings.storage.key_prefix).put(config)
        info = await monitor.probe(config)
        assert info.healthy, monitor.last_errors
        await publish(
            client, info, prefix=settings.storage.key_prefix, ttl_seconds=monitor.ttl_seconds
        )


def run(
    tmp_path: Path,
    keys: Keys,
    prefix: str,
    exporter: InMemorySpanExporter,
    scenario: Callable[[Rig], Any],
    **env: str,
) -> None:
    """An ingester (SQLite, Redis registry, Admin Module) with elements se-a (edit) and se-b
    (rw) on one event loop; `scenario` talks to it over HTTP."""

    async def main() -> None:
        async with (
            serve_admin_module(keys.private) as admin,
            element(tmp_path, keys, "se-a", "edit") as se_a,
            element(tmp_path, keys, "se-b", "rw") as se_b,
        ):
            settings = Settings.from_env(
                {
                    "DATA_DIR": str(tmp_path / "ingester"),
                    "AUTH_PUBLIC_KEY_PATH": str(keys.public),
                    "LOG_LEVEL": "WARNING",
                    "ALLOWED_MIME_TYPES": "*",
                    "REDIS_URL": redis_url(),
                    "REDIS_KEY_PREFIX": prefix,
                    "ADMIN_MODULE_URL": admin.url,
                    "SERVICE_ACCOUNT_CLIENT_ID": "sa_ingest",
                    "SERVICE_ACCOUNT_CLIENT_SECRET": "secret",
                    "CAPACITY_MONITOR_INTERVAL": "0.5",
                    "REGISTRY_CACHE_SECONDS": "0",
                    "COMPLETION_WAIT_SECONDS": "20",
                    **env,
                }
            )
            await _register(settings, se_a, "edit")
            await _register(settings, se_b, "rw")
            app = create_app(settings, span_exporter=exporter)
            async with serve(app) as url, aiohttp.ClientSession() as http:
                elements = {"se-a": se_a, "se-b": se_b}
                await scenario(Rig(url, keys, admin, elements, http))

    asyncio.run(main())


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def _parent(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


async def _finished(exporter: InMemorySpanExporter, *names: str) -> list[ReadableSpan]:
    """The spans once one of each of `names` ended (a server span ends after its response
    left; the upload's span after the note and the cleanup that follow its verdict)."""
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if all(any(s.name == name for s in spans) for name in names):
            return spans
        await asyncio.sleep(0.05)
    pytest.fail(f"no span {names}: {[s.name for s in exporter.get_finished_spans()]}")


def test_an_upload_and_a_transfer_are_traced_into_the_elements(
    tmp_path: Path, keys: Keys, prefix: str
) -> None:
    exporter = InMemorySpanExporter()
    data = os.urandom(50_000)

    async def scenario(rig: Rig) -> None:
        upload_id, patched = await rig.upload(data)
        assert patched.status == 204
        assert patched.headers["X-Upload-Status"] == "stored"
        spans = await _finished(exporter, "PATCH /files/{upload_id}", UPLOAD)

        upload = _one(spans, UPLOAD)
        trace_id, upload_span = _ids(upload)
        file_id = (await rig.session(upload_id))["file_id"]
        assert upload.attributes is not None
        assert dict(upload.attributes) == {
            "artstore.upload_id": upload_id,
            "artstore.attempt": 1,
            "artstore.file_id": file_id,
            "artstore.element_id": "se-a",  # edit: temporary by default
            "artstore.size": len(data),
            "artstore.verdict": "stored",
        }
        assert upload.resource.attributes["service.name"] == "traced-ingester"
        # Run at once by the node whose PATCH completed it: a child of that request's span.
        patch = _one(spans, "PATCH /files/{upload_id}")
        assert patch.kind is SpanKind.SERVER
        assert _ids(patch)[0] == trace_id
        assert _parent(upload) == _ids(patch)[1]
        for name in ("validation", "compression", "storage_selection"):
            child = _one(spans, f"artstore.ingester.{name}")
            assert _ids(child)[0] == trace_id
            assert _parent(child) == upload_span, name
        selection = _one(spans, "artstore.ingester.storage_selection")
        assert selection.attributes is not None
        assert selection.attributes["artstore.element_id"] == "se-a"
        assert selection.attributes["artstore.registry_source"] == "redis"
        validation = _one(spans, "artstore.ingester.validation")
        assert validation.attributes is not None
        assert validation.attributes["artstore.size"] == len(data)

        # The element and the Admin Module continue the upload's trace, each from a client
        # span under the upload span.
        clients = {_ids(s)[1]: s for s in spans if s.kind is SpanKind.CLIENT}
        stored = rig.elements["se-a"].traceparents("POST", "/api/v1/files/upload")
        registered = [
            h.get("traceparent")
            for (m, p), h in zip(rig.admin.requests, rig.admin.headers, strict=True)
            if (m, p) == ("POST", "/api/v1/files")
        ]
        for traceparent in (*stored, *registered):
            assert traceparent is not None
            match = TRACEPARENT.match(traceparent)
            assert match is not None, traceparent
            assert match[1] == trace_id
            assert _parent(clients[match[2]]) == upload_span
        assert stored
        assert registered
        # Calls outside any trace (capacity polls) start no trace of their own.
        assert all(s.parent is not None for s in clients.values())

        headers = {**rig.auth(Role.ADMIN), "Content-Type": "application/json"}
        body = {"destination_storage_element_id": "se-b"}
        url = f"{rig.url}/api/files/{file_id}/transfer"
        async with rig.http.post(url, json=body, headers=headers) as started:
            assert started.status == 202, await started.text()
            transfer_id = (await started.json())["transfer_id"]
        spans = await _finished(exporter, "artstore.ingester.transfer")
        transfer = _one(spans, "artstore.ingester.transfer")
        assert transfer.attributes is not None
        assert transfer.attributes["artstore.transfer_id"] == transfer_id
        assert transfer.attributes["artstore.file_id"] == file_id
        assert transfer.attributes["artstore.source_element_id"] == "se-a"
        assert transfer.attributes["artstore.destination_element_id"] == "se-b"
        assert transfer.attributes["artstore.verdict"] == "completed"
        assert transfer.parent is None  # run by the runner: a trace of its own
        moved = rig.elements["se-b"].traceparents("POST", "/api/v1/files/upload")
        assert len(moved) == 1
        assert moved[0] is not None
        match = TRACEPARENT.match(moved[0])
        assert match is not None
        assert match[1] == _ids(transfer)[0]

    run(
        tmp_path,
        keys,
        prefix,
        exporter,
        scenario,
        OPENTELEMETRY_ENABLED="true",
        OTEL_SERVICE_NAME="traced-ingester",
        OTEL_TRACES_EXPORTER="none",
    )


def test_a_caller_s_traceparent_is_continued_into_the_pipeline_and_the_elements(
    tmp_path: Path, keys: Keys, prefix: str
) -> None:
    """The PATCH that completes an upload carries the caller's W3C `traceparent`: its server
    span, the upload's pipeline spans and the element's call are all in the caller's trace,
    each under the right parent; the caller's `baggage` stays with the request. A malformed
    `traceparent` (hostile input) starts a trace of its own; one whose caller did not sample it
    records nothing (`parentbased_always_on`)."""
    exporter = InMemorySpanExporter()
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    hostile = "00-<script>alert(1)</script>-" + "f" * 200 + "-01"

    async def scenario(rig: Rig) -> None:
        traceparent = {
            "traceparent": f"00-{caller_trace}-{caller_span}-01",
            "baggage": "tenant=acme",
        }
        upload_id, patched = await rig.upload(
            os.urandom(20_000), create={"traceparent": hostile}, patch=traceparent
        )
        assert patched.status == 204
        assert patched.headers["X-Upload-Status"] == "stored"
        spans = await _finished(exporter, "PATCH /files/{upload_id}", UPLOAD)

        patch = _one(spans, "PATCH /files/{upload_id}")
        assert _ids(patch)[0] == caller_trace
        assert patch.parent is not None
        assert patch.parent.is_remote
        assert _parent(patch) == caller_span
        upload = _one(spans, UPLOAD)
        assert _ids(upload)[0] == caller_trace
        assert _parent(upload) == _ids(patch)[1]
        assert upload.attributes is not None
        assert upload.attributes["artstore.upload_id"] == upload_id
        for name in ("validation", "compression", "storage_selection"):
            child = _one(spans, f"artstore.ingester.{name}")
            assert _ids(child)[0] == caller_trace, name
            assert _parent(child) == _ids(upload)[1], name
        [sent] = rig.elements["se-a"].traceparents("POST", "/api/v1/files/upload")
        assert sent is not None
        match = TRACEPARENT.match(sent)
        assert match is not None, sent
        assert match[1] == caller_trace
        client = {_ids(s)[1]: s for s in spans if s.kind is SpanKind.CLIENT}[match[2]]
        assert _parent(client) == _ids(upload)[1]
        # The caller's baggage is not carried on: the server span keeps only its trace.
        assert all("baggage" not in h for _, _, h in rig.elements["se-a"].seen)
        # Every call to the element carried the caller's trace, sampled, but for those outside
        # any trace (the capacity monitor's polls), which say "not sampled".
        sent_all = [
            TRACEPARENT.match(h.get("traceparent") or "") for _, _, h in rig.elements["se-a"].seen
        ]
        flags = {(m[1] == caller_trace, int(m[0][-2:], 16) & 1) for m in sent_all if m is not None}
        assert flags == {(True, 1), (False, 0)}, flags

        attributes = {
            name: dict(_one(spans, f"artstore.ingester.{name}").attributes or {})
            for name in ("validation", "compression", "storage_selection")
        }
        assert attributes["validation"] == {
            "artstore.upload_id": upload_id, "artstore.size": 20_000,
            "artstore.content_type": "application/octet-stream",
        }  # fmt: skip
        assert attributes["compression"] == {
            "artstore.upload_id": upload_id, "artstore.content_type": "application/octet-stream",
            "artstore.codec": "none", "artstore.stored_size": 20_000,
        }  # fmt: skip
        assert attributes["storage_selection"] == {
            "artstore.mode": "edit", "artstore.size": 20_000, "artstore.registry_source": "redis",
            "artstore.candidates": 1, "artstore.element_id": "se-a",
        }  # fmt: skip

        # The malformed traceparent of the creation: ignored, a trace of the request's own.
        create = _one(spans, "POST /files/")
        assert create.parent is None
        assert _ids(create)[0] != caller_trace

        # A caller that did not sample its trace: continued unsampled, nothing recorded.
        unsampled = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"}
        path = f"{rig.url}/api/files/upload/session/{upload_id}"
        async with rig.http.get(path, headers={**rig.auth(), **unsampled}) as response:
            assert response.status == 200
        await asyncio.sleep(0.3)
        names = [s.name for s in exporter.get_finished_spans()]
        assert not [name for name in names if name.startswith("GET ")], names

        # A rejection: its code on the upload span and on the validation span.
        wrong = base64.b64encode(f"sha256 {'0' * 64}".encode()).decode()
        exporter.clear()
        rejected_id, rejected = await rig.upload(
            b"not what was declared",
            create={"Upload-Metadata": f"filename ci5iaW4=,checksum {wrong}"},
        )
        assert rejected.headers["X-Upload-Status"] == "rejected"
        spans = await _finished(exporter, "PATCH /files/{upload_id}", UPLOAD)
        refused = dict(_one(spans, UPLOAD).attributes or {})
        assert refused["artstore.upload_id"] == rejected_id
        assert refused["artstore.verdict"] == "rejected"
        assert refused["artstore.rejection"] == "checksum_mismatch"
        checked = dict(_one(spans, "artstore.ingester.validation").attributes or {})
        assert checked["artstore.rejection"] == "checksum_mismatch"

        # The application's own tracer provider: the process-wide one is never set.
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    run(
        tmp_path,
        keys,
        prefix,
        exporter,
        scenario,
        OPENTELEMETRY_ENABLED="true",
        OTEL_TRACES_EXPORTER="none",
    )


def test_with_tracing_off_nothing_is_traced_or_propagated(
    tmp_path: Path, keys: Keys, prefix: str
) -> None:
    exporter = InMemorySpanExporter()

    async def scenario(rig: Rig) -> None:
        _, patched = await rig.upload(os.urandom(10_000))
        assert patched.headers["X-Upload-Status"] == "stored"
        sent = [h for _, _, h in rig.elements["se-a"].seen] + rig.admin.headers
        assert any(p == "/api/v1/files/upload" for _, p, _ in rig.elements["se-a"].seen)
        assert all("traceparent" not in h for h in sent)
        assert exporter.get_finished_spans() == ()

    run(
        tmp_path, keys, prefix, exporter, scenario, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"
    )


def test_the_last_batch_is_sent_on_shutdown_waiting_at_most_the_export_timeout(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTLP to a collector that takes the connection and never answers: the spans wait in
    their batch until the app stops, then the last batch is sent, and stopping waits for the
    collector no longer than OTEL_EXPORTER_OTLP_TIMEOUT (1 s here)."""
    received: list[bytes] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readline())  # the request line; never an answer
        await asyncio.sleep(3600)

    async def main() -> float:
        collector = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = collector.sockets[0].getsockname()[1]
        settings = Settings.from_env(
            {
                "DATA_DIR": str(tmp_path / "ingester"),
                "AUTH_PUBLIC_KEY_PATH": str(keys.public),
                "LOG_LEVEL": "WARNING",
                "OPENTELEMETRY_ENABLED": "true",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            }
        )
        async with serve(create_app(settings)) as url, aiohttp.ClientSession() as http:
            async with http.get(f"{url}/health/live", headers=TUS) as response:
                assert response.status == 200
            await asyncio.sleep(0.5)
            assert received == []  # still in its batch
            stopping = time.monotonic()
        stopped = time.monotonic() - stopping
        collector.close()
        return stopped

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the exporter reads its own
    stopped = asyncio.run(main())
    assert received
    assert set(received) == {b"POST /v1/traces HTTP/1.1\r\n"}
    assert 0.9 <= stopped < 5, stopped
