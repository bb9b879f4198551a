"""Pure tus 1.0 header codecs and constants (no I/O)."""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

from tusingest.domain import PARTIAL, Checksum
from tusingest.errors import BadRequest

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "termination",
    "checksum",
    "concatenation",
)
# Names as the checksum extension spells them; the receive path maps each to a hash.
CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256")

_INTEGER = re.compile(r"^[0-9]{1,19}$")


def parse_non_negative(header: str, value: str | None) -> int | None:
    """An integer header (None when absent); malformed or negative → 400 naming the header."""
    if value is None:
        return None
    stripped = value.strip()
    if not _INTEGER.match(stripped):
        raise BadRequest(
            f"{header} must be a non-negative integer, got {value!r}",
            code=f"invalid_{header.lower().replace('-', '_')}",
        )
    return int(stripped)


def format_http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_checksum(value: str | None) -> Checksum | None:
    """`Upload-Checksum: <algorithm> <base64 digest>`; unknown algorithm or malformed → 400."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"unsupported checksum algorithm {algorithm!r} (use {', '.join(CHECKSUM_ALGORITHMS)})",
            code="unsupported_checksum_algorithm",
        )
    encoded = encoded.strip()
    try:
        digest = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, ValueError):
        digest = b""
    expected = {"sha1": 20, "md5": 16, "sha256": 32}[algorithm]
    if len(digest) != expected:
        raise BadRequest(
            f"Upload-Checksum must carry a Base64 {algorithm} digest",
            code="invalid_upload_checksum",
        )
    return Checksum(algorithm=algorithm, digest=digest)


def parse_concat(value: str) -> tuple[str, list[tuple[str, str]]]:
    """`partial` → ("partial", []); `final;<url> <url>` → ("final", [(url, upload id), ...]).

    URLs may be absolute or relative; the upload id is the last path segment, whatever the
    host or scheme (clients send the URLs they were given, possibly via a proxy).
    """
    stripped = value.strip()
    if stripped == PARTIAL:
        return PARTIAL, []
    kind, sep, rest = stripped.partition(";")
    if kind != "final" or not sep:
        raise BadRequest(
            "Upload-Concat must be 'partial' or 'final;<url> <url> ...'", code="invalid_concat"
        )
    urls = rest.split()
    if not urls:
        raise BadRequest("Upload-Concat final lists no uploads", code="invalid_concat")
    parts = []
    for url in urls:
        path = urlsplit(url).path.rstrip("/")
        parts.append((url, path.rsplit("/", 1)[-1]))
    return "final", parts
