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
# attr.json `metadata` keys that say what a stored object is (its codec, the name and type it
# had before): kept when other keys must go to fit 4096 bytes.
DESCRIBING_KEYS = frozenset({"codec", "original_filename", "original_content_type"})

# A real SE builds its storage_filename by the contract's rule (stem cut to 200 characters)
# and fails with 500 "File name too long" when that name, or its attr.json beside it, passes
# NAME_MAX bytes on disk. When the token's `name` is unknown this many bytes are kept for it.
SE_TOKEN_NAME_RESERVE = 64
_UNSAFE_TO_SEND = str.maketrans("", "", '"\\\r\n')
_PROBE_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # every timestamp has the same length
_PROBE_ID = "00000000-0000-4000-8000-000000000000"

_FORBIDDEN = frozenset('<>:"/\\|?*')
_UNDERSCORES = re.compile(r"_{2,}")
_SEPARATORS = re.compile(r"[/\\]")


def utc(when: datetime) -> datetime:
    """`when` in UTC; a naive value is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def created_at(value: Any) -> datetime:
    """The `created_at` of an attr.json (or an SE's metadata) in UTC; now if unreadable."""
    try:
        return utc(datetime.fromisoformat(str(value)))
    except ValueError:
        return datetime.now(UTC)


def hour_path(when: datetime) -> str:
    """The contract's `storage_path`: `"YYYY/MM/DD/HH/"` of the UTC time."""
    return utc(when).strftime("%Y/%m/%d/%H/")


# The attr.json keys an SE's metadata object (`GET /api/v1/files/{id}`) repeats; it lacks
# `updated_at`, `created_by_id` and `metadata`.
METADATA_KEYS = (
    "file_id",
    "original_filename",
    "storage_filename",
    "file_size",
    "content_type",
    "created_at",
    "created_by_username",
    "created_by_fullname",
    "description",
    "version",
    "storage_path",
    "checksum",
)


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


def sendable_filename(original: str, username: str | None = None) -> str:
    """The filename to send an SE whose token carries the `name` `username`: `"`, `\\`, CR
    and LF removed (they break its multipart parsing), and the stem cut on a character boundary
    only when the storage_filename the SE would build from it could not be a file on its disk
    (`se_name_fits`). Long names that fit (ASCII ones always do: the SE cuts them to 200
    characters itself) go whole. Without `username`, a name of `SE_TOKEN_NAME_RESERVE` bytes is
    assumed."""
    name = original.translate(_UNSAFE_TO_SEND) or "file"
    user = username if username is not None else "x" * SE_TOKEN_NAME_RESERVE
    if se_name_fits(name, user):
        return name
    stem, ext = split_name(name)
    low, high = 1, len(stem)  # the longest prefix of the stem that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if se_name_fits(stem[:middle].rstrip() + ext, user):
            low = middle
        else:
            high = middle - 1
    return (stem[:low].rstrip() or stem[:1]) + ext


def se_name_fits(original: str, username: str) -> bool:
    """Whether the storage_filename a real SE builds for `original` (with the token `name`
    `username`) and its attr.json fit NAME_MAX bytes."""
    return _fits_bytes(se_storage_filename(original, username, _PROBE_TIME, _PROBE_ID))


def se_storage_filename(original: str, username: str, when: datetime, file_id: str) -> str:
    """The storage_filename of the contract's rule as a real SE applies it: the stem cut to
    `stem[:n-3] + "..."` when the whole passes 200 characters, however many bytes remain."""
    stem, rest = _name_parts(original, username, when, file_id)
    name = stem + rest
    if len(name) <= MAX_CHARS:
        return name
    return stem[: max(MAX_CHARS - len(rest) - len(ELLIPSIS), 0)] + ELLIPSIS + rest


def _name_parts(original: str, username: str, when: datetime, file_id: str) -> tuple[str, str]:
    """(sanitised stem, `_{username}_{YYYYMMDDTHHMMSS}_{file_id}{ext}`)."""
    raw_stem, ext = split_name(original)
    return sanitise(raw_stem), f"_{sanitise(username)}_{utc(when):%Y%m%dT%H%M%S}_{file_id}{ext}"


def storage_filename(original: str, username: str, when: datetime, file_id: str) -> str:
    """`{stem}_{username}_{YYYYMMDDTHHMMSS}_{file_id}{ext}`, at most 200 characters (and
    245 UTF-8 bytes, so that it and its `.attr.json` fit NAME_MAX); a long stem is cut to
    `stem[:n-3] + "..."`."""
    stem, rest = _name_parts(original, username, when, file_id)
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
    bytes (`fit_metadata`). `checksum` is a placeholder of the final length until the stored
    bytes are hashed."""
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
    metadata = fit_metadata(attr, item.metadata)
    if metadata is None:
        bare = attr_length(attr) > MAX_ATTR_BYTES
        raise TusingestError(
            f"attr.json of {file_id} exceeds {MAX_ATTR_BYTES} bytes"
            + (" even without metadata" if bare else ""),
            code="attr_too_large",
            status=500,
        )
    attr["metadata"] = metadata
    return attr


def fit_metadata(attr: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any] | None:
    """`metadata`, cut so that `attr` with it as its `metadata` encodes in 4096 bytes: largest
    keys dropped first, `DESCRIBING_KEYS` last, `"_truncated": true` recorded; None if that
    cannot fit (not even an empty one)."""
    fitted = dict(metadata)
    if attr_length({**attr, "metadata": fitted}) <= MAX_ATTR_BYTES:
        return fitted  # the usual case: one encoding
    by_size = sorted(  # popped from the end: what describes the stored bytes goes last
        (key for key in fitted if key != TRUNCATED),
        key=lambda key: (key not in DESCRIBING_KEYS, attr_length({key: fitted[key]})),
    )
    while attr_length({**attr, "metadata": fitted}) > MAX_ATTR_BYTES:
        if not by_size:
            return None
        del fitted[by_size.pop()]
        fitted[TRUNCATED] = True
    return fitted


def fit_se_metadata(found: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` cut to what an SE's attr.json of the file it described as `found` can take:
    the SE answers 500 to a PATCH that would pass 4096 bytes."""
    attr = {key: found.get(key) for key in METADATA_KEYS}
    attr["updated_at"] = found.get("created_at")  # rewritten by the PATCH, in the same format
    attr["created_by_id"] = "0" * 64  # the token's `sub`: room for any
    return fit_metadata(attr, metadata) or {}


def encode_attr(attr: dict[str, Any]) -> bytes:
    """UTF-8 JSON as the SE writes it (pydantic `model_dump_json(indent=2)`: raw Unicode)."""
    return json.dumps(attr, ensure_ascii=False, indent=2).encode("utf-8")


def attr_length(attr: dict[str, Any]) -> int:
    """`len(encode_attr(attr))`, computed from the compact encoding (json's C encoder; with
    `indent` json falls back to pure Python): the indented form differs only by a newline and
    the indentation before each member and before each closing bracket."""
    compact = json.dumps(attr, ensure_ascii=False, separators=(",", ": "))
    return len(compact.encode("utf-8")) + _layout(attr, 0)


def _layout(value: Any, depth: int) -> int:
    """The newlines and spaces `indent=2` adds to `value` at `depth` (empty containers and
    scalars: none)."""
    if isinstance(value, dict):
        members: Any = value.values()
    elif isinstance(value, list | tuple):
        members = value
    else:
        return 0
    if not members:
        return 0
    inner = 1 + 2 * (depth + 1)
    return sum(inner + _layout(v, depth + 1) for v in members) + 1 + 2 * depth
