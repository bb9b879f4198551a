"""The Admin Module: its storage-element list as a registry, and its file registry."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp

from tusingest.domain import WRITABLE_MODES, CapacityStatus, CatalogEntry, ElementInfo, ElementMode
from tusingest.errors import TransientError, TusingestError
from tusingest.ports import TokenSource
from tusingest.replies import Reply, detail, failure, read_reply

log = logging.getLogger(__name__)


class AdminRejected(TusingestError):
    """The Admin Module refused a request for a reason a retry will not fix."""

    status = 502
    code = "registration_rejected"


class _AdminClient:
    """Authenticated JSON calls to the Admin Module."""

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, token: TokenSource, timeout: float
    ) -> None:
        self._base = base_url.rstrip("/") + "/api/v1"
        self._session = session
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request; after a 401, once more with a fresh token. Connection errors and
        timeouts are transient; a fresh token refused too is not (the Admin Module signs its
        own tokens, so this is a broken service account, not a race)."""
        try:
            reply = await self._send(method, path, await self._token.token(), json, params)
            if reply[0] == 401:
                fresh = await self._token.token(fresh=True)
                reply = await self._send(method, path, fresh, json, params)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(
                f"Admin Module unreachable ({method} {path}): {failure(exc)}"
            ) from None
        if reply[0] == 401:
            raise AdminRejected(
                f"the Admin Module refuses a fresh token for {method} {path}: {detail(reply[1])}",
                code="admin_unauthorized",
            )
        return reply

    async def _send(
        self, method: str, path: str, token: str, json: Any, params: dict[str, str] | None
    ) -> Reply:
        async with self._session.request(
            method,
            self._base + path,
            json=json,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=self._timeout,
        ) as response:
            return await read_reply(response)


class AdminRegistry:
    """Implements `Registry` from the Admin Module's list of available elements (the fallback
    when Redis has none). A 503 means "none available"; other failures are transient."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        token: TokenSource,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._client = _AdminClient(base_url, session, token, timeout)

    async def elements(self, mode: ElementMode) -> list[ElementInfo]:
        if mode not in WRITABLE_MODES:
            return []
        status, body = await self._client.call(
            "GET", "/internal/storage-elements/available", params={"mode": mode.value}
        )
        if status == 503:
            return []
        if status != 200 or not isinstance(body, dict):
            raise TransientError(
                f"Admin Module answered {status} for the element list: {detail(body)}"
            )
        raw = body.get("storage_elements")
        entries = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        found = [info for entry in entries if (info := parse(entry, mode))]
        return sorted(found, key=lambda e: (e.priority, e.element_id))

    async def element(self, element_id: str) -> ElementInfo | None:
        status, body = await self._client.call(
            "GET", f"/internal/storage-elements/{quote(element_id, safe='')}"
        )
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise TransientError(f"Admin Module answered {status} for {element_id}: {detail(body)}")
        try:
            mode = ElementMode(str(body.get("mode")))
        except ValueError:
            return None
        info = parse(body, mode)
        return info if info is not None and info.element_id == element_id else None

    async def invalidate(self) -> None:
        """Nothing is cached here."""

    async def ping(self) -> None:
        """Raise unless the Admin Module answers an authenticated call with 200 (readiness: a
        503, down or with no element available, is not ready either)."""
        status, body = await self._client.call(
            "GET", "/internal/storage-elements/available", params={"mode": "edit"}
        )
        if status != 200:
            raise TransientError(f"Admin Module answered {status}: {detail(body)}")


def parse(raw: dict[str, Any], mode: ElementMode) -> ElementInfo | None:
    """One list entry, or None when it cannot be used (no element_id or api_url, other mode,
    malformed numbers)."""
    try:
        element_id = raw.get("element_id")
        api_url = raw.get("api_url")
        if not element_id or not api_url or raw.get("mode") != mode.value:
            return None
        total = int(raw["capacity_bytes"]) if raw.get("capacity_bytes") is not None else 0
        used = int(raw.get("used_bytes") or 0)
        status = CapacityStatus(str(raw.get("capacity_status", "ok")).lower())
        return ElementInfo(
            element_id=str(element_id),
            mode=mode,
            priority=int(raw.get("priority", 100)),
            endpoint=str(api_url),
            capacity_total=total,
            capacity_used=used,
            capacity_free=max(total - used, 0),
            status=status,
            healthy=raw.get("health_status", "healthy") == "healthy",
        )
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("skipping a malformed Admin Module element entry %r: %s", raw, exc)
        return None


class AdminFiles:
    """Implements `FileRegistrar` with the Admin Module's file registry. Registering
    is idempotent by `file_id`: an existing registration of the same stored bytes on the same
    element counts as done, any other is a conflict."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        token: TokenSource,
        *,
        timeout: float = 30.0,
    ) -> None:
        self._client = _AdminClient(base_url, session, token, timeout)

    async def register(self, entry: CatalogEntry, *, ttl_days: int | None) -> None:
        status, body = await self._client.call("POST", "/files", json=payload(entry, ttl_days))
        if status == 201:
            return
        why = detail(body)
        if status == 400 and "already exists" in why:
            await self._check_existing(entry)
            return
        if status >= 500 or status == 429:
            raise TransientError(f"Admin Module could not register {entry.file_id}: {why}")
        raise AdminRejected(f"the Admin Module rejects {entry.file_id} ({status}): {why}")

    async def unregister(self, file_id: str) -> None:
        if not _is_uuid(file_id):
            return  # the Admin Module registers UUIDs only: nothing to remove
        status, body = await self._client.call("DELETE", f"/files/{file_id}")
        if status in (200, 204, 404):
            return
        if status >= 500 or status == 429:
            raise TransientError(f"Admin Module could not unregister {file_id}: {detail(body)}")
        raise AdminRejected(
            f"the Admin Module refuses to unregister {file_id} ({status}): {detail(body)}"
        )

    async def relocate(self, entry: CatalogEntry, *, ttl_days: int | None) -> None:
        changes = {
            key: value
            for key, value in payload(entry, ttl_days).items()
            if key in ("storage_element_id", "storage_path", "retention_policy")
        }
        status, body = await self._client.call("PUT", f"/files/{entry.file_id}", json=changes)
        if status == 200:
            return
        if status == 404:
            await self.register(entry, ttl_days=ttl_days)
            return
        if status >= 500 or status == 429:
            raise TransientError(f"Admin Module could not update {entry.file_id}: {detail(body)}")
        raise AdminRejected(
            f"the Admin Module refuses to update {entry.file_id} ({status}): {detail(body)}"
        )

    async def _check_existing(self, entry: CatalogEntry) -> None:
        """An earlier attempt (answer lost, or a retry) may have registered it already."""
        status, body = await self._client.call("GET", f"/files/{entry.file_id}")
        if status >= 500:
            raise TransientError(f"Admin Module could not read {entry.file_id}: {detail(body)}")
        if status == 200 and isinstance(body, dict):
            same = (
                body.get("storage_element_id") == entry.element_id
                and str(body.get("checksum_sha256", "")).lower() == entry.stored_sha256.lower()
            )
            if same:
                return
            what = f"on {body.get('storage_element_id')} with sha256 {body.get('checksum_sha256')}"
        else:
            what = f"but cannot be read ({status}: {detail(body)}); a deleted registration?"
        raise AdminRejected(
            f"{entry.file_id} is already registered {what}, not on {entry.element_id} with "
            f"sha256 {entry.stored_sha256}",
            code="registration_conflict",
        )


def payload(entry: CatalogEntry, ttl_days: int | None) -> dict[str, Any]:
    """The Admin Module's registration body of a stored file."""
    temporary = entry.retention_policy == "temporary"
    if temporary and ttl_days is None:
        raise ValueError(f"{entry.file_id}: temporary files are registered with ttl_days")
    created = entry.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    expires = (created + timedelta(days=ttl_days)).isoformat() if temporary and ttl_days else None
    return {
        "file_id": entry.file_id,
        "original_filename": entry.original_filename[:500],
        "storage_filename": entry.storage_filename,
        "file_size": entry.stored_size,
        # The digest of the stored (possibly compressed) bytes: the one anybody can verify
        # against the SE's `checksum`. The original's is kept in user_metadata.
        "checksum_sha256": entry.stored_sha256.lower(),
        "content_type": entry.content_type[:255] or None,
        "description": None,
        "retention_policy": entry.retention_policy,
        "ttl_expires_at": expires,
        "ttl_days": ttl_days if temporary else None,
        "storage_element_id": entry.element_id,
        "storage_path": entry.storage_path,
        "compressed": entry.codec is not None,
        "compression_algorithm": entry.codec,
        "original_size": entry.size,
        "uploaded_by": entry.owner[:100],
        "upload_source_ip": None,
        "user_metadata": {
            "upload_id": entry.upload_id,
            "md5": entry.md5,
            "sha256": entry.sha256,
            "original_size": entry.size,
        },
    }


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
