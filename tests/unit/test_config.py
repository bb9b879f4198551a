"""Settings.from_env: defaults, every variable, CLI overrides, and a named error for bad values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tusingest.errors import ConfigError
from tusingest.settings.app import Settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    data_dir = tmp_path / "tusingest-data"
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8020
    assert settings.server.data_dir == data_dir
    assert settings.database.url == f"sqlite+aiosqlite:///{data_dir / 'tusingest.db'}"
    assert settings.database.is_sqlite
    assert settings.uploads.staging_dir == data_dir / "staging"
    assert settings.uploads.session_ttl_seconds == 2 * 3600
    assert settings.uploads.max_file_size == 1024 * 1024 * 1024
    assert settings.auth.enabled is True
    assert settings.auth.algorithm == "RS256"
    assert settings.auth.public_key_path == data_dir / "keys" / "jwt_public.pem"
    assert settings.auth.dev_private_key_path == data_dir / "keys" / "jwt_private.pem"
    assert settings.auth.uses_dev_keys
    assert settings.server.cors_allowed_origins == ("*",)
    assert settings.server.log_level == "INFO"
    assert settings.server.log_format == "text"


def test_empty_values_mean_default(tmp_path: Path) -> None:
    names = [
        "APP_HOST",
        "APP_PORT",
        "DATABASE_URL",
        "STAGING_DIR",
        "UPLOAD_SESSION_TTL_HOURS",
        "MAX_FILE_SIZE_MB",
        "AUTH_ENABLED",
        "AUTH_ALGORITHM",
        "CORS_ALLOWED_ORIGINS",
        "LOG_LEVEL",
        "LOG_FORMAT",
    ]
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), **{n: "  " for n in names}})
    assert settings.server.port == 8020
    assert settings.auth.enabled is True  # off only when set explicitly
    assert settings.server.cors_allowed_origins == ("*",)
    assert settings.uploads.staging_dir == tmp_path / "staging"


def test_every_variable_is_parsed(tmp_path: Path) -> None:
    key = tmp_path / "pub.pem"
    settings = Settings.from_env(
        {
            "APP_HOST": "0.0.0.0",
            "APP_PORT": "9123",
            "DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": "postgresql://u:p@db.example:5433/artstore",
            "STAGING_DIR": str(tmp_path / "stage"),
            "UPLOAD_SESSION_TTL_HOURS": "0.5",
            "MAX_FILE_SIZE_MB": "3",
            "AUTH_ENABLED": "off",
            "AUTH_PUBLIC_KEY_PATH": str(key),
            "AUTH_ALGORITHM": "rs512",
            "CORS_ALLOWED_ORIGINS": "http://a.example/, https://b.example:8443",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "JSON",
        }
    )
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 9123
    assert settings.server.data_dir == tmp_path / "data"
    assert settings.database.url == "postgresql+asyncpg://u:p@db.example:5433/artstore"
    assert not settings.database.is_sqlite
    assert settings.uploads.staging_dir == tmp_path / "stage"
    assert settings.uploads.session_ttl_seconds == 1800
    assert settings.uploads.max_file_size == 3 * 1024 * 1024
    assert settings.auth.enabled is False
    assert settings.auth.public_key_path == key
    assert not settings.auth.uses_dev_keys
    assert settings.auth.algorithm == "RS512"
    assert settings.server.cors_allowed_origins == ("http://a.example", "https://b.example:8443")
    assert settings.server.log_level == "DEBUG"
    assert settings.server.log_format == "json"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite:////var/lib/t.db", "sqlite+aiosqlite:////var/lib/t.db"),
        ("sqlite+aiosqlite:////var/lib/t.db", "sqlite+aiosqlite:////var/lib/t.db"),
        ("postgres://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql+psycopg://h/db", "postgresql+asyncpg://h/db"),
    ],
)
def test_database_url_schemes(raw: str, expected: str) -> None:
    assert Settings.from_env({"DATABASE_URL": raw}).database.url == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("on", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("off", False),
        ("False", False),
        ("0", False),
        ("no", False),
    ],
)
def test_auth_enabled_values(raw: str, expected: bool) -> None:
    assert Settings.from_env({"AUTH_ENABLED": raw}).auth.enabled is expected


def test_cli_overrides_win(tmp_path: Path) -> None:
    env = {"APP_HOST": "10.0.0.1", "APP_PORT": "1111", "DATA_DIR": str(tmp_path / "env")}
    settings = Settings.from_env(
        env, {"APP_HOST": "127.0.0.2", "APP_PORT": "2222", "DATA_DIR": str(tmp_path / "cli")}
    )
    assert settings.server.host == "127.0.0.2"
    assert settings.server.port == 2222
    assert settings.server.data_dir == tmp_path / "cli"
    # Derived defaults follow the overridden data dir.
    assert settings.uploads.staging_dir == tmp_path / "cli" / "staging"
    assert settings.auth.public_key_path == tmp_path / "cli" / "keys" / "jwt_public.pem"


def test_unset_cli_flags_leave_env_alone(tmp_path: Path) -> None:
    env = {"APP_PORT": "1111", "DATA_DIR": str(tmp_path)}
    settings = Settings.from_env(env, {"APP_PORT": None, "APP_HOST": None, "DATA_DIR": None})
    assert settings.server.port == 1111
    assert settings.server.data_dir == tmp_path
    assert env == {"APP_PORT": "1111", "DATA_DIR": str(tmp_path)}  # not mutated


def test_a_bad_cli_flag_is_reported_like_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"APP_PORT": "8020"}, {"APP_PORT": "abc"})
    assert info.value.variable == "APP_PORT"


BAD_VALUES = [
    ("APP_PORT", "abc"),
    ("APP_PORT", "70000"),
    ("APP_PORT", "-1"),
    ("APP_PORT", "80.5"),
    ("MAX_FILE_SIZE_MB", "0"),
    ("MAX_FILE_SIZE_MB", "-5"),
    ("MAX_FILE_SIZE_MB", "lots"),
    ("UPLOAD_SESSION_TTL_HOURS", "-1"),
    ("UPLOAD_SESSION_TTL_HOURS", "0"),
    ("UPLOAD_SESSION_TTL_HOURS", "two"),
    ("UPLOAD_SESSION_TTL_HOURS", "nan"),
    ("UPLOAD_SESSION_TTL_HOURS", "inf"),
    # An expiry beyond datetime's range would turn every creation into a 500.
    ("UPLOAD_SESSION_TTL_HOURS", "1e9"),
    ("UPLOAD_REAPER_INTERVAL_SECONDS", "nan"),
    ("UPLOAD_REAPER_INTERVAL_SECONDS", "0"),
    ("LOCK_TIMEOUT_SECONDS", "nan"),
    ("LOCK_TIMEOUT_SECONDS", "-1"),
    ("AUTH_ENABLED", "maybe"),
    ("AUTH_ALGORITHM", "HS256"),
    ("AUTH_ALGORITHM", "none"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "LOUD"),
    ("DATABASE_URL", "mysql://x"),
    ("DATABASE_URL", "not a url"),
    ("CORS_ALLOWED_ORIGINS", "ftp://x"),
    ("CORS_ALLOWED_ORIGINS", "http://ok.example, a.example"),
    ("CORS_ALLOWED_ORIGINS", "http://"),
    # An origin has no path; this one could never match and would silently refuse everyone.
    ("CORS_ALLOWED_ORIGINS", "https://a.example/app"),
    ("UPLOAD_DIGESTS", "md5"),
    ("UPLOAD_DIGESTS", "sha1,sha256"),
    ("UPLOAD_DIGESTS", "md5,sha256,crc32"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert info.value.variable == name
    assert str(info.value).startswith(f"{name}:")
    assert info.value.code == "invalid_config"


def test_session_ttl_is_finite_seconds() -> None:
    ttl = Settings.from_env({"UPLOAD_SESSION_TTL_HOURS": "1e-3"}).uploads.session_ttl_seconds
    assert math.isfinite(ttl)
    assert ttl == pytest.approx(3.6)


def test_origins_compare_in_lower_case() -> None:
    """Browsers send `Origin` in lower case; a capitalised configuration must still match."""
    settings = Settings.from_env({"CORS_ALLOWED_ORIGINS": "HTTPS://App.Example:8443/"})
    assert settings.server.cors_allowed_origins == ("https://app.example:8443",)


def test_relative_public_key_path_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pointing AUTH_PUBLIC_KEY_PATH at the dev key by a relative path still means the dev key."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(
        {"DATA_DIR": "data", "AUTH_PUBLIC_KEY_PATH": "data/keys/jwt_public.pem"}
    )
    assert settings.auth.public_key_path == tmp_path / "data" / "keys" / "jwt_public.pem"
    assert settings.auth.uses_dev_keys


def test_pipeline_defaults() -> None:
    settings = Settings.from_env({"DATA_DIR": "/srv/t"})
    assert settings.uploads.completion_wait_seconds == 30
    assert settings.storage.local_storage_dir == Path("/srv/t/storage")
    pipeline = settings.pipeline
    assert pipeline.max_attempts == 5
    assert pipeline.virus_scan_enabled is False
    assert pipeline.compression.algorithm == "brotli"
    assert pipeline.compression.min_size == 10 * 1024 * 1024
    assert pipeline.validation.mime_validation is True
    assert "application/pdf" in pipeline.validation.allowed_mime_types
    assert pipeline.crash_at_step is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"VIRUS_SCAN_ENABLED": "on"}, "CLAMD_URL"),
        ({"VIRUS_SCAN_ENABLED": "sometimes"}, "VIRUS_SCAN_ENABLED"),
        ({"COMPLETION_WAIT_SECONDS": "-1"}, "COMPLETION_WAIT_SECONDS"),
        ({"SAGA_RETRY_MAX_ATTEMPTS": "0"}, "SAGA_RETRY_MAX_ATTEMPTS"),
        ({"SAGA_TIMEOUT_SECONDS": "0"}, "SAGA_TIMEOUT_SECONDS"),
        ({"OPERATION_LEASE_SECONDS": "x"}, "OPERATION_LEASE_SECONDS"),
        ({"COMPRESSION_LEVEL": "99"}, "COMPRESSION_LEVEL"),
        ({"COMPRESSION_ALGORITHM": "zstd"}, "COMPRESSION_ALGORITHM"),
        ({"ALLOWED_MIME_TYPES": "not a type"}, "ALLOWED_MIME_TYPES"),
        ({"MIME_TYPE_VALIDATION": "maybe"}, "MIME_TYPE_VALIDATION"),
    ],
)
def test_bad_pipeline_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


@pytest.mark.parametrize(
    ("raw", "md5"), [("", True), ("md5,sha256", True), ("SHA256, MD5", True), ("sha256", False)]
)
def test_upload_digests(raw: str, md5: bool) -> None:
    settings = Settings.from_env({"UPLOAD_DIGESTS": raw})
    assert settings.uploads.md5 is md5
    assert settings.pipeline.validation.md5 is md5
