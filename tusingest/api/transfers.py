"""`POST /api/files/{file_id}/transfer` and `GET /api/files/transfer/{transfer_id}`: moving a
stored file to another storage element."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tusingest.auth import PRINCIPAL, client_address
from tusingest.errors import BadRequest, PayloadTooLarge
from tusingest.services import SERVICES

_BODY_LIMIT = 16 * 1024


async def start(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    body = await _json_object(request)
    destination = body.get("destination_storage_element_id")
    if not isinstance(destination, str) or not destination or len(destination) > 64:
        raise BadRequest(
            "destination_storage_element_id must be a storage element id",
            code="invalid_destination",
        )
    transfer_id, estimate = await services.transfers.start(
        request[PRINCIPAL],
        request.match_info["file_id"],
        destination_id=destination,
        delete_source=_flag(body, "delete_source", default=False),
        verify_checksum=_flag(body, "verify_checksum", default=True),
        address=client_address(request),
    )
    return web.json_response(
        {"transfer_id": transfer_id, "status": "in_progress", "estimated_time_seconds": estimate},
        status=202,
    )


async def status(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[SERVICES]
    body = await services.transfers.status(request[PRINCIPAL], request.match_info["transfer_id"])
    return web.json_response(body)


async def _json_object(request: web.Request) -> dict[str, Any]:
    too_large = PayloadTooLarge(
        f"the request body passes {_BODY_LIMIT} bytes", code="body_too_large"
    )
    if request.content_length is not None and request.content_length > _BODY_LIMIT:
        raise too_large
    raw = bytearray()
    while chunk := await request.content.read(_BODY_LIMIT + 1 - len(raw)):
        raw += chunk
        if len(raw) > _BODY_LIMIT:
            raise too_large
    try:
        body = json.loads(bytes(raw) or b"{}")
    except ValueError:
        raise BadRequest("the body is not valid JSON", code="invalid_request") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_request")
    return body


def _flag(body: dict[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", code="invalid_request")
    return value
