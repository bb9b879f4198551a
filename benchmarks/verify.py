"""Checking what a server holds against what was sent: HEAD offsets, and size + SHA-256 of each
upload's stored bytes wherever the server's locator (`stored`) can find them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from benchmarks.client import Connection
from benchmarks.payload import Payload
from benchmarks.servers import Server, open_connections
from benchmarks.stored import Locator, Uploaded

_READ_BYTES = 1 << 20


def _stored(path: Path, length: int) -> tuple[int, str] | None:
    """(file size, SHA-256 of its first `length` bytes), None if it does not exist."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.sha256()
            remaining = length
            while remaining > 0 and (chunk := f.read(min(_READ_BYTES, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
            return size, digest.hexdigest()
    except FileNotFoundError:
        return None


async def verify_stored(payload: Payload, locator: Locator, uploads: list[Uploaded]) -> list[str]:
    """Problems with the stored bytes of `uploads` (none: all match).

    A complete upload's file must hold exactly the bytes sent; an upload still in progress
    (sent < Upload-Length) must start with them (a server may preallocate the rest).
    """
    problems: list[str] = []
    gate = asyncio.Semaphore(2)
    resolve = await asyncio.to_thread(locator.resolver)

    async def check(upload: Uploaded) -> None:
        path = resolve(upload)
        async with gate:
            expected, stored = await asyncio.gather(
                asyncio.to_thread(payload.sha256, upload.phase, upload.length),
                asyncio.to_thread(_stored, path, upload.length),
            )
        if stored is None:
            problems.append(f"{upload.path}: stored file {path} not found")
            return
        size, digest = stored
        if upload.complete and size != upload.length:
            problems.append(f"{path}: {size} bytes stored, {upload.length} sent")
        elif not upload.length <= size <= upload.declared:
            problems.append(f"{path}: {size} bytes stored, {upload.length} sent so far")
        elif digest != expected:
            problems.append(f"{path}: SHA-256 {digest} != {expected} of what was sent")

    await asyncio.gather(*(check(u) for u in uploads))
    return problems


async def verify_uploads(
    server: Server,
    payload: Payload,
    uploads: list[Uploaded],
    concurrency: int,
    timeout_s: float,
) -> tuple[str, list[str]]:
    """What was checked, and the problems found.

    HEAD of every upload the server still knows (offset == bytes sent, Upload-Length as
    declared); a server that forgets completed uploads (aiohttp-tus) is not asked about those.
    Then the stored bytes, where the server's locator can find them.
    """
    problems: list[str] = []
    asked = [u for u in uploads if not (server.forgets_completed and u.complete)]
    total = len(uploads)
    checks: list[str] = []

    async def head(conn: Connection, pending: list[Uploaded]) -> None:
        while pending:
            upload = pending.pop()
            response = await conn.request("HEAD", upload.path, timeout_s=timeout_s)
            offset = response.header("Upload-Offset")
            length = response.header("Upload-Length")
            if response.status != 200 or offset != str(upload.length):
                problems.append(
                    f"HEAD {upload.path}: {response.status}, Upload-Offset {offset}, "
                    f"expected {upload.length}"
                )
            elif length is not None and length != str(upload.declared):
                problems.append(
                    f"HEAD {upload.path}: Upload-Length {length}, expected {upload.declared}"
                )

    if asked:
        connections = await open_connections(server, min(concurrency, len(asked)))
        pending = list(reversed(asked))
        try:
            async with asyncio.TaskGroup() as group:
                for conn in connections:
                    group.create_task(head(conn, pending))
        finally:
            for conn in connections:
                conn.close()
        checks.append(f"HEAD offset == sent for {len(asked)}/{total} uploads")
    if len(asked) < total:
        forgotten = total - len(asked)
        checks.append(
            f"no HEAD for {forgotten} completed upload{'s' * (forgotten > 1)} ({server.name} "
            "forgets an upload once complete: 404)"
        )
    if server.stored is not None:
        problems += await verify_stored(payload, server.stored, uploads)
        checks.append(f"SHA-256 of the stored bytes of {total}/{total} uploads")
    else:
        checks.append("stored bytes not readable: offsets only")
    return ", ".join(checks), problems
