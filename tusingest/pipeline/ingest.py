"""The `ingest` operation: validate, scan, compress and store a completed upload, exactly once;
every step is idempotent, so a retry (on any node, after any crash) just runs again."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tusingest.domain import (
    CatalogEntry,
    FileToStore,
    Operation,
    Upload,
    UploadStatus,
)
from tusingest.metadata import metadata_text
from tusingest.pipeline.compress import CompressionSettings, maybe_compress
from tusingest.pipeline.runner import Progress
from tusingest.pipeline.validate import Rejection, ValidationSettings, validate
from tusingest.ports import Catalog, Scanner, SessionStore, Staging, StorageElement

log = logging.getLogger(__name__)

STEPS = ("validate", "scan", "compress", "store", "catalog", "stored", "cleanup")
RETENTION_POLICIES = ("temporary", "permanent")


@dataclass(frozen=True)
class IngestPolicy:
    validation: ValidationSettings
    compression: CompressionSettings
    workdir: Path  # compressed copies are made here
    crash_at: str | None = None  # fault injection for crash-safety tests: SIGKILL at that step


class Ingest:
    """Implements the runner's `Handler` for kind `ingest` (subject = upload id)."""

    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        catalog: Catalog,
        element: StorageElement,
        scanner: Scanner | None,
        policy: IngestPolicy,
    ) -> None:
        self._sessions = sessions
        self._staging = staging
        self._catalog = catalog
        self._element = element
        self._scanner = scanner
        self._policy = policy

    def _step(self, name: str) -> None:
        if self._policy.crash_at == name:
            log.warning("fault injection: killing this process at step %s", name)
            os.kill(os.getpid(), signal.SIGKILL)

    async def run(self, op: Operation, progress: Progress) -> dict[str, Any]:
        upload = await self._sessions.get(op.subject)
        if upload is None:
            return {"verdict": "gone"}
        if upload.status in (UploadStatus.STORED, UploadStatus.REJECTED):
            await self._cleanup(upload)  # a crash may have come between verdict and cleanup
            return {"verdict": upload.status.value}
        if upload.status in (UploadStatus.TERMINATED, UploadStatus.EXPIRED):
            return {"verdict": upload.status.value}
        await self._sessions.settle(
            upload.id, status=UploadStatus.PROCESSING, now=datetime.now(UTC)
        )
        meta = metadata_text(upload.metadata_raw)
        source = self._staging.path(upload.id)
        try:
            self._step("validate")
            known = (upload.md5, upload.sha256) if upload.md5 and upload.sha256 else None
            validated = await validate(
                source,
                declared_type=meta.get("filetype") or meta.get("type"),
                declared_checksum=meta.get("checksum"),
                known_digests=known,
                settings=self._policy.validation,
            )
            self._step("scan")
            if self._scanner is not None:
                scan = await self._scanner.scan(source)
                if not scan.clean:
                    raise Rejection("virus_detected", f"the file contains {scan.signature}")
        except Rejection as rejection:
            return await self._reject(upload, rejection)

        self._step("compress")
        compressed = await maybe_compress(
            source,
            validated.detected_type,
            validated.size,
            self._policy.compression,
            self._policy.workdir,
        )
        # Both fixed before the first attempt to store: a retry must name the file the same.
        file_id = str(op.result.get("file_id") or uuid.uuid4())
        stored_at = datetime.fromisoformat(
            str(op.result.get("stored_at") or datetime.now(UTC).isoformat())
        )
        await progress("store", {"file_id": file_id, "stored_at": stored_at.isoformat()})
        self._step("store")
        stored = await self._element.store(
            FileToStore(
                file_id=file_id,
                source=compressed.path if compressed else source,
                original_filename=meta.get("filename") or meta.get("name") or "file",
                content_type=validated.detected_type,
                size=compressed.size if compressed else validated.size,
                sha256=compressed.sha256 if compressed else validated.sha256,
                owner_sub=upload.owner,
                owner_name=upload.owner,  # the token's subject, never client metadata
                uploaded_at=stored_at,
                metadata={
                    "upload_id": upload.id,
                    "retention_policy": _retention(meta),
                    "md5": validated.md5,
                    "original_size": validated.size,
                    "original_sha256": validated.sha256,
                    "codec": compressed.codec if compressed else None,
                    "owner": upload.owner,
                },
            )
        )
        expected = compressed.sha256 if compressed else validated.sha256
        if stored.sha256 != expected:
            # Retried: the store is idempotent by file id and redoes a copy that does not match.
            raise OSError(f"{stored.element_id} holds {stored.sha256}, expected {expected}")
        self._step("catalog")
        await self._catalog.record(
            CatalogEntry(
                file_id=file_id,
                upload_id=upload.id,
                element_id=stored.element_id,
                storage_filename=stored.storage_filename,
                storage_path=stored.storage_path,
                original_filename=meta.get("filename") or meta.get("name") or "file",
                content_type=validated.detected_type,
                declared_type=validated.declared_type,
                size=validated.size,
                stored_size=stored.size,
                codec=compressed.codec if compressed else None,
                md5=validated.md5,
                sha256=validated.sha256,
                stored_sha256=stored.sha256,
                retention_policy=_retention(meta),
                owner=upload.owner,
                created_at=datetime.now(UTC),
            )
        )
        self._step("stored")
        await self._sessions.settle(
            upload.id,
            status=UploadStatus.STORED,
            now=datetime.now(UTC),
            file_id=file_id,
            digests=(validated.md5, validated.sha256),
        )
        self._step("cleanup")
        await self._cleanup(upload)
        return {"verdict": "stored", "file_id": file_id}

    async def _reject(self, upload: Upload, rejection: Rejection) -> dict[str, Any]:
        await self._sessions.settle(
            upload.id,
            status=UploadStatus.REJECTED,
            now=datetime.now(UTC),
            error=rejection.code,
            detail=rejection.message,
        )
        await self._catalog.audit(
            upload.owner, "upload_rejected", upload.id, {"code": rejection.code,
                                                        "message": rejection.message}
        )  # fmt: skip
        await self._cleanup(upload)
        return {"verdict": "rejected", "code": rejection.code}

    async def _cleanup(self, upload: Upload) -> None:
        await self._staging.delete(upload.id)
        for leftover in self._policy.workdir.glob(f"{upload.id}*"):
            await asyncio.to_thread(leftover.unlink, True)

    async def give_up(self, op: Operation, error: str) -> None:
        await self._sessions.settle(
            op.subject,
            status=UploadStatus.FAILED,
            now=datetime.now(UTC),
            error="processing_failed",
            detail=error,
        )


def _retention(meta: dict[str, str]) -> str:
    value = meta.get("retention_policy", "temporary").lower()
    return value if value in RETENTION_POLICIES else "temporary"
