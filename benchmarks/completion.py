"""Completion latency: from the last byte of an upload to its verdict `stored`.

    .venv/bin/python -m benchmarks.completion [--size-mib 1024] [--database-url URL] [--scan]
        [--element] [--binary]

Starts `tusingest serve` (SQLite, or the given PostgreSQL database, which must be migrated),
uploads pseudo-random bytes of a text-like kind in 8 MiB PATCHes with COMPLETION_WAIT_SECONDS=0,
then polls HEAD until the upload is stored, and checks the stored bytes' SHA-256. With --scan,
clamd (CLAMD_URL from the environment, e.g. from scripts/services) scans the file too. With
--element the file goes to a reference SE over HTTP (`tusingest element serve`, registered in a
private redis-server) instead of the embedded local element; --binary sends incompressible
bytes, so the whole file crosses to the SE.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

from benchmarks.servers import free_port

MiB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--database-url")
    parser.add_argument("--scan", action="store_true", help="scan with clamd (CLAMD_URL)")
    parser.add_argument("--element", action="store_true", help="store on an HTTP SE via Redis")
    parser.add_argument("--binary", action="store_true", help="incompressible bytes")
    args = parser.parse_args()
    size = args.size_mib * MiB
    with (
        tempfile.TemporaryDirectory(prefix="tusingest-completion-") as tmp,
        contextlib.ExitStack() as processes,
    ):
        data_dir = Path(tmp)
        inherited = ("DATABASE_URL", "REDIS_URL", "DATA_DIR")
        env = {k: v for k, v in os.environ.items() if k not in inherited}
        env.update(
            DATA_DIR=str(data_dir),
            LOG_LEVEL="WARNING",
            COMPLETION_WAIT_SECONDS="0",
            MAX_FILE_SIZE_MB=str(max(1024, args.size_mib)),
            VIRUS_SCAN_ENABLED="on" if args.scan else "off",
            ALLOWED_MIME_TYPES="*",
        )
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        if args.element:
            env["REDIS_URL"] = _element(data_dir, env, processes)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tusingest", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            code = _run(f"http://127.0.0.1:{port}", env, size, args.binary)
            print(f"server      peak RSS {_peak_rss_mib(server.pid):.1f} MiB")
            return code
        finally:
            server.terminate()
            server.wait(30)


def _element(data_dir: Path, env: dict[str, str], processes: contextlib.ExitStack) -> str:
    """A private redis-server and one reference SE registered there; returns REDIS_URL."""
    tusingest = [sys.executable, "-m", "tusingest"]
    subprocess.run([*tusingest, "token", "--sub", "x"], env=env, check=True, capture_output=True)
    redis_port, se_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    for command in (
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        [*tusingest, "element", "serve", "--id", "se-bench", "--mode", "edit",
         "--root", str(data_dir / "se"), "--port", str(se_port), "--capacity", str(1 << 40),
         "--public-key", str(data_dir / "keys" / "jwt_public.pem")],
    ):  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        processes.callback(_stop, process)
    se = f"http://127.0.0.1:{se_port}"
    _wait_for(lambda: requests.get(f"{se}/health/ready", timeout=1).ok)
    for _ in range(50):
        added = subprocess.run(
            [*tusingest, "elements", "add", "--id", "se-bench", "--mode", "edit",
             "--endpoint", se],
            env={**env, "REDIS_URL": redis_url}, capture_output=True, text=True,
        )  # fmt: skip
        if added.returncode == 0:
            return redis_url
        time.sleep(0.1)  # redis-server may still be starting
    raise SystemExit(f"cannot register the SE: {added.stderr}")


def _peak_rss_mib(pid: int) -> float:
    """VmHWM of the server process (its lifetime peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def _wait_for(ready: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # A busy machine may accept the connection and answer late: try again.
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if ready():
                return
        time.sleep(0.1)
    raise SystemExit("a service did not start")


def _run(base: str, env: dict[str, str], size: int, binary: bool) -> int:
    _wait_for(lambda: requests.get(f"{base}/health/ready", timeout=1).ok)
    token = subprocess.run(
        [sys.executable, "-m", "tusingest", "token", "--sub", "bench"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    session = requests.Session()
    created = session.post(
        f"{base}/files/",
        headers={**headers, "Upload-Length": str(size), "Upload-Metadata": "filename ZC50eHQ="},
        timeout=30,
    )
    url = base + created.headers["Location"]
    line = b"completion latency benchmark, line %08d: lorem ipsum dolor sit amet\n"
    block = b"".join(line % i for i in range(8 * MiB // len(line % 0) + 1))[: 8 * MiB]
    if binary:
        block = os.urandom(8 * MiB)
    digest = hashlib.sha256()
    offset = 0
    started = time.perf_counter()
    while offset < size:
        chunk = block[: min(len(block), size - offset)]
        digest.update(chunk)
        response = session.patch(
            url,
            headers={
                **headers,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
            },
            data=chunk,
            timeout=300,
        )
        if response.status_code != 204:
            print(f"PATCH {offset}: {response.status_code} {response.text}", file=sys.stderr)
            return 1
        offset = int(response.headers["Upload-Offset"])
    last_byte = time.perf_counter()
    while True:
        head = session.head(url, headers=headers, timeout=30)
        if head.status_code != 423:
            break
        time.sleep(0.02)
    stored = time.perf_counter()
    info = session.get(
        f"{base}/api/files/upload/session/{url.rsplit('/', 1)[-1]}", headers=headers, timeout=30
    ).json()
    if info["upload_status"] != "stored":
        print(f"not stored: {info}", file=sys.stderr)
        return 1
    ok = info["sha256"] == digest.hexdigest()
    file = info["file"]
    print(
        f"upload      {size / MiB:.0f} MiB in 8 MiB PATCHes: "
        f"{size / MiB / (last_byte - started):.1f} MiB/s"
    )
    print(
        f"completion  last byte -> stored: {stored - last_byte:.2f} s "
        f"(scan {'on' if env['VIRUS_SCAN_ENABLED'] == 'on' else 'off'}, "
        f"stored {file['stored_size'] / MiB:.0f} MiB on {file['element_id']}, "
        f"codec {file['codec']})"
    )
    print(f"sha256      {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
