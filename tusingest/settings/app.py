"""The whole of the settings, parsed once from the environment (ArtStore names) and CLI flags;
only the wiring (cli, app, services) reads it, and hands each part its own section."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tusingest.errors import ConfigError
from tusingest.settings.auth import AuthSettings, parse_auth
from tusingest.settings.env import Env
from tusingest.settings.pipeline import PipelineSettings, parse_pipeline
from tusingest.settings.ratelimits import RateLimitSettings, parse_ratelimits
from tusingest.settings.storage import StorageSettings, parse_storage
from tusingest.settings.tracing import TracingSettings, parse_tracing
from tusingest.settings.uploads import (
    DatabaseSettings,
    UploadSettings,
    parse_database,
    parse_uploads,
)

_LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class ServerSettings:
    """The process itself: where it listens, whom browsers may call it from, how it logs."""

    host: str  # APP_HOST
    port: int  # APP_PORT
    data_dir: Path  # DATA_DIR: the embedded defaults' home (SQLite, staging, dev keys)
    cors_allowed_origins: tuple[str, ...]  # CORS_ALLOWED_ORIGINS, lower case, `*` for any
    log_level: str  # LOG_LEVEL
    log_format: str  # LOG_FORMAT: text | json
    # HTTP_IDLE_TIMEOUT_SECONDS: a connection with no complete request for this long (new, idle
    # between requests, or stuck in its headers) is closed.
    idle_timeout_seconds: float = 15.0
    # MAX_CONNECTIONS: open connections beyond which new ones get a 503 at once; 0 derives it
    # from the open-file limit.
    max_connections: int = 0
    # SHUTDOWN_GRACE_SECONDS: after SIGTERM, how long running work may take to finish.
    shutdown_grace_seconds: float = 25.0
    # PROMETHEUS_METRICS_ENABLED: whether GET /metrics is served.
    metrics_enabled: bool = True


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    auth: AuthSettings
    database: DatabaseSettings
    uploads: UploadSettings
    pipeline: PipelineSettings
    storage: StorageSettings
    tracing: TracingSettings = field(default_factory=TracingSettings)
    ratelimits: RateLimitSettings = field(default_factory=RateLimitSettings)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
    ) -> Settings:
        """Parse settings; `overrides` (CLI flags, keyed by variable name) win over `env`."""
        reader = Env(env, overrides)
        data_dir = reader.path("DATA_DIR", Path("./tusingest-data"))
        uploads = parse_uploads(reader, data_dir)
        return cls(
            server=_server(reader, data_dir),
            auth=parse_auth(reader, data_dir),
            database=parse_database(reader, data_dir),
            uploads=uploads,
            pipeline=parse_pipeline(
                reader,
                max_size=uploads.max_file_size,
                staging_dir=uploads.staging_dir,
                md5=uploads.md5,
            ),
            storage=parse_storage(reader, data_dir),
            tracing=parse_tracing(reader),
            ratelimits=parse_ratelimits(reader),
        )


def _server(env: Env, data_dir: Path) -> ServerSettings:
    log_level = env.text("LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(log_level), int):
        raise ConfigError("LOG_LEVEL", f"unknown level {log_level!r}")
    return ServerSettings(
        host=env.text("APP_HOST", "127.0.0.1"),
        port=env.integer("APP_PORT", 8020, low=0, high=65535),
        data_dir=data_dir,
        cors_allowed_origins=_origins(env),
        log_level=log_level,
        log_format=env.choice("LOG_FORMAT", "text", _LOG_FORMATS, fold=str.lower),
        idle_timeout_seconds=env.number("HTTP_IDLE_TIMEOUT_SECONDS", 15, positive=True),
        max_connections=env.integer("MAX_CONNECTIONS", 0, low=0),
        shutdown_grace_seconds=env.number("SHUTDOWN_GRACE_SECONDS", 25, low=0),
        metrics_enabled=env.flag("PROMETHEUS_METRICS_ENABLED", True),
    )


def _origins(env: Env) -> tuple[str, ...]:
    # Browsers serialise origins in lower case; compare the configured ones the same way.
    trimmed = (o.rstrip("/").lower() for o in env.items("CORS_ALLOWED_ORIGINS"))
    origins = tuple(o for o in trimmed if o) or ("*",)
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if origin != "*" and (
            scheme not in ("http", "https") or not sep or not host or "/" in host
        ):
            raise ConfigError(
                "CORS_ALLOWED_ORIGINS", f"{origin!r} is not an origin (http(s)://host[:port])"
            )
    return origins
