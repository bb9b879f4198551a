"""Rate-limit settings: off by default, bursts defaulting to one period's worth, the Redis URL
falling back to REDIS_URL, named errors for bad values."""

from __future__ import annotations

import pytest

from tusingest.errors import ConfigError
from tusingest.settings.app import Settings
from tusingest.settings.ratelimits import RateLimitSettings


def test_off_by_default() -> None:
    limits = Settings.from_env({}).ratelimits
    assert limits.enabled is False
    assert (limits.uploads_per_minute, limits.bytes_per_second) == (0, 0)
    assert limits.redis_url is None


def test_bursts_default_to_one_period_of_the_rate() -> None:
    limits = Settings.from_env(
        {"RATE_LIMIT_UPLOADS_PER_MINUTE": "30", "RATE_LIMIT_BYTES_PER_SECOND": "1048576"}
    ).ratelimits
    assert limits.enabled is True
    assert (limits.uploads_burst, limits.bytes_burst) == (30, 1048576)


def test_every_variable_is_read() -> None:
    limits = Settings.from_env(
        {
            "RATE_LIMIT_UPLOADS_PER_MINUTE": "0.5",
            "RATE_LIMIT_UPLOADS_BURST": "4",
            "RATE_LIMIT_BYTES_PER_SECOND": "1000",
            "RATE_LIMIT_BYTES_BURST": "5000",
            "RATE_LIMIT_REDIS_URL": "redis://limits:6379/3",
            "REDIS_URL": "redis://registry:6379/0",
            "REDIS_KEY_PREFIX": "eu:",
        }
    ).ratelimits
    assert limits == RateLimitSettings(
        uploads_per_minute=0.5,
        uploads_burst=4,
        bytes_per_second=1000,
        bytes_burst=5000,
        redis_url="redis://limits:6379/3",
        key_prefix="eu:",
    )


def test_the_buckets_go_to_redis_url_unless_told_otherwise() -> None:
    env = {"REDIS_URL": "redis://registry:6379/0", "RATE_LIMIT_UPLOADS_PER_MINUTE": "10"}
    assert Settings.from_env(env).ratelimits.redis_url == "redis://registry:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_UPLOADS_PER_MINUTE", "-1"),
        ("RATE_LIMIT_UPLOADS_BURST", "0"),
        ("RATE_LIMIT_BYTES_PER_SECOND", "fast"),
        ("RATE_LIMIT_BYTES_BURST", "0.5"),
        ("RATE_LIMIT_REDIS_URL", "http://limits:6379"),
    ],
)
def test_bad_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: value})
    assert refused.value.variable == name
