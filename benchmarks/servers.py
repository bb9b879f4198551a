"""The servers under test: starting and stopping them.

Owns process management: tusingest via `python -m tusingest serve` in a temp DATA_DIR, on
SQLite or a fresh PostgreSQL database created and dropped here; the baseline script; tokens
and migrations through the tusingest CLI; readiness; always-stop. Watching the processes is
`procstats`; the peer tus servers are started by `peer_servers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from benchmarks.client import Connection, HttpError
from benchmarks.procstats import find_listening_pid
from benchmarks.stored import Locator, TusingestFiles

BASELINE_SCRIPT = Path(__file__).with_name("baseline.py")
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
# Variables tusingest reads; the benchmark sets its own and drops any inherited ones.
_TUSINGEST_VARIABLES = (
    "LOCAL_STORAGE_DIR",
    "REDIS_URL",
    "VIRUS_SCAN_ENABLED",
    "CLAMD_URL",
    "COMPLETION_WAIT_SECONDS",
    "ALLOWED_MIME_TYPES",
    "MIME_TYPE_VALIDATION",
    "COMPRESSION_ENABLED",
    "TUSINGEST_CRASH_AT_STEP",
    "APP_HOST",
    "APP_PORT",
    "DATA_DIR",
    "DATABASE_URL",
    "STAGING_DIR",
    "UPLOAD_SESSION_TTL_HOURS",
    "UPLOAD_REAPER_INTERVAL_SECONDS",
    "MAX_FILE_SIZE_MB",
    "LOCK_TIMEOUT_SECONDS",
    "AUTH_ENABLED",
    "AUTH_PUBLIC_KEY_PATH",
    "AUTH_ALGORITHM",
    "CORS_ALLOWED_ORIGINS",
    "LOG_LEVEL",
    "LOG_FORMAT",
)


class StartupError(Exception):
    """A server, migration or token could not be set up."""


@dataclass
class Server:
    """A server as the workloads see it."""

    name: str
    host: str
    port: int
    pid: int | None
    headers: dict[str, str]
    # Where the stored bytes can be read back; None: offsets only (baseline).
    stored: Locator | None
    description: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # Creation sends Upload-Metadata (filename, filetype): the server needs it.
    sends_metadata: bool = False
    # Once complete, an upload is no longer known (HEAD 404) and DELETE cannot remove its
    # file: the harness seeds W3 with uploads left one byte short and removes the files.
    forgets_completed: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connection(self) -> Connection:
        return Connection(self.host, self.port, self.headers)

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


async def open_connections(server: Server, n: int) -> list[Connection]:
    """`n` (at least one) connected keep-alive connections to `server`."""
    connections = [server.connection() for _ in range(max(1, n))]
    try:
        await asyncio.gather(*(c.connect() for c in connections))
    except BaseException:
        for conn in connections:
            conn.close()
        raise
    return connections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C reaches the benchmark, which then stops the servers itself.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def wait_ready(server: Server, timeout_s: float = 60.0) -> None:
    """Poll GET /health/ready until 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    connection = Connection(server.host, server.port)
    last = "no answer"
    try:
        while time.monotonic() < deadline:
            if not server.alive():
                raise StartupError(
                    f"{server.name} exited during startup:\n{server.log_tail()}".rstrip()
                )
            try:
                response = await connection.request("GET", "/health/ready", timeout_s=2.0)
                if response.status == 200:
                    return
                last = response.describe()
            except HttpError as exc:
                last = str(exc)
            await asyncio.sleep(0.1)
    finally:
        connection.close()
    raise StartupError(
        f"{server.name} not ready after {timeout_s:g} s ({last}):\n{server.log_tail()}".rstrip()
    )


def tusingest_env(
    data_dir: Path,
    database_url: str | None,
    max_file_mib: int,
    log_level: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """tusingest's environment: ours, with `extra` (`--tusingest-env`) applied last."""
    env = {k: v for k, v in os.environ.items() if k not in _TUSINGEST_VARIABLES}
    env.update(
        DATA_DIR=str(data_dir),
        MAX_FILE_SIZE_MB=str(max_file_mib),
        LOG_LEVEL=log_level,
        APP_HOST="127.0.0.1",
        # The payloads are random bytes (application/octet-stream), outside the default types.
        ALLOWED_MIME_TYPES="*",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


def tusingest_cli(args: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Run `python -m tusingest ARGS`; its stdout, or StartupError with its stderr."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tusingest", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StartupError(f"tusingest {args[0]} took longer than {timeout:g} s") from None
    if done.returncode != 0:
        raise StartupError(f"tusingest {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


async def start_tusingest(env: dict[str, str], work_dir: Path, description: str) -> Server:
    port = free_port()
    data_dir = Path(env["DATA_DIR"])
    log_path = work_dir / "tusingest.log"
    process = spawn(
        [sys.executable, "-m", "tusingest", "serve", "--port", str(port)], env, log_path
    )
    server = Server(
        name="tusingest",
        host="127.0.0.1",
        port=port,
        pid=process.pid,
        headers={"Tus-Resumable": "1.0.0"},
        stored=TusingestFiles(
            Path(env.get("STAGING_DIR") or data_dir / "staging"),
            Path(env.get("LOCAL_STORAGE_DIR") or data_dir / "storage"),
        ),
        description=description,
        process=process,
        log_path=log_path,
    )
    try:
        await wait_ready(server)
        token = await asyncio.to_thread(
            tusingest_cli, ["token", "--sub", "bench", "--ttl", "86400"], env
        )
    except BaseException:
        stop(process)
        raise
    server.headers["Authorization"] = f"Bearer {token}"
    return server


async def start_baseline(work_dir: Path) -> Server:
    port = free_port()
    log_path = work_dir / "baseline.log"
    process = spawn(
        [sys.executable, str(BASELINE_SCRIPT), "--port", str(port)], dict(os.environ), log_path
    )
    server = Server(
        name="baseline",
        host="127.0.0.1",
        port=port,
        pid=process.pid,
        headers={"Tus-Resumable": "1.0.0"},
        stored=None,
        description="benchmarks/baseline.py: aiohttp, reads and discards bodies, offsets in a dict",
        process=process,
        log_path=log_path,
    )
    return await started(server)


async def started(server: Server) -> Server:
    """`server` once it answers; stopped if it does not."""
    try:
        await wait_ready(server)
    except BaseException:
        stop(server.process)
        raise
    return server


def external_tusingest(
    url: str, token: str, staging_dir: Path, pid: int | None, storage_dir: Path | None = None
) -> Server:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise StartupError(f"--url must be http://host:port, not {url!r}")
    port = parts.port or 80
    found = pid if pid is not None else find_listening_pid(port)
    shown = f"pid {found}" if found else "pid unknown: no CPU/RSS figures (pass --server-pid)"
    return Server(
        name="tusingest",
        host=parts.hostname,
        port=port,
        pid=found,
        headers={"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"},
        # By default the embedded local element's place, beside the staging dir.
        stored=TusingestFiles(staging_dir, storage_dir or staging_dir.parent / "storage"),
        description=f"running server at {url} ({shown}), its own configuration",
    )


# --- PostgreSQL -------------------------------------------------------------------------------


def _plain_dsn(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def database_url_for(admin_url: str, name: str) -> str:
    parts = urlsplit(_plain_dsn(admin_url))
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_url: str) -> str:
    """Create `tusingest_bench_<random>` on the server of `admin_url`; returns its name."""
    import asyncpg  # a tusingest dependency; only needed with --database-url

    name = f"tusingest_bench_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(_plain_dsn(admin_url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"cannot connect to PostgreSQL at {admin_url}: {exc}") from None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_plain_dsn(admin_url), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
