"""Validation of a completed upload: size, whole-file digests, declared checksum, sniffed MIME."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import magic

from tusingest.artstore import build_attr, hour_path, storage_filename
from tusingest.domain import FileToStore
from tusingest.errors import BadRequest, TusingestError
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


class MimeDetector:
    """libmagic, loaded on first use and shared by every worker thread: each instance maps the
    whole magic database, and a call takes well under a millisecond."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._magic: magic.Magic | None = None

    def detect(self, path: Path) -> str:
        """The MIME type libmagic sniffs from the first 16 KiB, zip refined to OOXML / ODF
        (blocking: call from a worker thread)."""
        return self.sniff(path, _head(path)[1])

    def sniff(self, path: Path, head: bytes) -> str:
        """`detect` for `head`, the first bytes of `path` read already."""
        with self._lock:
            if self._magic is None:
                self._magic = magic.Magic(mime=True)
            mime: str = self._magic.from_buffer(head)
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


def _head(path: Path) -> tuple[int, bytes]:
    """The file's size and its first `SNIFF_BYTES` (four system calls: each one a worker
    makes hands the interpreter lock over)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return size, os.pread(fd, SNIFF_BYTES, 0) if size else b""
    finally:
        os.close(fd)


def _inspect(path: Path, detector: MimeDetector) -> tuple[int, str]:
    """The file's size and sniffed MIME type, in one worker call."""
    size, head = _head(path)
    return size, detector.sniff(path, head) if size else "application/x-empty"


async def detect_mime(path: Path, detector: MimeDetector | None = None) -> str:
    """The MIME type of `path` (`MimeDetector.detect`), off the event loop."""
    return await asyncio.to_thread((detector or MimeDetector()).detect, path)


def check_at_creation(meta: dict[str, str], owner: str, when: datetime) -> None:
    """What can be refused before a byte arrives: a name no element could store, a declared
    checksum that is not one. 400 with the code the pipeline would give at completion."""
    try:
        check_name(meta.get("filename") or meta.get("name") or "file", owner, when)
        if meta.get("checksum"):
            parse_declared_checksum(meta["checksum"])
    except Rejection as rejection:
        raise BadRequest(rejection.message, code=rejection.code) from None


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


def _digests(path: Path, md5: bool) -> tuple[str | None, str]:
    hashers = [hashlib.sha256(), *([hashlib.md5(usedforsecurity=False)] if md5 else [])]
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            for hasher in hashers:
                hasher.update(view[:n])
    return (hashers[1].hexdigest() if md5 else None), hashers[0].hexdigest()


async def file_digests(path: Path, *, md5: bool = True) -> tuple[str | None, str]:
    """(MD5 hex or None, SHA-256 hex) of the whole file in one streaming pass, off the event
    loop."""
    return await asyncio.to_thread(_digests, path, md5)


@dataclass(frozen=True)
class Validated:
    """What validation found out about an accepted file (persisted: a retry does not redo it)."""

    size: int
    detected_type: str
    declared_type: str | None
    md5: str | None  # None when UPLOAD_DIGESTS leaves MD5 out
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "detected_type": self.detected_type,
            "declared_type": self.declared_type,
            "md5": self.md5,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Validated | None:
        return from_json(cls, raw)


def check_name(name: str, owner: str, when: datetime) -> None:
    """Refuse, before anything is sent, a file no element could name: no storage filename
    fits the name limits, or its attr.json would pass 4 KiB even without metadata."""
    refusal = _name_refusal(name, owner, when)
    if refusal is not None:
        raise Rejection(*refusal)


@functools.lru_cache(maxsize=1024)
def _name_refusal_of(name: str, owner: str, when: datetime) -> tuple[RejectionCode, str] | None:
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
        return code, refused.message
    return None


def _name_refusal(name: str, owner: str, when: datetime) -> tuple[RejectionCode, str] | None:
    """Whether (and why) `name` of `owner` is refused. The time only enters the storage
    filename and the attr.json as fixed-width fields, so the answer is the same at any time:
    the first time a name is asked stands for all (the cache saves a JSON encoding per
    request and per ingest)."""
    return _name_refusal_of(name, owner, _REFERENCE_TIME)


_REFERENCE_TIME = datetime(2000, 1, 1, tzinfo=UTC)


async def validate(
    path: Path,
    *,
    declared_type: str | None,
    declared_checksum: str | None,
    known_digests: tuple[str | None, str] | None,
    settings: ValidationSettings,
    detector: MimeDetector | None = None,
) -> Validated:
    """Check the staged file or raise `Rejection`. `known_digests` (MD5, SHA-256 hex from the
    inline hashing) spare a second pass; the client's `declared_type` is recorded, not trusted.
    Virus scanning is a separate step."""
    detector = detector or MimeDetector()
    size, detected = await asyncio.to_thread(_inspect, path, detector)
    if size == 0:
        raise Rejection("empty_file", "the file is empty")
    if size > settings.max_size:
        raise Rejection(
            "file_too_large", f"the file has {size} bytes, more than {settings.max_size}"
        )
    # A malformed declaration is refused before the (possibly long) hashing pass.
    expected = parse_declared_checksum(declared_checksum) if declared_checksum else None
    # MD5 is computed when it is wanted, or to check a declared MD5.
    wants_md5 = settings.md5 or (expected is not None and expected[0] == "md5")
    if known_digests is None or (wants_md5 and known_digests[0] is None):
        known_digests = await file_digests(path, md5=wants_md5)
    md5, sha256 = known_digests
    if expected is not None:
        algorithm, digest = expected
        actual = md5 if algorithm == "md5" else sha256
        if actual != digest:
            raise Rejection(
                "checksum_mismatch", f"{algorithm} is {actual}, the client declared {digest}"
            )
    if settings.mime_validation and not mime_allowed(detected, settings.allowed_mime_types):
        raise Rejection("mime_type_not_allowed", f"files of type {detected} are not accepted")
    return Validated(
        size=size,
        detected_type=detected,
        declared_type=(declared_type.strip() or None) if declared_type else None,
        md5=md5,
        sha256=sha256,
    )
