"""The executions this engine holds, as actors: every change goes through here, is logged,
then acted on.

Each held execution is an actor: its state (the fold of its log), a lock, and at most one
timer. A change, whether a report from a step, a runner taking a queued attempt, a cancel, an
advance or a timer, runs under the lock as: events from the command, then whatever `decide`
adds (queue the next step, retry, timeout, end), then one durable append, then the side
effects (the step queue, publishing to watchers). A failed append drops the actor; the next
touch reloads it from the log, which is the truth.

Executions are held under this engine's lease (leases.py). Every write is conditioned on the
lease: once another engine fenced it, this one lets go of everything it held. Commands find
their execution here, or the engine holding it, through routing.py.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services import jsonlog, tracing
from services.engine.clock import utc_now
from services.engine.dispatch import assignment
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.decisions import Decision, decide
from services.engine.domain.errors import (
    DiscoveryError,
    Fenced,
    NotOwner,
)
from services.engine.effects import Effects
from services.engine.estimates import StepDurations
from services.engine.hub import EventHub
from services.engine.leases import LeaseKeeper
from services.engine.metrics import EngineMetrics
from services.engine.step_queue import Poll, StepQueue
from services.engine.store.repository import Claim, ExecutionStore

log = logging.getLogger(__name__)

Produce = Callable[[ex.ExecutionState, datetime], list[ev.NewEvent]]

# Events of each held execution kept in memory for watchers that start (see watch.py).
RECENT_EVENTS = 256
# Executions loaded at once when this engine takes executions over (at start, after a fence,
# from a dead engine).
RECOVERIES_AT_ONCE = 32


@dataclass(frozen=True)
class RunnerSettings:
    engine_id: str
    lease_seconds: float = 15.0
    blob_threshold_bytes: int = 64 * 1024
    max_input_bytes: int = 1024 * 1024
    max_result_bytes: int = 256 * 1024
    max_custom_data_bytes: int = 16 * 1024
    max_blob_bytes: int = 64 * 1024 * 1024
    max_wait_seconds: float = 300.0
    # Progress reports one execution may log; beyond, reports are refused (the step goes on).
    max_progress_events: int = 10_000


class Released(NotOwner):
    """The actor was let go (terminal, lease lost, failed write) while a change waited."""


@dataclass
class Actor:
    state: ex.ExecutionState
    # The lease it was claimed under: once that lease is not this engine's any more, the
    # actor is not either.
    lease: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None
    # Its latest durable events, so that a watcher starting now needs no read of the log.
    recent: deque[ev.Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    # Commands on their way to the lock: an execution is not parked under them.
    commands: int = 0


class Actors:
    def __init__(
        self,
        store: ExecutionStore,
        hub: EventHub,
        settings: RunnerSettings,
        metrics: EngineMetrics,
    ) -> None:
        self.store = store
        self.hub = hub
        self.queue = StepQueue()
        self.durations = StepDurations(store)
        self.metrics = metrics
        self.effects = Effects(self.queue, self.durations, metrics)
        self._settings = settings
        self._actors: dict[str, Actor] = {}
        self._load_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.leases = LeaseKeeper(
            store,
            settings.engine_id,
            settings.lease_seconds,
            claim=self.claim,
            drop_all=self.drop_all,
            park_waiting=self._park_waiting,
            flush=self.durations.flush,
            spawn=self.spawn,
        )

    async def open(self, address: str) -> None:
        await self.leases.open(address)

    def stop_polls(self) -> None:
        """Answers every waiting poll now, and every later one at once: the engine stops."""
        self.queue.close()

    async def close(self) -> None:
        self.queue.close()
        await self.leases.stop()
        for actor in self._actors.values():
            if actor.timer is not None:
                actor.timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.durations.flush()
        self._actors.clear()
        await self.leases.release()

    def states(self) -> list[ex.ExecutionState]:
        """The state of every execution held now (not copies: read, never change)."""
        return [actor.state for actor in self._actors.values()]

    async def hold_started(self, state: ex.ExecutionState, lease: str) -> ex.ExecutionState:
        """Holds an execution just created under `lease` and makes its first change (its
        first step queued). A write that fails leaves it to the lease loop, which starts it."""
        actor = Actor(state, lease)
        self._actors[state.execution_id] = actor
        try:
            return await shielded(self.change(actor, lambda s, n: []))
        except DiscoveryError:
            # The execution exists and is leased to us; the lease loop will start it.
            self.spawn(self.retry_later(state.execution_id))
            return state

    async def hold_reopened(
        self, state: ex.ExecutionState, lease: str, produce: Produce
    ) -> ex.ExecutionState:
        """Holds an ended execution just reopened under `lease` (store.reopen) and logs
        `produce`'s events, which take it back to running. A write that fails leaves it to
        the lease loop, which finds it ended and lets it go again."""
        actor = Actor(state, lease)
        self._actors[state.execution_id] = actor
        return await shielded(self.change(actor, produce))

    def _park_waiting(self) -> None:
        for actor in list(self._actors.values()):
            if actor.state.status == ex.WAITING:
                self.spawn(self._park(actor))

    @property
    def held(self) -> int:
        return len(self._actors)

    def drop_all(self) -> None:
        if self._actors:
            log.error(
                "this engine's lease was fenced: letting go of its executions",
                extra={"held": len(self._actors)},
            )
        for execution_id in list(self._actors):
            self._drop(execution_id)

    async def claim(self) -> None:
        """Holds what this engine's lease claims: executions whose engine is gone, and its own
        dropped ones. Loaded side by side, so that their first writes share commits."""
        lease = self.store.lease_id
        slots = asyncio.Semaphore(RECOVERIES_AT_ONCE)

        async def recover(execution_id: str) -> None:
            async with slots:
                try:
                    await self._recover(execution_id, lease)
                except DiscoveryError as exc:
                    log.warning("recovery of %s failed: %s", execution_id, exc)

        claimed = await self.store.claim_orphans()
        await asyncio.gather(*(recover(i) for i in claimed if i not in self._actors))

    async def _recover(self, execution_id: str, lease: str | None) -> None:
        """Loads an execution claimed under `lease` and holds it, unless that lease is not
        this engine's any more."""
        async with self._load_lock:
            if execution_id in self._actors or lease != self.store.lease_id or lease is None:
                return
            state = await self.store.load_execution(execution_id)
            if state is None or lease != self.store.lease_id:
                return
            if state.is_terminal:
                # The projection missed the terminal write; this write also gives up the lease.
                await self.store.append([], state)
                return
            now = utc_now()
            for attempt in state.live_attempts():
                attempt.heartbeat_at = now
            actor = Actor(state, lease)
            self._actors[execution_id] = actor
        self.metrics.takeovers.inc()
        log.info("execution recovered", extra={"execution_id": execution_id})
        for attempt in state.live_attempts():
            if attempt.status == ex.ATTEMPT_QUEUED:
                self.effects.enqueue(state, attempt)
        # A running attempt needs nothing: its runner goes on reporting with its token, and
        # if the runner is gone too the heartbeat timeout retries the step.
        await self.change(actor, lambda s, n: [])

    def _drop(self, execution_id: str) -> None:
        # Only the engine that holds an execution hands its attempts out.
        self.queue.discard_execution(execution_id)
        actor = self._actors.pop(execution_id, None)
        if actor is not None and actor.timer is not None:
            actor.timer.cancel()

    def heard(self, execution_id: str, token: str) -> None:
        """A report of a running attempt is its runner's sign of life from the moment it
        arrives, not from when it gets its turn after the changes before it: an engine slow
        to write (its database busy) must not time out a runner that reported in time."""
        actor = self._actors.get(execution_id)
        attempt = actor.state.attempt_by_token(token) if actor is not None else None
        if attempt is None or attempt.status != ex.ATTEMPT_RUNNING or attempt.superseded:
            return
        now = utc_now()
        if attempt.heartbeat_at is None or attempt.heartbeat_at < now:
            attempt.heartbeat_at = now

    async def recover_if_ours(self, execution_id: str) -> Claim:
        # One execution by its _id: a touch of a dropped actor must not cost a scan of
        # every execution this engine holds.
        lease = self.store.lease_id
        claim = await self.store.claim_execution(execution_id)
        if claim.held:
            await self._recover(execution_id, lease)
        return claim

    async def change(self, actor: Actor, produce: Produce) -> ex.ExecutionState:
        state = actor.state
        # Whatever is logged meanwhile (by the effects, the store, a refusal) is about it.
        with jsonlog.about(state.execution_id, tracing.trace_id(state.traceparent)):
            return await self._change(actor, produce)

    async def _change(self, actor: Actor, produce: Produce) -> ex.ExecutionState:
        async with actor.lock:
            state = actor.state
            if self._actors.get(state.execution_id) is not actor:
                raise Released(f"execution {state.execution_id} was let go; retry")
            if actor.lease != self.store.lease_id:
                self._drop(state.execution_id)
                raise Released(f"execution {state.execution_id} was held under a fenced lease")
            now = utc_now()
            appended: list[ev.Event] = []
            for new in produce(state, now):
                appended.append(self._apply(state, new, now))
            decision = self._decide(state, appended, now)
            # A step queued now goes straight to a runner whose poll waits for it: its take
            # is logged in this same commit.
            matched = []
            for event in list(appended):
                if event.type == ev.STEP_QUEUED:
                    queued = ev.data_of(event, ev.StepQueuedData)
                    attempt = state.attempt(queued["order"], queued["attempt"])
                    poll = self._match(state, attempt)
                    if poll is not None:
                        started = ev.step_started(state, attempt, poll.runner_id, now)
                        appended.append(self._apply(state, started, now))
                        matched.append((poll, attempt))
            if matched:
                decision = self._decide(state, appended, now)
            if appended:
                try:
                    await self.store.append(appended, state)
                except DiscoveryError as exc:
                    for poll, _ in matched:
                        poll.release()
                    self._drop(state.execution_id)
                    if isinstance(exc, Fenced):
                        self.drop_all()
                    raise
                actor.recent.extend(appended)
                self.hub.publish(appended)
                self.effects.after(state, appended)
                if state.is_terminal:
                    self._drop(state.execution_id)
                for poll, attempt in matched:
                    poll.deliver(assignment(state, attempt, poll.runner_id))
            self._schedule(actor, decision.wake_at, now)
            if state.status == ex.WAITING:
                self.spawn(self._park(actor))
            return state

    async def _park(self, actor: Actor) -> None:
        """Lets go of an execution that waits for a command (`store.park`): however many
        manual runs wait, none is held in memory, and none is reloaded when engines restart.
        The command that comes leases it again to the engine it reaches."""
        async with actor.lock:
            state = actor.state
            if (
                self._actors.get(state.execution_id) is not actor
                or actor.lease != self.store.lease_id
                or state.status != ex.WAITING
                or actor.commands
            ):
                return
            try:
                parked = await self.store.park(state.execution_id)
            except DiscoveryError as exc:
                # Held a while longer: the lease loop parks what still waits.
                log.warning("execution %s not parked: %s", state.execution_id, exc)
                return
            if parked:
                log.debug("execution parked", extra={"execution_id": state.execution_id})
            self._drop(state.execution_id)

    def _decide(
        self, state: ex.ExecutionState, appended: list[ev.Event], now: datetime
    ) -> Decision:
        """Applies what the execution's rules add after a change, until they add nothing."""
        decision = decide(state, now)
        while decision.event is not None:
            appended.append(self._apply(state, decision.event, now))
            decision = decide(state, now)
        return decision

    def _match(self, state: ex.ExecutionState, attempt: ex.Attempt) -> Poll | None:
        if attempt.status != ex.ATTEMPT_QUEUED or not state.is_current(attempt):
            return None
        handler = state.workflow.steps[attempt.order - 1].handler
        return self.queue.match(handler, state.workflow.tenant_id)

    def _apply(self, state: ex.ExecutionState, new: ev.NewEvent, now: datetime) -> ev.Event:
        event = state.numbered(new, now)
        state.apply(event)
        return event

    def _schedule(self, actor: Actor, wake_at: datetime | None, now: datetime) -> None:
        if actor.timer is not None:
            actor.timer.cancel()
            actor.timer = None
        if wake_at is None or actor.state.is_terminal:
            return
        delay = max((wake_at - now).total_seconds(), 0.0) + 0.005
        loop = asyncio.get_running_loop()
        actor.timer = loop.call_later(delay, lambda: self.spawn(self._on_timer(actor)))

    async def _on_timer(self, actor: Actor) -> None:
        try:
            await self.change(actor, lambda s, n: [])
        except DiscoveryError as exc:
            log.warning("timer for %s: %s", actor.state.execution_id, exc)
            self.spawn(self.retry_later(actor.state.execution_id))

    async def retry_later(self, execution_id: str) -> None:
        """After a failed write the actor is dropped; bring it back once the store answers."""
        for delay in (0.5, 1, 2, 4, 8):
            await asyncio.sleep(delay)
            try:
                await self.recover_if_ours(execution_id)
                return
            except DiscoveryError as exc:
                log.warning("recovering %s: %s", execution_id, exc)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def holds(self, execution_id: str) -> bool:
        return execution_id in self._actors

    def get(self, execution_id: str) -> Actor | None:
        return self._actors.get(execution_id)

    async def snapshot(
        self, execution_id: str, after_seq: int | None
    ) -> tuple[ex.ExecutionState, list[ev.Event] | None] | None:
        """For watchers (watch.Held): a copy of a held execution's state, between changes,
        and its events after `after_seq` when they are all still in memory."""
        actor = self._actors.get(execution_id)
        if actor is None:
            return None
        async with actor.lock:
            if self._actors.get(execution_id) is not actor:
                return None
            state = copy.deepcopy(actor.state)
            if after_seq is None or after_seq >= state.last_seq:
                return state, []
            recent = actor.recent
            if recent and recent[0].seq <= after_seq + 1:
                return state, [e for e in recent if e.seq > after_seq]
            return state, None


async def shielded(change: Coroutine[Any, Any, ex.ExecutionState]) -> ex.ExecutionState:
    """The change, carried to its end even when the caller stops waiting for it; how it
    ended is then nobody's to hear, and is dropped here (not left as an unretrieved task
    exception: a refusal such as Released is expected)."""
    task = asyncio.ensure_future(change)
    task.add_done_callback(_forget)
    return await asyncio.shield(task)


def _forget(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
