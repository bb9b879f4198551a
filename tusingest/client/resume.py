"""Upload URLs kept across runs in the user's cache directory, keyed by endpoint and file
fingerprint, so that a file uploaded again resumes where the last run stopped."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The first and last this many bytes go into a fingerprint, with the size and mtime.
EDGE_BYTES = 64 << 10
# tus sessions expire long before this; older entries are dropped on the next write.
KEEP_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Fingerprint:
    size: int
    digest: str

    def key(self, endpoint: str) -> str:
        return f"{endpoint} {self.size} {self.digest}"


def fingerprint(path: Path) -> Fingerprint:
    """Size, mtime and SHA-256 of the file's two ends (blocking: run in a thread)."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(EDGE_BYTES))
        if stat.st_size > EDGE_BYTES:
            handle.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
            digest.update(handle.read(EDGE_BYTES))
    return Fingerprint(stat.st_size, digest.hexdigest())


def cache_file(env: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/tusingest/uploads.json`, else `~/.cache/tusingest/uploads.json`."""
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tusingest" / "uploads.json"


class ResumeStore:
    """The JSON file of upload URLs: read and rewritten whole under an exclusive lock (runs in
    parallel keep each other's entries), replaced atomically (a crash leaves the old file).
    Blocking: call from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: str) -> str | None:
        with self._locked():
            entry = self._read().get(key)
        url = entry.get("url") if isinstance(entry, dict) else None
        return url if isinstance(url, str) else None

    def put(self, key: str, url: str, file: Path) -> None:
        with self._locked():
            entries = self._read()
            now = time.time()
            entries = {
                k: v
                for k, v in entries.items()
                if isinstance(v, dict) and now - float(v.get("saved_at", 0)) < KEEP_SECONDS
            }
            entries[key] = {"url": url, "file": str(file), "saved_at": now}
            self._write(entries)

    def remove(self, key: str) -> None:
        with self._locked():
            entries = self._read()
            if entries.pop(key, None) is not None:
                self._write(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            # Missing or damaged: uploads start afresh, nothing worse.
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".uploads-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
