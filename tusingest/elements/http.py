"""An ArtStore storage element over HTTP, and the quirks of the real one a client must survive.

Store sequence: GET metadata of the pre-assigned `file_id` (an earlier attempt may have
stored it) → streamed multipart upload → verify the returned size and SHA-256 → GET metadata
for `storage_filename`/`storage_path` → PATCH the attr.json `metadata`. A copy that does not
match is deleted (edit SEs: `DELETE /files/{id}`, others: `DELETE /gc/{id}`).

A real SE whose database is unhealthy reports existing files as absent after a long stall
(its database pool exhausted, the error turned into "not found"): an answer slower than
`slow_answer` seconds proves nothing. A slow "not found" is a `TransientError`, and a slow
delete is confirmed by a fast lookup or retried later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from tusingest.artstore import (
    canonical_file_id,
    created_at,
    fit_se_metadata,
    sendable_filename,
)
from tusingest.diskio import sync_file, write_hashed
from tusingest.domain import ElementMode, FetchedFile, FileToStore, StoredFile
from tusingest.elements.token import token_name
from tusingest.errors import TransientError, TusingestError
from tusingest.ports import TokenSource
from tusingest.replies import Reply, detail, failure, read_reply

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_BACKOFF_CAP = 10.0
_DOWNLOAD_CHUNK = 1 << 20


class ElementMismatch(TransientError):
    """The SE holds other bytes than we sent (size or SHA-256 differ); the copy is removed."""

    code = "element_mismatch"


class ElementRejected(TusingestError):
    """The SE refused a request for a reason a retry will not fix (4xx)."""

    status = 502
    code = "element_rejected"


class HttpElement:
    """Implements `StorageElement` against an SE's HTTP API; idempotent by `file_id`."""

    def __init__(
        self,
        element_id: str,
        base_url: str,
        mode: ElementMode,
        session: aiohttp.ClientSession,
        token: TokenSource,
        *,
        timeout: float = 60,
        max_retries: int = 3,
        backoff: float = 0.2,
        slow_answer: float = 10.0,
    ) -> None:
        base = base_url.rstrip("/")
        self._api = base if base.endswith(API_PREFIX) else base + API_PREFIX
        self._element_id = element_id
        self._mode = mode
        self._session = session
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Uploads take as long as the bytes need; only silence is bounded.
        self._upload_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout
        )
        self._max_retries = max_retries
        self._backoff = backoff
        self._slow_answer = slow_answer

    @property
    def element_id(self) -> str:
        return self._element_id

    @property
    def mode(self) -> ElementMode:
        return self._mode

    async def store(self, item: FileToStore) -> StoredFile:
        file_id = canonical_file_id(item.file_id)
        if file_id is None:
            raise ValueError(f"file_id must be a 36-char UUID, got {item.file_id!r}")
        if item.size <= 0:  # the SE answers 500 to empty files
            raise ElementRejected(f"{self._element_id} cannot store an empty file", status=500)
        found = await self.metadata(file_id)
        if found is not None and not _matches(found, item):
            log.warning("removing a mismatched copy of %s on %s", file_id, self._element_id)
            await self.delete(file_id)
            found = None
        if found is None:
            await self._upload(file_id, item, await self._sendable_name(item.original_filename))
            found = await self.metadata(file_id)
            if found is None or not _matches(found, item):
                raise TransientError(f"{file_id} vanished from {self._element_id} after upload")
        metadata = item.metadata
        if found.get("original_filename") != item.original_filename:
            # The SE got a shortened name (it fails on long ones): keep the real one with the
            # file, unless the metadata already names the one the user uploaded.
            metadata = {"original_filename": item.original_filename, **metadata}
        await self._patch_metadata(file_id, fit_se_metadata(found, metadata))
        return StoredFile(
            file_id=file_id,
            element_id=self._element_id,
            storage_filename=str(found["storage_filename"]),
            storage_path=str(found["storage_path"]),
            size=int(found["file_size"]),
            sha256=str(found["checksum"]),
        )

    async def delete(self, file_id: str) -> None:
        """Gone from the SE (absent counts as done), or an error. A slow answer, "deleted" or
        "not found", is only believed once a fast lookup finds the file absent."""
        canonical = canonical_file_id(file_id)
        if canonical is None:
            return  # nothing can be stored under a non-UUID id
        if self._mode is ElementMode.EDIT:
            status, body, took = await self._timed("DELETE", f"/files/{canonical}")
            if status in (200, 204, 404):
                await self._confirm_gone(canonical, f"DELETE /files: {status}", took)
                return
            if status != 403:  # 403: our token lacks operator/admin; gc works for either
                raise self._rejected("DELETE /files", status, body)
        status, body, took = await self._timed(
            "DELETE", f"/gc/{canonical}", {"reason": "gc_cleanup", "cleanup_type": None}
        )
        if status not in (200, 204, 404):
            raise self._rejected("DELETE /gc", status, body)
        answer = body.get("status") if isinstance(body, dict) else None
        await self._confirm_gone(canonical, f"DELETE /gc: {status} {answer}", took, gc=True)

    async def _confirm_gone(
        self, file_id: str, answer: str, took: float, *, gc: bool = False
    ) -> None:
        """Accept a fast answer; check a slow one with a lookup that must be fast and find
        nothing (`GET /gc/{id}/exists` after a gc delete, else `GET /files/{id}`)."""
        if took <= self._slow_answer:
            return
        log.warning("%s on %s took %.1f s: checking that %s is gone", answer, self._element_id,
                    took, file_id)  # fmt: skip
        if gc:
            status, body, checked = await self._timed("GET", f"/gc/{file_id}/exists")
            if (
                status != 200
                or not isinstance(body, dict)
                or not isinstance(body.get("exists"), bool)
            ):
                raise self._rejected("GET /gc/exists", status, body)
            exists = body["exists"]
        else:
            status, body, checked = await self._timed("GET", f"/files/{file_id}")
            if status not in (200, 404):
                raise self._rejected("GET /files", status, body)
            exists = status == 200
        if checked > self._slow_answer:
            raise TransientError(
                f"{self._element_id} is stalling ({answer} after {took:.1f} s, a lookup after "
                f"{checked:.1f} s): {file_id} may still be there; retrying later"
            )
        if exists:
            raise TransientError(
                f"{self._element_id} still holds {file_id} after {answer} ({took:.1f} s)"
            )

    async def fetch(self, file_id: str, target: Path) -> FetchedFile | None:
        canonical = canonical_file_id(file_id)
        found = await self.metadata(canonical) if canonical else None
        if canonical is None or found is None:
            return None
        size, checksum = found.get("file_size"), str(found.get("checksum", "")).lower()
        got_size, got_sha256 = await self._download(canonical, target)
        if (got_size, got_sha256) != (size, checksum):
            await asyncio.to_thread(target.unlink, True)
            raise ElementMismatch(
                f"{self._element_id} sent {got_size} bytes, sha256 {got_sha256} for {canonical}; "
                f"its metadata says {size} bytes, sha256 {checksum}"
            )
        return FetchedFile(
            file_id=canonical,
            original_filename=str(found.get("original_filename") or canonical),
            content_type=str(found.get("content_type") or "application/octet-stream"),
            size=got_size,
            sha256=got_sha256,
            created_at=created_at(found.get("created_at")),
        )

    async def _download(self, file_id: str, target: Path) -> tuple[int, str]:
        """Stream the SE's download of `file_id` into `target` (hashed, fsynced)."""

        async def send(token: str) -> Reply:
            async with self._session.get(
                f"{self._api}/files/{file_id}/download",
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._upload_timeout,
            ) as response:
                if response.status != 200:
                    return await read_reply(response)
                out = await asyncio.to_thread(open, target, "wb")
                digest = hashlib.sha256()
                size = 0
                try:
                    async for chunk in response.content.iter_chunked(_DOWNLOAD_CHUNK):
                        size += len(chunk)
                        await asyncio.to_thread(write_hashed, out, digest, chunk)
                    await asyncio.to_thread(sync_file, out)
                finally:
                    await asyncio.to_thread(out.close)
                return 200, (size, digest.hexdigest())

        try:
            status, body = await self._authed(send)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(
                f"download of {file_id} from {self._element_id}: {failure(exc)}"
            ) from exc
        if status == 200 and isinstance(body, tuple):
            return body
        if status == 404:
            raise TransientError(f"{file_id} vanished from {self._element_id} during download")
        if status >= 500:
            raise TransientError(f"download of {file_id} from {self._element_id}: {status}")
        raise self._rejected("GET /files/download", status, body)

    async def metadata(self, file_id: str) -> dict[str, Any] | None:
        """The SE's metadata object of `file_id`, or None if it does not hold it (a fast 404;
        a slow one is a `TransientError`: a stalling SE reports every file as absent)."""
        status, body, took = await self._timed("GET", f"/files/{file_id}")
        if status == 404:
            if took > self._slow_answer:
                raise TransientError(
                    f"{self._element_id} answered 404 for {file_id} after {took:.1f} s: "
                    "no proof of absence"
                )
            return None
        if status != 200 or not isinstance(body, dict):
            raise self._rejected("GET /files", status, body)
        return body

    # Steps of `store`.

    async def _sendable_name(self, original: str) -> str:
        """`original` as it can be sent: cut only if the SE's storage_filename for it, with the
        `name` our token actually carries, would not fit its disk."""
        return sendable_filename(original, token_name(await self._token.token()))

    async def _upload(self, file_id: str, item: FileToStore, filename: str) -> None:
        """POST the file (never retried here: a duplicate `file_id` is a 500 on the SE)."""
        problem: BaseException | None = None
        try:
            status, body = await self._authed(
                lambda token: self._post(file_id, item, filename, token)
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, body, problem = 0, None, exc
        if status == 201 and isinstance(body, dict):
            if body.get("file_size") == item.size and body.get("checksum") == item.sha256.lower():
                return
            await self.delete(file_id)  # compensate: never leave bytes we did not mean
            raise ElementMismatch(
                f"{self._element_id} stored {file_id} as {body.get('file_size')} bytes, sha256 "
                f"{body.get('checksum')}; expected {item.size} bytes, sha256 {item.sha256}"
            )
        if status == 0 or status >= 500:
            # A 500 or a timeout may still have stored the file: accept a verified copy.
            found = await self.metadata(file_id)
            if found is not None and _matches(found, item):
                return
            what = f"{status}: {detail(body)}" if problem is None else failure(problem)
            raise TransientError(f"upload of {file_id} to {self._element_id} failed: {what}")
        raise self._rejected("POST /files/upload", status, body)

    async def _post(self, file_id: str, item: FileToStore, filename: str, token: str) -> Reply:
        source: IO[bytes] = await asyncio.to_thread(open, item.source, "rb")
        try:
            # The SE reads the filename as raw UTF-8: aiohttp would percent-encode it otherwise.
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("file_id", file_id)
            form.add_field(
                "file",
                source,  # streamed in chunks by aiohttp, never read whole
                filename=filename,
                content_type=item.content_type or "application/octet-stream",
            )
            return await self._send(
                "POST", "/files/upload", token, data=form, client_timeout=self._upload_timeout
            )
        finally:
            await asyncio.to_thread(source.close)

    async def _patch_metadata(self, file_id: str, metadata: dict[str, Any]) -> None:
        status, body = await self._request("PATCH", f"/files/{file_id}", {"metadata": metadata})
        if status == 404:
            raise TransientError(f"{file_id} vanished from {self._element_id} before PATCH")
        if status != 200:
            raise self._rejected("PATCH /files", status, body)

    # HTTP plumbing.

    async def _request(self, method: str, path: str, json_body: Any = None) -> Reply:
        """An idempotent call: retried with backoff on connection errors, timeouts and 5xx.
        Returns any reply below 500 (401 only after a fresh token failed too)."""
        status, body, _ = await self._timed(method, path, json_body)
        return status, body

    async def _timed(self, method: str, path: str, json_body: Any = None) -> tuple[int, Any, float]:
        """`_request`, with the seconds the SE took to give the answer it returns (monotonic
        clock; getting a token does not count)."""
        took = 0.0

        async def send(token: str) -> Reply:
            nonlocal took
            started = time.monotonic()
            try:
                return await self._send(method, path, token, json=json_body)
            finally:
                took = time.monotonic() - started

        attempt = 0
        while True:
            try:
                status, body = await self._authed(send)
                if status < 500:
                    return status, body, took
                error = TransientError(
                    f"{method} {path} on {self._element_id}: {status} {detail(body)}"
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = TransientError(f"{method} {path} on {self._element_id}: {failure(exc)}")
                if isinstance(exc, aiohttp.ClientSSLError):
                    raise error from exc  # a refused handshake is refused again at once
                error.__cause__ = exc
            if attempt >= self._max_retries:
                raise error
            delay = min(_BACKOFF_CAP, self._backoff * 2**attempt)
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            attempt += 1

    async def _authed(self, send: Callable[[str], Awaitable[Reply]]) -> Reply:
        """`send` with a token; after a 401, once more with a fresh one (it may have expired)."""
        status, body = await send(await self._token.token())
        if status != 401:
            return status, body
        status, body = await send(await self._token.token(fresh=True))
        if status == 401:
            # A fresh token refused: the SE knows another public key. Do not loop.
            raise ElementRejected(
                f"{self._element_id} refuses a fresh token ({detail(body)}): key mismatch?",
                code="element_unauthorized",
            )
        return status, body

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        *,
        client_timeout: aiohttp.ClientTimeout | None = None,
        **kwargs: Any,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {token}"}
        async with self._session.request(
            method,
            self._api + path,
            headers=headers,
            timeout=client_timeout or self._timeout,
            **kwargs,
        ) as response:
            return await read_reply(response)

    def _rejected(self, what: str, status: int, body: Any) -> ElementRejected:
        # The codes name the lazy-reload reasons of a 507 and a 404.
        code = {507: "element_full", 404: "element_not_found"}.get(status)
        return ElementRejected(f"{what} on {self._element_id}: {status} {detail(body)}", code=code)


def _matches(found: dict[str, Any], item: FileToStore) -> bool:
    return found.get("file_size") == item.size and found.get("checksum") == item.sha256.lower()
