"""The workloads: what is sent, what is measured, and how the result is checked.

Owns W1–W4 (and BIG, a W1-like upload of `--big-mib`), each in three steps:

- prepare (not measured): open the connections, seed uploads for the HEAD workload;
- run, inside a `Meter`: wall time, the server's CPU seconds (utime + stime from /proc), the
  client's own CPU seconds, and the server's RSS sampled every 10 ms;
- verify (not measured): every response's `Upload-Offset` is checked as it arrives, then a HEAD
  of every upload must show offset == length, and where the server's stored bytes are readable
  (its locator, see `stored`) their SHA-256 must equal that of what was sent — a broken server
  cannot win. Any mismatch makes the result fail (`verify`).

Where a peer needs it, the client adapts, the same way for every workload: it sends
Upload-Metadata (filename, filetype) to the servers that require it, and for a server that
forgets completed uploads (aiohttp-tus) the W3 seeds are declared one byte longer than sent, so
they stay known and their HEADs report the offset of what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable

from benchmarks.client import Connection, HttpError
from benchmarks.payload import MiB, Payload
from benchmarks.procstats import Meter
from benchmarks.servers import Server, open_connections
from benchmarks.specs import HEAD_SEED_UPLOADS, Result, Spec
from benchmarks.stored import Uploaded
from benchmarks.verify import verify_uploads

_PATCH_HEADERS = {"Content-Type": "application/offset+octet-stream"}
_FILETYPE = base64.b64encode(b"application/octet-stream").decode()
_MAX_REPORTED = 5


class Mismatch(Exception):
    """The server answered, but not what a correct tus server must answer."""


def _percentile_ms(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


def _path_of(location: str) -> str:
    if "://" in location:
        location = "/" + location.split("://", 1)[1].split("/", 1)[1]
    return location


def _metadata(upload: Uploaded) -> str:
    return f"filename {base64.b64encode(upload.name.encode()).decode()},filetype {_FILETYPE}"


def _describe(exc: BaseException) -> str:
    """The first leaf of a (possibly nested) exception group, as text."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, HttpError | Mismatch):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Runner:
    """Runs workloads against servers with one payload and fixed timeouts."""

    def __init__(
        self,
        payload: Payload,
        request_timeout: float,
        workload_timeout: float,
        delete_small_uploads: bool,
    ) -> None:
        self.payload = payload
        self._timeout = request_timeout
        self._workload_timeout = workload_timeout
        self._delete_small = delete_small_uploads
        self._runs = 0

    async def run(self, spec: Spec, server: Server) -> Result:
        self._runs += 1
        result = Result(workload=spec.key, server=server.name)
        uploads: list[Uploaded] = []
        step: Callable[[Spec, Server, Result, list[Uploaded]], Awaitable[None]] = {
            "single": self._single,
            "many": self._many,
            "heads": self._heads,
        }[spec.kind]
        try:
            async with asyncio.timeout(self._workload_timeout):
                await step(spec, server, result, uploads)
                await self._verify(spec, server, result, uploads)
        except TimeoutError:
            result.fail(f"did not finish within {self._workload_timeout:g} s")
        except Exception as exc:
            result.fail(_describe(exc))
        if not server.alive():
            result.fail(f"the {server.name} process exited:\n{server.log_tail()}".rstrip())
            return result
        if spec.kind == "single" or self._delete_small:
            await self._delete(server, uploads)
        if server.forgets_completed:
            await asyncio.to_thread(_remove_completed, server, uploads)
        return result

    def _uploads(
        self, spec: Spec, server: Server, n: int, length: int, declared: int = 0
    ) -> list[Uploaded]:
        key = f"{spec.key}:{server.name}:{self._runs}"
        name = re.sub(r"[^A-Za-z0-9]+", "-", key)
        return [
            Uploaded(
                self.payload.phase(f"{key}:{i}"), length, name=f"{name}-{i}.bin", declared=declared
            )
            for i in range(n)
        ]

    async def _create(self, server: Server, conn: Connection, upload: Uploaded) -> None:
        headers = {"Upload-Length": str(upload.declared)}
        if server.sends_metadata:
            headers["Upload-Metadata"] = _metadata(upload)
        response = await conn.request("POST", "/files/", headers, timeout_s=self._timeout)
        location = response.header("Location")
        if response.status != 201 or not location:
            raise Mismatch(f"POST /files/: expected 201 with a Location, got {response.describe()}")
        upload.path = _path_of(location)

    async def _patch(self, conn: Connection, upload: Uploaded, offset: int, length: int) -> None:
        body = self.payload.chunk(upload.phase, offset, length)
        response = await conn.request(
            "PATCH",
            upload.path,
            {**_PATCH_HEADERS, "Upload-Offset": str(offset)},
            body,
            timeout_s=self._timeout,
        )
        if response.status != 204:
            raise Mismatch(
                f"PATCH {upload.path} at {offset}: expected 204, got {response.describe()}"
            )
        got = response.header("Upload-Offset")
        if got != str(offset + length):
            raise Mismatch(
                f"PATCH {upload.path} at {offset} with {length} bytes: "
                f"Upload-Offset {got}, expected {offset + length}"
            )

    async def _single(
        self, spec: Spec, server: Server, result: Result, uploads: list[Uploaded]
    ) -> None:
        upload = self._uploads(spec, server, 1, spec.size)[0]
        uploads.append(upload)
        (conn,) = await open_connections(server, 1)
        try:
            meter = Meter(server.pid)
            with meter:
                await self._create(server, conn, upload)
                offset = 0
                while offset < spec.size:
                    n = min(spec.patch, spec.size - offset)
                    await self._patch(conn, upload, offset, n)
                    offset += n
                    result.requests += 1
        finally:
            conn.close()
        result.measured(meter)
        result.requests += 1
        result.bytes_sent = spec.size
        result.value = spec.size / MiB / meter.elapsed

    async def _many(
        self, spec: Spec, server: Server, result: Result, uploads: list[Uploaded]
    ) -> None:
        uploads.extend(self._uploads(spec, server, spec.count, spec.size))
        latencies = [0.0] * spec.count
        indices = iter(range(spec.count))
        connections = await open_connections(server, min(spec.concurrency, spec.count))

        async def worker(conn: Connection) -> None:
            for i in indices:  # shared: each index is taken by exactly one worker
                upload = uploads[i]
                started = time.perf_counter()
                await self._create(server, conn, upload)
                await self._patch(conn, upload, 0, upload.length)
                latencies[i] = time.perf_counter() - started

        try:
            meter = Meter(server.pid)
            with meter:
                async with asyncio.TaskGroup() as group:
                    for conn in connections:
                        group.create_task(worker(conn))
        finally:
            for conn in connections:
                conn.close()
        result.measured(meter)
        result.requests = 2 * spec.count
        result.bytes_sent = spec.count * spec.size
        result.value = spec.count / meter.elapsed
        result.p50_ms = _percentile_ms(latencies, 50)
        result.p99_ms = _percentile_ms(latencies, 99)

    async def _heads(
        self, spec: Spec, server: Server, result: Result, uploads: list[Uploaded]
    ) -> None:
        # A server that forgets completed uploads gets seeds one byte short of complete.
        declared = spec.size + 1 if server.forgets_completed else spec.size
        n = min(HEAD_SEED_UPLOADS, spec.count)
        seeds = self._uploads(spec, server, n, spec.size, declared)
        uploads.extend(seeds)
        connections = await open_connections(server, min(spec.concurrency, spec.count))
        try:
            # Prepare (not measured): uploads whose offset every HEAD must report.
            pending = iter(seeds)

            async def seed(conn: Connection) -> None:
                for upload in pending:
                    await self._create(server, conn, upload)
                    await self._patch(conn, upload, 0, upload.length)

            async with asyncio.TaskGroup() as group:
                for conn in connections:
                    group.create_task(seed(conn))

            latencies = [0.0] * spec.count
            indices = iter(range(spec.count))
            expected = str(spec.size)

            async def worker(conn: Connection) -> None:
                for i in indices:
                    path = seeds[i % len(seeds)].path
                    started = time.perf_counter()
                    response = await conn.request("HEAD", path, timeout_s=self._timeout)
                    latencies[i] = time.perf_counter() - started
                    if response.status != 200 or response.header("Upload-Offset") != expected:
                        raise Mismatch(
                            f"HEAD {path}: expected 200 with Upload-Offset {expected}, got "
                            f"{response.status} with {response.header('Upload-Offset')}"
                        )

            meter = Meter(server.pid)
            with meter:
                async with asyncio.TaskGroup() as group:
                    for conn in connections:
                        group.create_task(worker(conn))
        finally:
            for conn in connections:
                conn.close()
        result.measured(meter)
        result.requests = spec.count
        result.value = spec.count / meter.elapsed
        result.p50_ms = _percentile_ms(latencies, 50)
        result.p99_ms = _percentile_ms(latencies, 99)

    async def _verify(
        self, spec: Spec, server: Server, result: Result, uploads: list[Uploaded]
    ) -> None:
        """HEAD every upload (offset == length); SHA-256 of the stored bytes where readable."""
        checks, problems = await verify_uploads(
            server, self.payload, uploads, spec.concurrency, self._timeout
        )
        if spec.kind == "heads":
            checks += f", Upload-Offset of each of the {spec.count} measured HEADs"
        result.verified = checks
        for problem in problems[:_MAX_REPORTED]:
            result.fail(problem)
        if len(problems) > _MAX_REPORTED:
            result.fail(f"... and {len(problems) - _MAX_REPORTED} more verification failures")

    async def _delete(self, server: Server, uploads: list[Uploaded]) -> None:
        """Best effort: free the server's disk (and the baseline's dict) after a workload."""
        created = iter([u for u in uploads if u.path])
        connections = [server.connection() for _ in range(8)]

        async def delete(conn: Connection) -> None:
            for upload in created:
                with contextlib.suppress(HttpError):
                    await conn.request("DELETE", upload.path, timeout_s=self._timeout)

        try:
            await asyncio.gather(*(delete(c) for c in connections))
        finally:
            for conn in connections:
                conn.close()


def _remove_completed(server: Server, uploads: list[Uploaded]) -> None:
    """Remove the files of completed uploads that the server forgot (DELETE cannot reach them)."""
    if server.stored is None:
        return
    resolve = server.stored.resolver()
    for upload in uploads:
        if upload.path and upload.complete:
            with contextlib.suppress(OSError):
                resolve(upload).unlink()
