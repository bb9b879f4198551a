"""Storage settings from the environment: defaults, ArtStore names, and refusals that name the
variable."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import pytest

from tusingest.domain import ElementMode
from tusingest.errors import ConfigError
from tusingest.settings.app import Settings
from tusingest.settings.storage import SERVICE_ACCOUNT_NAMESPACE


def storage(**env: str):  # type: ignore[no-untyped-def]
    return Settings.from_env(env).storage


def test_defaults_are_the_embedded_registry() -> None:
    s = storage()
    assert s.redis_url is None
    assert s.admin_module_url is None
    assert (s.breaker.failure_threshold, s.breaker.timeout_seconds) == (5, 60)
    assert s.breaker.success_threshold == 2
    assert (s.cache_seconds, s.reload_interval, s.monitor_interval) == (5, 60, 30)
    assert s.thresholds[ElementMode.EDIT] == (85, 92, 98)
    assert (s.se_timeout, s.se_pool_size, s.se_max_retries) == (60, 20, 3)


def test_thresholds_globally_and_per_mode() -> None:
    s = storage(CAPACITY_WARNING_THRESHOLD="80", CAPACITY_EDIT_THRESHOLDS="90,95,99")
    assert s.thresholds[ElementMode.EDIT] == (90, 95, 99)
    assert s.thresholds[ElementMode.RW] == (80, 92, 98)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"ADMIN_MODULE_URL": "admin:8000"}, "ADMIN_MODULE_URL"),
        ({"SERVICE_ACCOUNT_CLIENT_ID": "sa_x"}, "SERVICE_ACCOUNT_CLIENT_SECRET"),
        (
            {"SERVICE_ACCOUNT_CLIENT_ID": "sa_x", "SERVICE_ACCOUNT_CLIENT_SECRET": "s"},
            "ADMIN_MODULE_URL",
        ),
        (
            {"CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL": "5"},
            "CAPACITY_MONITOR_CONFIG_RELOAD_INTERVAL",
        ),
        ({"CAPACITY_RW_THRESHOLDS": "90,80,99"}, "CAPACITY_RW_THRESHOLDS"),
        ({"CAPACITY_EDIT_THRESHOLDS": "90,95"}, "CAPACITY_EDIT_THRESHOLDS"),
        ({"CIRCUIT_BREAKER_FAILURE_THRESHOLD": "0"}, "CIRCUIT_BREAKER_FAILURE_THRESHOLD"),
        ({"STORAGE_ELEMENT_TIMEOUT": "nan"}, "STORAGE_ELEMENT_TIMEOUT"),
        ({"STORAGE_ELEMENT_MAX_RETRIES": "-1"}, "STORAGE_ELEMENT_MAX_RETRIES"),
        ({"TEMPORARY_FILE_TTL_DAYS": "400"}, "TEMPORARY_FILE_TTL_DAYS"),
        ({"CAPACITY_MONITOR_ENABLED": "maybe"}, "CAPACITY_MONITOR_ENABLED"),
        ({"STORAGE_ELEMENT_SLOW_ANSWER_SECONDS": "0"}, "STORAGE_ELEMENT_SLOW_ANSWER_SECONDS"),
        ({"SERVICE_ACCOUNT_ID": "tusingest"}, "SERVICE_ACCOUNT_ID"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        storage(**env)
    assert caught.value.variable == variable


def test_service_account_id_and_slow_answers() -> None:
    default = storage()
    assert default.se_slow_answer_seconds == 10
    assert default.sa_id == str(uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, "tusingest"))
    assert storage(SERVICE_ACCOUNT_NAME="ingest-2").sa_id == str(
        uuid.uuid5(SERVICE_ACCOUNT_NAMESPACE, "ingest-2")
    )
    chosen = storage(
        SERVICE_ACCOUNT_ID="0F8FAD5B-D9CB-469F-A165-70867728950E",
        STORAGE_ELEMENT_SLOW_ANSWER_SECONDS="2.5",
    )
    assert chosen.sa_id == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert chosen.se_slow_answer_seconds == 2.5


def test_tls_defaults_and_choices(tmp_path: Path) -> None:
    default = storage().tls
    assert default.ca_file is None  # the system store
    assert default.min_version is ssl.TLSVersion.TLSv1_2
    assert (default.client_cert_file, default.client_key_file) == (None, None)
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.crt", "client.key"))
    for path in (ca, cert, key):
        path.write_text("PEM")
    chosen = storage(
        STORAGE_ELEMENT_CA_FILE=str(ca),
        STORAGE_ELEMENT_TLS_MIN_VERSION="1.3",
        STORAGE_ELEMENT_CLIENT_CERT_FILE=str(cert),
        STORAGE_ELEMENT_CLIENT_KEY_FILE=str(key),
    ).tls
    assert chosen.ca_file == ca
    assert chosen.min_version is ssl.TLSVersion.TLSv1_3
    assert (chosen.client_cert_file, chosen.client_key_file) == (cert, key)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STORAGE_ELEMENT_TLS_MIN_VERSION": "1.1"}, "STORAGE_ELEMENT_TLS_MIN_VERSION"),
        ({"STORAGE_ELEMENT_TLS_MIN_VERSION": "TLSv1.3"}, "STORAGE_ELEMENT_TLS_MIN_VERSION"),
        ({"STORAGE_ELEMENT_CA_FILE": "{missing}"}, "STORAGE_ELEMENT_CA_FILE"),
        ({"STORAGE_ELEMENT_CA_FILE": "{dir}"}, "STORAGE_ELEMENT_CA_FILE"),
        ({"STORAGE_ELEMENT_CLIENT_CERT_FILE": "{file}"}, "STORAGE_ELEMENT_CLIENT_KEY_FILE"),
        ({"STORAGE_ELEMENT_CLIENT_KEY_FILE": "{file}"}, "STORAGE_ELEMENT_CLIENT_CERT_FILE"),
        (
            {
                "STORAGE_ELEMENT_CLIENT_CERT_FILE": "{file}",
                "STORAGE_ELEMENT_CLIENT_KEY_FILE": "{missing}",
            },
            "STORAGE_ELEMENT_CLIENT_KEY_FILE",
        ),
    ],
)
def test_bad_tls_settings_name_their_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    file = tmp_path / "some.pem"
    file.write_text("PEM")
    places = {"missing": tmp_path / "nope.pem", "dir": tmp_path, "file": file}
    with pytest.raises(ConfigError) as caught:
        storage(**{name: value.format(**places) for name, value in env.items()})
    assert caught.value.variable == variable
