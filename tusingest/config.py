"""Settings: frozen dataclasses parsed once from the environment (ArtStore names) and CLI flags."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tusingest.env_values import flag, number
from tusingest.errors import ConfigError
from tusingest.pipeline_settings import CompressionSettings, ValidationSettings
from tusingest.storage_settings import StorageSettings

_ALGORITHMS = ("RS256", "RS384", "RS512")
_LOG_FORMATS = ("text", "json")
# Expiry timestamps must stay representable (datetime tops out at year 9999).
_MAX_TTL_HOURS = 10 * 365 * 24


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool
    algorithm: str
    public_key_path: Path
    # The dev key pair lives in the data dir; only used when the public key is the dev one.
    dev_private_key_path: Path

    @property
    def uses_dev_keys(self) -> bool:
        return self.public_key_path == self.dev_private_key_path.with_name("jwt_public.pem")


@dataclass(frozen=True)
class PipelineSettings:
    """The completion pipeline: how long a client waits, retries, scanner, storage."""

    completion_wait_seconds: float
    max_attempts: int
    attempt_timeout_seconds: float
    lease_seconds: float
    virus_scan_enabled: bool
    clamd_url: str | None
    local_storage_dir: Path
    local_element_id: str
    validation: ValidationSettings
    compression: CompressionSettings
    # Fault injection for the crash-safety tests: the process SIGKILLs itself at this step.
    crash_at_step: str | None = None


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    database_url: str
    staging_dir: Path
    session_ttl_seconds: float
    max_file_size: int
    auth: AuthSettings
    cors_allowed_origins: tuple[str, ...]
    log_level: str
    log_format: str
    reaper_interval_seconds: float
    lock_timeout_seconds: float
    pipeline: PipelineSettings
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def public_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
    ) -> Settings:
        """Parse settings; `overrides` (CLI flags, keyed by variable name) win over `env`."""
        merged: dict[str, str] = dict(env)
        for key, value in (overrides or {}).items():
            if value is not None:
                merged[key] = value
        return _parse(merged)


def _parse(env: Mapping[str, str]) -> Settings:
    def get(name: str, default: str) -> str:
        value = env.get(name, "").strip()
        return value if value else default

    data_dir = Path(get("DATA_DIR", "./tusingest-data")).expanduser().absolute()
    keys_dir = data_dir / "keys"
    dev_public = keys_dir / "jwt_public.pem"

    database_url = normalise_database_url(
        "DATABASE_URL", get("DATABASE_URL", f"sqlite:///{data_dir / 'tusingest.db'}")
    )
    ttl_hours = number("UPLOAD_SESSION_TTL_HOURS", get("UPLOAD_SESSION_TTL_HOURS", "2"), float)
    if not 0 < ttl_hours <= _MAX_TTL_HOURS:
        raise ConfigError("UPLOAD_SESSION_TTL_HOURS", f"must be > 0 and <= {_MAX_TTL_HOURS}")
    max_mb = number("MAX_FILE_SIZE_MB", get("MAX_FILE_SIZE_MB", "1024"), int)
    if max_mb <= 0:
        raise ConfigError("MAX_FILE_SIZE_MB", "must be > 0")
    port = number("APP_PORT", get("APP_PORT", "8020"), int)
    if not 0 <= port <= 65535:
        raise ConfigError("APP_PORT", "must be between 0 and 65535")
    algorithm = get("AUTH_ALGORITHM", "RS256").upper()
    if algorithm not in _ALGORITHMS:
        raise ConfigError("AUTH_ALGORITHM", f"must be one of {', '.join(_ALGORITHMS)}")
    log_level = get("LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(log_level), int):
        raise ConfigError("LOG_LEVEL", f"unknown level {log_level!r}")
    log_format = get("LOG_FORMAT", "text").lower()
    if log_format not in _LOG_FORMATS:
        raise ConfigError("LOG_FORMAT", f"must be one of {', '.join(_LOG_FORMATS)}")
    # Browsers serialise origins in lower case; compare the configured ones the same way.
    origins = tuple(
        o.strip().rstrip("/").lower() for o in get("CORS_ALLOWED_ORIGINS", "*").split(",")
    )
    origins = tuple(o for o in origins if o)
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if origin != "*" and (
            scheme not in ("http", "https") or not sep or not host or "/" in host
        ):
            raise ConfigError(
                "CORS_ALLOWED_ORIGINS", f"{origin!r} is not an origin (http(s)://host[:port])"
            )
    reaper = number(
        "UPLOAD_REAPER_INTERVAL_SECONDS", get("UPLOAD_REAPER_INTERVAL_SECONDS", "60"), float
    )
    lock_timeout = number("LOCK_TIMEOUT_SECONDS", get("LOCK_TIMEOUT_SECONDS", "5"), float)
    if reaper <= 0:
        raise ConfigError("UPLOAD_REAPER_INTERVAL_SECONDS", "must be > 0")
    if lock_timeout < 0:
        raise ConfigError("LOCK_TIMEOUT_SECONDS", "must be >= 0")

    return Settings(
        host=get("APP_HOST", "127.0.0.1"),
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        staging_dir=Path(get("STAGING_DIR", str(data_dir / "staging"))).expanduser().absolute(),
        session_ttl_seconds=ttl_hours * 3600.0,
        max_file_size=max_mb * 1024 * 1024,
        auth=AuthSettings(
            enabled=flag("AUTH_ENABLED", get("AUTH_ENABLED", "on")),
            algorithm=algorithm,
            public_key_path=Path(get("AUTH_PUBLIC_KEY_PATH", str(dev_public)))
            .expanduser()
            .absolute(),
            dev_private_key_path=keys_dir / "jwt_private.pem",
        ),
        cors_allowed_origins=origins,
        log_level=log_level,
        log_format=log_format,
        reaper_interval_seconds=reaper,
        lock_timeout_seconds=lock_timeout,
        pipeline=_pipeline(env, get, data_dir, max_mb * 1024 * 1024),
        storage=StorageSettings.parse(env),
    )


def _pipeline(
    env: Mapping[str, str], get: Callable[[str, str], str], data_dir: Path, max_size: int
) -> PipelineSettings:
    wait = number("COMPLETION_WAIT_SECONDS", get("COMPLETION_WAIT_SECONDS", "30"), float)
    attempts = number("SAGA_RETRY_MAX_ATTEMPTS", get("SAGA_RETRY_MAX_ATTEMPTS", "5"), int)
    timeout = number("SAGA_TIMEOUT_SECONDS", get("SAGA_TIMEOUT_SECONDS", "600"), float)
    lease = number("OPERATION_LEASE_SECONDS", get("OPERATION_LEASE_SECONDS", "60"), float)
    if wait < 0:
        raise ConfigError("COMPLETION_WAIT_SECONDS", "must be >= 0")
    if attempts < 1:
        raise ConfigError("SAGA_RETRY_MAX_ATTEMPTS", "must be >= 1")
    if timeout <= 0:
        raise ConfigError("SAGA_TIMEOUT_SECONDS", "must be > 0")
    if lease <= 0:
        raise ConfigError("OPERATION_LEASE_SECONDS", "must be > 0")
    scan = flag("VIRUS_SCAN_ENABLED", get("VIRUS_SCAN_ENABLED", "off"))
    clamd_url = get("CLAMD_URL", "") or None
    if scan and clamd_url is None:
        raise ConfigError(
            "CLAMD_URL", "VIRUS_SCAN_ENABLED=on needs tcp://host:port or unix:///path"
        )
    storage = Path(get("LOCAL_STORAGE_DIR", str(data_dir / "storage"))).expanduser().absolute()
    return PipelineSettings(
        completion_wait_seconds=wait,
        max_attempts=attempts,
        attempt_timeout_seconds=timeout,
        lease_seconds=lease,
        virus_scan_enabled=scan,
        clamd_url=clamd_url,
        local_storage_dir=storage,
        local_element_id=get("LOCAL_ELEMENT_ID", "se-local"),
        validation=ValidationSettings.parse(env, max_size),
        compression=CompressionSettings.parse(env),
        crash_at_step=get("TUSINGEST_CRASH_AT_STEP", "") or None,
    )


def normalise_database_url(variable: str, url: str) -> str:
    """Map plain `postgresql://` / `sqlite:///` URLs onto the async drivers we ship."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(variable, f"{url!r} is not a URL")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    raise ConfigError(variable, f"unsupported database scheme {scheme!r} (sqlite or postgresql)")
