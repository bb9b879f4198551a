"""Settings of storage: the registry, the storage elements, their breakers, the capacity monitor
and the service account."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tusingest.domain import DEFAULT_THRESHOLDS, WRITABLE_MODES, ElementMode, Thresholds
from tusingest.errors import ConfigError
from tusingest.settings.env import Env

# SERVICE_ACCOUNT_ID's default is the UUIDv5 of SERVICE_ACCOUNT_NAME in this namespace: stable
# across restarts and nodes, and the same for every deployment using the same name.
SERVICE_ACCOUNT_NAMESPACE = uuid.UUID("488c6a47-d85a-5424-a5de-e48cb5100bce")


def service_account_id(name: str) -> str:
    """The default `sub` of the service account called `name` (a UUID, as ArtStore uses)."""
    return str(uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, name))


@dataclass(frozen=True)
class BreakerSettings:
    """`CIRCUIT_BREAKER_FAILURE_THRESHOLD` / `_TIMEOUT_SECONDS` / `_SUCCESS_THRESHOLD`."""

    failure_threshold: int = 5
    timeout_seconds: float = 60.0
    success_threshold: int = 2


TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TlsSettings:
    """How `https://` elements and the Admin Module are verified, and who we are to them."""

    ca_file: Path | None = None  # STORAGE_ELEMENT_CA_FILE (PEM bundle); None: the system store
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2  # STORAGE_ELEMENT_TLS_MIN_VERSION
    client_cert_file: Path | None = None  # STORAGE_ELEMENT_CLIENT_CERT_FILE (PEM)
    client_key_file: Path | None = None  # STORAGE_ELEMENT_CLIENT_KEY_FILE (PEM, unencrypted)


@dataclass(frozen=True)
class StorageSettings:
    """Where files go: the registry (embedded, or Redis with the Admin Module as fallback) and
    the elements."""

    local_storage_dir: Path  # LOCAL_STORAGE_DIR: the embedded element (no REDIS_URL)
    local_element_id: str = "se-local"  # LOCAL_ELEMENT_ID
    redis_url: str | None = None  # REDIS_URL; unset: the embedded in-process registry
    key_prefix: str = ""  # REDIS_KEY_PREFIX: namespaces every Redis key (tests, shared Redis)
    admin_module_url: str | None = None  # ADMIN_MODULE_URL: fallback registry + registration
    sa_private_key_path: Path | None = None  # SERVICE_ACCOUNT_PRIVATE_KEY_PATH: mint SA tokens
    sa_client_id: str | None = None  # SERVICE_ACCOUNT_CLIENT_ID (Admin Module token endpoint)
    sa_client_secret: str | None = None  # SERVICE_ACCOUNT_CLIENT_SECRET
    sa_name: str = "tusingest"  # SERVICE_ACCOUNT_NAME: `name` of minted tokens
    # SERVICE_ACCOUNT_ID: `sub` of minted tokens (a UUID; default derived from the name)
    sa_id: str = field(default_factory=lambda: service_account_id("tusingest"))
    se_timeout: float = 60.0  # STORAGE_ELEMENT_TIMEOUT (seconds of silence)
    # STORAGE_ELEMENT_SLOW_ANSWER_SECONDS: an SE answer slower than this proves nothing (a
    # stalled SE reports files as absent); it is confirmed by a fast one or retried later.
    se_slow_answer_seconds: float = 10.0
    se_pool_size: int = 20  # STORAGE_ELEMENT_CONNECTION_POOL_SIZE (per SE host)
    se_max_retries: int = 3  # STORAGE_ELEMENT_MAX_RETRIES (idempotent calls)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    cache_seconds: float = 5.0  # REGISTRY_CACHE_SECONDS
    reload_enabled: bool = True  # CAPACITY_MONITOR_CONFIG_RELOAD_ENABLED
    reload_interval: float = 60.0  # CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL (10–600)
    monitor_enabled: bool = True  # CAPACITY_MONITOR_ENABLED
    monitor_interval: float = 30.0  # CAPACITY_MONITOR_INTERVAL
    thresholds: Mapping[ElementMode, Thresholds] = field(
        default_factory=lambda: dict.fromkeys(WRITABLE_MODES, DEFAULT_THRESHOLDS)
    )
    no_storage_retry_seconds: float = 10.0  # NO_STORAGE_RETRY_SECONDS (also Retry-After)
    temporary_ttl_days: int = 30  # TEMPORARY_FILE_TTL_DAYS (Admin Module registration)


def parse_storage(env: Env, data_dir: Path) -> StorageSettings:
    admin = env.url("ADMIN_MODULE_URL", ("http", "https"))
    client_id = env.optional("SERVICE_ACCOUNT_CLIENT_ID")
    secret = env.optional("SERVICE_ACCOUNT_CLIENT_SECRET")
    if (client_id is None) != (secret is None):
        raise ConfigError(
            "SERVICE_ACCOUNT_CLIENT_SECRET", "SERVICE_ACCOUNT_CLIENT_ID and _SECRET go together"
        )
    if client_id is not None and admin is None:
        raise ConfigError("ADMIN_MODULE_URL", "client credentials need the Admin Module")
    key_path = env.optional("SERVICE_ACCOUNT_PRIVATE_KEY_PATH")
    sa_name = env.text("SERVICE_ACCOUNT_NAME", "tusingest")
    return StorageSettings(
        local_storage_dir=env.path("LOCAL_STORAGE_DIR", data_dir / "storage"),
        local_element_id=env.text("LOCAL_ELEMENT_ID", "se-local"),
        redis_url=env.url("REDIS_URL", ("redis", "rediss", "unix")),
        key_prefix=env.text("REDIS_KEY_PREFIX", ""),
        admin_module_url=admin,
        sa_private_key_path=Path(key_path).expanduser().absolute() if key_path else None,
        sa_client_id=client_id,
        sa_client_secret=secret,
        sa_name=sa_name,
        sa_id=_uuid(env, "SERVICE_ACCOUNT_ID", service_account_id(sa_name)),
        se_timeout=env.number("STORAGE_ELEMENT_TIMEOUT", 60, positive=True),
        se_slow_answer_seconds=env.number("STORAGE_ELEMENT_SLOW_ANSWER_SECONDS", 10, positive=True),
        se_pool_size=env.integer("STORAGE_ELEMENT_CONNECTION_POOL_SIZE", 20, low=1),
        se_max_retries=env.integer("STORAGE_ELEMENT_MAX_RETRIES", 3, low=0),
        breaker=BreakerSettings(
            failure_threshold=env.integer("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 5, low=1),
            timeout_seconds=env.number("CIRCUIT_BREAKER_TIMEOUT_SECONDS", 60, low=0),
            success_threshold=env.integer("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", 2, low=1),
        ),
        tls=_tls(env),
        cache_seconds=env.number("REGISTRY_CACHE_SECONDS", 5, low=0),
        reload_enabled=env.flag("CAPACITY_MONITOR_CONFIG_RELOAD_ENABLED", True),
        reload_interval=env.number("CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL", 60, low=10, high=600),
        monitor_enabled=env.flag("CAPACITY_MONITOR_ENABLED", True),
        monitor_interval=env.number("CAPACITY_MONITOR_INTERVAL", 30, positive=True),
        thresholds=_thresholds(env),
        no_storage_retry_seconds=env.number("NO_STORAGE_RETRY_SECONDS", 10, positive=True),
        # The Admin Module takes 1–365 days.
        temporary_ttl_days=env.integer("TEMPORARY_FILE_TTL_DAYS", 30, low=1, high=365),
    )


def _tls(env: Env) -> TlsSettings:
    """STORAGE_ELEMENT_CA_FILE, _TLS_MIN_VERSION, _CLIENT_CERT_FILE and _CLIENT_KEY_FILE; each
    file must be readable now, so that a typo stops startup rather than every upload."""
    version = env.choice("STORAGE_ELEMENT_TLS_MIN_VERSION", "1.2", TLS_VERSIONS, fold=str.strip)
    cert_name, key_name = "STORAGE_ELEMENT_CLIENT_CERT_FILE", "STORAGE_ELEMENT_CLIENT_KEY_FILE"
    cert, key = _readable(env, cert_name), _readable(env, key_name)
    if (cert is None) != (key is None):
        missing = key_name if key is None else cert_name
        raise ConfigError(missing, "the client certificate and its key go together")
    return TlsSettings(
        ca_file=_readable(env, "STORAGE_ELEMENT_CA_FILE"),
        min_version=TLS_VERSIONS[version],
        client_cert_file=cert,
        client_key_file=key,
    )


def _readable(env: Env, name: str) -> Path | None:
    """The absolute path of a file this process can read; None when unset."""
    if env.optional(name) is None:
        return None
    path = env.path(name, Path())
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def _uuid(env: Env, name: str, default: str) -> str:
    """A UUID in its canonical 36-char lowercase form."""
    raw = env.optional(name)
    if raw is None:
        return default
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a UUID") from None


def _thresholds(env: Env) -> dict[ElementMode, Thresholds]:
    """CAPACITY_{WARNING,CRITICAL,FULL}_THRESHOLD for every mode, or per mode
    CAPACITY_{EDIT,RW}_THRESHOLDS=warning,critical,full."""
    base = _ordered(
        "CAPACITY_*_THRESHOLD",
        (
            env.number("CAPACITY_WARNING_THRESHOLD", DEFAULT_THRESHOLDS[0], low=0),
            env.number("CAPACITY_CRITICAL_THRESHOLD", DEFAULT_THRESHOLDS[1], low=0),
            env.number("CAPACITY_FULL_THRESHOLD", DEFAULT_THRESHOLDS[2], low=0),
        ),
    )
    found: dict[ElementMode, Thresholds] = {}
    for mode in WRITABLE_MODES:
        name = f"CAPACITY_{mode.value.upper()}_THRESHOLDS"
        parts = env.items(name)
        if not parts:
            found[mode] = base
            continue
        if len(parts) != 3:
            raise ConfigError(name, "expected three percentages: warning,critical,full")
        values = []
        for part in parts:
            try:
                values.append(float(part))
            except ValueError:
                raise ConfigError(name, f"{part!r} is not a valid number") from None
        found[mode] = _ordered(name, (values[0], values[1], values[2]))
    return found


def _ordered(name: str, values: Thresholds) -> Thresholds:
    warning, critical, full = values
    if not 0 < warning <= critical <= full <= 100:  # also refuses NaN
        raise ConfigError(name, "need 0 < warning <= critical <= full <= 100")
    return values
