"""Peer launcher: tuspyserver's FastAPI router on uvicorn, run with the tuspyserver venv's python.

    .peers/tuspyserver/bin/python benchmarks/peers/tuspyserver_app.py --port P --dir D \
        --max-size BYTES

Serves tus at /files/ on 127.0.0.1:P, storing in D (bytes at D/<id>, state in D/<id>.info),
with tuspyserver's defaults otherwise (auth: a no-op dependency), one uvicorn process, no
access log. GET /health/ready answers 200 for the benchmark's readiness poll. Imports nothing
from the benchmark package: it runs in the peer's own virtualenv.
"""

from __future__ import annotations

import argparse

import uvicorn  # type: ignore[import-not-found]
from fastapi import FastAPI  # type: ignore[import-not-found]
from tuspyserver import create_tus_router  # type: ignore[import-not-found]


async def ready() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description="tuspyserver on uvicorn, for the benchmark")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="upload directory")
    parser.add_argument("--max-size", type=int, required=True, help="largest upload, bytes")
    args = parser.parse_args()
    app = FastAPI()
    app.include_router(
        create_tus_router(prefix="files", files_dir=args.dir, max_size=args.max_size)
    )
    app.add_api_route("/health/ready", ready, methods=["GET"])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
