"""Circuit breaker state machine with a fake clock, and the per-element registry."""

from __future__ import annotations

import pytest

from tusingest.elements.breaker import Breakers, BreakerState, CircuitBreaker
from tusingest.errors import ConfigError
from tusingest.settings.app import Settings
from tusingest.settings.storage import BreakerSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _breaker(
    clock: FakeClock,
    *,
    failure_threshold: int = 5,
    timeout_seconds: float = 60.0,
    success_threshold: int = 2,
) -> CircuitBreaker:
    settings = BreakerSettings(failure_threshold, timeout_seconds, success_threshold)
    return CircuitBreaker(settings, clock)


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state through a call so mypy does not narrow it across transitions."""
    return breaker.state


def _opened(clock: FakeClock) -> CircuitBreaker:
    breaker = _breaker(clock)
    for _ in range(5):
        breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    return breaker


def test_defaults() -> None:
    assert BreakerSettings() == BreakerSettings(
        failure_threshold=5, timeout_seconds=60.0, success_threshold=2
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "0"),
        ("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "0"),
        ("CIRCUIT_BREAKER_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_invalid_settings_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable


def test_starts_closed_and_allows(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allows()


def test_opens_at_failure_threshold(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allows()
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allows()


def test_custom_failure_threshold(clock: FakeClock) -> None:
    breaker = _breaker(clock, failure_threshold=1)
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN


def test_success_in_closed_resets_failure_count(clock: FakeClock) -> None:
    breaker = _breaker(clock)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN


def test_open_refuses_until_timeout_then_half_open(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(59.999)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allows()
    clock.advance(0.001)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allows()


def test_custom_timeout(clock: FakeClock) -> None:
    breaker = _breaker(clock, failure_threshold=1, timeout_seconds=5.0)
    breaker.record_failure()
    clock.advance(4.9)
    assert not breaker.allows()
    clock.advance(0.1)
    assert breaker.allows()


def test_records_while_open_do_not_extend_or_close(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(30)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_success()
    assert state(breaker) is BreakerState.OPEN
    clock.advance(30)
    assert state(breaker) is BreakerState.HALF_OPEN


def test_half_open_failure_reopens_with_fresh_timeout(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(60)
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allows()
    clock.advance(59)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(1)
    assert state(breaker) is BreakerState.HALF_OPEN


def test_half_open_failure_after_one_success_reopens(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(60)
    breaker.record_success()
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN


def test_half_open_closes_after_success_threshold(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(60)
    breaker.record_success()
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allows()


def test_closed_again_needs_full_failure_threshold(clock: FakeClock) -> None:
    breaker = _opened(clock)
    clock.advance(60)
    breaker.record_success()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN


def test_half_open_success_count_restarts_after_reopen(clock: FakeClock) -> None:
    breaker = _breaker(clock, success_threshold=3)
    for _ in range(5):
        breaker.record_failure()
    clock.advance(60)
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    clock.advance(60)
    breaker.record_success()
    breaker.record_success()
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.record_success()
    assert state(breaker) is BreakerState.CLOSED


def test_breakers_one_per_element(clock: FakeClock) -> None:
    breakers = Breakers(BreakerSettings(), clock)
    assert breakers.get("se-1") is breakers.get("se-1")
    assert breakers.get("se-1") is not breakers.get("se-2")


def test_breakers_are_independent(clock: FakeClock) -> None:
    breakers = Breakers(BreakerSettings(failure_threshold=2), clock)
    breakers.get("se-1").record_failure()
    breakers.get("se-2").record_failure()
    breakers.get("se-1").record_failure()
    assert breakers.get("se-1").state is BreakerState.OPEN
    assert breakers.get("se-2").state is BreakerState.CLOSED
    assert breakers.open_ids() == {"se-1"}


def test_open_ids_follows_timeout(clock: FakeClock) -> None:
    breakers = Breakers(BreakerSettings(failure_threshold=1), clock)
    assert breakers.open_ids() == set()
    breakers.get("se-1").record_failure()
    clock.advance(30)
    breakers.get("se-2").record_failure()
    assert breakers.open_ids() == {"se-1", "se-2"}
    clock.advance(30)
    assert breakers.open_ids() == {"se-2"}
    clock.advance(30)
    assert breakers.open_ids() == set()


def test_states_for_metrics(clock: FakeClock) -> None:
    breakers = Breakers(BreakerSettings(failure_threshold=1, timeout_seconds=10), clock)
    assert breakers.states() == {}
    breakers.get("a")
    breakers.get("b").record_failure()
    breakers.get("c").record_failure()
    clock.advance(10)
    breakers.get("b").record_failure()  # half-open failure reopens
    assert breakers.states() == {"a": "closed", "b": "open", "c": "half_open"}


def test_forget_drops_breaker(clock: FakeClock) -> None:
    breakers = Breakers(BreakerSettings(failure_threshold=1), clock)
    breakers.get("se-1").record_failure()
    breakers.forget("se-1")
    breakers.forget("never-seen")
    assert breakers.open_ids() == set()
    assert breakers.states() == {}
    assert breakers.get("se-1").state is BreakerState.CLOSED


def test_default_clock_is_monotonic() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, timeout_seconds=3600))
    breaker.record_failure()
    assert state(breaker) is BreakerState.OPEN
