"""The servers under test: starting and stopping them, and watching them through /proc.

Owns process management (tusingest via `python -m tusingest serve` in a temp DATA_DIR, on
SQLite or a fresh PostgreSQL database created and dropped here; the baseline script; tokens
and migrations through the tusingest CLI; readiness; always-stop) and the /proc probes the
report needs: CPU seconds (utime + stime of the process and its descendants) and resident
memory (VmRSS sampled from a thread, VmHWM for the lifetime peak).
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
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from benchmarks.client import Connection, HttpError

BASELINE_SCRIPT = Path(__file__).with_name("baseline.py")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
# Variables tusingest reads; the benchmark sets its own and drops any inherited ones.
_TUSINGEST_VARIABLES = (
    "LOCAL_STORAGE_DIR",
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
    # Where the stored bytes can be read back (tusingest); None: offsets only (baseline).
    staging_dir: Path | None
    description: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

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
    data_dir: Path, database_url: str | None, max_file_mib: int, log_level: str
) -> dict[str, str]:
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
        staging_dir=Path(env["DATA_DIR"]) / "staging",
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
        staging_dir=None,
        description="benchmarks/baseline.py: aiohttp, reads and discards bodies, offsets in a dict",
        process=process,
        log_path=log_path,
    )
    try:
        await wait_ready(server)
    except BaseException:
        stop(process)
        raise
    return server


def external_tusingest(url: str, token: str, staging_dir: Path, pid: int | None) -> Server:
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
        staging_dir=staging_dir,
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


# --- /proc ------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after "(comm)"; comm may contain spaces and parentheses.
        return f.read().rpartition(")")[2].split()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants, plus children it has reaped."""
    fields = _stat_fields(pid)
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    for child in _descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ticks += sum(int(x) for x in _stat_fields(child)[11:13])
    return ticks / _CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def hwm_bytes(pid: int) -> int | None:
    """VmHWM: the process's lifetime peak resident set."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of a process from a thread every `interval` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.peak = max(self.peak, rss_bytes(self._pid))
            self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak


def find_listening_pid(port: int) -> int | None:
    """The pid owning a listening TCP socket on `port` (our own user's processes only)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                        return int(entry)
    return None
