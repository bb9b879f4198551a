"""Command line: serve | migrate | token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from tusingest.app import create_app
from tusingest.config import Settings
from tusingest.domain import ElementMode, Role
from tusingest.elements.server import ElementServerSettings, run_element_server
from tusingest.errors import ConfigError
from tusingest.keys import ensure_dev_keys, mint_token
from tusingest.observability import configure_logging
from tusingest.services import migrate

log = logging.getLogger("tusingest")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tusingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the upload server")
    serve.add_argument("--host", help="bind address (APP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="port (APP_PORT, default 8020)")
    serve.add_argument("--data-dir", help="data directory (DATA_DIR, default ./tusingest-data)")

    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")

    element = sub.add_parser("element", help="the reference storage element (SE) server")
    element_sub = element.add_subparsers(dest="element_command", required=True)
    se = element_sub.add_parser("serve", help="serve the ArtStore SE HTTP API from a directory")
    se.add_argument("--id", required=True, dest="element_id", help="element id, e.g. se-01")
    se.add_argument("--mode", required=True, choices=[m.value for m in ElementMode])
    se.add_argument("--root", required=True, help="directory holding the files")
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, required=True)
    se.add_argument("--capacity", type=int, required=True, help="capacity in bytes")
    se.add_argument("--priority", type=int, default=100)
    se.add_argument("--public-key", help="PEM public key verifying tokens (default: no auth)")

    token = sub.add_parser("token", help="print a JWT signed with the dev key")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--name", help="display name (default: the subject)")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--data-dir", help="data directory holding the dev keys")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "element":
        return _element(args)
    try:
        settings = Settings.from_env(
            os.environ,
            {
                "APP_HOST": getattr(args, "host", None),
                "APP_PORT": getattr(args, "port", None),
                "DATA_DIR": getattr(args, "data_dir", None),
            },
        )
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            return asyncio.run(_serve(settings))
        if args.command == "migrate":
            revision = asyncio.run(migrate(settings))
            print(f"database migrated to revision {revision}")
            return 0
        return _token(settings, args)
    except ConfigError as exc:
        print(f"tusingest: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _element(args: argparse.Namespace) -> int:
    try:
        settings = ElementServerSettings(
            element_id=args.element_id,
            mode=ElementMode(args.mode),
            root=Path(args.root).expanduser().absolute(),
            capacity=args.capacity,
            priority=args.priority,
            public_key=Path(args.public_key).read_bytes() if args.public_key else None,
        )
        settings.root.mkdir(parents=True, exist_ok=True)
        print(
            f"storage element {settings.element_id} ({settings.mode.value}) on "
            f"http://{args.host}:{args.port}/api/v1, files in {settings.root}",
            flush=True,
        )
        run_element_server(settings, args.host, args.port)
    except (OSError, ValueError) as exc:
        print(f"tusingest element: {exc}", file=sys.stderr)
        return 2
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        raise ConfigError("--ttl", "must be > 0")
    private = settings.auth.dev_private_key_path
    ensure_dev_keys(private)
    if not settings.auth.uses_dev_keys:
        print(
            f"warning: AUTH_PUBLIC_KEY_PATH is {settings.auth.public_key_path}; this token is "
            f"signed with the dev key in {private.parent} and will not verify there",
            file=sys.stderr,
        )
    print(
        mint_token(
            private,
            sub=args.sub,
            name=args.name,
            role=Role(args.role),
            ttl_seconds=args.ttl,
            algorithm=settings.auth.algorithm,
        )
    )
    return 0


async def _serve(settings: Settings) -> int:
    # Bind first: a busy port must stop startup before any service (database, runner) starts.
    sock = _listen(settings)
    runner = web.AppRunner(create_app(settings), access_log=logging.getLogger("aiohttp.access"))
    try:
        await runner.setup()
    except ConfigError:
        sock.close()
        await runner.cleanup()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.SockSite(runner, sock).start()
        _banner(settings, runner)
        await stop.wait()
        log.info("shutting down")
        return 0
    finally:
        await runner.cleanup()


def _listen(settings: Settings) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(
            "APP_PORT", f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


def _banner(settings: Settings, runner: web.AppRunner) -> None:
    host, port = runner.addresses[0][:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    lines = [
        f"tusingest listening on {url}",
        f"  tus endpoint: {url}/files/",
        f"  database:     {settings.database_url.split('@')[-1]}",
        f"  staging:      {settings.staging_dir}",
    ]
    if settings.auth.enabled:
        data_dir = settings.data_dir
        lines.append(f"  token:        tusingest token --sub alice --data-dir {data_dir}")
    else:
        lines.append("  auth:         OFF (AUTH_ENABLED=off): anyone can upload")
    print("\n".join(lines), flush=True)
