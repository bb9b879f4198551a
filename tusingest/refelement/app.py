"""The reference element's application: its routes, and the endpoints about the element itself
(capacity, info, health).

Our stand-in for the real SE in development, tests and compose: same fields, status codes,
mode rules and the quirks a client must cope with (duplicate `file_id` → 500, no HEAD, no
Range, non-Latin-1 download names → 500). Capacity is the configured maximum, not the disk.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

from aiohttp import web

from tusingest.domain import ElementMode
from tusingest.elements.local import LocalElement
from tusingest.refelement import files
from tusingest.refelement.auth import load_public_key
from tusingest.refelement.replies import detail_errors
from tusingest.refelement.state import (
    ELEMENT,
    ElementServerSettings,
    ElementState,
    ElementTls,
    now,
)

VERSION = "1.0.0"


def create_element_app(settings: ElementServerSettings) -> web.Application:
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
    """Serve until interrupted (the `tusingest element serve` entry point), over HTTPS when
    the settings carry a certificate."""
    context = None if settings.tls is None else server_context(settings.tls)
    web.run_app(create_element_app(settings), host=host, port=port, ssl_context=context, print=None)


def server_context(tls: ElementTls) -> ssl.SSLContext:
    """TLS 1.2 or later with the element's certificate; with `client_ca`, a client must
    present a certificate chaining to it or the handshake fails."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


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
