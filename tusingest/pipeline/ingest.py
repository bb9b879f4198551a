"""The `ingest` operation: validate, scan, compress and store a completed upload, exactly once;
every step is idempotent, so a retry (on any node, after any crash) just runs again."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tusingest.domain import (
    Operation,
    StoredFile,
    Upload,
    UploadStatus,
)
from tusingest.errors import NoStorageAvailable, TusingestError
from tusingest.metadata import metadata_text
from tusingest.pipeline.compress import CompressionSettings, maybe_compress
from tusingest.pipeline.prepared import (
    Prepared,
    compressed_from,
    compressed_state,
    preflight,
    still_there,
    validated_from,
)
from tusingest.pipeline.runner import Progress
from tusingest.pipeline.saga import StoreSaga
from tusingest.pipeline.validate import (
    Rejection,
    RejectionCode,
    Validated,
    ValidationSettings,
    validate,
)
from tusingest.ports import Catalog, FileRegistrar, Scanner, SessionStore, Staging

log = logging.getLogger(__name__)

STEPS = (
    "validate",
    "scan",
    "compress",
    "store",
    "verify",
    "catalog",
    "register",
    "stored",
    "cleanup",
)
RETENTION_POLICIES = ("temporary", "permanent")


@dataclass(frozen=True)
class IngestPolicy:
    validation: ValidationSettings
    compression: CompressionSettings
    workdir: Path  # compressed copies are made here
    temporary_ttl_days: int = 30  # registered with the Admin Module for temporary files
    crash_at: str | None = None  # fault injection for crash-safety tests: SIGKILL at that step


class Ingest:
    """Implements the runner's `Handler` for kind `ingest` (subject = upload id)."""

    def __init__(
        self,
        sessions: SessionStore,
        staging: Staging,
        catalog: Catalog,
        saga: StoreSaga,
        registrar: FileRegistrar | None,
        scanner: Scanner | None,
        policy: IngestPolicy,
    ) -> None:
        self._sessions = sessions
        self._staging = staging
        self._catalog = catalog
        self._saga = saga
        self._registrar = registrar
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
            prepared = await self._prepare(op, upload, meta, source, progress)
        except Rejection as rejection:
            return await self._reject(upload, rejection)
        # The catalog entry records where the file went: a retry past it does not store again.
        entry = await self._catalog.by_upload(upload.id)
        if entry is None:
            self._step("store")
            stored = await self._store(op, upload, prepared, source, progress)
            self._step("catalog")
            entry = prepared.entry(upload, stored)
            await self._catalog.record(entry)
        self._step("register")
        if self._registrar is not None:
            ttl = self._policy.temporary_ttl_days if prepared.retention == "temporary" else None
            await self._registrar.register(entry, ttl_days=ttl)
        self._step("stored")
        await self._sessions.settle(
            upload.id,
            status=UploadStatus.STORED,
            now=datetime.now(UTC),
            file_id=entry.file_id,
            digests=(prepared.validated.md5, prepared.validated.sha256),
        )
        self._step("cleanup")
        await self._cleanup(upload)
        return {"verdict": "stored", "file_id": entry.file_id}

    async def _prepare(
        self,
        op: Operation,
        upload: Upload,
        meta: dict[str, str],
        source: Path,
        progress: Progress,
    ) -> Prepared:
        """Validate, scan and compress, or reuse what an earlier attempt persisted (a retry
        after waiting for storage reads nothing again); raises `Rejection`."""
        state = op.result
        validated = validated_from(state.get("validated"))
        if validated is None:
            validated = await self._check(upload, meta, source)
        self._step("compress")
        name = meta.get("filename") or meta.get("name") or "file"
        stored_at = datetime.fromisoformat(
            str(state.get("stored_at") or datetime.now(UTC).isoformat())
        )
        try:
            preflight(name, upload.owner, stored_at)
        except TusingestError as refused:
            code: RejectionCode = (
                "filename_too_long" if refused.code == "filename_too_long" else "attr_too_large"
            )
            raise Rejection(code, refused.message) from None
        reusable = "compressed" in state and await asyncio.to_thread(
            still_there, state["compressed"]
        )
        if reusable:
            compressed = compressed_from(state["compressed"])
        else:
            compressed = await maybe_compress(
                source,
                validated.detected_type,
                validated.size,
                self._policy.compression,
                self._policy.workdir,
            )
        prepared = Prepared(validated, compressed, stored_at, name, _retention(meta))
        if not reusable or "validated" not in state:
            await progress(
                "store",
                {
                    "validated": asdict(validated),
                    "compressed": compressed_state(compressed),
                    "stored_at": stored_at.isoformat(),
                },
            )
        return prepared

    async def _store(
        self, op: Operation, upload: Upload, prepared: Prepared, source: Path, progress: Progress
    ) -> StoredFile:
        try:
            stored = await self._saga.place(
                op.result,
                progress,
                lambda file_id: prepared.item(file_id, upload, source),
                retention=prepared.retention,
                size=prepared.size,
            )
        except NoStorageAvailable as waiting:
            # Not a verdict: the bytes stay staged and the operation waits for storage.
            await self._sessions.settle(
                upload.id,
                status=UploadStatus.PROCESSING,
                now=datetime.now(UTC),
                error=waiting.code,
                detail=waiting.message,
            )
            raise
        self._step("verify")
        if stored.sha256 != prepared.sha256:
            # Retried: the store is idempotent by file id and redoes a copy that differs.
            raise OSError(f"{stored.element_id} holds {stored.sha256}, expected {prepared.sha256}")
        return stored

    async def _check(self, upload: Upload, meta: dict[str, str], source: Path) -> Validated:
        """Validate and scan the staged file; raises `Rejection`."""
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
        return validated

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
        """Undo the saga in reverse (registration, catalog entry, copies on elements); the
        staged bytes stay, so nothing the client sent is lost."""
        entry = await self._catalog.by_upload(op.subject)
        if entry is not None and self._registrar is not None:
            try:
                await self._registrar.unregister(entry.file_id)
            except TusingestError as exc:
                log.error("could not unregister %s: %s", entry.file_id, exc)
        await self._catalog.remove(op.subject)
        await self._saga.compensate(op.result)
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
