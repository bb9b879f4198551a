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
    CatalogEntry,
    FileToStore,
    Operation,
    StoredFile,
    Upload,
    UploadStatus,
)
from tusingest.elements.naming import build_attr, hour_path, storage_filename
from tusingest.errors import NoStorageAvailable, TusingestError
from tusingest.metadata import metadata_text
from tusingest.pipeline.compress import Compressed, CompressionSettings, maybe_compress
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
        # A retry (e.g. after waiting for storage) reuses the verdict and the compressed copy
        # instead of reading the whole file again.
        validated = _validated(op.result.get("validated"))
        if validated is None:
            try:
                validated = await self._check(upload, meta, source)
            except Rejection as rejection:
                return await self._reject(upload, rejection)
            await progress("compress", {"validated": asdict(validated)})

        self._step("compress")
        name = meta.get("filename") or meta.get("name") or "file"
        retention = _retention(meta)
        stored_at = datetime.fromisoformat(
            str(op.result.get("stored_at") or datetime.now(UTC).isoformat())
        )
        try:
            preflight(name, upload.owner, stored_at)
        except TusingestError as refused:
            code: RejectionCode = (
                "filename_too_long" if refused.code == "filename_too_long" else "attr_too_large"
            )
            return await self._reject(upload, Rejection(code, refused.message))
        reusable = "compressed" in op.result and await asyncio.to_thread(
            _still_there, op.result["compressed"]
        )
        if reusable:
            compressed = _compressed(op.result["compressed"])
        else:
            compressed = await maybe_compress(
                source,
                validated.detected_type,
                validated.size,
                self._policy.compression,
                self._policy.workdir,
            )
            await progress("compress", {"compressed": _compressed_dict(compressed)})
        size = compressed.size if compressed else validated.size
        expected = compressed.sha256 if compressed else validated.sha256

        def build(file_id: str) -> FileToStore:
            return FileToStore(
                file_id=file_id,
                source=compressed.path if compressed else source,
                original_filename=name,
                content_type=validated.detected_type,
                size=size,
                sha256=expected,
                owner_sub=upload.owner,
                owner_name=upload.owner,  # the token's subject, never client metadata
                uploaded_at=stored_at,
                metadata={
                    "upload_id": upload.id,
                    "retention_policy": retention,
                    "md5": validated.md5,
                    "original_size": validated.size,
                    "original_sha256": validated.sha256,
                    "codec": compressed.codec if compressed else None,
                    "owner": upload.owner,
                },
            )

        self._step("store")
        stored = _stored(op.result.get("stored"))
        if stored is None:
            await progress("store", {"stored_at": stored_at.isoformat()})
            try:
                _placement, stored = await self._saga.place(
                    op.result, progress, build, retention=retention, size=size
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
            if stored.sha256 != expected:
                # Retried: the store is idempotent by file id and redoes a copy that differs.
                raise OSError(f"{stored.element_id} holds {stored.sha256}, expected {expected}")
            await progress("catalog", {"stored": asdict(stored)})
        self._step("catalog")
        await self._catalog.record(
            CatalogEntry(
                file_id=stored.file_id,
                upload_id=upload.id,
                element_id=stored.element_id,
                storage_filename=stored.storage_filename,
                storage_path=stored.storage_path,
                original_filename=name,
                content_type=validated.detected_type,
                declared_type=validated.declared_type,
                size=validated.size,
                stored_size=stored.size,
                codec=compressed.codec if compressed else None,
                md5=validated.md5,
                sha256=validated.sha256,
                stored_sha256=stored.sha256,
                retention_policy=retention,
                owner=upload.owner,
                created_at=datetime.now(UTC),
            )
        )
        self._step("register")
        if self._registrar is not None:
            entry = await self._catalog.by_upload(upload.id)
            if entry is not None:
                ttl = self._policy.temporary_ttl_days if retention == "temporary" else None
                await self._registrar.register(entry, ttl_days=ttl)
                await progress("stored", {"registered": True})
        self._step("stored")
        await self._sessions.settle(
            upload.id,
            status=UploadStatus.STORED,
            now=datetime.now(UTC),
            file_id=stored.file_id,
            digests=(validated.md5, validated.sha256),
        )
        self._step("cleanup")
        await self._cleanup(upload)
        return {"verdict": "stored", "file_id": stored.file_id}

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
        stored = _stored(op.result.get("stored"))
        if stored is not None and self._registrar is not None:
            try:
                await self._registrar.unregister(stored.file_id)
            except TusingestError as exc:
                log.error("could not unregister %s: %s", stored.file_id, exc)
        await self._catalog.remove(op.subject)
        await self._saga.compensate(op.result)
        await self._sessions.settle(
            op.subject,
            status=UploadStatus.FAILED,
            now=datetime.now(UTC),
            error="processing_failed",
            detail=error,
        )


def preflight(name: str, owner: str, when: datetime) -> None:
    """Refuse, before anything is sent, a file no element could name (contract §6.4, §7.2):
    raises the `TusingestError` an element would answer with."""
    probe_id = "00000000-0000-4000-8000-000000000000"
    filename = storage_filename(name, owner, when, probe_id)
    build_attr(
        FileToStore(probe_id, Path(), name, "", 1, "0" * 64, owner, owner, when, {}),
        probe_id,
        filename,
        hour_path(when),
    )


def _validated(raw: Any) -> Validated | None:
    return Validated(**raw) if isinstance(raw, dict) else None


def _compressed_dict(compressed: Compressed | None) -> dict[str, Any] | None:
    if compressed is None:
        return None
    return {**asdict(compressed), "path": str(compressed.path)}


def _compressed(raw: Any) -> Compressed | None:
    return Compressed(**{**raw, "path": Path(raw["path"])}) if isinstance(raw, dict) else None


def _still_there(raw: Any) -> bool:
    """Whether a persisted compression result can be reused (None: stored as is)."""
    if raw is None:
        return True
    path = Path(raw["path"])
    return path.is_file() and path.stat().st_size == raw["size"]


def _stored(raw: Any) -> StoredFile | None:
    return StoredFile(**raw) if isinstance(raw, dict) else None


def _retention(meta: dict[str, str]) -> str:
    value = meta.get("retention_policy", "temporary").lower()
    return value if value in RETENTION_POLICIES else "temporary"
