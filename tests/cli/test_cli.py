"""The `tusingest` command line, run as real subprocesses: serve, token, migrate."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import jwt
import pytest
import requests

from tests.conftest import TUS

# Variables the server reads; scrubbed from the inherited environment so tests start clean.
OUR_VARIABLES = (
    "APP_HOST",
    "APP_PORT",
    "DATA_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "STAGING_DIR",
    "UPLOAD_SESSION_TTL_HOURS",
    "MAX_FILE_SIZE_MB",
    "AUTH_ENABLED",
    "AUTH_PUBLIC_KEY_PATH",
    "AUTH_ALGORITHM",
    "CORS_ALLOWED_ORIGINS",
    "LOG_LEVEL",
    "LOG_FORMAT",
)
STARTUP_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OUR_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A one-shot command, bounded by a timeout."""
    return subprocess.run(
        [sys.executable, "-m", "tusingest", *args],
        cwd=cwd,
        env=dict(env or _env()),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


class Serve:
    """`tusingest serve` in the background, output captured in files (no pipe to fill up)."""

    def __init__(self, workdir: Path, args: list[str], env: Mapping[str, str]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._out_path = workdir / "serve.out"
        self._err_path = workdir / "serve.err"
        self._out = self._out_path.open("w")
        self._err = self._err_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tusingest", "serve", *args],
            cwd=workdir,
            env=dict(env),
            stdout=self._out,
            stderr=self._err,
            text=True,
        )

    @property
    def stdout(self) -> str:
        return self._out_path.read_text()

    @property
    def stderr(self) -> str:
        return self._err_path.read_text()

    def wait_for_banner(self, timeout: float = STARTUP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.stdout
            if "tus endpoint" in out:
                return out
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{out}\n{self.stderr}")
            time.sleep(0.05)
        pytest.fail(f"serve printed no banner in {timeout}s:\n{self.stdout}\n{self.stderr}")

    def wait_exit(self, timeout: float = STARTUP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running after {timeout}s:\n{self.stdout}\n{self.stderr}")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()
        self._err.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, env: Mapping[str, str] | None = None, name: str = "serve") -> Serve:
        proc = Serve(tmp_path / name, list(args), env or _env())
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def _ready(url: str) -> requests.Response:
    return requests.get(f"{url}/health/ready", timeout=10)


# --- serve on embedded defaults ---------------------------------------------------------------


def test_serve_embedded_defaults(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    proc = serve("--port", str(port), "--data-dir", str(data_dir))
    banner = proc.wait_for_banner()

    url = f"http://127.0.0.1:{port}"
    assert f"listening on {url}" in banner
    assert f"{url}/files/" in banner
    assert f"tusingest token --sub alice --data-dir {data_dir}" in banner

    private = data_dir / "keys" / "jwt_private.pem"
    public = data_dir / "keys" / "jwt_public.pem"
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    assert private.stat().st_mode & 0o077 == 0, "the dev private key must be owner-only"
    assert (data_dir / "tusingest.db").is_file()

    ready = _ready(url)
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"

    # A token minted by the CLI against the same data dir is accepted by the server.
    minted = run(["token", "--sub", "alice", "--data-dir", str(data_dir)], cwd=tmp_path)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    created = requests.post(
        f"{url}/files/",
        headers={**TUS, "Upload-Length": "3", "Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    # ... and without one, nothing is accepted (auth is on by default).
    anonymous = requests.post(f"{url}/files/", headers={**TUS, "Upload-Length": "3"}, timeout=10)
    assert anonymous.status_code == 401

    assert proc.terminate() == 0


def test_serve_keeps_the_dev_keys_across_restarts(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    data_dir = tmp_path / "data"
    first = serve("--port", str(_free_port()), "--data-dir", str(data_dir), name="first")
    first.wait_for_banner()
    public = (data_dir / "keys" / "jwt_public.pem").read_bytes()
    assert first.terminate() == 0

    port = _free_port()
    second = serve("--port", str(port), "--data-dir", str(data_dir), name="second")
    second.wait_for_banner()
    assert (data_dir / "keys" / "jwt_public.pem").read_bytes() == public
    assert _ready(f"http://127.0.0.1:{port}").status_code == 200
    assert second.terminate() == 0


def test_sigterm_stops_serve_with_exit_0(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    port = _free_port()
    proc = serve("--port", str(port), "--data-dir", str(tmp_path / "data"))
    proc.wait_for_banner()
    assert _ready(f"http://127.0.0.1:{port}").status_code == 200
    assert proc.terminate() == 0
    assert "shutting down" in proc.stderr
    with pytest.raises(requests.ConnectionError):
        _ready(f"http://127.0.0.1:{port}")


def test_sigint_stops_serve_with_exit_0(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    proc = serve("--port", str(_free_port()), "--data-dir", str(tmp_path / "data"))
    proc.wait_for_banner()
    proc.proc.send_signal(signal.SIGINT)
    assert proc.wait_exit(30) == 0


def test_env_configures_serve_and_flags_override_it(
    tmp_path: Path, serve: Callable[..., Serve]
) -> None:
    env_port, flag_port = _free_port(), _free_port()
    data_dir = tmp_path / "data"
    proc = serve(
        "--port",
        str(flag_port),
        env=_env(APP_PORT=str(env_port), DATA_DIR=str(data_dir), MAX_FILE_SIZE_MB="2"),
    )
    banner = proc.wait_for_banner()
    assert f"http://127.0.0.1:{flag_port}/files/" in banner
    assert (data_dir / "keys" / "jwt_public.pem").exists()
    options = requests.options(f"http://127.0.0.1:{flag_port}/files/", timeout=10)
    assert options.headers["Tus-Max-Size"] == str(2 * 1024 * 1024)
    with pytest.raises(requests.ConnectionError):
        _ready(f"http://127.0.0.1:{env_port}")
    assert proc.terminate() == 0


def test_auth_disabled_warns_at_startup(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    port = _free_port()
    proc = serve(
        "--port", str(port), "--data-dir", str(tmp_path / "data"), env=_env(AUTH_ENABLED="off")
    )
    banner = proc.wait_for_banner()
    assert "WARNING" in proc.stderr
    assert "AUTH_ENABLED=off" in proc.stderr
    assert "OFF" in banner
    assert "tusingest token" not in banner
    created = requests.post(
        f"http://127.0.0.1:{port}/files/", headers={**TUS, "Upload-Length": "1"}, timeout=10
    )
    assert created.status_code == 201, created.text
    assert proc.terminate() == 0


# --- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [("APP_PORT", "abc"), ("LOG_FORMAT", "xml"), ("DATABASE_URL", "mysql://x")],
)
def test_bad_env_value_stops_serve(tmp_path: Path, variable: str, value: str) -> None:
    result = run(
        ["serve", "--data-dir", str(tmp_path / "data")], cwd=tmp_path, env=_env(**{variable: value})
    )
    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert "tus endpoint" not in result.stdout


def test_bad_port_flag_stops_serve(tmp_path: Path) -> None:
    result = run(["serve", "--port", "70000", "--data-dir", str(tmp_path / "d")], cwd=tmp_path)
    assert result.returncode != 0
    assert "APP_PORT" in result.stderr


def test_port_in_use_stops_serve(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            ["serve", "--port", str(port), "--data-dir", str(tmp_path / "d")], cwd=tmp_path
        )
    assert result.returncode != 0
    assert "APP_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_public_key_stops_serve(tmp_path: Path) -> None:
    result = run(
        ["serve", "--port", str(_free_port()), "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path,
        env=_env(AUTH_PUBLIC_KEY_PATH=str(tmp_path / "nope.pem")),
    )
    assert result.returncode != 0
    assert "AUTH_PUBLIC_KEY_PATH" in result.stderr
    assert "Traceback" not in result.stderr


# --- token ------------------------------------------------------------------------------------


def test_token_verifies_against_the_data_dir_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    before = int(time.time())
    result = run(
        [
            "token",
            "--sub",
            "u-42",
            "--name",
            "Ada",
            "--role",
            "admin",
            "--ttl",
            "600",
            "--data-dir",
            str(data_dir),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2

    public = (data_dir / "keys" / "jwt_public.pem").read_bytes()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, public, algorithms=["RS256"])
    assert claims["sub"] == "u-42"
    assert claims["name"] == "Ada"
    assert claims["role"] == "admin"
    assert before + 600 <= claims["exp"] <= int(time.time()) + 600

    # A second token reuses the same key pair rather than minting a new one.
    again = run(["token", "--sub", "bob", "--data-dir", str(data_dir)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    bob = jwt.decode(again.stdout.strip(), public, algorithms=["RS256"])
    assert bob["sub"] == "bob"
    assert bob["name"] == "bob"
    assert bob["role"] == "user"
    assert bob["exp"] - bob["iat"] == 3600


def test_token_does_not_verify_with_another_data_dir(tmp_path: Path) -> None:
    result = run(["token", "--sub", "a", "--data-dir", str(tmp_path / "one")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    other = run(["token", "--sub", "a", "--data-dir", str(tmp_path / "two")], cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            result.stdout.strip(),
            (tmp_path / "two" / "keys" / "jwt_public.pem").read_bytes(),
            algorithms=["RS256"],
        )


@pytest.mark.parametrize(
    "args",
    [["token"], ["token", "--sub", "a", "--role", "root"], ["token", "--sub", "a", "--ttl", "0"]],
)
def test_token_rejects_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    result = run([*args, "--data-dir", str(tmp_path / "d")], cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout.strip() == ""


# --- migrate ----------------------------------------------------------------------------------


def test_migrate_sqlite_in_a_fresh_data_dir(tmp_path: Path, serve: Callable[..., Serve]) -> None:
    data_dir = tmp_path / "fresh" / "data"
    result = run(["migrate"], cwd=tmp_path, env=_env(DATA_DIR=str(data_dir)))
    assert result.returncode == 0, result.stderr
    assert "migrated to revision" in result.stdout
    assert (data_dir / "tusingest.db").is_file()


def test_serve_refuses_an_unmigrated_postgres_until_migrate(
    tmp_path: Path, serve: Callable[..., Serve], new_pg_database: Callable[[], str]
) -> None:
    database_url = new_pg_database()
    env = _env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path / "data"))
    port = _free_port()

    refused = run(["serve", "--port", str(port)], cwd=tmp_path, env=env)
    assert refused.returncode != 0
    assert "tusingest migrate" in refused.stderr
    assert "DATABASE_URL" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "tus endpoint" not in refused.stdout

    migrated = run(["migrate"], cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated to revision" in migrated.stdout

    proc = serve("--port", str(port), env=env)
    banner = proc.wait_for_banner()
    assert database_url.rsplit("/", 1)[-1] in banner
    ready = _ready(f"http://127.0.0.1:{port}")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert proc.terminate() == 0


def test_banner_does_not_show_the_database_password(
    tmp_path: Path, serve: Callable[..., Serve], new_pg_database: Callable[[], str]
) -> None:
    url = new_pg_database().replace("://postgres@", "://postgres:s3cr3t-pw@")
    env = _env(DATABASE_URL=url, DATA_DIR=str(tmp_path / "data"))
    assert run(["migrate"], cwd=tmp_path, env=env).returncode == 0
    proc = serve("--port", str(_free_port()), env=env)
    banner = proc.wait_for_banner()
    assert "s3cr3t-pw" not in banner
    assert "s3cr3t-pw" not in proc.stderr
    assert proc.terminate() == 0


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql://postgres@127.0.0.1:5432/tusingest_does_not_exist",
        "postgresql://postgres@127.0.0.1:1/x",
    ],
)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_unreachable_database_is_a_clear_error(
    tmp_path: Path, command: str, database_url: str
) -> None:
    result = run(
        [command],
        cwd=tmp_path,
        env=_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path / "d"), APP_PORT="0"),
    )
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
