"""Settings of storage: the registry, the storage elements, their breaker, monitor and tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tusingest.domain import DEFAULT_THRESHOLDS, ElementMode
from tusingest.env_values import flag, number
from tusingest.errors import ConfigError

Thresholds = tuple[float, float, float]  # percent used for (warning, critical, full)
_UPLOAD_MODES = (ElementMode.EDIT, ElementMode.RW)


@dataclass(frozen=True)
class BreakerSettings:
    """`CIRCUIT_BREAKER_FAILURE_THRESHOLD` / `_TIMEOUT_SECONDS` / `_SUCCESS_THRESHOLD`."""

    failure_threshold: int = 5
    timeout_seconds: float = 60.0
    success_threshold: int = 2

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("breaker thresholds must be at least 1")
        if self.timeout_seconds < 0:
            raise ValueError("breaker timeout must not be negative")


@dataclass(frozen=True)
class StorageSettings:
    """Where files go: the registry (memory or Redis, Admin Module fallback) and the SEs."""

    redis_url: str | None = None  # REDIS_URL; unset: the embedded in-process registry
    key_prefix: str = ""  # REDIS_KEY_PREFIX: namespaces every Redis key (tests, shared Redis)
    admin_module_url: str | None = None  # ADMIN_MODULE_URL: fallback registry + registration
    sa_private_key_path: Path | None = None  # SERVICE_ACCOUNT_PRIVATE_KEY_PATH: mint SA tokens
    sa_client_id: str | None = None  # SERVICE_ACCOUNT_CLIENT_ID (Admin Module token endpoint)
    sa_client_secret: str | None = None  # SERVICE_ACCOUNT_CLIENT_SECRET
    sa_name: str = "tusingest"  # SERVICE_ACCOUNT_NAME: `name`/`sub` of minted tokens
    se_timeout: float = 60.0  # STORAGE_ELEMENT_TIMEOUT (seconds of silence)
    se_pool_size: int = 20  # STORAGE_ELEMENT_CONNECTION_POOL_SIZE (per SE host)
    se_max_retries: int = 3  # STORAGE_ELEMENT_MAX_RETRIES (idempotent calls)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    cache_seconds: float = 5.0  # REGISTRY_CACHE_SECONDS
    reload_enabled: bool = True  # CAPACITY_MONITOR_CONFIG_RELOAD_ENABLED
    reload_interval: float = 60.0  # CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL (10–600)
    monitor_enabled: bool = True  # CAPACITY_MONITOR_ENABLED
    monitor_interval: float = 30.0  # CAPACITY_MONITOR_INTERVAL
    thresholds: Mapping[ElementMode, Thresholds] = field(
        default_factory=lambda: dict.fromkeys(_UPLOAD_MODES, DEFAULT_THRESHOLDS)
    )
    no_storage_retry_seconds: float = 10.0  # NO_STORAGE_RETRY_SECONDS (also Retry-After)
    temporary_ttl_days: int = 30  # TEMPORARY_FILE_TTL_DAYS (Admin Module registration)

    @classmethod
    def parse(cls, env: Mapping[str, str]) -> StorageSettings:
        def get(name: str, default: str = "") -> str:
            value = env.get(name, "").strip()
            return value if value else default

        redis_url = get("REDIS_URL") or None
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL", f"{redis_url!r} is not a redis:// URL")
        admin = get("ADMIN_MODULE_URL").rstrip("/") or None
        if admin is not None and not admin.startswith(("http://", "https://")):
            raise ConfigError("ADMIN_MODULE_URL", f"{admin!r} is not an http(s) URL")
        key_path = get("SERVICE_ACCOUNT_PRIVATE_KEY_PATH")
        client_id = get("SERVICE_ACCOUNT_CLIENT_ID") or None
        secret = get("SERVICE_ACCOUNT_CLIENT_SECRET") or None
        if (client_id is None) != (secret is None):
            raise ConfigError(
                "SERVICE_ACCOUNT_CLIENT_SECRET",
                "SERVICE_ACCOUNT_CLIENT_ID and _SECRET go together",
            )
        if client_id is not None and admin is None:
            raise ConfigError("ADMIN_MODULE_URL", "client credentials need the Admin Module")
        base = _thresholds(
            "CAPACITY_*_THRESHOLD",
            (
                get("CAPACITY_WARNING_THRESHOLD", "85"),
                get("CAPACITY_CRITICAL_THRESHOLD", "92"),
                get("CAPACITY_FULL_THRESHOLD", "98"),
            ),
        )
        thresholds = {
            mode: _thresholds(name, tuple(get(name).split(","))) if get(name) else base
            for mode, name in (
                (ElementMode.EDIT, "CAPACITY_EDIT_THRESHOLDS"),
                (ElementMode.RW, "CAPACITY_RW_THRESHOLDS"),
            )
        }

        def num(name: str, default: str, *, integer: bool = False, low: float = 0) -> float:
            return _num(name, get(name, default), integer=integer, low=low)

        def positive(name: str, default: str, *, integer: bool = False) -> float:
            return _positive(name, get(name, default), integer=integer)

        def on_off(name: str, default: str) -> bool:
            return flag(name, get(name, default))

        reload_interval = num("CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL", "60")
        if not 10 <= reload_interval <= 600:
            raise ConfigError("CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL", "must be 10–600 seconds")
        settings = cls(
            redis_url=redis_url,
            key_prefix=get("REDIS_KEY_PREFIX"),
            admin_module_url=admin,
            sa_private_key_path=Path(key_path).expanduser().absolute() if key_path else None,
            sa_client_id=client_id,
            sa_client_secret=secret,
            sa_name=get("SERVICE_ACCOUNT_NAME", "tusingest"),
            se_timeout=positive("STORAGE_ELEMENT_TIMEOUT", "60"),
            se_pool_size=int(positive("STORAGE_ELEMENT_CONNECTION_POOL_SIZE", "20", integer=True)),
            se_max_retries=int(num("STORAGE_ELEMENT_MAX_RETRIES", "3", integer=True)),
            breaker=BreakerSettings(
                failure_threshold=int(
                    positive("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "5", integer=True)
                ),
                timeout_seconds=num("CIRCUIT_BREAKER_TIMEOUT_SECONDS", "60"),
                success_threshold=int(
                    positive("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "2", integer=True)
                ),
            ),
            cache_seconds=num("REGISTRY_CACHE_SECONDS", "5"),
            reload_enabled=on_off("CAPACITY_MONITOR_CONFIG_RELOAD_ENABLED", "on"),
            reload_interval=reload_interval,
            monitor_enabled=on_off("CAPACITY_MONITOR_ENABLED", "on"),
            monitor_interval=positive("CAPACITY_MONITOR_INTERVAL", "30"),
            thresholds=thresholds,
            no_storage_retry_seconds=positive("NO_STORAGE_RETRY_SECONDS", "10"),
            temporary_ttl_days=int(num("TEMPORARY_FILE_TTL_DAYS", "30", integer=True, low=1)),
        )
        if settings.temporary_ttl_days > 365:
            raise ConfigError("TEMPORARY_FILE_TTL_DAYS", "must be 1–365 (Admin Module rule)")
        return settings


def _num(name: str, raw: str, *, integer: bool = False, low: float | None = 0) -> float:
    value = float(number(name, raw, int if integer else float))
    if low is not None and value < low:
        raise ConfigError(name, f"must be >= {low:g}")
    return value


def _positive(name: str, raw: str, *, integer: bool = False) -> float:
    value = _num(name, raw, integer=integer)
    if value <= 0:
        raise ConfigError(name, "must be > 0")
    return value


def _thresholds(name: str, raw: tuple[str, ...]) -> Thresholds:
    if len(raw) != 3:
        raise ConfigError(name, "expected three percentages: warning,critical,full")
    warning, critical, full = (_num(name, part.strip()) for part in raw)
    if not 0 < warning <= critical <= full <= 100:
        raise ConfigError(name, "need 0 < warning <= critical <= full <= 100")
    return (warning, critical, full)
