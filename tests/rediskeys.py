"""Redis for tests: where it is, a fresh key prefix per test, and dropping its keys after."""

from __future__ import annotations

import os
import uuid

import pytest
import redis


def redis_url() -> str:
    """REDIS_URL when set (scripts/test exports it), else the local server's db 0."""
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def new_prefix() -> str:
    return f"tusingest-test:{uuid.uuid4().hex}:"


def drop_keys(prefix: str) -> None:
    """Delete every key under `prefix` (tests never touch anything else)."""
    client = redis.Redis.from_url(redis_url(), socket_connect_timeout=3, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def require_redis() -> None:
    client = redis.Redis.from_url(redis_url(), socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.fail(f"Redis is required for the tests and not reachable at {redis_url()}: {exc}")
    finally:
        client.close()
