"""Stream one large upload into a real `tusingest serve` process; report MB/s and peak RSS.

    .venv/bin/python -m benchmarks.upload_rss [--size-mib 1024] [--patch-mib 8] [--database-url URL]

Starts the server on a free port in a temporary data dir (SQLite unless --database-url),
uploads pseudo-random bytes generated on the fly (the client never holds the file), samples the
server's RSS from /proc every 20 ms, and checks the staged file's SHA-256 against the source.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, _rss_bytes(self.pid))
            except OSError:
                return
            time.sleep(0.02)


def _blocks(total: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """Deterministic pseudo-random blocks of 1 MiB, hashed as they are produced."""
    seed = hashlib.sha256(b"tusingest-benchmark").digest()
    block = (seed * (MiB // len(seed)))[:MiB]
    sent = 0
    counter = 0
    while sent < total:
        counter += 1
        piece = counter.to_bytes(8, "big") + block[8:]
        piece = piece[: min(MiB, total - sent)]
        digest.update(piece)
        sent += len(piece)
        yield piece


class _Body:
    """A file-like body of known length, so requests sends Content-Length, not chunked."""

    def __init__(self, blocks: Iterator[bytes], length: int) -> None:
        self._blocks = blocks
        self._left = length
        self._pending = b""

    def __len__(self) -> int:
        return self._left + len(self._pending)

    def read(self, size: int = -1) -> bytes:
        if not self._pending and self._left:
            self._pending = next(self._blocks)
            self._left -= len(self._pending)
        want = len(self._pending) if size < 0 else size
        out, self._pending = self._pending[:want], self._pending[want:]
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--patch-mib", type=int, default=8)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tusingest-bench-") as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        env = dict(os.environ, DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")
        env.pop("DATABASE_URL", None)
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        server = subprocess.Popen(
            [sys.executable, "-m", "tusingest", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            return _run(server, port, data_dir, args.size_mib * MiB, args.patch_mib * MiB, env)
        finally:
            server.terminate()
            server.wait(30)


def _run(
    server: subprocess.Popen[bytes],
    port: int,
    data_dir: Path,
    size: int,
    patch: int,
    env: dict[str, str],
) -> int:
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/health/ready", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            print("server did not start", file=sys.stderr)
            return 1
        time.sleep(0.1)
    token = subprocess.run(
        [sys.executable, "-m", "tusingest", "token", "--sub", "bench", "--ttl", "86400"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    idle_rss = _rss_bytes(server.pid)
    session = requests.Session()
    created = session.post(
        f"{base}/files/", headers={**headers, "Upload-Length": str(size)}, timeout=30
    )
    created.raise_for_status()
    url = base + created.headers["Location"]

    sampler = RssSampler(server.pid)
    sampler.start()
    digest = hashlib.sha256()
    blocks = _blocks(size, digest)
    offset = 0
    started = time.perf_counter()
    while offset < size:
        length = min(patch, size - offset)

        response = session.patch(
            url,
            headers={
                **headers,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
            },
            data=_Body(blocks, length),
            timeout=300,
        )
        if response.status_code != 204:
            print(f"PATCH at {offset}: {response.status_code} {response.text}", file=sys.stderr)
            return 1
        offset = int(response.headers["Upload-Offset"])
    elapsed = time.perf_counter() - started
    sampler.stopped.set()
    sampler.join()

    staged = data_dir / "staging" / url.rsplit("/", 1)[-1]
    check = hashlib.sha256()
    with staged.open("rb") as f:
        while chunk := f.read(8 * MiB):
            check.update(chunk)
    ok = check.hexdigest() == digest.hexdigest()
    print(f"upload     {size / MiB:.0f} MiB in {patch / MiB:.0f} MiB PATCHes")
    print(f"throughput {size / MiB / elapsed:.1f} MiB/s ({elapsed:.2f} s)")
    print(f"server RSS idle {idle_rss / MiB:.1f} MiB, peak {sampler.peak / MiB:.1f} MiB")
    print(f"sha256     {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
