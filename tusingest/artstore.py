"""The ArtStore on-disk format, shared by every element: storage_filename, the hour directory,
attr.json, and the names an element can take."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

from tusingest.domain import FileToStore
from tusingest.errors import TusingestError

MAX_CHARS = 200  # the contract's limit on storage_filename
ATTR_SUFFIX = ".attr.json"
# NAME_MAX is 255 bytes; the attr.json's name adds its suffix.
MAX_NAME_BYTES = 255 - len(ATTR_SUFFIX)
ELLIPSIS = "..."
MAX_ATTR_BYTES = 4096
TRUNCATED = "_truncated"

# A real SE fails with 500 "File name too long" when the UTF-8 bytes of the sent
# stem + its token's `name` + the extension pass 191; 64 bytes are kept for the name.
SE_NAME_BYTES = 191
SE_TOKEN_NAME_RESERVE = 64
_UNSAFE_TO_SEND = str.maketrans("", "", '"\\\r\n')

_FORBIDDEN = frozenset('<>:"/\\|?*')
_UNDERSCORES = re.compile(r"_{2,}")
_SEPARATORS = re.compile(r"[/\\]")


def utc(when: datetime) -> datetime:
    """`when` in UTC; a naive value is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def hour_path(when: datetime) -> str:
    """The contract's `storage_path`: `"YYYY/MM/DD/HH/"` of the UTC time."""
    return utc(when).strftime("%Y/%m/%d/%H/")


def canonical_file_id(file_id: str) -> str | None:
    """The 36-char lowercase form of a UUID string, or None if `file_id` is not one."""
    try:
        value = str(uuid.UUID(file_id))
    except (ValueError, TypeError):
        return None
    return value if len(file_id) == 36 and value == file_id.lower() else None


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def sanitise(text: str) -> str:
    """`<>:"/\\|?*` and control chars → `_`, runs of `_` collapsed, outer `_` stripped,
    empty → `file`; Unicode and spaces are kept."""
    replaced = "".join("_" if c in _FORBIDDEN or _is_control(c) else c for c in text)
    return _UNDERSCORES.sub("_", replaced).strip("_") or "file"


def split_name(original: str) -> tuple[str, str]:
    """(stem, ext): `ext` is the last suffix of the name's last path component, as
    `pathlib` sees it (`.gz` of `a.tar.gz`; none for `.bashrc` or `a.`). A suffix with
    control characters is not taken as one (it could not be a file name)."""
    last = _SEPARATORS.split(original)[-1]
    dot = last.rfind(".")
    if 0 < dot < len(last) - 1:
        ext = last[dot:]
        if not any(_is_control(c) for c in ext):
            return original[: len(original) - len(ext)], ext
    return original, ""


def sendable_filename(original: str) -> str:
    """The filename to send an SE: `"`, `\\`, CR and LF removed (they break its multipart
    parsing), the stem cut on a character boundary so that stem + extension stay within the
    SE's budget."""
    name = original.translate(_UNSAFE_TO_SEND) or "file"
    stem, ext = split_name(name)
    budget = SE_NAME_BYTES - SE_TOKEN_NAME_RESERVE - len(ext.encode("utf-8", "surrogateescape"))
    if len(stem.encode("utf-8", "surrogateescape")) <= budget:
        return name
    cut = stem.encode("utf-8", "surrogateescape")[: max(budget, 1)]
    return cut.decode("utf-8", "ignore").rstrip() + ext


def storage_filename(original: str, username: str, when: datetime, file_id: str) -> str:
    """`{stem}_{username}_{YYYYMMDDTHHMMSS}_{file_id}{ext}`, at most 200 characters (and
    245 UTF-8 bytes, so that it and its `.attr.json` fit NAME_MAX); a long stem is cut to
    `stem[:n-3] + "..."`."""
    raw_stem, ext = split_name(original)
    stem = sanitise(raw_stem)
    rest = f"_{sanitise(username)}_{utc(when):%Y%m%dT%H%M%S}_{file_id}{ext}"
    name = stem + rest
    if len(name) <= MAX_CHARS and _fits_bytes(name):
        return name
    keep = min(len(stem), MAX_CHARS - len(rest)) - len(ELLIPSIS)
    while keep >= 1 and not _fits_bytes(stem[:keep] + ELLIPSIS + rest):
        keep -= 1
    if keep < 1:
        raise TusingestError(
            f"no storage filename of at most {MAX_CHARS} characters fits {original!r} "
            f"(username and extension take {len(rest)})",
            code="filename_too_long",
            status=400,
        )
    return stem[:keep] + ELLIPSIS + rest


def _fits_bytes(name: str) -> bool:
    return len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES


def build_attr(item: FileToStore, file_id: str, name: str, rel: str) -> dict[str, Any]:
    """The attr.json of `item`, in the contract's key order, its metadata cut to fit 4096
    bytes (largest keys dropped first, `"_truncated": true` recorded). `checksum` is a
    placeholder of the final length until the stored bytes are hashed."""
    created = utc(item.uploaded_at).isoformat(timespec="microseconds")
    attr: dict[str, Any] = {
        "file_id": file_id,
        "original_filename": item.original_filename,
        "storage_filename": name,
        "file_size": item.size,
        "content_type": item.content_type,
        "created_at": created,
        "updated_at": created,
        "created_by_id": item.owner_sub,
        "created_by_username": item.owner_name,
        "created_by_fullname": None,
        "description": None,
        "version": None,
        "storage_path": rel,
        "checksum": "0" * 64,
        "metadata": {},
    }
    metadata = dict(item.metadata)
    attr["metadata"] = metadata
    if len(encode_attr(attr)) <= MAX_ATTR_BYTES:
        return attr  # the usual case: one encoding
    attr["metadata"] = {}
    if len(encode_attr(attr)) > MAX_ATTR_BYTES:
        raise TusingestError(
            f"attr.json of {file_id} exceeds {MAX_ATTR_BYTES} bytes even without metadata",
            code="attr_too_large",
            status=500,
        )
    attr["metadata"] = metadata
    by_size = sorted(
        (key for key in metadata if key != TRUNCATED),
        key=lambda key: len(encode_attr({key: metadata[key]})),
    )
    while len(encode_attr(attr)) > MAX_ATTR_BYTES:
        if not by_size:
            raise TusingestError(
                f"attr.json of {file_id} exceeds {MAX_ATTR_BYTES} bytes",
                code="attr_too_large",
                status=500,
            )
        del metadata[by_size.pop()]
        metadata[TRUNCATED] = True
    return attr


def encode_attr(attr: dict[str, Any]) -> bytes:
    """UTF-8 JSON as the SE writes it (pydantic `model_dump_json(indent=2)`: raw Unicode)."""
    return json.dumps(attr, ensure_ascii=False, indent=2).encode("utf-8")
