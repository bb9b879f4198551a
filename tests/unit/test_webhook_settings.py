"""WEBHOOK_*: off by default, receivers checked and kept once each, a secret required and
never shown, retry bounds checked."""

from __future__ import annotations

import pytest

from tusingest.errors import ConfigError
from tusingest.settings.app import Settings

SECRET = "0123456789abcdef-secret"


def _webhooks(**env: str) -> object:
    return Settings.from_env({"DATA_DIR": "/tmp/x", **env}).pipeline.webhooks


def test_webhooks_are_off_by_default() -> None:
    config = Settings.from_env({"DATA_DIR": "/tmp/x"}).pipeline.webhooks
    assert not config.enabled
    assert config.urls == ()
    assert config.timeout_seconds == 10
    assert config.max_age_seconds == 24 * 3600
    assert (config.retry_base_seconds, config.retry_max_seconds) == (1, 300)
    assert config.concurrency == 4


def test_every_webhook_variable_is_read() -> None:
    config = Settings.from_env(
        {
            "DATA_DIR": "/tmp/x",
            "WEBHOOK_URLS": " https://a.example/in , http://10.0.0.2:8080/h?t=1,https://a.example/in",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_TIMEOUT_SECONDS": "2.5",
            "WEBHOOK_MAX_AGE_SECONDS": "7200",
            "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
            "WEBHOOK_RETRY_MAX_SECONDS": "60",
            "WEBHOOK_CONCURRENCY": "8",
        }
    ).pipeline.webhooks
    assert config.enabled
    assert config.urls == ("https://a.example/in", "http://10.0.0.2:8080/h?t=1")
    assert config.secret == SECRET
    assert config.timeout_seconds == 2.5
    assert config.max_age_seconds == 7200
    assert (config.retry_base_seconds, config.retry_max_seconds) == (0.5, 60)
    assert config.concurrency == 8


@pytest.mark.parametrize(
    "url",
    [
        "ftp://a.example/s3cr3t",
        "a.example/s3cr3t",
        "https://?s3cr3t",
        "http://:80/s3cr3t",
        "http://h:port/s3cr3t",
    ],
)
def test_a_receiver_that_is_no_http_url_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _webhooks(WEBHOOK_URLS=f"https://ok.example/in,{url}", WEBHOOK_SECRET=SECRET)
    assert refused.value.variable == "WEBHOOK_URLS"
    assert "item 2" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)  # a receiver's URL may hold a token


@pytest.mark.parametrize("secret", [None, "", "short-secret"])
def test_receivers_need_a_secret_long_enough(secret: str | None) -> None:
    env = {"WEBHOOK_URLS": "https://a.example/in"}
    if secret is not None:
        env["WEBHOOK_SECRET"] = secret
    with pytest.raises(ConfigError) as refused:
        _webhooks(**env)
    assert refused.value.variable == "WEBHOOK_SECRET"
    assert "16" in str(refused.value)


def test_the_secret_is_not_shown_with_the_settings() -> None:
    settings = Settings.from_env(
        {"DATA_DIR": "/tmp/x", "WEBHOOK_URLS": "https://a.example/in", "WEBHOOK_SECRET": SECRET}
    )
    assert settings.pipeline.webhooks.secret == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.pipeline)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("WEBHOOK_TIMEOUT_SECONDS", "301"),
        ("WEBHOOK_MAX_AGE_SECONDS", "-1"),
        ("WEBHOOK_RETRY_BASE_SECONDS", "0"),
        ("WEBHOOK_RETRY_MAX_SECONDS", "0.5"),  # below the base (1 s)
        ("WEBHOOK_CONCURRENCY", "0"),
        ("WEBHOOK_CONCURRENCY", "many"),
    ],
)
def test_bad_webhook_numbers_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _webhooks(WEBHOOK_URLS="https://a.example/in", WEBHOOK_SECRET=SECRET, **{name: value})
    assert refused.value.variable == name
