"""One file's upload: resume or create, PATCH it chunk by chunk, then wait for the verdict."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tusingest.client.progress import Progress
from tusingest.client.resume import ResumeStore, fingerprint
from tusingest.client.retry import Backoff, GaveUp, Transient
from tusingest.client.tus import Answer, Gone, OffsetMismatch, Refusal, TusClient

# Final upload states of the server (`X-Upload-Status`, the session's `upload_status`).
FINAL = frozenset({"stored", "rejected", "failed", "terminated", "expired"})
_FILE_REFUSALS = frozenset({400, 413, 415, 422})


@dataclass
class UploadResult:
    """One file's outcome, as `--json` prints it."""

    file: str
    status: str  # stored | rejected | failed
    size: int
    upload_url: str | None = None
    file_id: str | None = None
    element_id: str | None = None
    sha256: str | None = None
    error: str | None = None
    message: str | None = None
    resumed_from: int = 0
    bytes_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """What to upload and how."""

    path: Path
    metadata: str | None
    chunk_bytes: int
    wait_seconds: float


class FileUpload:
    """Uploads one file through `client`, remembering its URL in `store` until it is judged."""

    def __init__(
        self,
        client: TusClient,
        store: ResumeStore,
        progress: Progress,
        backoff: Backoff,
        job: Job,
    ) -> None:
        self._client = client
        self._store = store
        self._progress = progress
        self._backoff = backoff
        self._job = job
        self._task: int | None = None
        self.result = UploadResult(file=str(job.path), status="failed", size=0)

    async def run(self) -> UploadResult:
        """The outcome; never raises for what the server or the network did."""
        result = self.result
        try:
            await self._upload()
        except Refusal as exc:
            # The file refused (bad name, too large, ...), not the caller (401, 403).
            result.status = "rejected" if exc.status in _FILE_REFUSALS else "failed"
            result.error, result.message = exc.code, exc.message
        except (GaveUp, Gone) as exc:
            result.status, result.error, result.message = "failed", "unreachable", str(exc)
        except OSError as exc:
            result.status, result.error, result.message = "failed", "unreadable", str(exc)
        if self._task is None:
            self._task = self._progress.start(self._job.path.name, result.size, 0)
        return result

    @property
    def task(self) -> int:
        """The file's progress handle, once `run` returned."""
        assert self._task is not None
        return self._task

    async def _upload(self) -> None:
        result, job = self.result, self._job
        print_ = await asyncio.to_thread(fingerprint, job.path)
        result.size = print_.size
        key = print_.key(self._client.endpoint)
        resumed, answer = await self._resume(key, print_.size)
        if resumed is None:
            url, answer = await self._backoff.run(
                lambda: self._client.create(print_.size, job.metadata), self._retrying
            )
            await asyncio.to_thread(self._store.put, key, url, job.path)
        else:
            url = resumed
            result.resumed_from = answer.offset
        result.upload_url = url
        self._task = self._progress.start(job.path.name, print_.size, answer.offset)
        answer = await self._send(url, answer, print_.size)
        await self._judge(url, answer)
        if result.status in ("stored", "rejected"):
            # Judged for good: a later run uploads the file anew.
            await asyncio.to_thread(self._store.remove, key)

    async def _resume(self, key: str, size: int) -> tuple[str | None, Answer]:
        """The stored upload URL and its state, if the server still has it for this file."""
        fresh = Answer(offset=0, length=size)
        url = await asyncio.to_thread(self._store.get, key)
        if url is None:
            return None, fresh
        try:
            answer = await self._backoff.run(lambda: self._client.offset(url), self._retrying)
        except (Gone, Refusal):
            return None, fresh
        if answer.upload_status is None and answer.length != size:
            return None, fresh
        return url, answer

    async def _send(self, url: str, answer: Answer, size: int) -> Answer:
        """PATCH until the server holds every byte or says a verdict; a failed request is
        retried from the offset the server reports."""
        job, task = self._job, self._task
        assert task is not None
        failures = 0
        while answer.upload_status is None and answer.offset < size:
            count = min(job.chunk_bytes, size - answer.offset)
            try:
                sent = await self._client.patch(
                    url,
                    job.path,
                    answer.offset,
                    count,
                    lambda n: self._progress.advance(task, n),
                )
            except (Transient, OffsetMismatch) as exc:
                # A 409 (another client moved the offset) is asked again at once, a failure
                # after a pause; both count, so neither loops for ever.
                failures += 1
                if failures >= self._backoff.attempts:
                    raise GaveUp(f"{exc}") from exc
                if isinstance(exc, Transient):
                    pause = self._backoff.delay(failures - 1, exc.retry_after)
                    self._retrying(exc, pause)
                    await asyncio.sleep(pause)
                answer = await self._backoff.run(lambda: self._client.offset(url), self._retrying)
                self._progress.rewind(task, answer.offset)
                continue
            failures = 0
            self.result.bytes_sent += sent.sent
            answer = sent.answer
        return answer

    async def _judge(self, url: str, answer: Answer) -> None:
        """The verdict from the last answer, or from the session once the pipeline is done (a
        stored file's element and digest are read from the session too)."""
        result = self.result
        status = answer.upload_status or "processing"
        if status in FINAL and status != "stored":
            result.status = status if status == "rejected" else "failed"
            result.error, result.message = answer.error or status, answer.message
            return
        info = await self._settled(url)
        if info is None:
            result.status, result.error = "failed", "verdict_timeout"
            result.message = (
                f"not judged after {self._job.wait_seconds:g} s; run again to wait more"
            )
            return
        status = str(info.get("upload_status"))
        verdict = info.get("verdict") or {}
        file = info.get("file") or {}
        result.status = status if status in ("stored", "rejected") else "failed"
        result.error = verdict.get("error") or (None if status == "stored" else status)
        result.message = verdict.get("message")
        result.file_id = info.get("file_id") or answer.file_id
        result.element_id = file.get("element_id")
        result.sha256 = info.get("sha256") or file.get("sha256")

    def _retrying(self, failure: Transient, pause: float) -> None:
        """Say why a request goes again, and when (a wait is never silent)."""
        self._progress.say(
            f"  {self._job.path.name}: retrying in {pause:.1f} s after {failure.reason}"
        )

    async def _settled(self, url: str) -> dict[str, Any] | None:
        """The session once its status is final; None if it is not within the wait."""
        deadline = time.monotonic() + self._job.wait_seconds
        delay = 0.2
        while True:
            info = await self._backoff.run(lambda: self._client.session(url), self._retrying)
            if info.get("upload_status") in FINAL:
                return info
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
