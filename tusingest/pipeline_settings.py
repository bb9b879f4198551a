"""Settings of the completion pipeline (validation, compression), parsed with the rest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tusingest.env_values import flag
from tusingest.errors import ConfigError

_LEVELS = {"brotli": (0, 11, 5), "gzip": (1, 9, 6)}  # min, max, default
_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]*"
_PATTERN = re.compile(rf"\*|\*/\*|{_TOKEN}/(?:\*|{_TOKEN}\*?)")

# Documents, images, plain/structured text, office formats (OOXML, ODF, legacy MS Office) and
# common archives. Unidentifiable binaries (application/octet-stream) and executables are
# refused: add `application/octet-stream` or `*` to ALLOWED_MIME_TYPES to accept them.
DEFAULT_ALLOWED_MIME_TYPES: tuple[str, ...] = (
    "application/pdf",
    "text/*",
    "image/*",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.*",
    "application/vnd.oasis.opendocument.*",
    "application/rtf",
    "application/epub+zip",
    "application/json",
    "application/xml",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/x-7z-compressed",
)


@dataclass(frozen=True)
class CompressionSettings:
    """COMPRESSION_*: codec, level, and the size and sample ratio a file must reach."""

    enabled: bool
    algorithm: str
    level: int
    min_size: int
    min_ratio: float = 1.2

    def __post_init__(self) -> None:
        if self.algorithm not in _LEVELS:
            raise ConfigError(
                "COMPRESSION_ALGORITHM", f"{self.algorithm!r} is not one of brotli, gzip"
            )
        low, high, _ = _LEVELS[self.algorithm]
        if not low <= self.level <= high:
            raise ConfigError(
                "COMPRESSION_LEVEL", f"{self.level} is outside {low}–{high} for {self.algorithm}"
            )
        if self.min_size < 0:
            raise ConfigError("COMPRESSION_MIN_SIZE", f"{self.min_size} is negative")
        if not self.min_ratio >= 1.0:  # also rejects NaN
            raise ConfigError("COMPRESSION_MIN_RATIO", f"{self.min_ratio} is below 1.0")

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> CompressionSettings:
        enabled = flag("COMPRESSION_ENABLED", env.get("COMPRESSION_ENABLED", "true").strip())
        algorithm = env.get("COMPRESSION_ALGORITHM", "brotli").strip().lower()
        default_level = _LEVELS[algorithm][2] if algorithm in _LEVELS else 0
        return cls(
            enabled=enabled,
            algorithm=algorithm,
            level=_int(env, "COMPRESSION_LEVEL", default_level),
            min_size=_int(env, "COMPRESSION_MIN_SIZE", 10 << 20),
        )


@dataclass(frozen=True)
class ValidationSettings:
    max_size: int
    mime_validation: bool
    allowed_mime_types: tuple[str, ...]

    @classmethod
    def parse(cls, env: Mapping[str, str], max_size: int) -> ValidationSettings:
        """MIME_TYPE_VALIDATION (on/off, default on) and ALLOWED_MIME_TYPES (comma list of
        `type/subtype`, `type/*`, `prefix*` or `*`); empty values mean the default."""
        mime_validation = flag(
            "MIME_TYPE_VALIDATION", env.get("MIME_TYPE_VALIDATION", "").strip() or "on"
        )
        raw_types = env.get("ALLOWED_MIME_TYPES", "").strip()
        patterns = DEFAULT_ALLOWED_MIME_TYPES
        if raw_types:
            patterns = tuple(p.strip().lower() for p in raw_types.split(",") if p.strip())
            for pattern in patterns:
                if not _PATTERN.fullmatch(pattern):
                    raise ConfigError(
                        "ALLOWED_MIME_TYPES",
                        f"{pattern!r} is not a MIME type or pattern (type/subtype, type/*, *)",
                    )
            if not patterns:
                raise ConfigError("ALLOWED_MIME_TYPES", "lists no MIME type")
        return cls(max_size, mime_validation, patterns)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not an integer") from None
