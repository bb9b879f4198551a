"""The Locker contract, run against every adapter (in-process and PostgreSQL) and across nodes."""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType

import pytest

from tests.store.conftest import WAIT_SECONDS, OpenLocker, OpenNode
from tusingest.errors import Locked
from tusingest.ports import Locker

# "At once": well under the patient wait, yet ample for a few database round trips.
AT_ONCE = WAIT_SECONDS / 2
# Upper bound for anything a test waits on, so a broken adapter fails instead of hanging.
BOUND = WAIT_SECONDS + 4


def new_key() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return asyncio.get_running_loop().time()


class Holder:
    """A request holding `key` in a background task, as an upload PATCH does: it stays until
    `leave()`, or, when it `yields`, until a later request asks it to release."""

    def __init__(
        self,
        locker: Locker,
        key: str,
        log: list[str],
        name: str,
        *,
        yields: bool = True,
        callback: bool = True,
    ) -> None:
        self._locker = locker
        self._key = key
        self._log = log
        self._name = name
        self._yields = yields
        self._callback = callback
        self.asked = asyncio.Event()
        self._inside = asyncio.Event()
        self._leave = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _on_release(self) -> None:
        self._log.append(f"{self._name} asked")
        self.asked.set()
        if self._yields:
            self._leave.set()

    async def _run(self) -> None:
        on_release = self._on_release if self._callback else None
        async with self._locker.hold(self._key, on_release=on_release):
            self._log.append(f"{self._name} in")
            self._inside.set()
            await self._leave.wait()
            self._log.append(f"{self._name} out")

    def leave(self) -> None:
        self._leave.set()

    @property
    def holding(self) -> bool:
        """Inside the lease and not gone yet."""
        return self._inside.is_set() and self._task is not None and not self._task.done()

    async def __aenter__(self) -> Holder:
        self._task = asyncio.create_task(self._run())
        inside = asyncio.create_task(self._inside.wait())
        done, _ = await asyncio.wait(
            {self._task, inside}, timeout=BOUND, return_when=asyncio.FIRST_COMPLETED
        )
        inside.cancel()
        if self._task in done:
            self._task.result()  # re-raises whatever kept it from the lease
        if not self._inside.is_set():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            pytest.fail(f"{self._name} never got the lease on a free key")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._leave.set()
        await asyncio.wait_for(self._task, BOUND)

    async def gone(self) -> None:
        """Wait (bounded) until the holder has left the lease."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), BOUND)


async def take(
    locker: Locker, key: str, *, patient: bool = True, log: list[str] | None = None, name: str = ""
) -> None:
    """One short request: get the lease, note it, give it back."""
    async with locker.hold(key, patient=patient):
        if log is not None:
            log.append(f"{name} in")


def test_a_lease_is_busy_while_held_and_free_after(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            assert not await lock.busy(key)
            assert not lock.held_here(key)
            async with lock.hold(key):
                assert await lock.busy(key)
                assert lock.held_here(key)
                assert not lock.held_here(new_key())
            assert not await lock.busy(key)
            assert not lock.held_here(key)

    asyncio.run(scenario())


def test_the_next_holder_gets_a_released_lease_at_once(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            log: list[str] = []
            start = now()
            for name in ("first", "second", "third"):
                await take(lock, key, patient=False, log=log, name=name)
            assert log == ["first in", "second in", "third in"]
            assert now() - start < AT_ONCE
            assert not await lock.busy(key)

    asyncio.run(scenario())


def test_different_keys_never_block_each_other(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key, other = new_key(), new_key()
            log: list[str] = []
            async with Holder(lock, key, log, "first") as first:
                assert not await lock.busy(other)
                start = now()
                await take(lock, other, patient=False, log=log, name="other")
                await take(lock, other, patient=True, log=log, name="other again")
                assert now() - start < AT_ONCE
                assert not first.asked.is_set()
                assert first.holding
                assert await lock.busy(key)
            assert log == ["first in", "other in", "other again in", "first out"]

    asyncio.run(scenario())


def test_an_impatient_request_is_refused_at_once(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            log: list[str] = []
            async with Holder(lock, key, log, "first") as first:
                start = now()
                with pytest.raises(Locked) as refused:
                    await take(lock, key, patient=False, log=log, name="second")
                assert now() - start < AT_ONCE
                assert refused.value.status == 423
                # Not patient: nobody is asked to let go, the holder keeps the lease.
                assert not first.asked.is_set()
                assert first.holding
                assert await lock.busy(key)
            assert log == ["first in", "first out"]

    asyncio.run(scenario())


def test_a_patient_request_asks_the_holder_to_release_and_gets_the_lease(
    locker: OpenLocker,
) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            log: list[str] = []
            async with Holder(lock, key, log, "first", yields=True) as first:
                start = now()
                await take(lock, key, patient=True, log=log, name="second")
                assert now() - start < WAIT_SECONDS
                assert first.asked.is_set()
            assert log == ["first in", "first asked", "first out", "second in"]
            assert not await lock.busy(key)

    asyncio.run(scenario())


def test_a_patient_request_gives_up_with_locked_after_the_wait(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            log: list[str] = []
            async with Holder(lock, key, log, "first", yields=False) as first:
                start = now()
                with pytest.raises(Locked) as refused:
                    await take(lock, key, patient=True, log=log, name="second")
                waited = now() - start
                assert refused.value.status == 423
                assert WAIT_SECONDS * 0.9 <= waited < WAIT_SECONDS + 1.5
                # The release request reached the holder, which chose to keep the lease.
                assert first.asked.is_set()
                assert first.holding
                assert await lock.busy(key)
            assert log == ["first in", "first asked", "first out"]
            # The request that gave up holds nothing: the lease is free at once.
            assert not await lock.busy(key)
            await take(lock, key, patient=False, log=log, name="third")
            assert log[-1] == "third in"

    asyncio.run(scenario())


def test_a_holder_without_a_release_callback_is_waited_for(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            log: list[str] = []
            async with Holder(lock, key, log, "first", callback=False) as first:
                asyncio.get_running_loop().call_later(WAIT_SECONDS / 4, first.leave)
                await take(lock, key, patient=True, log=log, name="second")
            assert log == ["first in", "first out", "second in"]

    asyncio.run(scenario())


def test_the_lease_is_released_when_the_body_raises(locker: OpenLocker) -> None:
    class Boom(Exception):
        pass

    async def fail_inside(lock: Locker, key: str) -> None:
        async with lock.hold(key):
            assert await lock.busy(key)
            raise Boom

    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            with pytest.raises(Boom):
                await fail_inside(lock, key)
            assert not await lock.busy(key)
            log: list[str] = []
            start = now()
            await take(lock, key, patient=False, log=log, name="next")
            assert log == ["next in"]
            assert now() - start < AT_ONCE

    asyncio.run(scenario())


def test_the_release_request_reaches_the_current_holder_only(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            log: list[str] = []
            async with Holder(lock, key, log, "first") as first:
                pass  # held and given back before anyone asked
            async with Holder(lock, key, log, "second") as second:
                await take(lock, key, patient=True, log=log, name="third")
                assert second.asked.is_set()
            assert not first.asked.is_set()
            assert log == [
                "first in",
                "first out",
                "second in",
                "second asked",
                "second out",
                "third in",
            ]

    asyncio.run(scenario())


def test_holders_of_one_key_never_overlap(locker: OpenLocker) -> None:
    async def scenario() -> None:
        async with locker() as lock:
            key = new_key()
            inside = 0
            most = 0
            served: list[int] = []

            async def request(number: int) -> None:
                nonlocal inside, most
                async with lock.hold(key, patient=True):
                    inside += 1
                    most = max(most, inside)
                    await asyncio.sleep(0.02)
                    inside -= 1
                served.append(number)

            await asyncio.wait_for(asyncio.gather(*(request(n) for n in range(5))), BOUND)
            assert most == 1
            assert sorted(served) == [0, 1, 2, 3, 4]
            assert not await lock.busy(key)

    asyncio.run(scenario())


# Two PgLocker nodes sharing one database: leases and release requests cross nodes.


def test_nodes_see_each_others_leases(pg_nodes: OpenNode) -> None:
    async def scenario() -> None:
        async with pg_nodes() as a, pg_nodes() as b:
            key = new_key()
            log: list[str] = []
            assert not await b.busy(key)
            async with Holder(a, key, log, "a") as holder:
                assert await b.busy(key)
                assert a.held_here(key)
                assert not b.held_here(key)  # held, but not by a request of this node
                start = now()
                with pytest.raises(Locked):
                    await take(b, key, patient=False, log=log, name="b")
                assert now() - start < AT_ONCE
                assert not holder.asked.is_set()
                assert holder.holding
            assert not await b.busy(key)
            await take(b, key, patient=False, log=log, name="b")
            assert log == ["a in", "a out", "b in"]

    asyncio.run(scenario())


def test_a_release_request_reaches_the_holder_on_another_node(pg_nodes: OpenNode) -> None:
    async def scenario() -> None:
        async with pg_nodes() as a, pg_nodes() as b:
            key = new_key()
            log: list[str] = []
            async with Holder(a, key, log, "a", yields=True) as holder:
                start = now()
                await take(b, key, patient=True, log=log, name="b")
                assert now() - start < WAIT_SECONDS
                assert holder.asked.is_set()
            assert log == ["a in", "a asked", "a out", "b in"]

    asyncio.run(scenario())


def test_a_node_gives_up_when_the_other_keeps_the_lease(pg_nodes: OpenNode) -> None:
    async def scenario() -> None:
        async with pg_nodes() as a, pg_nodes() as b:
            key = new_key()
            log: list[str] = []
            async with Holder(a, key, log, "a", yields=False) as holder:
                start = now()
                with pytest.raises(Locked):
                    await take(b, key, patient=True, log=log, name="b")
                assert now() - start >= WAIT_SECONDS * 0.9
                assert holder.asked.is_set()
                assert holder.holding
                assert await b.busy(key)
            await take(b, key, patient=False, log=log, name="b")
            assert log == ["a in", "a asked", "a out", "b in"]

    asyncio.run(scenario())


def test_nodes_hold_different_keys_at_once(pg_nodes: OpenNode) -> None:
    async def scenario() -> None:
        async with pg_nodes() as a, pg_nodes() as b:
            key, other = new_key(), new_key()
            log: list[str] = []
            async with Holder(a, key, log, "a") as on_a, Holder(b, other, log, "b") as on_b:
                assert await a.busy(other)
                assert await b.busy(key)
                assert not on_a.asked.is_set()
                assert not on_b.asked.is_set()
            assert sorted(log) == ["a in", "a out", "b in", "b out"]

    asyncio.run(scenario())


def test_a_lease_held_past_its_ttl_stays_with_its_holder(pg_nodes: OpenNode) -> None:
    async def scenario() -> None:
        lease = 0.6
        async with pg_nodes(lease_seconds=lease) as a, pg_nodes(lease_seconds=lease) as b:
            key = new_key()
            log: list[str] = []
            async with Holder(a, key, log, "a", yields=False) as holder:
                for _ in range(3):  # 1.5 leases in all: renewed in the background
                    await asyncio.sleep(lease / 2)
                    assert await b.busy(key)
                    with pytest.raises(Locked):
                        await take(b, key, patient=False, log=log, name="b")
                assert not holder.asked.is_set()  # a lapsed lease would ask it to stop
                assert holder.holding
            await take(b, key, patient=False, log=log, name="b")
            assert log == ["a in", "a out", "b in"]

    asyncio.run(scenario())
