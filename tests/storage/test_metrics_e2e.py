"""The storage metrics on GET /metrics, scraped after real failures: an ingester (in-process,
real HTTP) whose Redis holds no element list and whose Admin Module (the stand-in) lists
reference storage elements served over HTTP behind a front that injects faults. Sagas given up
and uploads terminated while stored (compensations, `failed`, `terminated`), an element that
answers 404 to uploads (lazy reload `not_found`), an element that fails until its breaker
opens, the startup reload and the Admin Module fallback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.adminmodule import AdminModule, running_admin_module
from tests.api.test_metrics import _sample, delta, scrape, wait_for
from tests.appthread import serving
from tests.conftest import Keys, Server, ServerThread
from tests.rediskeys import redis_url
from tusingest.domain import ElementMode
from tusingest.refelement.app import create_element_app
from tusingest.refelement.state import ElementServerSettings
from tusingest.settings.app import Settings

SIZE = 64 * 1024
UPLOAD = ("POST", "/api/v1/files/upload")
# Every endpoint that touches a file: an element whose backend is down answers 503 to all.
FILE_ROUTES = (
    UPLOAD,
    ("GET", "/api/v1/files/{file_id}"),
    ("PATCH", "/api/v1/files/{file_id}"),
    ("DELETE", "/api/v1/files/{file_id}"),
    ("DELETE", "/api/v1/gc/{file_id}"),
)


class FaultyElement:
    """The reference storage element (authentication off) in its own thread and loop, behind a
    front that answers `faults[(method, route)]` instead of the element, and, while `holding`,
    keeps each upload waiting until `release` is set (`arrived` tells that one came)."""

    def __init__(self, element_id: str, root: Path) -> None:
        self.element_id = element_id
        self.root = root
        self.url = ""
        self.faults: dict[tuple[str, str], int] = {}
        self.holding = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.requests: list[tuple[str, str]] = []  # (method, route) of every request
        self._serving = contextlib.ExitStack()

    def start(self) -> FaultyElement:
        self.url = self._serving.enter_context(serving(self._app))
        return self

    def stop(self) -> None:
        self.release.set()
        self._serving.close()

    def count(self, method: str, route: str) -> int:
        return self.requests.count((method, route))

    def files(self) -> list[Path]:
        """The copies the element holds (its attr.json sidecars)."""
        return list(self.root.rglob("*.attr.json"))

    def _app(self) -> web.Application:
        settings = ElementServerSettings(
            element_id=self.element_id,
            mode=ElementMode.EDIT,
            root=self.root,
            capacity=1 << 30,
            priority=1,
            public_key=None,
        )
        app = create_element_app(settings)
        app.middlewares.insert(0, self._front)
        return app

    @web.middleware
    async def _front(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        key = (request.method, resource.canonical if resource is not None else request.path)
        self.requests.append(key)
        status = self.faults.get(key)
        if status is not None:
            await request.read()
            return web.json_response({"detail": f"injected {status}"}, status=status)
        if key == UPLOAD and self.holding:
            self.arrived.set()
            await asyncio.to_thread(self.release.wait, 30)
        return await handler(request)


@pytest.fixture
def admin(keys: Keys) -> Iterator[AdminModule]:
    with running_admin_module(keys.private) as started:
        yield started


@pytest.fixture
def elements(tmp_path: Path) -> Iterator[Callable[..., FaultyElement]]:
    """`elements(element_id)`: a started `FaultyElement`; all stopped after the test."""
    started: list[FaultyElement] = []

    def make(element_id: str) -> FaultyElement:
        root = tmp_path / element_id
        root.mkdir()
        element = FaultyElement(element_id, root).start()
        started.append(element)
        return element

    yield make
    for element in started:
        element.stop()


@pytest.fixture
def ingester(
    tmp_path: Path, keys: Keys, prefix: str, admin: AdminModule
) -> Iterator[Callable[..., Server]]:
    """`ingester(**env)`: a server on SQLite whose Redis (a fresh key prefix: no element
    list) falls back to `admin`; stopped after the test."""
    threads: list[ServerThread] = []

    def make(**env: str) -> Server:
        values = {
            "DATA_DIR": str(tmp_path / "ingester"),
            "AUTH_PUBLIC_KEY_PATH": str(keys.public),
            "LOG_LEVEL": "WARNING",
            "ALLOWED_MIME_TYPES": "*",
            "REDIS_URL": redis_url(),
            "REDIS_KEY_PREFIX": prefix,
            "ADMIN_MODULE_URL": admin.url,
            "SERVICE_ACCOUNT_PRIVATE_KEY_PATH": str(keys.private),
            "REGISTRY_CACHE_SECONDS": "0",
            "STORAGE_ELEMENT_TIMEOUT": "5",
            "STORAGE_ELEMENT_MAX_RETRIES": "0",
            "NO_STORAGE_RETRY_SECONDS": "1",
            "COMPLETION_WAIT_SECONDS": "20",
            **env,
        }
        settings = Settings.from_env(values)
        thread = ServerThread(settings).start()
        threads.append(thread)
        return Server(url=thread.url, backend="sqlite", settings=settings, keys=keys)

    yield make
    for thread in threads:
        thread.stop()


def wait_until(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {seconds} s")
        time.sleep(0.05)


def stored_on(server: Server, url: str) -> str:
    element: str = server.status(url)["file"]["element_id"]
    return element


def test_a_saga_given_up_after_placing_a_copy_counts_a_compensation_and_a_failure(
    admin: AdminModule,
    elements: Callable[..., FaultyElement],
    ingester: Callable[..., Server],
) -> None:
    se = elements("se-1")
    admin.add_element("se-1", api_url=se.url, priority=1)
    admin.fail_registration = 100  # the copy is placed, its registration never succeeds
    server = ingester(SAGA_RETRY_MAX_ATTEMPTS="2")
    before = scrape(server)

    url = server.create(SIZE)
    response = server.patch(url, os.urandom(SIZE), 0)
    assert response.status_code == 503, response.text
    assert response.headers["X-Upload-Error"] == "processing_failed"
    assert server.status(url)["upload_status"] == "failed"

    after = scrape(server)
    assert delta(before, after, "artstore_ingester_saga_compensations_total") == 1
    assert delta(before, after, "artstore_ingester_uploads_total", status="failed") == 1
    assert delta(before, after, "artstore_ingester_uploads_total", status="stored") == 0
    assert delta(before, after, "artstore_ingester_uploads_total", status="terminated") == 0
    # The compensation is real: the discard it queued removes the copy from the element.
    wait_until(lambda: not se.files(), "the discard of the abandoned copy")
    assert se.count(*UPLOAD) == 1


def test_an_upload_terminated_while_being_stored_counts_terminated_and_a_compensation(
    admin: AdminModule,
    elements: Callable[..., FaultyElement],
    ingester: Callable[..., Server],
) -> None:
    se = elements("se-1")
    admin.add_element("se-1", api_url=se.url, priority=1)
    server = ingester()
    before = scrape(server)

    se.holding = True  # the element keeps the upload until the client has terminated it
    url = server.create(SIZE)
    completing: list[requests.Response] = []
    patch = threading.Thread(target=lambda: completing.append(server.patch(url, b"x" * SIZE, 0)))
    patch.start()
    try:
        assert se.arrived.wait(15), "the ingester never sent the file to the element"
        terminated = server.request("DELETE", url)
        assert terminated.status_code == 204, terminated.text
    finally:
        se.release.set()
        patch.join(30)
    assert completing, "the completing PATCH did not return"

    after = wait_for(server, "artstore_ingester_uploads_total", 1, status="terminated")
    assert delta(before, after, "artstore_ingester_uploads_total", status="terminated") == 1
    assert delta(before, after, "artstore_ingester_saga_compensations_total") == 1
    assert delta(before, after, "artstore_ingester_uploads_total", status="stored") == 0
    # The copy the element took after the termination is discarded and unregistered.
    assert se.count(*UPLOAD) == 1
    wait_until(lambda: not se.files(), "the discard of the withdrawn copy")
    assert [record["is_deleted"] for record in admin.files.values()] == [True]


def test_an_element_answering_404_to_uploads_forces_a_not_found_lazy_reload(
    admin: AdminModule,
    elements: Callable[..., FaultyElement],
    ingester: Callable[..., Server],
) -> None:
    gone = elements("se-gone")  # its upload endpoint is not there (404), the rest answers
    gone.faults[UPLOAD] = 404
    good = elements("se-good")
    admin.add_element("se-gone", api_url=gone.url, priority=1)
    admin.add_element("se-good", api_url=good.url, priority=2)
    server = ingester()
    before = scrape(server)

    url = server.create(SIZE)
    response = server.patch(url, os.urandom(SIZE), 0)
    assert response.status_code == 204, response.text
    assert response.headers["X-Upload-Status"] == "stored"
    assert stored_on(server, url) == "se-good"
    assert gone.count(*UPLOAD) == 1

    after = scrape(server)
    name = "ingester_lazy_se_config_reload_total"
    assert delta(before, after, name, reason="not_found", status="success") == 1
    assert _sample(after, name, reason="unavailable") == 0
    # A refusal is an answer: the element's breaker stays closed.
    assert 'artstore_ingester_circuit_breaker_state{element="se-gone"}' in after
    assert _sample(after, "artstore_ingester_circuit_breaker_state", element="se-gone") == 0


def test_an_element_failing_enough_times_reads_open_on_the_breaker_gauge(
    admin: AdminModule,
    elements: Callable[..., FaultyElement],
    ingester: Callable[..., Server],
) -> None:
    down = elements("se-down")  # up, but its backend is gone: every file endpoint is a 503
    down.faults.update(dict.fromkeys(FILE_ROUTES, 503))
    good = elements("se-good")
    admin.add_element("se-down", api_url=down.url, priority=1)
    admin.add_element("se-good", api_url=good.url, priority=2)
    server = ingester(CIRCUIT_BREAKER_FAILURE_THRESHOLD="3", CIRCUIT_BREAKER_TIMEOUT_SECONDS="600")
    gauge = "artstore_ingester_circuit_breaker_state"

    states = []
    for _ in range(5):  # each upload: a failed store (and a failed discard) on se-down
        url = server.create(SIZE)
        response = server.patch(url, os.urandom(SIZE), 0)
        assert response.status_code == 204, response.text
        assert stored_on(server, url) == "se-good"
        states.append(_sample(scrape(server), gauge, element="se-down"))
        if states[-1] == 2:
            break
    assert states[0] == 0, states  # one failure is not enough: closed
    assert states[-1] == 2, states  # three in a row: open
    text = scrape(server)
    assert _sample(text, "ingester_se_circuit_breaker_state", element_id="se-down") == 2
    assert _sample(text, gauge, element="se-good") == 0
    reloads = _sample(text, "ingester_lazy_se_config_reload_total", reason="unavailable")
    assert reloads >= 1

    # Open: the next upload goes straight to se-good, se-down is not asked at all.
    asked = len(down.requests)
    url = server.create(SIZE)
    assert server.patch(url, os.urandom(SIZE), 0).headers["X-Upload-Status"] == "stored"
    assert stored_on(server, url) == "se-good"
    assert len(down.requests) == asked
    assert _sample(scrape(server), gauge, element="se-down") == 2


def test_the_startup_reload_and_selections_fall_back_to_the_admin_module(
    admin: AdminModule,
    elements: Callable[..., FaultyElement],
    ingester: Callable[..., Server],
) -> None:
    se = elements("se-1")
    admin.add_element("se-1", api_url=se.url, priority=1)
    server = ingester()
    # The periodic reload runs once at startup: Redis has no list, the Admin Module answers.
    text = wait_for(server, "ingester_se_config_reload_total", 1, source="admin", status="success")
    reloads = _sample(text, "ingester_se_config_reload_total", source="admin", status="success")
    observed = _sample(text, "ingester_se_config_reload_duration_seconds_count", source="admin")
    assert observed == reloads
    assert _sample(text, "ingester_se_config_reload_duration_seconds_bucket", source="admin",
                   le="+Inf") == observed  # fmt: skip
    assert 'ingester_se_config_reload_duration_seconds_sum{source="admin"}' in text
    assert _sample(text, "ingester_se_endpoints_count") == 1
    fallbacks = _sample(text, "ingester_capacity_fallback_total")
    assert fallbacks >= 1  # the reload's own lookups came from the fallback

    url = server.create(SIZE)
    assert server.patch(url, os.urandom(SIZE), 0).headers["X-Upload-Status"] == "stored"
    after = scrape(server)
    assert _sample(after, "ingester_capacity_fallback_total") > fallbacks
    assert _sample(after, "ingester_capacity_latency_seconds_count", source="redis") >= 1
    assert _sample(after, "ingester_capacity_latency_seconds_count", source="admin") >= 1
    assert _sample(after, "storage_selection_total", retention_policy="temporary",
                   status="success", source="admin") >= 1  # fmt: skip
