"""Settings of the per-user rate limits: uploads started per minute and bytes per second, each a
token bucket (rate and burst), kept in Redis when configured, else in process."""

from __future__ import annotations

from dataclasses import dataclass

from tusingest.settings.env import Env


@dataclass(frozen=True)
class RateLimitSettings:
    """Off by default (0): a limit is a policy of the deployment, not a guess of the gateway."""

    uploads_per_minute: float = 0.0  # RATE_LIMIT_UPLOADS_PER_MINUTE; 0: no limit
    uploads_burst: float = 0.0  # RATE_LIMIT_UPLOADS_BURST; default: one minute's worth
    bytes_per_second: float = 0.0  # RATE_LIMIT_BYTES_PER_SECOND; 0: no limit
    bytes_burst: float = 0.0  # RATE_LIMIT_BYTES_BURST; default: one second's worth
    # RATE_LIMIT_REDIS_URL: the buckets shared by every node; default REDIS_URL, unset: in process
    redis_url: str | None = None
    key_prefix: str = ""  # REDIS_KEY_PREFIX

    @property
    def enabled(self) -> bool:
        return self.uploads_per_minute > 0 or self.bytes_per_second > 0


def parse_ratelimits(env: Env) -> RateLimitSettings:
    per_minute = env.number("RATE_LIMIT_UPLOADS_PER_MINUTE", 0, low=0)
    per_second = env.number("RATE_LIMIT_BYTES_PER_SECOND", 0, low=0)
    return RateLimitSettings(
        uploads_per_minute=per_minute,
        uploads_burst=env.number("RATE_LIMIT_UPLOADS_BURST", max(1.0, per_minute), low=1),
        bytes_per_second=per_second,
        bytes_burst=env.number("RATE_LIMIT_BYTES_BURST", max(1.0, per_second), low=1),
        redis_url=(
            env.url("RATE_LIMIT_REDIS_URL", ("redis", "rediss", "unix"))
            or env.url("REDIS_URL", ("redis", "rediss", "unix"))
        ),
        key_prefix=env.text("REDIS_KEY_PREFIX", ""),
    )
