"""The capacity monitor: one leader per cluster polls every configured SE and publishes it.

Each round the leader reads `/api/v1/capacity` and `/health/ready` of every configured element
(`/capacity` always says healthy, so liveness comes from `/health/ready`), derives the capacity
status from the thresholds, and writes the legacy registry keys. When a status, health or
listing changed it announces it on the discovery channel, so
every node drops its registry cache at once instead of after its TTL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tusingest.domain import (
    DEFAULT_THRESHOLDS,
    WRITABLE_MODES,
    CapacityStatus,
    ElementInfo,
    ElementMode,
    Thresholds,
    capacity_status,
)
from tusingest.errors import TransientError
from tusingest.registry.configs import ElementConfig, RedisElementConfigs
from tusingest.registry.redis import (
    announce,
    element_key,
    is_listed,
    parse_element,
    priority_key,
    publish,
    text,
    withdraw,
)
from tusingest.replies import Reply, failure, read_reply

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
LOCK_KEY = "capacity_monitor:leader_lock"  # the key the former ingester's poller locked
Classify = Callable[[int, int, Thresholds], CapacityStatus]  # (total, used, thresholds)

# Compare-and-act on the lock: only the node that holds it may extend or release it.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ProbeFailed(TransientError):
    """An SE is unusable: no or a bad answer to its probes, or another mode than configured."""

    code = "element_probe_failed"


@dataclass(frozen=True)
class Published:
    """What the registry holds for one element: its hash (empty once expired) and listing."""

    fields: Mapping[str, str]
    listing: Mapping[ElementMode, float]  # mode → score in `storage:{mode}:by_priority`

    @property
    def info(self) -> ElementInfo | None:
        try:
            return parse_element(self.fields) if self.fields else None
        except (KeyError, ValueError):
            return None


def api_base(endpoint: str) -> str:
    """The SE's root URL: `endpoint` without a trailing slash or `/api/v1`."""
    return endpoint.rstrip("/").removesuffix(API_PREFIX).rstrip("/")


def lock_key(prefix: str = "") -> str:
    return f"{prefix}{LOCK_KEY}"


async def published(
    client: aioredis.Redis, element_ids: Iterable[str], *, prefix: str = ""
) -> dict[str, Published]:
    """The registry's current entries for `element_ids`, in one round trip."""
    ids = list(dict.fromkeys(element_ids))
    if not ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for element_id in ids:
            pipe.hgetall(element_key(element_id, prefix))
            for mode in WRITABLE_MODES:
                pipe.zscore(priority_key(mode, prefix), element_id)
        replies = await pipe.execute()
    step = 1 + len(WRITABLE_MODES)
    found: dict[str, Published] = {}
    for index, element_id in enumerate(ids):
        raw, *scores = replies[index * step : (index + 1) * step]
        fields = {text(k): text(v) for k, v in (raw or {}).items()}
        listing = {
            m: float(s) for m, s in zip(WRITABLE_MODES, scores, strict=True) if s is not None
        }
        found[element_id] = Published(fields, listing)
    return found


class CapacityMonitor:
    """Polls the configured elements every `interval` seconds while it holds the cluster lock."""

    def __init__(
        self,
        client: aioredis.Redis,
        session: aiohttp.ClientSession,
        configs: RedisElementConfigs,
        *,
        prefix: str = "",
        interval: float = 30.0,
        thresholds: Mapping[ElementMode, Thresholds],
        classify: Classify = capacity_status,
        node: str,
        lock_seconds: int = 30,
        timeout: float = 5.0,
    ) -> None:
        if not interval > 0 or not timeout > 0 or lock_seconds < 1 or not node:
            raise ValueError("need interval > 0, timeout > 0, lock_seconds >= 1 and a node name")
        self._client = client
        self._session = session
        self._configs = configs
        self._prefix = prefix
        self._interval = interval
        self._thresholds = thresholds
        self._classify = classify
        self._node = node
        self._lock_seconds = lock_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._lock = lock_key(prefix)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._leader = False
        self._last: dict[str, ElementInfo] = {}  # last probe per element (capacity carried over)
        self._errors: dict[str, str] = {}

    @property
    def is_leader(self) -> bool:
        """Whether the last lock attempt found this node holding the lock."""
        return self._leader

    @property
    def ttl_seconds(self) -> int:
        """TTL of the hashes: three rounds, never below the contract's 90 s."""
        return max(90, math.ceil(3 * self._interval))

    @property
    def last_errors(self) -> Mapping[str, str]:
        """Why each element that failed its last probe is unhealthy."""
        return dict(self._errors)

    async def lead(self) -> bool:
        """Extend the lock if this node holds it, else try to take it; True when leading."""
        try:
            extended = await self._extend(keys=[self._lock], args=[self._node, self._lock_seconds])
            if not int(extended):
                taken = await self._client.set(
                    self._lock, self._node, nx=True, ex=self._lock_seconds
                )
                extended = bool(taken)
        except BaseException:
            self._leader = False
            raise
        if bool(extended) != self._leader:
            log.info("capacity monitor %s %s", self._node, "leads" if extended else "follows")
        self._leader = bool(extended)
        return self._leader

    async def release(self) -> bool:
        """Give up the lock if this node holds it, so another node takes over at once."""
        self._leader = False
        released = await self._release(keys=[self._lock], args=[self._node])
        return bool(int(released))

    async def poll_once(self) -> list[ElementInfo] | None:
        """One round: None when another node leads, else what was published."""
        if not await self.lead():
            return None
        return await self._poll()

    async def run_forever(self) -> None:
        """Poll every `interval` seconds; renew or seek the lock more often, so leadership does
        not lapse between rounds. Errors are logged; cancellation releases the lock."""
        tick = min(self._interval, self._lock_seconds / 3)
        next_poll = 0.0
        try:
            while True:
                try:
                    was_leader = self._leader
                    now = time.monotonic()
                    if await self.lead() and (now >= next_poll or not was_leader):
                        next_poll = now + self._interval
                        await self._poll()
                except (RedisError, OSError) as exc:
                    log.warning("capacity monitor %s: Redis: %s; retrying", self._node, exc)
                except Exception:
                    log.exception("capacity monitor %s: round failed; retrying", self._node)
                delay = tick
                if self._leader:
                    delay = min(tick, max(0.0, next_poll - time.monotonic()))
                await asyncio.sleep(delay)
        finally:
            try:
                await asyncio.shield(self.release())
            except Exception as exc:
                log.warning("capacity monitor %s: cannot release the lock: %s", self._node, exc)

    async def probe(self, config: ElementConfig) -> ElementInfo:
        """The element as it answers now; unhealthy (with its last known capacity, else
        zeros) when it does not answer, is not ready, or reports another mode."""
        return await self._probe(config, self._last.get(config.element_id), quiet=True)

    async def _poll(self) -> list[ElementInfo]:
        configs = await self._configs.all()
        configured = {c.element_id for c in configs}
        listed: set[str] = set()
        for mode in WRITABLE_MODES:
            members = await self._client.zrange(priority_key(mode, self._prefix), 0, -1)
            listed.update(text(m) for m in members)
        # With nothing configured the keys may be kept by another writer: leave them alone.
        stale = sorted(listed - configured) if configs else []
        before = await published(self._client, [*configured, *stale], prefix=self._prefix)
        infos = await asyncio.gather(
            *(
                self._probe(c, self._last.get(c.element_id) or before[c.element_id].info)
                for c in configs
            )
        )
        changed = bool(stale)
        for info in infos:
            await publish(self._client, info, prefix=self._prefix, ttl_seconds=self.ttl_seconds)
            changed |= _changed(before[info.element_id], info)
        for element_id in stale:
            log.info("storage element %s is no longer configured; withdrawn", element_id)
            await withdraw(self._client, element_id, prefix=self._prefix)
        for element_id in set(self._last) - configured:
            del self._last[element_id]
            self._errors.pop(element_id, None)
        if changed:
            await announce(self._client, "updated", prefix=self._prefix)
        return list(infos)

    async def _probe(
        self, config: ElementConfig, last: ElementInfo | None, *, quiet: bool = False
    ) -> ElementInfo:
        base = api_base(config.endpoint)
        answers: tuple[Reply | BaseException, Reply | BaseException] = await asyncio.gather(
            self._get(f"{base}{API_PREFIX}/capacity"),
            self._get(f"{base}/health/ready"),
            return_exceptions=True,
        )
        capacity, ready = answers
        info: ElementInfo | None = None
        problem: str | None = None
        try:
            body = _answer(f"{API_PREFIX}/capacity", capacity)
            info = self._from_capacity(config, body)
            reported = body.get("mode")
            if reported is not None and reported != config.mode.value:
                # An SE in another mode refuses or misfiles what the registry would send it.
                raise ProbeFailed(f"reports mode {reported!r}, configured {config.mode.value!r}")
            _answer("/health/ready", ready)
        except ProbeFailed as exc:
            problem = exc.message
        if info is None:
            info = self._fallback(config, last)
        if problem is not None:
            info = replace(info, healthy=False)
        if not quiet:
            self._log_change(config.element_id, info, problem)
        if problem is None:
            self._errors.pop(config.element_id, None)
        else:
            self._errors[config.element_id] = problem
        self._last[config.element_id] = info
        return info

    def _from_capacity(self, config: ElementConfig, body: Any) -> ElementInfo:
        try:
            numbers = body["capacity"]
            total, used, available = (int(numbers[k]) for k in ("total", "used", "available"))
        except (TypeError, KeyError, ValueError) as exc:
            raise ProbeFailed(f"{API_PREFIX}/capacity: malformed answer ({exc!r})") from None
        if min(total, used, available) < 0:
            raise ProbeFailed(f"{API_PREFIX}/capacity: negative numbers {numbers!r}")
        # What fits is what the SE says is available, not total − used (it reserves some).
        return self._info(config, total, used, available, healthy=True)

    def _fallback(self, config: ElementConfig, last: ElementInfo | None) -> ElementInfo:
        if last is None:
            return self._info(config, 0, 0, 0, healthy=False)
        total, used, free = last.capacity_total, last.capacity_used, last.capacity_free
        return self._info(config, total, used, free, healthy=False)

    def _info(
        self, config: ElementConfig, total: int, used: int, free: int, *, healthy: bool
    ) -> ElementInfo:
        thresholds = self._thresholds.get(config.mode, DEFAULT_THRESHOLDS)
        return ElementInfo(
            element_id=config.element_id,
            mode=config.mode,
            priority=config.priority,
            endpoint=config.endpoint,
            capacity_total=total,
            capacity_used=used,
            capacity_free=free,
            status=self._classify(total, used, thresholds),
            healthy=healthy,
        )

    def _log_change(self, element_id: str, info: ElementInfo, problem: str | None) -> None:
        previous = self._last.get(element_id)
        if problem is not None and self._errors.get(element_id) != problem:
            log.warning("storage element %s is unhealthy: %s", element_id, problem)
        elif problem is None and element_id in self._errors:
            log.info("storage element %s is healthy again", element_id)
        if previous is not None and previous.status is not info.status:
            log.info("storage element %s: %s → %s", element_id, previous.status, info.status)

    async def _get(self, url: str) -> Reply:
        async with self._session.get(url, timeout=self._timeout) as response:
            return await read_reply(response)


def _changed(before: Published, after: ElementInfo) -> bool:
    """Whether readers see something new: health, status, mode, priority or listing."""
    old = before.info
    if old is None:
        return True
    listing = {after.mode: float(after.priority)} if is_listed(after) else {}
    return (old.healthy, old.status, old.mode, old.priority, dict(before.listing)) != (
        after.healthy,
        after.status,
        after.mode,
        after.priority,
        listing,
    )


def _answer(path: str, result: Reply | BaseException) -> Any:
    """The JSON body of a 200 answer; ProbeFailed for anything else."""
    if isinstance(result, TimeoutError):
        raise ProbeFailed(f"{path}: no answer in time")
    if isinstance(result, Exception):  # refused, reset, bad TLS, garbled HTTP, ...
        if isinstance(result, aiohttp.ClientSSLError):
            raise ProbeFailed(f"{path}: {failure(result)}")
        raise ProbeFailed(f"{path}: {result or type(result).__name__}")
    if isinstance(result, BaseException):
        raise result
    status, body = result
    if status != 200:
        raise ProbeFailed(f"{path} answered {status}")
    if not isinstance(body, dict):
        raise ProbeFailed(f"{path}: the answer is not a JSON object")
    return body
