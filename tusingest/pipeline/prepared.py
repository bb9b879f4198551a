"""A checked file ready to store (verdict, compressed copy, the choices a retry repeats) and
its persisted form in the operation's result."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tusingest.domain import CatalogEntry, FileToStore, StoredFile, Upload
from tusingest.elements.naming import build_attr, hour_path, storage_filename
from tusingest.pipeline.compress import Compressed
from tusingest.pipeline.validate import Validated


@dataclass(frozen=True)
class Prepared:
    """A checked file ready to store: its verdict, the compressed copy if any, and the
    choices a retry must repeat (upload time, name, retention)."""

    validated: Validated
    compressed: Compressed | None
    stored_at: datetime
    name: str
    retention: str

    @property
    def size(self) -> int:
        return self.compressed.size if self.compressed else self.validated.size

    @property
    def sha256(self) -> str:
        return self.compressed.sha256 if self.compressed else self.validated.sha256

    def item(self, file_id: str, upload: Upload, source: Path) -> FileToStore:
        compressed, validated = self.compressed, self.validated
        return FileToStore(
            file_id=file_id,
            source=compressed.path if compressed else source,
            original_filename=self.name,
            content_type=validated.detected_type,
            size=self.size,
            sha256=self.sha256,
            owner_sub=upload.owner,
            owner_name=upload.owner,  # the token's subject, never client metadata
            uploaded_at=self.stored_at,
            metadata={
                "upload_id": upload.id,
                "retention_policy": self.retention,
                "md5": validated.md5,
                "original_size": validated.size,
                "original_sha256": validated.sha256,
                "codec": compressed.codec if compressed else None,
                "owner": upload.owner,
            },
        )

    def entry(self, upload: Upload, stored: StoredFile) -> CatalogEntry:
        validated = self.validated
        return CatalogEntry(
            file_id=stored.file_id,
            upload_id=upload.id,
            element_id=stored.element_id,
            storage_filename=stored.storage_filename,
            storage_path=stored.storage_path,
            original_filename=self.name,
            content_type=validated.detected_type,
            declared_type=validated.declared_type,
            size=validated.size,
            stored_size=stored.size,
            codec=self.compressed.codec if self.compressed else None,
            md5=validated.md5,
            sha256=validated.sha256,
            stored_sha256=stored.sha256,
            retention_policy=self.retention,
            owner=upload.owner,
            created_at=datetime.now(UTC),
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


def validated_from(raw: Any) -> Validated | None:
    return Validated(**raw) if isinstance(raw, dict) else None


def compressed_state(compressed: Compressed | None) -> dict[str, Any] | None:
    if compressed is None:
        return None
    return {**asdict(compressed), "path": str(compressed.path)}


def compressed_from(raw: Any) -> Compressed | None:
    return Compressed(**{**raw, "path": Path(raw["path"])}) if isinstance(raw, dict) else None


def still_there(raw: Any) -> bool:
    """Whether a persisted compression result can be reused (None: stored as is)."""
    if raw is None:
        return True
    path = Path(raw["path"])
    return path.is_file() and path.stat().st_size == raw["size"]
