"""Settings of upload sessions: the database that holds them and the rules they follow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tusingest.errors import ConfigError
from tusingest.settings.env import Env, redacted

# Expiry timestamps must stay representable (datetime tops out at year 9999).
_MAX_TTL_HOURS = 10 * 365 * 24


@dataclass(frozen=True)
class DatabaseSettings:
    url: str  # DATABASE_URL, mapped onto the async driver (sqlite+aiosqlite, postgresql+asyncpg)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class UploadSettings:
    staging_dir: Path  # STAGING_DIR: bytes of uploads in progress (a shared volume in a cluster)
    session_ttl_seconds: float  # UPLOAD_SESSION_TTL_HOURS, after the last activity
    max_file_size: int  # MAX_FILE_SIZE_MB, in bytes (Tus-Max-Size)
    reaper_interval_seconds: float  # UPLOAD_REAPER_INTERVAL_SECONDS
    lock_timeout_seconds: float  # LOCK_TIMEOUT_SECONDS: wait for another request's lease
    completion_wait_seconds: float  # COMPLETION_WAIT_SECONDS: the completing request's wait
    md5: bool = True  # UPLOAD_DIGESTS lists md5 (SHA-256 is always computed)
    max_batch_files: int = 100  # MAX_BATCH_FILES: files in one batch upload request
    max_batch_size: int = 1 << 30  # MAX_BATCH_SIZE_MB, in bytes: one batch upload request
    # BODY_TIMEOUT_SECONDS: a request body that sends nothing for this long is ended (what
    # arrived is kept).
    body_timeout_seconds: float = 60.0


def parse_database(env: Env, data_dir: Path) -> DatabaseSettings:
    raw = env.text("DATABASE_URL", f"sqlite:///{data_dir / 'tusingest.db'}")
    return DatabaseSettings(url=normalise_database_url("DATABASE_URL", raw))


def parse_uploads(env: Env, data_dir: Path) -> UploadSettings:
    ttl_hours = env.number("UPLOAD_SESSION_TTL_HOURS", 2, high=_MAX_TTL_HOURS, positive=True)
    return UploadSettings(
        staging_dir=env.path("STAGING_DIR", data_dir / "staging"),
        session_ttl_seconds=ttl_hours * 3600.0,
        max_file_size=env.integer("MAX_FILE_SIZE_MB", 1024, low=1) * 1024 * 1024,
        reaper_interval_seconds=env.number("UPLOAD_REAPER_INTERVAL_SECONDS", 60, positive=True),
        lock_timeout_seconds=env.number("LOCK_TIMEOUT_SECONDS", 5, low=0),
        completion_wait_seconds=env.number("COMPLETION_WAIT_SECONDS", 30, low=0),
        md5=_digests(env),
        max_batch_files=env.integer("MAX_BATCH_FILES", 100, low=1, high=10_000),
        max_batch_size=env.integer("MAX_BATCH_SIZE_MB", 1024, low=1) * 1024 * 1024,
        body_timeout_seconds=env.number("BODY_TIMEOUT_SECONDS", 60, positive=True),
    )


def _digests(env: Env) -> bool:
    """UPLOAD_DIGESTS: `md5,sha256` (the default, as ArtStore's answers carry both) or
    `sha256`; whether MD5 is computed."""
    names = {name.lower() for name in env.items("UPLOAD_DIGESTS")} or {"md5", "sha256"}
    if "sha256" not in names or not names <= {"md5", "sha256"}:
        raise ConfigError("UPLOAD_DIGESTS", "must be md5,sha256 or sha256")
    return "md5" in names


def normalise_database_url(variable: str, url: str) -> str:
    """Map plain `postgresql://` / `sqlite:///` URLs onto the async drivers we ship."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(variable, f"{redacted(url)!r} is not a URL")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ConfigError(variable, f"unsupported database scheme {scheme!r} (sqlite or postgresql)")
