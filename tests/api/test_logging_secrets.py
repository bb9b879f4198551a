"""No secret reaches a log line (at DEBUG) or a response: the admin token pasted into the status
page's sign-in form and the cookie that keeps it, the service account's client secret, the
webhook secret, and the password of a database URL that cannot be reached."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web

from tests.adminmodule import running_admin_module
from tests.appthread import serving
from tests.conftest import Keys
from tests.nodes import Node
from tests.receiver import Receiver
from tusingest.auth import STATUS_COOKIE
from tusingest.domain import Role
from tusingest.settings.app import Settings
from tusingest.store import schema

CLIENT_SECRET = "sa-client-secret-Zq8w3LmN5"
WEBHOOK_SECRET = "webhook-secret-Hk2p9Rt4Vx7"
DB_PASSWORD = "SECRETPW-db-Jf6s1"
TOKEN_SECONDS = 1  # the service account's tokens live this long: each renewal shows the secret
# Any JWT (a header is base64url JSON, `eyJ`): the tokens a node receives or is issued.
JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]+")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(WEBHOOK_SECRET).start(answer=500)  # failing first: the retries are logged
    try:
        yield made
    finally:
        made.stop()


def _wait(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.05)


def _everything(response: requests.Response, *, but_cookie: bool = False) -> str:
    """A response's status line, headers and body (without Set-Cookie when `but_cookie`)."""
    headers = [
        f"{k}: {v}"
        for k, v in response.headers.items()
        if not (but_cookie and k.lower() == "set-cookie")
    ]
    return "\n".join([str(response.status_code), *headers, response.text])


def _with_password(url: str) -> tuple[str, str]:
    """`url` with a password (DB_PASSWORD unless it has one: a server that trusts local
    connections ignores it), and the password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return url, parts.password
    netloc = f"{parts.username}:{DB_PASSWORD}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl(), DB_PASSWORD


def test_no_secret_in_any_log_line_or_response_at_debug(
    tmp_path: Path, keys: Keys, receiver: Receiver, new_pg_database: Callable[[], str]
) -> None:
    database, db_password = _with_password(new_pg_database())
    asyncio.run(schema.upgrade(Settings.from_env({"DATABASE_URL": database}).database.url))
    admin_token = keys.token("root", Role.ADMIN)
    expired_admin = keys.token("root", Role.ADMIN, ttl=-10)
    user_token = keys.token("alice")
    forged = admin_token[:-8] + ("A" * 8 if not admin_token.endswith("A" * 8) else "B" * 8)
    answers: list[str] = []
    clients = {"sa_ingest": CLIENT_SECRET}
    with running_admin_module(keys.private, clients=clients, expires_in=TOKEN_SECONDS) as admin:
        node = Node(
            tmp_path / "data",
            keys,
            tmp_path / "node.log",
            LOG_LEVEL="DEBUG",
            DATABASE_URL=database,
            ADMIN_MODULE_URL=admin.url,
            SERVICE_ACCOUNT_CLIENT_ID="sa_ingest",
            SERVICE_ACCOUNT_CLIENT_SECRET=CLIENT_SECRET,
            WEBHOOK_URLS=receiver.url,
            WEBHOOK_SECRET=WEBHOOK_SECRET,
            WEBHOOK_RETRY_BASE_SECONDS="0.1",
            WEBHOOK_RETRY_MAX_SECONDS="0.2",
            SAGA_RETRY_MAX_ATTEMPTS="1",  # the second upload fails at once
        ).wait_ready()
        try:
            # An upload: registered with the Admin Module (a token for the client secret), a
            # `file.stored` event signed with the webhook secret, refused once by the receiver.
            upload_id, response = node.upload(os.urandom(20_000), filename="a.bin")
            assert response.status_code == 204, response.text
            file_id = node.session(upload_id)["file_id"]
            assert file_id in admin.files
            assert admin.count("POST", "/api/v1/auth/token") >= 1
            _wait(lambda: len(receiver.received()) >= 1, "a delivery")
            receiver.answer = 200
            [event] = receiver.wait_accepted(1)
            assert event.signed
            # The Admin Module refusing the secret later: its answer is logged, never the secret.
            admin.clients["sa_ingest"] = "another-secret"

            session = requests.Session()
            for token, status in (
                (user_token, 403),
                (forged, 401),
                (expired_admin, 401),
                (f"Bearer {admin_token}x", 401),
            ):
                refused = session.post(
                    f"{node.url}/status/login", data={"token": token}, timeout=10
                )
                assert refused.status_code == status, refused.text
                assert STATUS_COOKIE not in session.cookies
                answers.append(_everything(refused))
            signed_in = session.post(
                f"{node.url}/status/login",
                data={"token": f"Bearer {admin_token}"},
                allow_redirects=False,
                timeout=10,
            )
            assert signed_in.status_code == 303, signed_in.text
            assert session.cookies[STATUS_COOKIE] == admin_token  # the cookie is the token
            cookie = signed_in.headers["Set-Cookie"]
            assert "HttpOnly" in cookie
            answers.append(_everything(signed_in, but_cookie=True))
            for path, expected in (
                ("/status", 200),
                ("/api/status", 200),
                ("/api/files", 401),  # the cookie is for the status page and its feed only
                ("/health/ready", 200),
                ("/metrics", 200),
            ):
                signed = session.get(f"{node.url}{path}", timeout=10)
                assert signed.status_code == expected, (path, signed.text)
                answers.append(_everything(signed))
            # A session whose token has expired: the page says so without showing it.
            stale = requests.Session()
            stale.cookies.set(STATUS_COOKIE, expired_admin)
            ended = stale.get(f"{node.url}/status", timeout=10)
            assert ended.status_code == 401
            assert "session ended" in ended.text
            answers.append(_everything(ended))
            answers.append(_everything(stale.get(f"{node.url}/api/status", timeout=10)))
            bearer = {"Authorization": f"Bearer {admin_token}"}
            for path in (f"/api/files/{file_id}", "/api/audit", f"/files/{upload_id}"):
                answers.append(_everything(requests.get(f"{node.url}{path}", headers=bearer,
                                                        timeout=10)))  # fmt: skip
            head = node.head(upload_id)
            answers.append(_everything(head))
            # A second upload needs a token (the last one expired) that the Admin Module now
            # refuses: it fails, and says why.
            time.sleep(TOKEN_SECONDS + 0.5)
            upload_id, response = node.upload(os.urandom(20_000), filename="b.bin")
            assert response.status_code == 503, response.text
            assert "rejects service account 'sa_ingest' (401)" in response.json()["message"]
            answers.append(_everything(response))
            answers.append(_everything(node.head(upload_id)))
        finally:
            node.stop()
    log = (tmp_path / "node.log").read_text("utf-8", "replace")
    assert "DEBUG" in log  # the level under test
    host = urllib.parse.urlsplit(database).hostname
    assert re.search(rf"database: +{re.escape(str(host))}:\d+/tusingest_t_", log)  # the banner
    assert "sa_ingest" in log, log[-3000:]  # the refused service account is named
    secrets = {
        "admin token": admin_token,
        "its signature": admin_token.rsplit(".", 1)[1],
        "expired admin token": expired_admin,
        "forged token": forged,
        "user token": user_token,
        "client secret": CLIENT_SECRET,
        "webhook secret": WEBHOOK_SECRET,
        "database password": db_password,
    }
    for where, text in [("log", log), *(("response", answer) for answer in answers)]:
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} is in a {where}"
        assert not JWT.search(text), f"a token in a {where}: {JWT.search(text)}"
        assert "Bearer ey" not in text


class EchoingAdminModule:
    """An Admin Module whose token endpoint refuses our request as FastAPI does when its model
    differs from what we send (a 422 whose `detail` echoes the request body, client secret
    included); anything else is a 503. Its own thread and loop."""

    def __init__(self) -> None:
        self.url = ""
        self.tokens_asked = 0
        self._serving = contextlib.ExitStack()

    def __enter__(self) -> EchoingAdminModule:
        self.url = self._serving.enter_context(serving(self._app))
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.close()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path != "/api/v1/auth/token":
            return web.json_response({"detail": "Service temporarily unavailable"}, status=503)
        self.tokens_asked += 1
        sent = json.loads(body)
        missing = {"type": "missing", "loc": ["body", "scope"], "msg": "Field required"}
        return web.json_response({"detail": [missing | {"input": sent}]}, status=422)


def test_an_admin_module_echoing_the_client_secret_never_gets_it_repeated(
    tmp_path: Path, keys: Keys
) -> None:
    with EchoingAdminModule() as admin:
        node = Node(
            tmp_path / "data",
            keys,
            tmp_path / "node.log",
            LOG_LEVEL="DEBUG",
            ADMIN_MODULE_URL=admin.url,
            SERVICE_ACCOUNT_CLIENT_ID="sa_ingest",
            SERVICE_ACCOUNT_CLIENT_SECRET=CLIENT_SECRET,
            SAGA_RETRY_MAX_ATTEMPTS="1",
        ).wait_ready()
        try:
            # Stored on the embedded element, then registration needs a token: refused.
            upload_id, response = node.upload(os.urandom(20_000), filename="a.bin")
            answers = [_everything(response), _everything(node.head(upload_id))]
            info = node.settled(upload_id)
            answers.append(str(info))
        finally:
            node.stop()
    assert admin.tokens_asked >= 1
    assert info["upload_status"] == "failed", info
    log = (tmp_path / "node.log").read_text("utf-8", "replace")
    assert "rejects service account 'sa_ingest' (422)" in log, log[-3000:]
    assert "rejects service account 'sa_ingest' (422)" in str(info)  # the reason stays
    for where, text in [("log", log), *(("response", answer) for answer in answers)]:
        assert CLIENT_SECRET not in text, f"the client secret is in a {where}"


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("DATABASE_URL", f"postgresql+asyncpg://user:{DB_PASSWORD}@127.0.0.1:1/x"),
        ("DATABASE_URL", f"postgresql://user:{DB_PASSWORD}@127.0.0.1:1/x"),
        ("DATABASE_URL", f"user:{DB_PASSWORD}@127.0.0.1:1/x"),  # the scheme forgotten
        ("REDIS_URL", f"http://:{DB_PASSWORD}@127.0.0.1:1/0"),  # the wrong scheme
        ("DATABASE_URL", f"postgresql://user:{DB_PASSWORD}@127.0.0.1:port/x"),  # no number
        ("DATABASE_URL", f"postgresql://user:{DB_PASSWORD}@127.0.0.1:1/x?sslmode=bogus"),
    ],
)
def test_a_url_that_fails_never_shows_its_password(
    tmp_path: Path, variable: str, url: str, command: str
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "PG"))},
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "DEBUG",
        variable: url,
    }
    args = ["--port", "0"] if command == "serve" else []
    done = subprocess.run(
        [sys.executable, "-m", "tusingest", command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output  # a configuration error that names the variable
    assert f"configuration error: {variable}" in output
    assert DB_PASSWORD not in output
    assert "SECRETPW" not in output
