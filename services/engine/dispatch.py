"""Handing queued attempts to the runners that poll: the step queue's side of the engine.

Runners pull: a queued attempt waits in the step queue (step_queue.py, filled by the actors)
until a runner's poll takes it, and the take is logged (`step_started`) before the runner is
told, so an attempt is handed to one runner at a time and a crash in between loses nothing.
The queue also holds the attempts other engines queued (queue_mirror.py): a poll takes those
through the engine holding them. Each poll also keeps the runner's record, by which every
engine knows who polls and which handlers are offered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from services import tracing
from services.engine.clock import utc_now
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import (
    AlreadyTerminal,
    DiscoveryError,
    ExecutionNotFound,
    HeldElsewhere,
    NotOwner,
)
from services.engine.step_queue import ReadyAttempt
from services.engine.store.repository import ExecutionStore, QueueDepth, RunnerSeen

if TYPE_CHECKING:  # actors.py imports `assignment` from here
    from services.engine.actors import Actors
    from services.engine.routing import Commands

log = logging.getLogger(__name__)

# Takes, at the engine at an address, a queued attempt of an execution it holds, for a runner
# that polled this one (rpc/forward.py).
TakeElsewhere = Callable[[str, ReadyAttempt, str], Coroutine[Any, Any, "Assignment | None"]]
# A runner that polled within this long counts as offering its handlers.
RUNNER_SEEN_SECONDS = 300.0
# How often a polling runner's record in the database is refreshed.
RUNNER_RECORD_SECONDS = 10.0


class _NotQueued(Exception):
    """The attempt left the queue (cancelled, timed out, taken) before a runner took it."""


@dataclass(frozen=True)
class Assignment:
    """A queued attempt, taken for the runner that polled: everything it needs to run it."""

    execution_id: str
    step_name: str
    handler: str
    attempt: int
    attempt_token: str
    input_payload: dict[str, Any]
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    queued_at: datetime
    started_at: datetime
    # The attempt's span in its execution's trace (a W3C traceparent); empty if untraced.
    traceparent: str = ""


def assignment(state: ex.ExecutionState, attempt: ex.Attempt, runner_id: str) -> Assignment:
    assert attempt.started_at is not None
    step = state.workflow.steps[attempt.order - 1]
    log.debug(
        "step taken",
        extra={
            "execution_id": state.execution_id,
            "step": attempt.step_name,
            "attempt": attempt.attempt,
            "runner": runner_id,
            "queued_seconds": (attempt.started_at - attempt.queued_at).total_seconds(),
        },
    )
    return Assignment(
        execution_id=state.execution_id,
        step_name=attempt.step_name,
        handler=step.handler,
        attempt=attempt.attempt,
        attempt_token=attempt.token,
        input_payload=attempt.input_payload,
        timeout_seconds=step.timeout_seconds,
        heartbeat_timeout_seconds=step.heartbeat_timeout_seconds,
        queued_at=attempt.queued_at,
        started_at=attempt.started_at,
        traceparent=tracing.attempt_traceparent(
            state.traceparent, state.execution_id, attempt.order, attempt.attempt
        ),
    )


class Dispatch:
    def __init__(
        self,
        actors: Actors,
        commands: Commands,
        store: ExecutionStore,
        take_elsewhere: TakeElsewhere | None = None,
    ) -> None:
        self._actors = actors
        self._commands = commands
        self.store = store
        self._take_elsewhere = take_elsewhere
        # runner_id -> when its record was last written, and what it said then.
        self._runners_recorded: dict[str, tuple[float, frozenset[str]]] = {}

    def on_attempt_end(self, runner_id: str, listener: Callable[[str], None] | None) -> None:
        """Calls `listener(attempt_token)` whenever an attempt `runner_id` took ends here,
        however it ends (finished, failed, timed out, cancelled); None stops it."""
        self._actors.effects.on_attempt_end(runner_id, listener)

    async def poll(
        self,
        runner_id: str,
        handlers: frozenset[str],
        max_attempts: int,
        wait_seconds: float,
        tenant: str | None = None,
    ) -> list[Assignment]:
        """Takes up to `max_attempts` queued attempts of `handlers` (of `tenant`'s executions
        only, unless None) for the runner, waiting up to `wait_seconds` for the first; empty
        when none came."""
        await self._record_runner(runner_id, handlers, max_attempts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        queue = self._actors.queue
        while not queue.closed:
            ready: list[ReadyAttempt] = []
            while (
                len(ready) < max_attempts
                and (item := self._actors.queue.pop(handlers, tenant)) is not None
            ):
                ready.append(item)
            if ready:
                # Taken together, the takes share one commit of the event log.
                results = await asyncio.gather(
                    *(self._take(item, runner_id) for item in ready), return_exceptions=True
                )
                taken = [r for r in results if isinstance(r, Assignment)]
                failures = [r for r in results if isinstance(r, BaseException)]
                if taken:
                    return taken
                if failures:
                    raise failures[0]
                continue  # every one had left the queue meanwhile: look again
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            handed = await self._actors.queue.wait(
                runner_id, handlers, max_attempts, remaining, tenant
            )
            if handed:
                return handed
        return []

    async def _take(self, item: ReadyAttempt, runner_id: str) -> Assignment | None:
        try:
            return await self.take(item.execution_id, item.token, runner_id)
        except HeldElsewhere as held:
            if self._take_elsewhere is None:
                return None
            return await self._take_elsewhere(held.address, item, runner_id)

    async def take(self, execution_id: str, token: str, runner_id: str) -> Assignment | None:
        """Takes the queued attempt `token` of an execution this engine holds (or can take)
        for `runner_id`; None when it is no longer queued. HeldElsewhere when another engine
        holds the execution."""

        def produce(state: ex.ExecutionState, now: datetime) -> list[ev.NewEvent]:
            attempt = state.attempt_by_token(token)
            if (
                attempt is None
                or attempt.status != ex.ATTEMPT_QUEUED
                or not state.is_current(attempt)
            ):
                raise _NotQueued(token)
            return [ev.step_started(state, attempt, runner_id, now)]

        try:
            state = await self._commands.command(execution_id, produce, None)
        except HeldElsewhere:
            raise
        except (_NotQueued, ExecutionNotFound, AlreadyTerminal, NotOwner):
            return None
        attempt = state.attempt_by_token(token)
        assert attempt is not None
        return assignment(state, attempt, runner_id)

    def running_attempts(self, runner_id: str) -> list[Assignment]:
        """The attempts `runner_id` took that are running in the executions held here: what
        an in-process runner still has in flight after the engine restarted."""
        running = []
        for state in self._actors.states():
            for attempt in state.live_attempts():
                if attempt.status == ex.ATTEMPT_RUNNING and attempt.runner_id == runner_id:
                    running.append(assignment(state, attempt, runner_id))
        return running

    async def offer(self, runner_id: str, handlers: frozenset[str], free_slots: int) -> None:
        """Records a runner that offers `handlers` but takes nothing now (no free slot),
        so that it stays listed and its handlers stay offered."""
        await self._record_runner(runner_id, handlers, free_slots)

    async def _record_runner(
        self, runner_id: str, handlers: frozenset[str], free_slots: int
    ) -> None:
        """Keeps the runner's record fresh, at most every few seconds: it is how any engine
        knows which handlers are offered (CreateWorkflow) and who polls (GetStepQueue)."""
        now = asyncio.get_running_loop().time()
        last = self._runners_recorded.get(runner_id)
        if last is not None and last[1] == handlers and now - last[0] < RUNNER_RECORD_SECONDS:
            return
        try:
            await self.store.record_runner(
                RunnerSeen(runner_id, tuple(sorted(handlers)), free_slots, utc_now())
            )
        except DiscoveryError as exc:
            log.warning("runner %s not recorded: %s", runner_id, exc)
            return
        self._runners_recorded[runner_id] = (now, handlers)
        if len(self._runners_recorded) > 10_000:
            self._runners_recorded.clear()  # a bound, not an expected state

    async def queue_depths(self, tenant: str) -> tuple[list[QueueDepth], list[QueueDepth]]:
        """(the tenant's ready attempts by handler, every tenant's by handler)."""
        depths = await self.store.queue_depths()
        by_handler: dict[str, QueueDepth] = {}
        for d in depths:
            total = by_handler.get(d.handler)
            by_handler[d.handler] = QueueDepth(
                d.handler,
                "",
                d.ready + (total.ready if total else 0),
                min(d.oldest_queued_at, total.oldest_queued_at) if total else d.oldest_queued_at,
            )
        mine = [d for d in depths if d.tenant == tenant]
        return mine, sorted(by_handler.values(), key=lambda d: d.handler)

    async def runners(self) -> list[RunnerSeen]:
        since = utc_now() - timedelta(seconds=RUNNER_SEEN_SECONDS)
        return await self.store.list_runners(since)
