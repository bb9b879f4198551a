"""The tus 1.0 protocol as a client over aiohttp: create, offset (HEAD), one PATCH streamed from
the file, and the upload session's verdict; each answer classified as an answer, a refusal, or a
transient failure to retry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from tusingest.client.retry import Transient

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
STATUS_HEADER = "X-Upload-Status"
FILE_ID_HEADER = "X-File-Id"
ERROR_HEADER = "X-Upload-Error"
# Read from the file and handed to the socket this much at a time.
BLOCK_BYTES = 256 << 10
_RETRIED = frozenset({423, 429, 500, 502, 503, 504})


class Refusal(Exception):
    """The server said no for good (a 4xx other than 423/429): `code` and `message` from it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Gone(Exception):
    """The upload URL is unknown (404) or expired (410): a new upload has to start."""


class OffsetMismatch(Exception):
    """409: the server holds another offset than the one sent; ask it again."""


@dataclass(frozen=True)
class Answer:
    """What a tus response says about the upload."""

    offset: int
    length: int | None
    # X-Upload-Status when the server told it: stored, rejected, failed, processing, ...
    upload_status: str | None = None
    file_id: str | None = None
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Sent:
    """A PATCH's answer and how many bytes of its body went out."""

    answer: Answer
    sent: int


class TusClient:
    """One tus endpoint, with a bearer token when given (sent, never shown)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        token: str | None,
        *,
        checksum: bool = True,
    ) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self._session = session
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._checksum = checksum
        # The API sits beside the tus endpoint: http://host/files/ → http://host/api/.
        self._api = urljoin(self.endpoint, "../api/")

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, **self._auth, **(extra or {})}

    async def create(self, length: int, metadata: str | None) -> tuple[str, Answer]:
        """POST a new upload of `length` bytes; its absolute URL and what the server said
        (an empty file is complete, and judged, at creation)."""
        headers = {"Upload-Length": str(length)}
        if metadata:
            headers["Upload-Metadata"] = metadata
        async with self._call("POST", self.endpoint, self._headers(headers)) as response:
            location = response.headers.get("Location")
            answer = await _answer(response, expect=201)
            if location is None:
                raise Refusal(response.status, "no_location", "the server sent no Location")
            return urljoin(self.endpoint, location), answer

    async def offset(self, url: str) -> Answer:
        """HEAD: how far the upload got, or its verdict."""
        async with self._call("HEAD", url, self._headers({"Cache-Control": "no-store"})) as r:
            return await _answer(r, expect=200)

    async def patch(
        self, url: str, path: Path, offset: int, count: int, progress: Callable[[int], None]
    ) -> Sent:
        """PATCH `count` bytes of `path` from `offset`, read as they are sent; `progress` hears
        of every block handed over."""
        headers = {
            "Content-Type": OFFSET_CONTENT_TYPE,
            "Upload-Offset": str(offset),
            "Content-Length": str(count),
        }
        if self._checksum:
            digest = await asyncio.to_thread(_sha256, path, offset, count)
            headers["Upload-Checksum"] = f"sha256 {digest}"
        counter = _Counter(progress)
        body = _blocks(path, offset, count, counter)
        async with self._call("PATCH", url, self._headers(headers), data=body) as response:
            if response.status == 409:
                raise OffsetMismatch(response.headers.get("Upload-Offset", "?"))
            if response.status == 460:
                raise Transient("checksum mismatch on the way (460)")
            return Sent(await _answer(response, expect=204), counter.sent)

    async def session(self, url: str) -> dict[str, Any]:
        """`GET /api/files/upload/session/{id}`: the upload's state, verdict and file."""
        upload_id = url.rstrip("/").rsplit("/", 1)[-1]
        where = urljoin(self._api, f"files/upload/session/{upload_id}")
        async with self._call("GET", where, dict(self._auth)) as response:
            if response.status in (404, 410):
                raise Gone(where)
            if response.status != 200:
                code, message = await _reason(response)
                raise Refusal(response.status, code, message)
            document: dict[str, Any] = await response.json()
            return document

    def _call(self, method: str, url: str, headers: dict[str, str], data: Any = None) -> _Call:
        return _Call(self._session, method, url, headers, data)


class _Call:
    """One request whose network failures and retryable statuses become `Transient`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: dict[str, str],
        data: Any,
    ) -> None:
        self._request = session.request(method, url, headers=headers, data=data)
        self._what = f"{method} {url}"
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            response = await self._request
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"{self._what}: {exc!r}") from exc
        self._response = response
        if response.status in _RETRIED and STATUS_HEADER not in response.headers:
            code, message = await _reason(response)
            response.release()
            raise Transient(
                f"{self._what}: {response.status} {code}: {message}",
                _retry_after(response),
                paced=response.status == 429,
            )
        return response

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.release()


async def _answer(response: aiohttp.ClientResponse, expect: int) -> Answer:
    """The upload's state from a response; a verdict when X-Upload-Status says one."""
    status_header = response.headers.get(STATUS_HEADER)
    if response.status in (404, 410):
        raise Gone(str(response.url))
    reason: tuple[str | None, str | None] = (None, None)
    if response.status != expect:
        code, text = await _reason(response)
        if status_header is None:
            raise Refusal(response.status, code, text)
        reason = (code, text)
    return Answer(
        offset=_int(response.headers.get("Upload-Offset")) or 0,
        length=_int(response.headers.get("Upload-Length")),
        upload_status=status_header,
        file_id=response.headers.get(FILE_ID_HEADER),
        error=reason[0],
        message=reason[1],
    )


async def _reason(response: aiohttp.ClientResponse) -> tuple[str, str]:
    """The error code and message: JSON `{"error", "message"}` or tus's `code: message`."""
    text = (await response.text(errors="replace")).strip()
    fallback = response.headers.get(ERROR_HEADER) or f"http_{response.status}"
    try:
        document = json.loads(text)
    except ValueError:
        code, colon, message = text.partition(": ")
        if colon and code and " " not in code:
            return code, message
        return fallback, text or (response.reason or fallback)
    if isinstance(document, dict):
        code = str(document.get("error") or fallback)
        return code, str(document.get("message") or code)
    return fallback, text


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Counter:
    def __init__(self, progress: Callable[[int], None]) -> None:
        self.sent = 0
        self._progress = progress

    def add(self, count: int) -> None:
        self.sent += count
        self._progress(count)


async def _blocks(path: Path, offset: int, count: int, counter: _Counter) -> AsyncIterator[bytes]:
    """`count` bytes of `path` from `offset`, one block in memory at a time."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(handle.seek, offset)
        remaining = count
        while remaining:
            block = await asyncio.to_thread(handle.read, min(BLOCK_BYTES, remaining))
            if not block:
                raise OSError(f"{path} got shorter while it was being uploaded")
            remaining -= len(block)
            yield block
            counter.add(len(block))
    finally:
        await asyncio.to_thread(handle.close)


def _sha256(path: Path, offset: int, count: int) -> str:
    """Base64 SHA-256 of a chunk, for `Upload-Checksum` (blocking: run in a thread)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(offset)
        remaining = count
        while remaining:
            block = handle.read(min(BLOCK_BYTES, remaining))
            if not block:
                raise OSError(f"{path} got shorter while it was being uploaded")
            digest.update(block)
            remaining -= len(block)
    return base64.b64encode(digest.digest()).decode("ascii")
