"""Validation of a completed upload: size, whole-file digests, declared checksum, sniffed MIME."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import magic

from tusingest.artstore import build_attr, hour_path, storage_filename
from tusingest.domain import FileToStore
from tusingest.errors import TusingestError
from tusingest.pipeline.jobstate import from_json
from tusingest.settings.pipeline import ValidationSettings

RejectionCode = Literal[
    "file_too_large",
    "mime_type_not_allowed",
    "virus_detected",
    "checksum_mismatch",
    "empty_file",
    "invalid_checksum_metadata",
    "filename_too_long",  # no storage filename fits the name limits
    "attr_too_large",  # attr.json would pass its 4 KiB limit
]

# libmagic needs 8 KiB or more to see OOXML entries; 16 KiB is the safe margin.
SNIFF_BYTES = 16 << 10
_READ_CHUNK = 1 << 20
_DIGEST_LENGTHS = {"md5": 32, "sha256": 64}
_HEX = re.compile(r"[0-9a-f]+")
_OOXML_TYPE = "application/vnd.openxmlformats-officedocument."
_OOXML_PARTS = (
    ("word/", _OOXML_TYPE + "wordprocessingml.document"),
    ("xl/", _OOXML_TYPE + "spreadsheetml.sheet"),
    ("ppt/", _OOXML_TYPE + "presentationml.presentation"),
)
_ODF_TYPE = re.compile(rb"application/vnd\.oasis\.opendocument\.[a-z0-9.+-]+")


class Rejection(TusingestError):
    """The file is refused for good (no retry): the upload becomes `rejected` with `code`."""

    status = 422
    code: RejectionCode = "empty_file"

    def __init__(self, code: RejectionCode, message: str) -> None:
        if code not in get_args(RejectionCode):
            raise ValueError(f"unknown rejection code {code!r}")
        super().__init__(message, code=code)
        self.code = code


def mime_allowed(mime: str, patterns: Sequence[str]) -> bool:
    """Whether `mime` (parameters ignored, any case) matches one of `patterns`: exact,
    `type/*`, `*/*` or `*`, or a trailing-`*` prefix such as `application/vnd.oasis.*`."""
    essence = mime.split(";", 1)[0].strip().lower()
    for raw in patterns:
        pattern = raw.split(";", 1)[0].strip().lower()
        if pattern in ("*", "*/*"):
            return True
        if pattern.endswith("*"):
            if essence.startswith(pattern[:-1]) and "/" in essence:
                return True
        elif essence == pattern:
            return True
    return False


_local = threading.local()


def _magic() -> magic.Magic:
    # One instance per worker thread: each Magic serialises its calls behind a lock.
    instance: magic.Magic | None = getattr(_local, "magic", None)
    if instance is None:
        instance = _local.magic = magic.Magic(mime=True)
    return instance


def _detect(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    mime = _magic().from_buffer(head)
    if mime == "application/zip":
        mime = _zip_type(path) or mime
    return mime


def _zip_type(path: Path) -> str | None:
    """OOXML / ODF type from the entry names, wherever they sit in the archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "mimetype" in names:
                with archive.open("mimetype") as entry:
                    declared = entry.read(128).strip()
                if _ODF_TYPE.fullmatch(declared):
                    return declared.decode("ascii")
            if "[Content_Types].xml" in names:
                for prefix, mime in _OOXML_PARTS:
                    if any(name.startswith(prefix) for name in names):
                        return mime
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, ValueError):
        # Damaged, encrypted or otherwise unreadable archives stay plain application/zip.
        return None
    return None


async def detect_mime(path: Path) -> str:
    """The MIME type libmagic sniffs from the first 16 KiB, zip refined to OOXML / ODF."""
    return await asyncio.to_thread(_detect, path)


def parse_declared_checksum(value: str) -> tuple[str, str]:
    """`sha256 <hex>` or `md5 <hex>` (metadata `checksum`) → (algorithm, lowercase hex)."""
    parts = value.split()
    if len(parts) == 2:
        algorithm, digest = parts[0].lower(), parts[1].lower()
        length = _DIGEST_LENGTHS.get(algorithm)
        if length is not None and len(digest) == length and _HEX.fullmatch(digest):
            return algorithm, digest
    raise Rejection(
        "invalid_checksum_metadata",
        f"checksum metadata {value[:100]!r} is not 'sha256 <64 hex>' or 'md5 <32 hex>'",
    )


def _digests(path: Path) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            md5.update(view[:n])
            sha256.update(view[:n])
    return md5.hexdigest(), sha256.hexdigest()


async def file_digests(path: Path) -> tuple[str, str]:
    """(MD5 hex, SHA-256 hex) of the whole file in one streaming pass, off the event loop."""
    return await asyncio.to_thread(_digests, path)


@dataclass(frozen=True)
class Validated:
    """What validation found out about an accepted file (persisted: a retry does not redo it)."""

    size: int
    detected_type: str
    declared_type: str | None
    md5: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> Validated | None:
        return from_json(cls, raw)


def check_name(name: str, owner: str, when: datetime) -> None:
    """Refuse, before anything is sent, a file no element could name: no storage filename
    fits the name limits, or its attr.json would pass 4 KiB even without metadata."""
    probe_id = "00000000-0000-4000-8000-000000000000"
    try:
        filename = storage_filename(name, owner, when, probe_id)
        build_attr(
            FileToStore(probe_id, Path(), name, "", 1, "0" * 64, owner, owner, when, {}),
            probe_id,
            filename,
            hour_path(when),
        )
    except TusingestError as refused:
        code: RejectionCode = (
            "filename_too_long" if refused.code == "filename_too_long" else "attr_too_large"
        )
        raise Rejection(code, refused.message) from None


async def validate(
    path: Path,
    *,
    declared_type: str | None,
    declared_checksum: str | None,
    known_digests: tuple[str, str] | None,
    settings: ValidationSettings,
) -> Validated:
    """Check the staged file or raise `Rejection`. `known_digests` (MD5, SHA-256 hex from the
    inline hashing) spare a second pass; the client's `declared_type` is recorded, not trusted.
    Virus scanning is a separate step."""
    size = (await asyncio.to_thread(path.stat)).st_size
    if size == 0:
        raise Rejection("empty_file", "the file is empty")
    if size > settings.max_size:
        raise Rejection(
            "file_too_large", f"the file has {size} bytes, more than {settings.max_size}"
        )
    # A malformed declaration is refused before the (possibly long) hashing pass.
    expected = parse_declared_checksum(declared_checksum) if declared_checksum else None
    md5, sha256 = known_digests or await file_digests(path)
    if expected is not None:
        algorithm, digest = expected
        actual = md5 if algorithm == "md5" else sha256
        if actual != digest:
            raise Rejection(
                "checksum_mismatch", f"{algorithm} is {actual}, the client declared {digest}"
            )
    detected = await detect_mime(path)
    if settings.mime_validation and not mime_allowed(detected, settings.allowed_mime_types):
        raise Rejection("mime_type_not_allowed", f"files of type {detected} are not accepted")
    return Validated(
        size=size,
        detected_type=detected,
        declared_type=(declared_type.strip() or None) if declared_type else None,
        md5=md5,
        sha256=sha256,
    )
