"""`GET /api/status`: the operators' live view as JSON, for admins (the status page polls it
with its cookie; scripts send a bearer token)."""

from __future__ import annotations

from aiohttp import web

from tusingest.auth import authenticate_with_cookie
from tusingest.errors import Forbidden
from tusingest.services import SERVICES


async def status(request: web.Request) -> web.StreamResponse:
    if not authenticate_with_cookie(request).is_admin:
        raise Forbidden("the status view is for admins", code="admin_required")
    snapshot = await request.config_dict[SERVICES].status.snapshot()
    return web.json_response(snapshot, headers={"Cache-Control": "no-store"})
