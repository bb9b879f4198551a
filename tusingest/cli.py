"""Command line: serve | migrate | token | elements | element serve | upload."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from tusingest.app import create_app
from tusingest.domain import ElementMode, Role
from tusingest.errors import ConfigError, TusingestError
from tusingest.intake import ARRIVAL_BUFFER, admit
from tusingest.keys import ensure_dev_keys, mint_token
from tusingest.listener import CappedSite, connection_cap, raise_open_files_limit
from tusingest.metadata import encode_metadata
from tusingest.observability import configure_logging
from tusingest.services import SERVICES
from tusingest.settings.app import Settings
from tusingest.store.database import migrate
from tusingest.tus.protocol import TUS_VERSION

if TYPE_CHECKING:
    # Each command imports what only it uses (the reference element, the upload client, the
    # elements admin), so that a server process does not carry them.
    from tusingest.client.batch import UploadOptions
    from tusingest.refelement.state import ElementTls

log = logging.getLogger("tusingest")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tusingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the upload server")
    serve.add_argument("--host", help="bind address (APP_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="port (APP_PORT, default 8020)")
    serve.add_argument("--data-dir", help="data directory (DATA_DIR, default ./tusingest-data)")

    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")

    elements = sub.add_parser("elements", help="the storage elements configured in Redis")
    elements_sub = elements.add_subparsers(dest="elements_command", required=True)
    listing = elements_sub.add_parser("list", help="configured elements and their live state")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    add = elements_sub.add_parser("add", help="add or replace an element, probe and publish it")
    add.add_argument("--id", required=True, dest="element_id", help="element id, e.g. se-01")
    add.add_argument("--mode", required=True, choices=[m.value for m in ElementMode])
    add.add_argument("--endpoint", required=True, help="http(s) URL of the SE, e.g. http://se:8010")
    add.add_argument("--priority", type=int, default=100, help="lower fills first (default 100)")
    remove = elements_sub.add_parser("rm", help="remove an element and withdraw it")
    remove.add_argument("element_id", metavar="ID")

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
    se.add_argument("--tls-cert", help="PEM certificate (chain): serve HTTPS (with --tls-key)")
    se.add_argument("--tls-key", help="PEM private key of --tls-cert")
    se.add_argument(
        "--tls-client-ca", help="PEM CA bundle: require client certificates chaining to it"
    )

    token = sub.add_parser("token", help="print a JWT signed with the dev key")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--name", help="display name (default: the subject)")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--data-dir", help="data directory holding the dev keys")

    upload = sub.add_parser("upload", help="upload files to a tusingest server over tus")
    upload.add_argument("files", nargs="+", metavar="FILE", type=Path)
    upload.add_argument("--endpoint", required=True, help="tus endpoint, e.g. http://h:8020/files/")
    upload.add_argument("--token", help="bearer token (default: TUSINGEST_TOKEN)")
    upload.add_argument("--retention", choices=["temporary", "permanent"])
    upload.add_argument("--parallel", type=int, default=3, help="files at once (default 3)")
    upload.add_argument(
        "--chunk-size", type=float, default=8.0, help="MiB per PATCH request (default 8)"
    )
    upload.add_argument(
        "--metadata", nargs="+", action="extend", default=[], metavar="K=V", help="file metadata"
    )
    upload.add_argument(
        "--no-checksum", action="store_true", help="send no Upload-Checksum per chunk"
    )
    upload.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for each verdict (default 600)"
    )
    upload.add_argument("--json", action="store_true", help="print one JSON list of results")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "element":
        return _element(args)
    if args.command == "upload":
        return _upload(args)
    try:
        settings = Settings.from_env(
            os.environ,
            {
                "APP_HOST": getattr(args, "host", None),
                "APP_PORT": getattr(args, "port", None),
                "DATA_DIR": getattr(args, "data_dir", None),
            },
        )
        configure_logging(settings.server.log_level, settings.server.log_format)
        if args.command == "serve":
            return asyncio.run(_serve(settings))
        if args.command == "elements":
            from tusingest import elementscmd

            return asyncio.run(elementscmd.run(settings, args))
        if args.command == "migrate":
            revision = asyncio.run(migrate(settings.database.url))
            print(f"database migrated to revision {revision}")
            return 0
        return _token(settings, args)
    except ConfigError as exc:
        print(f"tusingest: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _upload(args: argparse.Namespace) -> int:
    try:
        options = _upload_options(args)
    except ValueError as exc:
        print(f"tusingest upload: {exc}", file=sys.stderr)
        return 2
    from tusingest.client.batch import run_upload

    try:
        return run_upload(options, sys.stdout)
    except KeyboardInterrupt:
        print("tusingest upload: interrupted; run again to resume", file=sys.stderr)
        return 130


def _upload_options(args: argparse.Namespace) -> UploadOptions:
    """The command line's upload options, or ValueError saying what is wrong."""
    from tusingest.client.batch import UploadOptions
    from tusingest.client.resume import cache_file

    if args.parallel < 1:
        raise ValueError("--parallel must be at least 1")
    if not args.chunk_size > 0:
        raise ValueError("--chunk-size must be more than 0")
    if not args.wait >= 0:
        raise ValueError("--wait must not be negative")
    if not args.endpoint.startswith(("http://", "https://")):
        raise ValueError(f"--endpoint must be an http(s) URL, not {args.endpoint!r}")
    for path in args.files:
        if not path.is_file():
            raise ValueError(f"{path}: not a readable file")
    metadata: dict[str, str] = {}
    for pair in args.metadata:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ValueError(f"--metadata takes KEY=VALUE, not {pair!r}")
        metadata[key] = value
    try:
        encode_metadata(metadata)
    except TusingestError as exc:
        raise ValueError(exc.message) from None
    return UploadOptions(
        files=args.files,
        endpoint=args.endpoint,
        token=args.token or os.environ.get("TUSINGEST_TOKEN") or None,
        cache=cache_file(os.environ),
        metadata=metadata,
        retention=args.retention,
        parallel=args.parallel,
        chunk_bytes=max(1, int(args.chunk_size * (1 << 20))),
        checksum=not args.no_checksum,
        wait_seconds=args.wait,
        as_json=args.json,
    )


def _element(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        print("tusingest element: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.tls_client_ca is not None and args.tls_cert is None:
        print("tusingest element: --tls-client-ca needs --tls-cert and --tls-key", file=sys.stderr)
        return 2
    from tusingest.refelement.app import run_element_server
    from tusingest.refelement.state import ElementServerSettings

    try:
        settings = ElementServerSettings(
            element_id=args.element_id,
            mode=ElementMode(args.mode),
            root=Path(args.root).expanduser().absolute(),
            capacity=args.capacity,
            priority=args.priority,
            public_key=Path(args.public_key).read_bytes() if args.public_key else None,
            tls=_element_tls(args),
        )
        settings.root.mkdir(parents=True, exist_ok=True)
        scheme = "http" if settings.tls is None else "https"
        print(
            f"storage element {settings.element_id} ({settings.mode.value}) on "
            f"{scheme}://{args.host}:{args.port}/api/v1, files in {settings.root}",
            flush=True,
        )
        run_element_server(settings, args.host, args.port)
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"tusingest element: {exc}", file=sys.stderr)
        return 2
    return 0


def _element_tls(args: argparse.Namespace) -> ElementTls | None:
    if args.tls_cert is None:
        return None
    from tusingest.refelement.state import ElementTls

    client_ca = args.tls_client_ca
    return ElementTls(
        Path(args.tls_cert).expanduser().absolute(),
        Path(args.tls_key).expanduser().absolute(),
        None if client_ca is None else Path(client_ca).expanduser().absolute(),
    )


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


_DRAIN_WINDOW_SECONDS = 1.0


async def _serve(settings: Settings) -> int:
    # Bind first: a busy port must stop startup before any service (database, runner) starts.
    sock = _listen(settings)
    open_files = raise_open_files_limit()
    grace = settings.server.shutdown_grace_seconds
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access"),
        # Also the first request's deadline: a connection that sends no complete request
        # (idle, or stuck in its headers) is closed.
        keepalive_timeout=settings.server.idle_timeout_seconds,
        shutdown_timeout=grace,
        # A request's body buffer until its handler streams it (then the intake's share).
        read_bufsize=ARRIVAL_BUFFER,
    )
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
        cap = connection_cap(settings.server.max_connections, open_files)
        await CappedSite(
            runner,
            sock,
            max_connections=cap,
            on_connection=admit,
            # A request the HTTP parser refuses is answered as the tus surface answers.
            refusal_headers={"Tus-Resumable": TUS_VERSION},
        ).start()
        _banner(settings, runner)
        await stop.wait()
        log.info("shutting down: draining for up to %g s", grace)
        # Readiness fails and new requests are refused first; uploads commit what arrived;
        # running operations finish or hand their lease back; then the listener closes.
        await app[SERVICES].lifecycle.drain(grace)
        # A moment more with the listener open, answering 503, so that load balancers and
        # clients see the node leave rather than a refused connection mid-request.
        await asyncio.sleep(min(_DRAIN_WINDOW_SECONDS, grace))
        return 0
    finally:
        await runner.cleanup()
        log.info("stopped")


def _listen(settings: Settings) -> socket.socket:
    try:
        server = settings.server
        infos = socket.getaddrinfo(
            server.host, server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
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
        where = f"{settings.server.host}:{settings.server.port}"
        raise ConfigError("APP_PORT", f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _storage_line(settings: Settings) -> str:
    storage = settings.storage
    if not storage.redis_url:
        return f"embedded element {storage.local_element_id} in {storage.local_storage_dir}"
    redis = storage.redis_url.rsplit("@", 1)[-1]  # never print a password
    admin = f", Admin Module {storage.admin_module_url}" if storage.admin_module_url else ""
    return f"elements from Redis {redis}{admin}"


def _banner(settings: Settings, runner: web.AppRunner) -> None:
    host, port = runner.addresses[0][:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    lines = [
        f"tusingest listening on {url}",
        f"  tus endpoint: {url}/files/",
        f"  database:     {settings.database.url.split('@')[-1]}",
        f"  staging:      {settings.uploads.staging_dir}",
        f"  storage:      {_storage_line(settings)}",
    ]
    if settings.auth.enabled:
        data_dir = settings.server.data_dir
        lines.append(f"  token:        tusingest token --sub alice --data-dir {data_dir}")
    else:
        lines.append("  auth:         OFF (AUTH_ENABLED=off): anyone can upload")
    print("\n".join(lines), flush=True)
