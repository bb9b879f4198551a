"""Durable operation runner: claims due operations, runs their handler, retries with backoff
and jitter, gives up after the configured attempts (or at once when the handler says it is
`Exhausted`); any node resumes a crashed node's work."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tusingest.domain import Operation, OperationKind, OperationStatus
from tusingest.errors import Exhausted, TransientError
from tusingest.logcontext import about
from tusingest.pipeline.jobstate import JobState
from tusingest.ports import OperationStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerPolicy:
    max_attempts: int
    attempt_timeout: float  # seconds one attempt may take
    lease_seconds: float  # how long a claim holds before another node may take over
    poll_seconds: float = 1.0
    concurrency: int = 4  # claimed operations running at once
    # Operations adopted from completing requests running at once; past it they wait their
    # turn on this node, first come first served.
    adopt_limit: int = 128
    base_delay: float = 1.0
    max_delay: float = 60.0


# What a handler uses to persist the step it reached and its whole state (what retries must
# reuse); the state replaces the one persisted before.
Progress = Callable[[str, JobState], Awaitable[None]]


class Handler(Protocol):
    """Runs the operations of one kind; reads `op.state` into its own typed state."""

    async def run(self, op: Operation, progress: Progress) -> JobState:
        """Do (or finish) the work and return the final state; raise to retry. Must be
        idempotent."""
        ...

    async def give_up(self, op: Operation, error: str) -> None:
        """The last attempt failed (`op.state` is the latest persisted): record the failure
        where users see it, undo what must not stay."""
        ...


class Runner:
    """Runs operations on this node; `wake()` after enqueuing runs them at once."""

    def __init__(
        self,
        store: OperationStore,
        handlers: Mapping[OperationKind, Handler],
        policy: RunnerPolicy,
        *,
        node: str | None = None,
        on_end: Callable[[OperationKind, str], None] | None = None,
    ) -> None:
        self._store = store
        self._on_end = on_end or (lambda _kind, _status: None)
        self._handlers = handlers
        self._policy = policy
        self.node = node or f"node-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._adopted: set[asyncio.Task[None]] = set()  # also in `_running`
        self._backlog: collections.deque[tuple[Operation, float]] = collections.deque()
        self._handing_back: set[asyncio.Task[None]] = set()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def adopt(self, op_id: str, kind: OperationKind, subject: str) -> None:
        """Run an operation this node queued already claimed (its first attempt), without
        claiming it again. Past `adopt_limit` running, it waits for a slot behind those
        adopted before it; a node that stops hands it to the queue instead."""
        op = Operation(op_id, kind, subject, OperationStatus.RUNNING, None, 1, {})
        if self._stopping:
            self._hand_back(op, "handed back: its node stopped")
        elif self._backlog or len(self._adopted) >= self._policy.adopt_limit:
            self._backlog.append((op, asyncio.get_running_loop().time()))
        else:
            self._run_adopted(op)

    def _run_adopted(self, op: Operation) -> None:
        task = self._start(op)
        self._adopted.add(task)
        task.add_done_callback(self._next_adopted)  # after `_adopted.discard`

    def _next_adopted(self, _done: asyncio.Task[None]) -> None:
        """A slot is free: the operation adopted longest ago takes it."""
        if self._stopping:
            self._hand_back_waiting()
            return
        now = asyncio.get_running_loop().time()
        while self._backlog and len(self._adopted) < self._policy.adopt_limit:
            op, since = self._backlog.popleft()
            if now - since > self._policy.lease_seconds / 2:
                # Its lease may lapse before it ends: the queue takes it (any node, at once).
                self._hand_back(op, "queued: its node was busy")
            else:
                self._run_adopted(op)

    def _hand_back_waiting(self) -> None:
        """The node stops: every adopted operation still waiting goes to the queue."""
        while self._backlog:
            self._hand_back(self._backlog.popleft()[0], "handed back: its node stopped")

    def _hand_back(self, op: Operation, why: str) -> None:
        task = asyncio.create_task(self._defer(op, why))
        self._handing_back.add(task)
        task.add_done_callback(self._handing_back.discard)

    async def _defer(self, op: Operation, why: str) -> None:
        try:
            await self._store.defer(op, self.node, why, 0)
        except Exception as exc:  # the lease lapses, then any node claims it
            log.warning("could not queue operation %s (%s): %s", op.id, op.subject, exc)
            return
        self._wake.set()

    async def wait(self, subject: str, seconds: float) -> bool:
        """Wait until an operation on `subject` ends on this node; False on timeout."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(subject, []).append(future)
        try:
            async with asyncio.timeout(seconds):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(subject, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(subject, None)

    def announce(self, subject: str) -> None:
        """Wake those waiting on `subject` now (a handler whose outcome is committed before
        its operation ends); each looks at the subject's state again."""
        for future in self._waiters.pop(subject, []):
            if not future.done():
                future.set_result(None)

    async def stop(self, grace_seconds: float) -> None:
        """Claim nothing more; let running operations finish for up to `grace_seconds`, then
        cancel the rest, which hand their lease back (another node resumes them at once)."""
        self._stopping = True
        self._wake.set()
        self._hand_back_waiting()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace_seconds)
        for task in set(self._running):
            task.cancel()
        await asyncio.gather(*self._running, *self._handing_back, return_exceptions=True)

    async def run_forever(self) -> None:
        try:
            while not self._stopping:
                try:
                    claimed = await self._claim()
                except Exception:
                    log.exception("could not claim operations; retrying")
                    claimed = 0
                if claimed:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._policy.poll_seconds):
                        await self._wake.wait()
        finally:
            if not self._stopping:  # cancelled: no grace. `stop` gives running work its grace.
                self._stopping = True  # nothing starts any more; what waits is handed back
                self._hand_back_waiting()
                for task in set(self._running):
                    task.cancel()
                await asyncio.gather(*self._running, *self._handing_back, return_exceptions=True)

    async def _claim(self) -> int:
        if self._stopping:
            return 0
        claimed = self._running - self._adopted  # adopted operations have slots of their own
        free = self._policy.concurrency - len(claimed)
        if free <= 0:
            await asyncio.wait(claimed, return_when=asyncio.FIRST_COMPLETED)
            return 1
        ops = await self._store.claim(
            self.node, self._policy.lease_seconds, free, kinds=self._handlers.keys()
        )
        for op in ops:
            self._start(op)
        return len(ops)

    def _start(self, op: Operation) -> asyncio.Task[None]:
        task = asyncio.create_task(self._execute(op))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(self._adopted.discard)
        return task

    async def _execute(self, op: Operation) -> None:
        handler = self._handlers[op.kind]  # only kinds with a handler are claimed
        if op.kind is OperationKind.INGEST:
            about(upload_id=op.subject)
        elif op.kind is not OperationKind.WEBHOOK:  # a delivery is about a file or an upload
            about(file_id=op.subject)
        try:
            latest = op.state

            async def progress(step: str, state: JobState) -> None:
                nonlocal latest
                latest = state.to_json()
                await self._store.progress(op, self.node, step, latest, self._policy.lease_seconds)

            try:
                async with asyncio.timeout(self._policy.attempt_timeout):
                    outcome = await handler.run(op, progress)
            except asyncio.CancelledError:
                # This node stops: hand the lease back so that another node resumes at once.
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self._store.defer(op, self.node, "handed back: its node stopped", 0)
                    )
                raise
            except Exception as exc:
                if isinstance(exc, TransientError) and exc.retry_after is not None:
                    # Waiting for a dependency to come back (storage): not a failed attempt.
                    log.warning(
                        "operation %s (%s %s) waits %.0fs: %s",
                        op.id, op.kind, op.subject, exc.retry_after, exc,
                    )  # fmt: skip
                    await self._store.defer(op, self.node, f"{exc.code}: {exc}", exc.retry_after)
                    self.wake_later(exc.retry_after)
                    return
                # give_up sees what this attempt persisted (e.g. placements to compensate).
                attempted = dataclasses.replace(op, state=latest)
                await self._after_failure(
                    attempted,
                    handler,
                    f"{type(exc).__name__}: {exc}",
                    final=isinstance(exc, Exhausted),
                )
                return
            # The work is done: a stop arriving now must not lose its record.
            await asyncio.shield(self._store.finish(op, self.node, outcome.to_json()))
            self._on_end(op.kind, "success")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("operation %s (%s %s) could not be recorded", op.id, op.kind, op.subject)
        finally:
            self.announce(op.subject)

    async def _after_failure(
        self, op: Operation, handler: Handler, error: str, *, final: bool
    ) -> None:
        if final or op.attempts >= self._policy.max_attempts:
            log.error("operation %s (%s %s) failed for good: %s", op.id, op.kind, op.subject, error)
            await handler.give_up(op, error)
            await self._store.fail(op, self.node, error)
            self._on_end(op.kind, "failed")
            return
        delay = min(self._policy.max_delay, self._policy.base_delay * 2 ** (op.attempts - 1))
        delay *= random.uniform(0.5, 1.5)  # jitter: nodes retrying together drift apart
        log.warning(
            "operation %s (%s %s) attempt %d failed: %s; retry in %.1fs",
            op.id, op.kind, op.subject, op.attempts, error, delay,
        )  # fmt: skip
        await self._store.retry(op, self.node, error, delay)
        self.wake_later(delay)

    def wake_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._wake.set)
