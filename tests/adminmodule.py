"""An Admin Module stand-in for tests that answers as the real one does: service-account
tokens, the available storage elements, and file registration.

    with running_admin_module(keys.private) as admin:  # its own thread and loop; or, in async
        admin.add_element("se-01", api_url=se.url)      # tests, `async with serve_admin_module`
        ...  # point the ingester at admin.url, client "sa_ingest" / "secret"
        assert admin.files[file_id]["checksum_sha256"] == ...

Tests may change its attributes at any time: handlers read them per request.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from string import hexdigits
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

API = "/api/v1"
_UPLOAD_MODES = ("edit", "rw")
_MODES = ("edit", "rw", "ro", "ar")
_ELEMENT_DEFAULTS: dict[str, Any] = {
    "mode": "edit", "priority": 100, "api_url": "http://127.0.0.1:9", "capacity_bytes": 1 << 40,
    "used_bytes": 0, "health_status": "healthy", "capacity_status": "ok",
}  # fmt: skip
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _now() -> datetime:
    return datetime.now(UTC)


def _error(loc: str, msg: str, value: Any, kind: str = "value_error") -> dict[str, Any]:
    """One entry of a FastAPI 422 `detail` list."""
    return {"type": kind, "loc": ["body", loc] if loc else ["body"], "msg": msg, "input": value}


def _invalid(errors: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"detail": errors}, status=422)


def _detail(status: int, detail: str, **headers: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers or None)


class AdminModule:
    """The Admin Module's token endpoint, storage-element list and file registry, in memory."""

    def __init__(
        self,
        private_key_pem_path: Path,
        *,
        expires_in: int = 1800,
        clients: dict[str, str] | None = None,
        elements: list[dict[str, Any]] | None = None,
        role: str = "admin",
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem_path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._private = key
        self._public = key.public_key()
        self.url = ""
        self.expires_in = expires_in  # lifetime of issued access tokens (seconds)
        self.role = role  # `role` claim of issued tokens
        self.clients: dict[str, str] = dict(clients or {"sa_ingest": "secret"})
        self.inactive: set[str] = set()  # client_ids answered 403 (inactive or secret expired)
        self.elements: list[dict[str, Any]] = list(elements or [])
        self.files: dict[str, dict[str, Any]] = {}
        self.down = False  # every endpoint answers 503
        self.fail_registration = 0  # answer 500 to this many next POST /files
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.headers: list[Mapping[str, str]] = []  # the headers of each of `requests`
        self._lock = threading.Lock()

    # Conveniences for tests.

    def add_element(self, element_id: str | None, **fields: Any) -> dict[str, Any]:
        """Append an entry, shaped as the available-elements endpoint lists it, to `elements`
        and return it (mutable in place); `fields` override the defaults (mode edit, priority
        100, 1 TiB free, healthy, ok)."""
        entry = {"id": len(self.elements) + 1, "element_id": element_id, "name": element_id or "?"}
        entry |= _ELEMENT_DEFAULTS | fields
        self.elements.append(entry)
        return entry

    def count(self, method: str, path: str) -> int:
        """How many requests `method path` (path without query) came in."""
        return self.requests.count((method, path))

    def mint(self, client_id: str = "sa_ingest", *, ttl: int | None = None, **claims: Any) -> str:
        """A token as this Admin Module issues it to `client_id`; `claims` override."""
        now = int(_now().timestamp())
        name = client_id.removeprefix("sa_") or client_id
        body = {
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"artstore-sa:{client_id}")),
            "type": "service_account", "role": self.role, "name": name, "client_id": client_id,
            "rate_limit": 100, "jti": uuid.uuid4().hex,
            "iat": now, "nbf": now, "exp": now + (self.expires_in if ttl is None else ttl),
        }  # fmt: skip
        return jwt.encode(body | claims, self._private, algorithm="RS256")

    # The application.

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._front])
        app.router.add_post(f"{API}/auth/token", self._token)
        app.router.add_get(f"{API}/internal/storage-elements/available", self._available)
        app.router.add_get(f"{API}/internal/storage-elements/{{element_id}}", self._element)
        app.router.add_post(f"{API}/files", self._register)
        app.router.add_get(f"{API}/files/{{file_id}}", self._get_file)
        app.router.add_delete(f"{API}/files/{{file_id}}", self._delete_file)
        app.router.add_put(f"{API}/files/{{file_id}}", self._update_file)
        return app

    @web.middleware
    async def _front(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.headers.append(request.headers)
        if self.down:
            await request.read()
            return _detail(503, "Service temporarily unavailable")
        if request.path != f"{API}/auth/token":  # everything else needs a bearer token
            claims = self._claims(request)
            if isinstance(claims, web.Response):
                return claims
        return await handler(request)

    def _claims(self, request: web.Request) -> dict[str, Any] | web.Response:
        """The verified claims of the bearer token, or the 401 answer."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _detail(401, "Not authenticated", **{"WWW-Authenticate": "Bearer"})
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                options={"require": ["sub", "iat", "nbf", "exp"], "verify_aud": False},
            )
        except jwt.InvalidTokenError:
            return _detail(401, "Invalid or expired token", **{"WWW-Authenticate": "Bearer"})
        return claims

    def _role(self, request: web.Request) -> str:
        claims = self._claims(request)  # verified by `_front` already
        return "" if isinstance(claims, web.Response) else str(claims.get("role", "")).lower()

    async def _token(self, request: web.Request) -> web.Response:
        await request.read()
        try:  # JSON only: a form body is no dictionary to FastAPI
            body = await request.json() if request.content_type == "application/json" else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _invalid([_error("", "Input should be a valid dictionary", body, "dict_type")])
        errors = [
            _error(f, "Field required", body, "missing")
            for f in ("client_id", "client_secret")
            if not isinstance(body.get(f), str)
        ]
        grant = body.get("grant_type", "client_credentials")
        if grant != "client_credentials":
            errors.append(_error("grant_type", "must be 'client_credentials'", grant))
        if errors:
            return _invalid(errors)
        client_id = body["client_id"]
        if self.clients.get(client_id) != body["client_secret"]:
            return _detail(
                401,
                "Invalid client_id or client_secret",
                **{"WWW-Authenticate": 'Bearer error="invalid_client"'},
            )
        if client_id in self.inactive:
            return _detail(403, f"Service account {client_id} is not active")
        return web.json_response(
            {
                "access_token": self.mint(client_id),
                "refresh_token": self.mint(client_id, ttl=7 * 86400, type="refresh"),
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "issued_at": _now().isoformat(),
            }
        )

    async def _available(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode")
        if mode is not None and mode not in _MODES:
            return _invalid([_error("mode", "Input should be 'edit', 'rw', 'ro' or 'ar'", mode)])
        try:
            min_free = int(request.query.get("min_free_bytes") or 0)  # 0: no filter
        except ValueError:
            return _invalid([_error("min_free_bytes", "Input should be a valid integer", None)])
        modes = _UPLOAD_MODES if mode is None else (mode,) if mode in _UPLOAD_MODES else ()
        found = []
        for entry in list(self.elements):
            if entry.get("mode") not in modes or entry.get("health_status") != "healthy":
                continue
            capacity = entry.get("capacity_bytes")
            free = None if capacity is None else capacity - (entry.get("used_bytes") or 0)
            if min_free and free is not None and free < min_free:
                continue
            found.append(dict(entry))
        # Tests may plant malformed entries (a non-integer priority): those sort last.
        found.sort(key=lambda e: (0, p) if isinstance(p := e.get("priority"), int) else (1, 0))
        return web.json_response({"storage_elements": found, "total": len(found)})

    async def _element(self, request: web.Request) -> web.Response:
        element_id = request.match_info["element_id"]
        for entry in list(self.elements):
            if entry.get("element_id") == element_id:
                return web.json_response(dict(entry))
        return _detail(404, f"Storage element {element_id} not found")

    async def _register(self, request: web.Request) -> web.Response:
        if self._role(request) not in ("admin", "user"):
            return _detail(403, "Insufficient permissions. Required: ADMIN or USER role")
        try:
            body = await request.json()
        except ValueError:
            return _invalid([_error("", "JSON decode error", None, "json_invalid")])
        record, errors = validate_registration(body)
        if errors:
            return _invalid(errors)
        file_id = record["file_id"]
        with self._lock:
            if file_id in self.files:  # soft-deleted rows stay and still collide
                return _detail(400, f"File with ID {file_id} already exists")
            if self.fail_registration > 0:
                self.fail_registration -= 1
                return _detail(500, "Failed to register file")
            now = _now().isoformat()
            record |= {"finalized_at": None, "created_at": now, "updated_at": now,
                       "deleted_at": None, "deletion_reason": None, "is_deleted": False,
                       "is_finalized": False,
                       "is_temporary": record["retention_policy"] == "temporary"}  # fmt: skip
            self.files[file_id] = record
        return web.json_response(record, status=201)

    def _file_id(self, request: web.Request) -> str | web.Response:
        raw = request.match_info["file_id"]
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            error = _error("", "Input should be a valid UUID", raw, "uuid_parsing")
            return _invalid([error | {"loc": ["path", "file_id"]}])

    async def _get_file(self, request: web.Request) -> web.Response:
        file_id = self._file_id(request)
        if isinstance(file_id, web.Response):
            return file_id
        record = self.files.get(file_id)
        deleted_too = request.query.get("include_deleted") == "true"
        if record is None or (record["is_deleted"] and not deleted_too):
            return _detail(404, f"File {file_id} not found")
        return web.json_response(record)

    async def _update_file(self, request: web.Request) -> web.Response:
        if self._role(request) not in ("admin", "user"):
            return _detail(403, "Insufficient permissions. Required: ADMIN or USER role")
        file_id = self._file_id(request)
        if isinstance(file_id, web.Response):
            return file_id
        try:
            body = await request.json()
        except ValueError:
            return _invalid([_error("", "JSON decode error", None, "json_invalid")])
        allowed = {"retention_policy", "storage_element_id", "storage_path", "finalized_at",
                   "description", "user_metadata"}  # fmt: skip
        if not isinstance(body, dict) or not set(body) <= allowed:
            return _detail(400, "Invalid update")
        with self._lock:
            record = self.files.get(file_id)
            if record is None or record["is_deleted"]:
                return _detail(404, f"File {file_id} not found")
            record.update(body)
            record["updated_at"] = _now().isoformat()
            record["is_temporary"] = record["retention_policy"] == "temporary"
        return web.json_response(record)

    async def _delete_file(self, request: web.Request) -> web.Response:
        if self._role(request) != "admin":
            return _detail(403, "Insufficient permissions. Required: ADMIN role")
        file_id = self._file_id(request)
        if isinstance(file_id, web.Response):
            return file_id
        with self._lock:
            record = self.files.get(file_id)
            if record is None:
                return _detail(404, f"File {file_id} not found")
            if not record["is_deleted"]:  # deleting again reports the first deletion
                record["deleted_at"] = _now().isoformat()
                record["deletion_reason"] = request.query.get("deletion_reason", "manual")
                record["is_deleted"] = True
        deleted = {k: record[k] for k in ("file_id", "deleted_at", "deletion_reason")}
        return web.json_response(deleted | {"message": "File marked as deleted successfully"})


# File registration request fields: (kind, min, max, required); lengths for strings, values
# for integers.
_FIELDS: dict[str, tuple[str, int, int | None, bool]] = {
    "file_id": ("uuid", 0, None, True),
    "original_filename": ("str", 1, 500, True),
    "storage_filename": ("str", 1, 500, True),
    "file_size": ("int", 0, None, True),
    "checksum_sha256": ("hex", 64, 64, True),
    "content_type": ("str", 0, 255, False),
    "description": ("str", 0, 1000, False),
    "retention_policy": ("policy", 0, None, True),
    "ttl_expires_at": ("datetime", 0, None, False),
    "ttl_days": ("int", 1, 365, False),
    "storage_element_id": ("str", 1, 255, True),
    "storage_path": ("str", 1, 1000, True),
    "compressed": ("bool", 0, None, False),
    "compression_algorithm": ("str", 0, 20, False),
    "original_size": ("int", 0, None, False),
    "uploaded_by": ("str", 0, 100, False),
    "upload_source_ip": ("str", 0, 45, False),
    "user_metadata": ("dict", 0, None, False),
}


def _field(kind: str, low: int, high: int | None, value: Any) -> Any:
    """`value` normalised as the Admin Module's request model does; ValueError if invalid."""
    if kind == "uuid":
        return str(uuid.UUID(str(value)))
    if kind == "datetime":
        return datetime.fromisoformat(str(value)).isoformat()
    size = len(value) if isinstance(value, str) else value if isinstance(value, int) else None
    in_range = size is not None and low <= size <= (size if high is None else high)
    valid = {
        "policy": value in ("temporary", "permanent"),
        "str": isinstance(value, str) and in_range,
        "hex": isinstance(value, str) and in_range and all(c in hexdigits for c in value),
        "int": isinstance(value, int) and not isinstance(value, bool) and in_range,
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
    }[kind]
    if not valid:
        raise ValueError(f"Input should be a valid {kind} within {low}..{high}")
    return value.lower() if kind == "hex" else value


def validate_registration(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The file registration request model: the normalised record, or the 422 errors."""
    if not isinstance(body, dict):
        return {}, [_error("", "Input should be a valid dictionary", body, "dict_type")]
    errors: list[dict[str, Any]] = []
    record: dict[str, Any] = {}
    for name, (kind, low, high, required) in _FIELDS.items():
        value = body.get(name)
        if value is None:
            if required:
                errors.append(_error(name, "Field required", body, "missing"))
            record[name] = False if kind == "bool" else None
            continue
        try:
            record[name] = _field(kind, low, high, value)
        except ValueError as exc:
            errors.append(_error(name, str(exc), value))
    if not errors:  # the model validator runs once every field is valid
        ttl = (record["ttl_expires_at"], record["ttl_days"])
        if record["retention_policy"] == "temporary" and not all(ttl):
            msg = "Value error, ttl_expires_at and ttl_days are required for temporary files"
            errors.append(_error("", msg, body))
        if record["retention_policy"] == "permanent" and any(ttl):
            msg = "Value error, ttl_expires_at and ttl_days must be None for permanent files"
            errors.append(_error("", msg, body))
    return record, errors


@asynccontextmanager
async def serve_admin_module(
    private_key_pem_path: Path, *, ssl_context: ssl.SSLContext | None = None, **kw: Any
) -> AsyncIterator[AdminModule]:
    """The stand-in on the running event loop (for async tests); over HTTPS with
    `ssl_context`."""
    admin = AdminModule(private_key_pem_path, **kw)
    runner = web.AppRunner(admin.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    host, port = runner.addresses[0][:2]
    admin.url = f"{'http' if ssl_context is None else 'https'}://{host}:{port}"
    try:
        yield admin
    finally:
        await runner.cleanup()


@contextmanager
def running_admin_module(private_key_pem_path: Path, **kw: Any) -> Iterator[AdminModule]:
    """The stand-in in a background thread with its own event loop; `.url` is set."""
    started = threading.Event()
    stop: list[asyncio.Event] = []
    loop = asyncio.new_event_loop()
    box: list[AdminModule | BaseException] = []

    async def main() -> None:
        try:
            async with serve_admin_module(private_key_pem_path, **kw) as admin:
                stop.append(asyncio.Event())
                box.append(admin)
                started.set()
                await stop[0].wait()
        except BaseException as exc:
            box.append(exc)
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    try:
        if not box:
            raise RuntimeError("the Admin Module stand-in did not start")
        if isinstance(box[0], BaseException):
            raise box[0]
        yield box[0]
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        loop.close()
