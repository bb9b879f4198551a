"""A run of `tusingest upload`: every file through one HTTP session, a few at a time, with
progress, then the verdicts as lines or one JSON document."""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp

from tusingest.client.progress import Progress, open_progress
from tusingest.client.report import summary_line, verdict_line
from tusingest.client.resume import ResumeStore
from tusingest.client.retry import Backoff
from tusingest.client.tus import TusClient
from tusingest.client.upload import FileUpload, Job, UploadResult
from tusingest.metadata import encode_metadata


@dataclass(frozen=True)
class UploadOptions:
    files: Sequence[Path]
    endpoint: str
    token: str | None
    cache: Path
    metadata: Mapping[str, str]
    retention: str | None = None
    parallel: int = 3
    chunk_bytes: int = 8 << 20
    checksum: bool = True
    wait_seconds: float = 600.0
    as_json: bool = False
    backoff: Backoff = field(default_factory=Backoff)


def file_metadata(path: Path, options: UploadOptions) -> str | None:
    """`Upload-Metadata` for one file: its name, a type guessed from the name, the retention
    policy, then the user's own pairs (which win)."""
    values = {"filename": path.name}
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed:
        values["filetype"] = guessed
    if options.retention:
        values["retention_policy"] = options.retention
    values.update(options.metadata)
    return encode_metadata(values)


async def upload_all(options: UploadOptions, stdout: TextIO) -> list[UploadResult]:
    """Upload every file; verdict lines (or progress only, with JSON) as they come."""
    total = sum(path.stat().st_size for path in options.files)
    store = ResumeStore(options.cache)
    gate = asyncio.Semaphore(options.parallel)
    # sock_read covers the completing PATCH, which waits for the pipeline's verdict.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    connector = aiohttp.TCPConnector(limit=options.parallel + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = TusClient(session, options.endpoint, options.token, checksum=options.checksum)
        with open_progress(stdout, total, verdicts=not options.as_json) as progress:

            async def one(path: Path) -> UploadResult:
                async with gate:
                    return await _one(client, store, progress, options, path)

            results = await asyncio.gather(*(one(path) for path in options.files))
            if not options.as_json:
                progress.say(summary_line(results))
    return list(results)


async def _one(
    client: TusClient,
    store: ResumeStore,
    progress: Progress,
    options: UploadOptions,
    path: Path,
) -> UploadResult:
    job = Job(
        path=path,
        metadata=file_metadata(path, options),
        chunk_bytes=options.chunk_bytes,
        wait_seconds=options.wait_seconds,
    )
    upload = FileUpload(client, store, progress, options.backoff, job)
    result = await upload.run()
    progress.finish(upload.task, verdict_line(result))
    return result


def run_upload(options: UploadOptions, stdout: TextIO) -> int:
    """0 when every file is stored, 1 otherwise; `--json` prints only the results list."""
    results = asyncio.run(upload_all(options, stdout))
    if options.as_json:
        json.dump([r.to_json() for r in results], stdout, indent=2, ensure_ascii=False)
        stdout.write("\n")
    return 0 if all(r.status == "stored" for r in results) else 1
