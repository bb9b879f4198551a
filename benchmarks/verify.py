"""Checking what a server stored against what was sent: size and SHA-256 of each upload's
bytes, from tusingest's staging dir or, once completed, its local storage element."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.payload import Payload


@dataclass
class Uploaded:
    phase: int
    length: int
    path: str = ""  # /files/<id> once created


def upload_id(path: str) -> str:
    """The upload id: the last segment of its `/files/<id>` path."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def _stored_index(root: Path) -> dict[str, Path]:
    """upload id → data file, from the local storage element's attr.json files."""
    index: dict[str, Path] = {}
    if not root.is_dir():
        return index
    for attr in root.rglob("*.attr.json"):
        upload_id = json.loads(attr.read_text()).get("metadata", {}).get("upload_id")
        if upload_id:
            index[upload_id] = attr.with_name(attr.name.removesuffix(".attr.json"))
    return index


def _stored(path: Path) -> tuple[int, str] | None:
    """(size, SHA-256) of a stored file, None if it does not exist."""
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            return f.tell(), digest
    except FileNotFoundError:
        return None


async def verify_stored(payload: Payload, staging_dir: Path, uploads: list[Uploaded]) -> list[str]:
    """Problems with the stored bytes of `uploads` (none: all match)."""
    problems: list[str] = []
    gate = asyncio.Semaphore(2)
    # Completed uploads leave staging for the local storage element (DATA_DIR/storage);
    # its attr.json files say which upload each stored file came from.
    stored_files = await asyncio.to_thread(_stored_index, staging_dir.parent / "storage")

    async def check(upload: Uploaded) -> None:
        key = upload_id(upload.path)
        path = stored_files.get(key, staging_dir / key)
        async with gate:
            expected, stored = await asyncio.gather(
                asyncio.to_thread(payload.sha256, upload.phase, upload.length),
                asyncio.to_thread(_stored, path),
            )
        if stored is None:
            problems.append(f"{upload.path}: stored file {path} not found")
        elif stored[0] != upload.length:
            problems.append(f"{path}: {stored[0]} bytes stored, {upload.length} sent")
        elif stored[1] != expected:
            problems.append(f"{path}: SHA-256 {stored[1]} != {expected} of what was sent")

    await asyncio.gather(*(check(u) for u in uploads))
    return problems
