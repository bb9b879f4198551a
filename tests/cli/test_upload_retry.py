"""The retry policy of `tusingest upload` (the README's numbers): the server's Retry-After up to
30 s, else exponential backoff with jitter, 8 tries of a request in all."""

from __future__ import annotations

import asyncio

import pytest

from tusingest.client.retry import Backoff, GaveUp, Transient


def test_retry_after_is_waited_up_to_30_seconds() -> None:
    backoff = Backoff()
    assert backoff.delay(0, 2.0) == 2.0
    assert backoff.delay(5, 2.0) == 2.0  # whatever the attempt
    assert backoff.delay(0, 60.0) == 30.0
    assert backoff.delay(0, -1.0) == 0.0


def test_without_retry_after_the_pause_doubles_with_jitter_up_to_30_seconds() -> None:
    backoff = Backoff()
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 16.0), (6, 30.0), (9, 30.0)]:
        pauses = [backoff.delay(attempt, None) for _ in range(200)]
        assert all(ceiling / 2 <= p <= ceiling for p in pauses), (attempt, min(pauses))
        assert max(pauses) - min(pauses) > ceiling / 10  # jittered, not one fixed pause


def test_a_request_is_tried_8_times_and_each_retry_is_heard_of() -> None:
    calls: list[int] = []
    heard: list[tuple[str, float]] = []

    async def failing() -> None:
        calls.append(len(calls))
        raise Transient(f"503 try {len(calls)}", retry_after=0.0)

    with pytest.raises(GaveUp, match="503 try 8"):
        asyncio.run(Backoff().run(failing, lambda exc, pause: heard.append((exc.reason, pause))))
    assert len(calls) == 8
    assert heard == [(f"503 try {n}", 0.0) for n in range(1, 8)]  # the last is not retried


def test_a_429_uses_no_try_while_its_pauses_stay_within_the_budget() -> None:
    calls: list[int] = []

    async def limited_then_fine() -> str:
        calls.append(len(calls))
        if len(calls) <= 12:  # more 429s than there are tries
            raise Transient("429 rate_limited", retry_after=0.0, paced=True)
        return "stored"

    assert asyncio.run(Backoff().run(limited_then_fine)) == "stored"
    assert len(calls) == 13

    async def always_limited() -> None:
        raise Transient("429 rate_limited", retry_after=0.01, paced=True)

    # Past the budget a 429 counts as a failed try again: the run ends.
    with pytest.raises(GaveUp, match="429"):
        asyncio.run(Backoff(attempts=3, paced_seconds=0.05).run(always_limited))
