"""The baseline server: trivial aiohttp speaking just enough tus for the benchmark client.

    python benchmarks/baseline.py --port 8021

POST /files/ → 201 + Location; PATCH reads the body as it arrives and discards it (no
buffering), 204 with Upload-Offset = offset + bytes read; HEAD → 200 with the offset from an
in-memory dict; DELETE forgets the upload; GET /health/ready → 200. No auth, no database, no
disk. The ratios the benchmark prints are tusingest divided by this: what aiohttp itself costs
on this machine, driven by the same client (so the client's own overhead is in both numbers).

Runs as a plain script (it imports nothing from the benchmark package) so that it is its own
process, like the server under test.
"""

from __future__ import annotations

import argparse
import uuid

from aiohttp import web

TUS = {"Tus-Resumable": "1.0.0"}

# upload id -> [offset, length]
UPLOADS = web.AppKey("uploads", dict[str, list[int]])


async def create(request: web.Request) -> web.StreamResponse:
    length = int(request.headers.get("Upload-Length", "0"))
    async for _ in request.content.iter_any():  # no creation-with-upload: drain, ignore
        pass
    upload_id = uuid.uuid4().hex
    request.app[UPLOADS][upload_id] = [0, length]
    return web.Response(
        status=201, headers={**TUS, "Location": f"/files/{upload_id}", "Upload-Offset": "0"}
    )


async def patch(request: web.Request) -> web.StreamResponse:
    state = request.app[UPLOADS].get(request.match_info["upload_id"])
    if state is None:
        return web.Response(status=404, headers=TUS)
    if request.headers.get("Upload-Offset") != str(state[0]):
        return web.Response(status=409, headers={**TUS, "Upload-Offset": str(state[0])})
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
    state[0] += received
    return web.Response(status=204, headers={**TUS, "Upload-Offset": str(state[0])})


async def head(request: web.Request) -> web.StreamResponse:
    state = request.app[UPLOADS].get(request.match_info["upload_id"])
    if state is None:
        return web.Response(status=404, headers=TUS)
    return web.Response(
        status=200,
        headers={
            **TUS,
            "Upload-Offset": str(state[0]),
            "Upload-Length": str(state[1]),
            "Cache-Control": "no-store",
        },
    )


async def delete(request: web.Request) -> web.StreamResponse:
    found = request.app[UPLOADS].pop(request.match_info["upload_id"], None)
    return web.Response(status=204 if found else 404, headers=TUS)


async def ready(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app[UPLOADS] = {}
    app.router.add_post("/files", create)
    app.router.add_post("/files/", create)
    app.router.add_patch("/files/{upload_id}", patch)
    app.router.add_route("HEAD", "/files/{upload_id}", head)
    app.router.add_delete("/files/{upload_id}", delete)
    app.router.add_get("/health/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="trivial tus-ish baseline server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
