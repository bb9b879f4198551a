"""`GET /api/openapi.json`: the OpenAPI 3.1 document of the whole HTTP surface (the root app's
probes and metrics, the tus sub-app at `/files`, the JSON sub-app at `/api`).

The document is written by hand from the handlers; `tests/api/test_openapi.py` keeps it true
(every route documented, every documented operation routed, answers checked against it).
It is assembled here from one module per part: the paths of each app (`root_paths`, `tus_paths`,
`api_paths`) and the component `schemas`, all spelled with `primitives` and `error_responses`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
from typing import Any

from aiohttp import web

import tusingest
from tusingest.api.openapi.api_paths import api_paths
from tusingest.api.openapi.root_paths import root_paths
from tusingest.api.openapi.schemas import component_schemas
from tusingest.api.openapi.tus_paths import OFFSET_CONTENT_TYPE, TUS_VERSION, tus_paths

__all__ = ["OFFSET_CONTENT_TYPE", "OPENAPI_VERSION", "TUS_VERSION", "document", "openapi"]

OPENAPI_VERSION = "3.1.0"


def _version() -> str:
    version = getattr(tusingest, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("tusingest")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; callers must not change it)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tusingest",
            "version": _version(),
            "description": (
                "tus 1.0 upload gateway of ArtStore. Errors are JSON "
                '`{"error": code, "message": text}`, except on the tus surface (`/files`), '
                "where they are plain text `code: message` (the pipeline's 422/503 verdicts "
                "are JSON there too). A request from an origin CORS does not allow is "
                "answered `403 origin_not_allowed` anywhere."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "tus", "description": "tus 1.0 resumable uploads"},
            {"name": "uploads", "description": "Whole-file uploads and upload sessions"},
            {"name": "files", "description": "Stored files"},
            {"name": "transfers", "description": "Moving files between storage elements"},
            {"name": "audit", "description": "The audit trail"},
            {"name": "health", "description": "Probes and metrics"},
            {"name": "meta", "description": "This document"},
        ],
        "paths": {
            **root_paths(),
            **tus_paths(),
            **api_paths(),
        },
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearerAuth": []}],
    }


@functools.cache
def _body() -> bytes:
    return json.dumps(document(), ensure_ascii=False).encode()


async def openapi(_request: web.Request) -> web.Response:
    """The document, without authentication."""
    return web.Response(body=_body(), content_type="application/json", charset="utf-8")
