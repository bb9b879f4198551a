"""The `ingest` operation's typed, versioned state: the checked file (validation, compressed copy,
the choices a retry repeats), where the saga placed it, and the outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tusingest.domain import CatalogEntry, FileToStore, Retention, StoredFile, Upload
from tusingest.pipeline.compress import Compressed, stored_form
from tusingest.pipeline.jobstate import VERSION, VERSION_KEY
from tusingest.pipeline.saga import PlacementLog
from tusingest.pipeline.validate import Validated


@dataclass(frozen=True)
class Prepared:
    """A checked file ready to store: its verdict, the compressed copy if any, and the
    choices a retry must repeat (upload time, name, retention)."""

    validated: Validated
    compressed: Compressed | None
    stored_at: datetime
    name: str
    retention: Retention
    # What the client said about the file beyond what the pipeline reads: kept with it.
    described: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.compressed.size if self.compressed else self.validated.size

    @property
    def sha256(self) -> str:
        return self.compressed.sha256 if self.compressed else self.validated.sha256

    def item(self, file_id: str, upload: Upload, source: Path) -> FileToStore:
        """What the element gets: a compressed copy goes under the codec's name and type
        (self-describing), the name and type the user uploaded in its attr.json metadata."""
        compressed, validated = self.compressed, self.validated
        codec = compressed.codec if compressed else None
        name, content_type = stored_form(self.name, validated.detected_type, codec)
        return FileToStore(
            file_id=file_id,
            source=compressed.path if compressed else source,
            original_filename=name,
            content_type=content_type,
            size=self.size,
            sha256=self.sha256,
            owner_sub=upload.owner,
            owner_name=upload.owner,  # the token's subject, never client metadata
            uploaded_at=self.stored_at,
            metadata=file_metadata(
                upload_id=upload.id,
                retention=self.retention,
                md5=validated.md5,
                size=validated.size,
                sha256=validated.sha256,
                codec=codec,
                owner=upload.owner,
                described=self.described,
                filename=self.name,
                content_type=validated.detected_type,
            ),
        )

    def entry(self, upload: Upload, stored: StoredFile) -> CatalogEntry:
        """The catalog keeps what the user uploaded (name, type, size, digests) and where the
        element put it (`storage_filename` as the element named it, stored size and digest)."""
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
            retention_policy=self.retention.value,
            owner=upload.owner,
            created_at=datetime.now(UTC),
        )


@dataclass(frozen=True)
class IngestState:
    """What an attempt leaves for the next one. `compressed` is known only with `validated`
    and `stored_at` (they are persisted together); None there means "stored as is"."""

    validated: Validated | None = None
    compressed: Compressed | None = None
    stored_at: datetime | None = None
    log: PlacementLog = field(default_factory=PlacementLog)
    verdict: str | None = None  # stored | rejected | gone | terminated | expired
    file_id: str | None = None
    code: str | None = None  # the rejection's code

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {VERSION_KEY: VERSION, **self.log.to_json()}
        if self.validated is not None and self.stored_at is not None:
            raw["validated"] = self.validated.to_json()
            raw["compressed"] = None if self.compressed is None else self.compressed.to_json()
            raw["stored_at"] = self.stored_at.isoformat()
        for key in ("verdict", "file_id", "code"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> IngestState:
        """A checked file that cannot be read back (written by another version, damaged)
        counts as not checked: the attempt checks it again. Placements must be readable:
        each may hold a copy that has to be kept or discarded."""
        validated = Validated.from_json(raw.get("validated"))
        compressed = Compressed.from_json(raw.get("compressed"))
        stored_at = _time(raw.get("stored_at"))
        if (
            validated is None
            or stored_at is None
            or (raw.get("compressed") is not None and compressed is None)
        ):
            validated, compressed, stored_at = None, None, None
        return cls(
            validated=validated,
            compressed=compressed,
            stored_at=stored_at,
            log=PlacementLog.from_json(raw),
            verdict=_text(raw.get("verdict")),
            file_id=_text(raw.get("file_id")),
            code=_text(raw.get("code")),
        )


def _time(raw: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) else None


# Upload-Metadata keys the pipeline reads itself; any other is the client's own.
PIPELINE_KEYS = frozenset({"filename", "name", "filetype", "type", "checksum", "retention_policy"})


def client_metadata(meta: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in meta.items() if key not in PIPELINE_KEYS}


def file_metadata(
    *,
    upload_id: str,
    retention: Retention,
    md5: str | None,
    size: int,
    sha256: str,
    codec: str | None,
    owner: str,
    described: Mapping[str, str],
    filename: str | None = None,
    content_type: str | None = None,
) -> dict[str, Any]:
    """The attr.json `metadata` of a file the ingester stores (or moves). A compressed file
    records the name and type it was uploaded with (`filename`, `content_type`): the element
    holds it under the codec's."""
    original: dict[str, Any] = {}
    if codec is not None:
        if filename is not None:
            original["original_filename"] = filename
        if content_type is not None:
            original["original_content_type"] = content_type
    return {
        "upload_id": upload_id,
        "retention_policy": retention.value,
        "md5": md5,
        "original_size": size,
        "original_sha256": sha256,
        "codec": codec,
        **original,
        "owner": owner,
        **_described(described),
    }


def _described(described: Mapping[str, str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if "description" in described:
        extra["description"] = described["description"]
    custom = {k: v for k, v in described.items() if k != "description"}
    if custom:
        extra["user_metadata"] = custom
    return extra
