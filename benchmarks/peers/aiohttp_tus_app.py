"""Peer launcher: aiohttp-tus on aiohttp, run with the aiohttp-tus venv's python.

    .peers/aiohttp-tus/bin/python benchmarks/peers/aiohttp_tus_app.py --port P --dir D \
        --max-size BYTES

Serves tus at /files/ on 127.0.0.1:P with `setup_tus(app, upload_path=D, upload_url="/files/")`
and no decorator (auth off). aiohttp-tus reads each PATCH body whole (`request.read()`), so the
application's `client_max_size` is raised from aiohttp's 1 MiB to BYTES. It keeps an upload in
progress in D/.resources/<id> (+ D/.metadata/<id>.json) and moves it, once complete, to
D/<filename from Upload-Metadata>. GET /health/ready answers 200 for the benchmark's readiness
poll. Imports nothing from the benchmark package: it runs in the peer's own virtualenv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web
from aiohttp_tus import setup_tus  # type: ignore[import-not-found]


async def ready(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description="aiohttp-tus, for the benchmark")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="upload directory")
    parser.add_argument("--max-size", type=int, required=True, help="largest body, bytes")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    app = web.Application(client_max_size=args.max_size)
    setup_tus(app, upload_path=args.dir, upload_url="/files/")
    app.router.add_get("/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
