"""A reference ArtStore storage element (contract §2): the SE HTTP API over a LocalElement.

Our stand-in for the real SE in development, tests and compose: same fields, status codes,
mode rules and the quirks a client must cope with (duplicate `file_id` → 500, no HEAD, no
Range, non-Latin-1 download names → 500). Capacity is the configured maximum, not the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tusingest.domain import ElementMode
from tusingest.elements.local import LocalElement

log = logging.getLogger(__name__)

VERSION = "1.0.0"
WRITABLE = frozenset({ElementMode.EDIT, ElementMode.RW})
_ROLES = frozenset({"admin", "operator", "user"})


@dataclass(frozen=True)
class ElementServerSettings:
    element_id: str
    mode: ElementMode
    root: Path
    capacity: int  # bytes: `capacity_bytes` / `capacity.total`
    priority: int
    public_key: bytes | None  # RS256 PEM; None disables authentication


@dataclass(frozen=True)
class Caller:
    """What the SE takes from a verified token (contract §1.2)."""

    sub: str
    name: str
    role: str  # admin | operator | user (any other claimed role counts as admin)
    service_account: bool


ANONYMOUS = Caller(sub="anonymous", name="anonymous", role="admin", service_account=True)


class SEError(Exception):
    """An error answered as `{"detail": ...}` the way the SE (FastAPI) does."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


@dataclass
class ElementState:
    settings: ElementServerSettings
    element: LocalElement
    key: RSAPublicKey | None
    busy: set[str] = field(default_factory=set)  # file_ids being uploaded
    attr_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def incoming(self) -> Path:
        """Where upload bodies are spooled: inside the root, so storing them is a copy
        within one filesystem."""
        return self.settings.root / ".incoming"


ELEMENT = web.AppKey("element", ElementState)


def load_public_key(pem: bytes) -> RSAPublicKey:
    """Parse an RSA public key PEM (ValueError if it is not one)."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the SE verifies RS256: the public key must be an RSA key")
    return key


def create_element_app(settings: ElementServerSettings) -> web.Application:
    from tusingest.elements import server_files as files  # it imports this module

    if settings.capacity <= 0:
        raise ValueError("capacity must be a positive number of bytes")
    key = None if settings.public_key is None else load_public_key(settings.public_key)
    app = web.Application(middlewares=[detail_errors], client_max_size=1 << 20)
    app[ELEMENT] = ElementState(settings, LocalElement(settings.root, settings.element_id), key)
    r = app.router
    r.add_post("/api/v1/files/upload", files.upload)
    r.add_get("/api/v1/files", files.list_files, allow_head=False)
    r.add_get("/api/v1/files/{file_id}", files.metadata, allow_head=False)
    r.add_patch("/api/v1/files/{file_id}", files.update)
    r.add_delete("/api/v1/files/{file_id}", files.delete)
    r.add_get("/api/v1/files/{file_id}/download", files.download, allow_head=False)
    r.add_delete("/api/v1/gc/{file_id}", files.gc_delete)
    r.add_get("/api/v1/gc/{file_id}/exists", files.gc_exists, allow_head=False)
    r.add_get("/api/v1/capacity", capacity, allow_head=False)
    r.add_get("/api/v1/info", info, allow_head=False)
    r.add_get("/health/live", live, allow_head=False)
    r.add_get("/health/ready", ready, allow_head=False)
    r.add_get("/", root, allow_head=False)
    return app


def run_element_server(settings: ElementServerSettings, host: str, port: int) -> None:
    """Serve until interrupted (the `tusingest element serve` entry point)."""
    web.run_app(create_element_app(settings), host=host, port=port, print=None)


@web.middleware
async def detail_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SEError as exc:
        return web.json_response({"detail": exc.detail}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response({"detail": exc.reason}, status=exc.status, headers=allow)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response({"detail": "Internal Server Error"}, status=500)


def authenticate(request: web.Request) -> Caller:
    """The caller of `request` (contract §1.2), or a 401 in the SE's words."""
    key = request.app[ELEMENT].key
    if key is None:
        return ANONYMOUS
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise SEError(401, "Not authenticated")
    invalid = SEError(401, "Invalid or expired token", {"WWW-Authenticate": "Bearer"})
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            options={"require": ["sub", "iat", "nbf", "exp"], "verify_aud": False},
        )
    except jwt.InvalidTokenError:
        raise invalid from None
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise invalid
    role = str(claims.get("role", "admin")).lower()
    kind = claims.get("type")
    client_id = claims.get("client_id")
    service_account = kind == "service_account" or (
        kind in ("access", "refresh") and isinstance(client_id, str) and client_id.startswith("sa_")
    )
    return Caller(
        sub=sub,
        name=str(claims.get("name") or sub),
        role=role if role in _ROLES else "admin",
        service_account=service_account,
    )


def parse_file_id(request: web.Request) -> str:
    """The path's `file_id` in canonical form; a non-UUID is FastAPI's 422."""
    raw = request.match_info["file_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise SEError(422, [validation_error("path", "file_id", raw, "a valid UUID")]) from None


def validation_error(where: str, name: str, value: Any, expected: str) -> dict[str, Any]:
    return {
        "type": "value_error",
        "loc": [where, name],
        "msg": f"Input should be {expected}",
        "input": value,
    }


def now() -> datetime:
    return datetime.now(UTC)


async def used_bytes(state: ElementState) -> tuple[int, int]:
    """(file count, sum of stored sizes)."""
    attrs = await state.element.list_attrs()
    return len(attrs), sum(int(a.get("file_size") or 0) for a in attrs)


async def capacity(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    total = state.settings.capacity
    _, used = await used_bytes(state)
    return web.json_response(
        {
            "storage_id": state.settings.element_id,
            "mode": state.settings.mode.value,
            "capacity": {
                "total": total,
                "used": used,
                "available": max(total - used, 0),
                "percent_used": round(used * 100 / total, 2),
            },
            "health": "healthy",
            "last_update": now().replace(tzinfo=None).isoformat() + "Z",
            "backend": "local",
            "location": "dc1",
        }
    )


async def info(request: web.Request) -> web.StreamResponse:
    state = request.app[ELEMENT]
    s = state.settings
    count, used = await used_bytes(state)
    return web.json_response(
        {
            "name": "ArtStore Storage Element",
            "display_name": s.element_id,
            "version": VERSION,
            "mode": s.mode.value,
            "storage_type": "local",
            "base_path": str(s.root),
            "capacity_bytes": s.capacity,
            "used_bytes": used,
            "file_count": count,
            "status": "maintenance" if s.mode is ElementMode.AR else "operational",
            "priority": s.priority,
            "element_id": s.element_id,
            "timestamp": now().replace(tzinfo=None).isoformat(),
        }
    )


async def live(_request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"status": "ok", "timestamp": now().isoformat(), "checks": {"process": "running"}}
    )


async def ready(request: web.Request) -> web.StreamResponse:
    root_dir = request.app[ELEMENT].settings.root
    ok = await asyncio.to_thread(_writable_dir, root_dir)
    return web.json_response(
        {
            "status": "ready" if ok else "not_ready",
            "timestamp": now().isoformat(),
            "checks": {"storage_directory": "ok" if ok else f"not writable: {root_dir}"},
        },
        status=200 if ok else 503,
    )


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


async def root(request: web.Request) -> web.StreamResponse:
    s = request.app[ELEMENT].settings
    return web.json_response(
        {
            "service": "ArtStore Storage Element",
            "version": VERSION,
            "mode": s.mode.value,
            "storage_type": "local",
            "status": "operational",
        }
    )
