"""`Upload-Metadata` codec: validation and decoding of `key base64,key base64` pairs."""

from __future__ import annotations

import base64
import binascii
import re

from tusingest.errors import BadRequest

_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def parse_metadata(value: str | None) -> dict[str, bytes] | None:
    """Validate `Upload-Metadata`; returns decoded pairs, None when absent or empty."""
    if value is None or not value.strip():
        return None
    pairs: dict[str, bytes] = {}
    for item in value.split(","):
        parts = item.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise BadRequest(
                f"malformed Upload-Metadata pair {item.strip()!r}", code="invalid_metadata"
            )
        key = parts[0]
        encoded = parts[1] if len(parts) == 2 else ""
        if key in pairs:
            raise BadRequest(f"duplicate Upload-Metadata key {key!r}", code="invalid_metadata")
        if not _B64.match(encoded) or len(encoded) % 4:
            raise BadRequest(
                f"Upload-Metadata value of {key!r} is not valid Base64", code="invalid_metadata"
            )
        try:
            pairs[key] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(
                f"Upload-Metadata value of {key!r} is not valid Base64", code="invalid_metadata"
            ) from None
    return pairs


def metadata_text(value: str | None) -> dict[str, str]:
    """Decoded metadata as text (UTF-8, undecodable bytes replaced); {} when absent."""
    pairs = parse_metadata(value) or {}
    return {key: raw.decode("utf-8", "replace") for key, raw in pairs.items()}


def encode_metadata(values: dict[str, str]) -> str | None:
    """`Upload-Metadata` of `values` (None when empty); a key with a space or comma, or an
    empty one, cannot be carried: 400."""
    pairs = []
    for key, value in values.items():
        if not key or any(c in key for c in " ,") or not key.isprintable():
            raise BadRequest(f"metadata key {key!r} cannot be used", code="invalid_metadata")
        pairs.append(f"{key} {base64.b64encode(value.encode()).decode()}")
    return ",".join(pairs) or None
