"""`tusingest upload`, run as a real subprocess against a real server over real HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import COMMAND_TIMEOUT, _env
from tests.conftest import Keys, Server
from tusingest.client.resume import ResumeStore, cache_file, fingerprint

SUB = "uploader"


@pytest.fixture(scope="module")
def server(make_server: Callable[..., Server]) -> Server:
    return make_server("sqlite")


@pytest.fixture(scope="module")
def typed_server(make_server: Callable[..., Server]) -> Server:
    """A server keeping the default ALLOWED_MIME_TYPES (random bytes are not among them)."""
    return make_server("sqlite", ALLOWED_MIME_TYPES="")


def _upload_env(tmp_path: Path, keys: Keys) -> dict[str, str]:
    return _env(XDG_CACHE_HOME=str(tmp_path / "cache"), TUSINGEST_TOKEN=keys.token(SUB))


def _upload(
    server: Server, tmp_path: Path, files: list[Path], *args: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tusingest",
            "upload",
            *map(str, files),
            "--endpoint",
            server.endpoint,
            *args,
        ],
        cwd=tmp_path,
        env=_upload_env(tmp_path, server.keys),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    token = server.keys.token(SUB)
    assert token not in result.stdout
    assert token not in result.stderr
    return result


def _results(completed: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads(completed.stdout)
    return results


def _random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_several_files_in_parallel_are_stored_with_their_digests_and_metadata(
    server: Server, tmp_path: Path
) -> None:
    files = [
        _random_file(tmp_path / "one.bin", 300_000),
        _random_file(tmp_path / "two.bin", 1_200_000),
        _random_file(tmp_path / "three.bin", 2_500_000),
    ]
    completed = _upload(
        server,
        tmp_path,
        files,
        *("--parallel", "3", "--chunk-size", "0.25", "--retention", "temporary"),
        *("--metadata", "project=apollo", "batch=7", "--json"),
    )
    assert completed.returncode == 0, completed.stderr
    results = _results(completed)
    assert [r["file"] for r in results] == [str(f) for f in files]
    for path, result in zip(files, results, strict=True):
        assert result["status"] == "stored", result
        assert result["size"] == path.stat().st_size
        assert result["bytes_sent"] == path.stat().st_size
        assert result["resumed_from"] == 0
        assert result["sha256"] == _sha256(path)
        info = server.status(result["upload_url"], sub=SUB)
        assert info["upload_status"] == "stored"
        assert info["file"]["sha256"] == _sha256(path)
        assert info["file"]["file_id"] == result["file_id"]
        assert info["file"]["element_id"] == result["element_id"]
        assert info["file"]["original_filename"] == path.name
        assert info["metadata"]["project"] == "apollo"
        assert info["metadata"]["batch"] == "7"
        assert info["metadata"]["retention_policy"] == "temporary"
    # Judged uploads leave nothing to resume.
    assert json.loads(cache_file({"XDG_CACHE_HOME": str(tmp_path / "cache")}).read_text()) == {}


def test_plain_lines_when_stdout_is_not_a_terminal(server: Server, tmp_path: Path) -> None:
    stored = _random_file(tmp_path / "plain.bin", 400_000)
    empty = tmp_path / "empty.bin"
    empty.touch()
    completed = _upload(server, tmp_path, [stored, empty], "--chunk-size", "0.125")
    assert completed.returncode == 1, completed.stderr
    lines = completed.stdout.splitlines()
    assert "\x1b" not in completed.stdout  # no terminal control sequences
    assert f"uploading {stored.name} (390.6 KiB)" in lines
    # A line at each quarter passed (after 128, 256 and 384 of its 390.6 KiB), none at 100%.
    quarters = [line for line in lines if line.startswith(f"  {stored.name}: ")]
    assert quarters == [f"  {stored.name}: {p}% of 390.6 KiB" for p in (25, 50, 75)]
    verdict = next(line for line in lines if line.startswith("stored "))
    assert verdict.startswith(f"stored {stored} → file_id ")
    assert verdict.endswith(" on se-local (390.6 KiB)")
    file_id = verdict.split("file_id ")[1].split()[0]
    response = server.session_http(f"/api/files/{file_id}", sub=SUB)
    assert response.status_code == 200
    assert response.json()["sha256_hash"] == _sha256(stored)
    assert f"rejected {empty}: empty_file (the file is empty)" in lines
    assert lines[-1] == "2 files: 1 stored, 1 rejected; 390.6 KiB sent"


def test_progress_bars_on_a_terminal(server: Server, tmp_path: Path) -> None:
    path = _random_file(tmp_path / "tty.bin", 600_000)
    leader, follower = pty.openpty()
    env = {**_upload_env(tmp_path, server.keys), "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tusingest",
            "upload",
            str(path),
            "--endpoint",
            server.endpoint,
            "--chunk-size",
            "0.125",
        ],
        cwd=tmp_path,
        env=env,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the process closed its end
        while chunk := os.read(leader, 65536):
            screen += chunk
    os.close(leader)
    assert proc.wait(COMMAND_TIMEOUT) == 0
    text = screen.decode(errors="replace")
    assert "\x1b[" in text  # drawn, not printed line by line
    assert "━" in text  # rich's bar
    assert re.search(r"\btotal +\x1b\[[0-9;]*m━", text)  # the total's bar
    assert re.search(r"\btty\.bin +\x1b\[[0-9;]*m━", text)  # and the file's own
    assert "585.9/585.9 KiB" in text  # filled in the end
    assert f"stored {path} → file_id " in text
    assert "uploading tty.bin" not in text  # the plain lines are for pipes and files


def test_rejected_files_give_their_reason_and_exit_1(typed_server: Server, tmp_path: Path) -> None:
    noise = _random_file(tmp_path / "noise.bin", 70_000)
    empty = tmp_path / "empty.txt"
    empty.touch()
    completed = _upload(typed_server, tmp_path, [noise, empty], "--json")
    assert completed.returncode == 1
    by_name = {Path(r["file"]).name: r for r in _results(completed)}
    assert by_name["noise.bin"]["status"] == "rejected"
    assert by_name["noise.bin"]["error"] == "mime_type_not_allowed"
    assert by_name["noise.bin"]["message"].endswith("are not accepted")
    assert by_name["noise.bin"]["file_id"] is None
    assert by_name["empty.txt"]["status"] == "rejected"
    assert by_name["empty.txt"]["error"] == "empty_file"
    info = typed_server.status(by_name["noise.bin"]["upload_url"], sub=SUB)
    assert info["upload_status"] == "rejected"
    assert info["file"] is None
    # Judged for good: nothing is left to resume (noise.bin had an entry while it uploaded).
    assert json.loads(cache_file({"XDG_CACHE_HOME": str(tmp_path / "cache")}).read_text()) == {}


def test_one_stored_and_one_rejected_in_json_exits_1(typed_server: Server, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("plain text is allowed by default\n" * 100)
    empty = tmp_path / "nothing.txt"
    empty.touch()
    completed = _upload(typed_server, tmp_path, [text, empty], "--json")
    assert completed.returncode == 1
    results = _results(completed)
    assert [r["status"] for r in results] == ["stored", "rejected"]
    assert set(results[0]) == {
        "file",
        "status",
        "size",
        "upload_url",
        "file_id",
        "element_id",
        "sha256",
        "error",
        "message",
        "resumed_from",
        "bytes_sent",
    }
    assert results[0]["element_id"] == "se-local"
    assert results[0]["error"] is None


def test_an_interrupted_run_resumes_from_the_servers_offset(server: Server, tmp_path: Path) -> None:
    size = 24 << 20
    big = _random_file(tmp_path / "big.bin", size)
    env = _upload_env(tmp_path, server.keys)
    store = ResumeStore(cache_file(env))
    key = fingerprint(big).key(server.endpoint)
    command = [sys.executable, "-m", "tusingest", "upload", str(big)]
    command += ["--endpoint", server.endpoint, "--chunk-size", "0.0625", "--json"]
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = _wait_for(lambda: store.get(key))
        _wait_for(lambda: server.status(url, sub=SUB)["offset"] > 0 or None)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    # The server commits what arrived of the PATCH the kill cut short; then it holds still.
    before = _wait_for(lambda: _settled_offset(server, url))
    assert 0 < before < size

    completed = _upload(server, tmp_path, [big], "--chunk-size", "4", "--json")
    assert completed.returncode == 0, completed.stderr
    [result] = _results(completed)
    assert result["upload_url"] == url
    assert result["resumed_from"] == before
    assert result["bytes_sent"] == size - before
    assert result["status"] == "stored"
    assert result["sha256"] == _sha256(big)
    assert server.status(url, sub=SUB)["file"]["sha256"] == _sha256(big)
    listed = server.session_http("/api/files?limit=500", sub=SUB).json()["files"]
    assert [f["file_id"] for f in listed if f["sha256_hash"] == _sha256(big)] == [result["file_id"]]
    assert store.get(key) is None


def test_a_stale_upload_url_starts_a_new_upload(server: Server, tmp_path: Path) -> None:
    path = _random_file(tmp_path / "stale.bin", 100_000)
    store = ResumeStore(cache_file(_upload_env(tmp_path, server.keys)))
    stale = f"{server.endpoint}0123456789abcdef0123456789abcdef"
    store.put(fingerprint(path).key(server.endpoint), stale, path)
    completed = _upload(server, tmp_path, [path], "--json")
    assert completed.returncode == 0, completed.stderr
    [result] = _results(completed)
    assert result["status"] == "stored"
    assert result["upload_url"] != stale
    assert result["resumed_from"] == 0


def test_a_refused_token_fails_the_file_and_is_not_shown(server: Server, tmp_path: Path) -> None:
    path = _random_file(tmp_path / "denied.bin", 1000)
    token = "not-a-jwt-but-secret-0123456789"
    completed = subprocess.run(
        [sys.executable, "-m", "tusingest", "upload", str(path), "--endpoint", server.endpoint],
        cwd=tmp_path,
        env=_env(XDG_CACHE_HOME=str(tmp_path / "cache"), TUSINGEST_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 1
    assert token not in completed.stdout
    assert token not in completed.stderr
    assert f"failed {path}: " in completed.stdout
    assert "1 file: 1 failed; 0 B sent" in completed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.bin"], "missing.bin: not a readable file"),
        (["here.bin", "--metadata", "novalue"], "--metadata takes KEY=VALUE"),
        (["here.bin", "--metadata", "a b=c"], "metadata key 'a b' cannot be used"),
        (["here.bin", "--parallel", "0"], "--parallel must be at least 1"),
        (["here.bin", "--chunk-size", "0"], "--chunk-size must be more than 0"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "here.bin").write_bytes(b"x")
    completed = subprocess.run(
        [sys.executable, "-m", "tusingest", "upload", *args, "--endpoint", "http://127.0.0.1:9/"],
        cwd=tmp_path,
        env=_env(XDG_CACHE_HOME=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 2
    assert message in completed.stderr
    assert completed.stdout == ""


def test_metadata_name_type_and_pairs_with_token_option_and_home_cache(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "report.csv"
    path.write_text("a,b\n1,2\n" * 1000)
    token = server.keys.token(SUB)
    home = tmp_path / "home"
    # The token from --token alone; no XDG_CACHE_HOME: the cache goes under ~/.cache.
    env = {k: v for k, v in _env(HOME=str(home)).items() if k != "TUSINGEST_TOKEN"}
    env.pop("XDG_CACHE_HOME", None)
    completed = subprocess.run(
        [sys.executable, "-m", "tusingest", "upload", str(path), "--endpoint", server.endpoint,
         "--token", token, "--metadata", "filename=renamed.csv", "team=ops", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert token not in completed.stdout + completed.stderr
    [result] = _results(completed)
    info = server.status(result["upload_url"], sub=SUB)
    assert info["upload_status"] == "stored"
    assert info["metadata"] == {"filename": "renamed.csv", "filetype": "text/csv", "team": "ops"}
    assert info["file"]["original_filename"] == "renamed.csv"  # the user's pair won
    assert info["file"]["declared_type"] == "text/csv"  # guessed from the name
    assert info["file"]["retention_policy"] == "temporary"  # the server's default
    assert json.loads((home / ".cache" / "tusingest" / "uploads.json").read_text()) == {}


def test_an_upload_resumes_only_for_its_endpoint_and_the_same_file(
    server: Server, typed_server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "resumable.txt"
    path.write_text("text travels to both servers\n" * 10_000)
    data = path.read_bytes()
    # A run that stopped after 100 000 bytes, as the cache remembers it.
    url = server.create(len(data), sub=SUB)
    assert server.patch(url, data[:100_000], 0, sub=SUB).status_code == 204
    store = ResumeStore(cache_file(_upload_env(tmp_path, server.keys)))
    key = fingerprint(path).key(server.endpoint)
    store.put(key, url, path)

    # Another endpoint: a new upload there; the entry for the first one stays.
    completed = _upload(typed_server, tmp_path, [path], "--json")
    [elsewhere] = _results(completed)
    assert elsewhere["status"] == "stored", elsewhere
    assert elsewhere["upload_url"].startswith(typed_server.endpoint)
    assert elsewhere["resumed_from"] == 0
    assert store.get(key) == url

    # The same bytes with another mtime are another fingerprint: a new upload too.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    [touched] = _results(_upload(server, tmp_path, [path], "--json"))
    assert touched["status"] == "stored", touched
    assert touched["upload_url"] != url
    assert touched["resumed_from"] == 0
    assert touched["bytes_sent"] == len(data)

    # The file as it was: the remembered upload goes on from the server's offset.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    [resumed] = _results(_upload(server, tmp_path, [path], "--json"))
    assert resumed["status"] == "stored", resumed
    assert resumed["upload_url"] == url
    assert resumed["resumed_from"] == 100_000
    assert resumed["bytes_sent"] == len(data) - 100_000
    assert server.status(url, sub=SUB)["file"]["sha256"] == _sha256(path)
    assert store.get(key) is None


def test_a_rate_limited_creation_waits_the_retry_after_and_goes_on(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    # One upload started every 2 s, one at a time: the second file's creation is refused with
    # `429 rate_limited` and `Retry-After: 2` (the first took the only token).
    limited = make_server(
        "sqlite", RATE_LIMIT_UPLOADS_PER_MINUTE="30", RATE_LIMIT_UPLOADS_BURST="1"
    )
    files = [_random_file(tmp_path / f"{name}.bin", 50_000) for name in ("first", "second")]
    started = time.monotonic()
    completed = _upload(limited, tmp_path, files, "--parallel", "2")
    took = time.monotonic() - started
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    # The refusal is said once, with the server's reason and the wait it asked for: an
    # exponential backoff (0.25-0.5 s, then 0.5-1 s, ...) would need several tries for 2 s.
    waits = [line for line in lines if "429 rate_limited" in line]
    assert len(waits) == 1, completed.stdout
    name, _, why = waits[0].partition(": retrying in 2.0 s after POST ")
    assert name in ("  first.bin", "  second.bin"), waits[0]
    assert why.startswith(f"{limited.endpoint}: 429 rate_limited: too many uploads started"), why
    assert took >= 2.0
    assert lines[-1] == "2 files: 2 stored; 97.7 KiB sent"
    for path in files:
        verdict = next(line for line in lines if line.startswith(f"stored {path} → file_id "))
        file_id = verdict.split("file_id ")[1].split()[0]
        stored = limited.session_http(f"/api/files/{file_id}", sub=SUB)
        assert stored.status_code == 200, stored.text
        assert stored.json()["sha256_hash"] == _sha256(path)


def _settled_offset(server: Server, url: str) -> int | None:
    """The offset once two reads a moment apart agree."""
    first = server.status(url, sub=SUB)["offset"]
    time.sleep(0.3)
    second: int = server.status(url, sub=SUB)["offset"]
    return second if first == second else None


def _wait_for(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(0.02)
    pytest.fail(f"nothing came within {timeout} s")
