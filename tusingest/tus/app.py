"""The tus sub-application at `/files`: its routes, each dispatched on the effective method, behind
the tus edge and authentication."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractResource

from tusingest.auth import auth_middleware
from tusingest.tus import handlers
from tusingest.tus.middleware import METHOD, is_options, tus_middleware

PREFIX = "/files"

_COLLECTION: Mapping[str, Handler] = {"OPTIONS": handlers.options, "POST": handlers.create}
_UPLOAD: Mapping[str, Handler] = {
    "OPTIONS": handlers.options,
    "HEAD": handlers.head,
    "PATCH": handlers.patch,
    "DELETE": handlers.terminate,
}


def create_tus_app() -> web.Application:
    """Mounted at `PREFIX`; the endpoint answers with and without its trailing slash."""
    app = web.Application()
    allowed: dict[AbstractResource, tuple[str, ...]] = {}
    for path, verbs in (("", _COLLECTION), ("/", _COLLECTION), ("/{upload_id}", _UPLOAD)):
        route = app.router.add_route("*", path, _dispatch(verbs))
        assert route.resource is not None
        allowed[route.resource] = tuple(verbs)
    app.middlewares.extend([tus_middleware(allowed), auth_middleware(exempt=is_options)])
    return app


def _dispatch(verbs: Mapping[str, Handler]) -> Handler:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        return await verbs[request[METHOD]](request)

    return dispatch
