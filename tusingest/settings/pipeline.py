"""Settings of the completion pipeline: retries and leases, the scanner, validation, compression,
webhooks."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from tusingest.errors import ConfigError
from tusingest.settings.env import Env

_LEVELS = {"brotli": (0, 11, 5), "gzip": (1, 9, 6)}  # min, max, default
_TOKEN = r"[a-z0-9][a-z0-9!#$&^_.+-]*"
_PATTERN = re.compile(rf"\*|\*/\*|{_TOKEN}/(?:\*|{_TOKEN}\*?)")
_MIN_SECRET = 16  # characters of WEBHOOK_SECRET

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
class ValidationSettings:
    max_size: int  # MAX_FILE_SIZE_MB, in bytes
    mime_validation: bool  # MIME_TYPE_VALIDATION
    allowed_mime_types: tuple[str, ...]  # ALLOWED_MIME_TYPES: type/subtype, type/*, prefix*, *
    md5: bool = True  # UPLOAD_DIGESTS lists md5


@dataclass(frozen=True)
class CompressionSettings:
    """COMPRESSION_*: codec, level, and the size and sample ratio a file must reach."""

    enabled: bool
    algorithm: str  # brotli | gzip
    level: int
    min_size: int
    min_ratio: float = 1.2


@dataclass(frozen=True)
class WebhookSettings:
    """WEBHOOK_*: where events go (none: off), the key they are signed with, and how long and
    how often a delivery is tried."""

    urls: tuple[str, ...] = ()  # WEBHOOK_URLS: http(s) receivers, each gets every event
    secret: str = field(default="", repr=False)  # WEBHOOK_SECRET: the HMAC-SHA256 key
    timeout_seconds: float = 10.0  # WEBHOOK_TIMEOUT_SECONDS: one POST, answer included
    # WEBHOOK_MAX_AGE_SECONDS: a delivery is tried until it is this old, then given up
    max_age_seconds: float = 24 * 3600.0
    retry_base_seconds: float = 1.0  # WEBHOOK_RETRY_BASE_SECONDS: the first wait, then doubled
    retry_max_seconds: float = 300.0  # WEBHOOK_RETRY_MAX_SECONDS: the longest wait
    concurrency: int = 4  # WEBHOOK_CONCURRENCY: deliveries in flight per node

    @property
    def enabled(self) -> bool:
        return bool(self.urls)


@dataclass(frozen=True)
class PipelineSettings:
    max_attempts: int  # SAGA_RETRY_MAX_ATTEMPTS
    attempt_timeout_seconds: float  # SAGA_TIMEOUT_SECONDS
    lease_seconds: float  # OPERATION_LEASE_SECONDS
    virus_scan_enabled: bool  # VIRUS_SCAN_ENABLED
    clamd_url: str | None  # CLAMD_URL: tcp://host:port or unix:///path
    validation: ValidationSettings
    compression: CompressionSettings
    workdir: Path  # compressed copies are made here (beside staging)
    # Fault injection for the crash-safety tests: the process SIGKILLs itself at this step.
    crash_at_step: str | None = None  # TUSINGEST_CRASH_AT_STEP
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)


def parse_pipeline(
    env: Env, *, max_size: int, staging_dir: Path, md5: bool = True
) -> PipelineSettings:
    scan = env.flag("VIRUS_SCAN_ENABLED", False)
    clamd_url = env.optional("CLAMD_URL")
    if scan and clamd_url is None:
        raise ConfigError(
            "CLAMD_URL", "VIRUS_SCAN_ENABLED=on needs tcp://host:port or unix:///path"
        )
    return PipelineSettings(
        max_attempts=env.integer("SAGA_RETRY_MAX_ATTEMPTS", 5, low=1),
        attempt_timeout_seconds=env.number("SAGA_TIMEOUT_SECONDS", 600, positive=True),
        lease_seconds=env.number("OPERATION_LEASE_SECONDS", 60, positive=True),
        virus_scan_enabled=scan,
        clamd_url=clamd_url,
        validation=parse_validation(env, max_size, md5=md5),
        compression=parse_compression(env),
        workdir=staging_dir / "work",
        crash_at_step=env.optional("TUSINGEST_CRASH_AT_STEP"),
        webhooks=parse_webhooks(env),
    )


def parse_validation(env: Env, max_size: int, *, md5: bool = True) -> ValidationSettings:
    patterns = tuple(p.lower() for p in env.items("ALLOWED_MIME_TYPES"))
    if env.optional("ALLOWED_MIME_TYPES") is not None and not patterns:
        raise ConfigError("ALLOWED_MIME_TYPES", "lists no MIME type")
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern):
            raise ConfigError(
                "ALLOWED_MIME_TYPES",
                f"{pattern!r} is not a MIME type or pattern (type/subtype, type/*, *)",
            )
    return ValidationSettings(
        max_size=max_size,
        mime_validation=env.flag("MIME_TYPE_VALIDATION", True),
        allowed_mime_types=patterns or DEFAULT_ALLOWED_MIME_TYPES,
        md5=md5,
    )


def parse_compression(env: Env) -> CompressionSettings:
    algorithm = env.choice("COMPRESSION_ALGORITHM", "brotli", _LEVELS, fold=str.lower)
    low, high, default = _LEVELS[algorithm]
    return CompressionSettings(
        enabled=env.flag("COMPRESSION_ENABLED", True),
        algorithm=algorithm,
        level=env.integer("COMPRESSION_LEVEL", default, low=low, high=high),
        min_size=env.integer("COMPRESSION_MIN_SIZE", 10 << 20, low=0),
    )


def parse_webhooks(env: Env) -> WebhookSettings:
    urls = tuple(dict.fromkeys(env.items("WEBHOOK_URLS")))  # each receiver once, in order
    for number, url in enumerate(urls, 1):
        if not _is_http_url(url):
            # The URL itself is not repeated: a receiver's path or query may hold a token.
            raise ConfigError(
                "WEBHOOK_URLS", f"item {number} is not an http:// or https:// URL with a host"
            )
    secret = env.optional("WEBHOOK_SECRET") or ""
    if urls and len(secret) < _MIN_SECRET:
        raise ConfigError(
            "WEBHOOK_SECRET",
            f"WEBHOOK_URLS is set: events are signed with a secret of {_MIN_SECRET} or more "
            "characters",
        )
    base = env.number("WEBHOOK_RETRY_BASE_SECONDS", 1, positive=True)
    return WebhookSettings(
        urls=urls,
        secret=secret,
        timeout_seconds=env.number("WEBHOOK_TIMEOUT_SECONDS", 10, positive=True, high=300),
        max_age_seconds=env.number("WEBHOOK_MAX_AGE_SECONDS", 24 * 3600, positive=True),
        retry_base_seconds=base,
        retry_max_seconds=env.number("WEBHOOK_RETRY_MAX_SECONDS", 300, low=base),
        concurrency=env.integer("WEBHOOK_CONCURRENCY", 4, low=1, high=256),
    )


def _is_http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
