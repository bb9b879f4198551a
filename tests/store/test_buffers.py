"""The batch buffers of request bodies: full-size ones up to a budget for all requests
together, small ones beyond it, reused either way."""

from __future__ import annotations

from tusingest.store.receive import BATCH_BYTES, SMALL_BATCH_BYTES, BufferPool


def test_past_the_budget_requests_get_small_batches() -> None:
    pool = BufferPool(keep=2, budget=3 * BATCH_BYTES)
    full = [pool.take(BATCH_BYTES) for _ in range(3)]
    assert [len(b) for b in full] == [BATCH_BYTES] * 3
    assert pool.out == 3
    extra = pool.take(BATCH_BYTES)
    assert len(extra) == SMALL_BATCH_BYTES  # the budget is spent
    pool.give(full.pop())
    assert pool.out == 2
    again = pool.take(BATCH_BYTES)
    assert len(again) == BATCH_BYTES
    pool.give(extra)
    assert pool.take(BATCH_BYTES - 1) is extra  # small buffers are reused too


def test_a_tail_below_the_small_size_is_exact_and_not_pooled() -> None:
    pool = BufferPool()
    tail = pool.take(1000)
    assert len(tail) == 1000
    pool.give(tail)
    assert pool.take(1000) is not tail
    assert pool.out == 0
