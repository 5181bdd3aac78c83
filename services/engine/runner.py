"""Drives executions: every change goes through here, is logged, then acted on.

Each execution this engine holds is an actor: its state (the fold of its log), a lock, and
at most one timer. A change, whether a report from a step, a runner taking a queued attempt,
a cancel, an advance or a timer, runs under the lock as: events from the command, then
whatever `decide` adds (queue the next step, retry, timeout, end), then one durable append,
then the side effects (the step queue, publishing to watchers). A failed append drops the
actor; the next touch reloads it from the log, which is the truth.

Runners pull: a queued attempt waits in the step queue until a runner's poll takes it, and the
take is logged (`step_started`) before the runner is told, so an attempt is handed to one
runner at a time and a crash in between loses nothing. The queue also holds the attempts other
engines queued (queue_mirror.py): a poll takes those through the engine holding them.

Executions are held under this engine's lease (one per engine process, store/mongo.py). The
lease loop renews it, fences the leases of engines that stopped renewing theirs, and takes
their executions over from what is stored. Every write is conditioned on the lease: once
another engine fenced it, this one lets go of everything it held and takes a new lease. A
command for an execution another engine holds is answered there (HeldElsewhere, which the
RPC layer forwards).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.engine.clock import utc_now
from services.engine.domain import execution as ex
from services.engine.domain.errors import (
    AlreadyTerminal,
    DiscoveryError,
    EventLimitReached,
    ExecutionNotFound,
    Fenced,
    HeldElsewhere,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    NotOwner,
    NotWaiting,
    StaleAttempt,
    StoreUnavailable,
    Unavailable,
    WorkflowNotFound,
)
from services.engine.domain.payload import check_payload, check_progress
from services.engine.domain.workflow import Workflow, new_workflow
from services.engine.estimates import StepDurations
from services.engine.hub import EventHub
from services.engine.intake import check_input, request_hash, set_large_values_apart
from services.engine.step_queue import Poll, ReadyAttempt, StepQueue
from services.engine.store.repository import (
    BlobRef,
    Claim,
    ExecutionStore,
    Page,
    QueueDepth,
    RequestIdTaken,
    RunnerSeen,
)
from services.engine.watch import watch

log = logging.getLogger(__name__)

Produce = Callable[[ex.ExecutionState, datetime], list[ex.NewEvent]]
# Takes, at the engine at an address, a queued attempt of an execution it holds, for a runner
# that polled this one (rpc/forward.py).
TakeElsewhere = Callable[[str, "ReadyAttempt", str], Coroutine[Any, Any, "Assignment | None"]]


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


# Events of each held execution kept in memory for watchers that start (see watch.py).
RECENT_EVENTS = 256
# Workflow definitions kept in memory (they never change); the least recently used go.
MAX_CACHED_WORKFLOWS = 1000
# A runner that polled within this long counts as offering its handlers.
RUNNER_SEEN_SECONDS = 300.0
# How often a polling runner's record in the database is refreshed.
RUNNER_RECORD_SECONDS = 10.0
# Looks at an execution that moves between engines (ends, is parked, is taken over) while a
# command looks for it, before the command is refused as UNAVAILABLE.
MAX_COMMAND_LOOKS = 10
# Executions known to be held by another engine, kept so that the calls forwarded there need
# no read of the database each (a runner's reports reach any engine); the oldest go first.
MAX_KNOWN_HOLDERS = 10_000
# Executions loaded at once when this engine takes executions over (at start, after a fence,
# from a dead engine).
RECOVERIES_AT_ONCE = 32


class _Released(NotOwner):
    """The actor was let go (terminal, lease lost, failed write) while a change waited."""


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


@dataclass(frozen=True)
class _Holder:
    """Where another engine holds an execution, and until when its lease, as read, holds."""

    tenant_id: str
    address: str
    until: datetime


@dataclass
class _Actor:
    state: ex.ExecutionState
    # The lease it was claimed under: once that lease is not this engine's any more, the
    # actor is not either.
    lease: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None
    # Its latest durable events, so that a watcher starting now needs no read of the log.
    recent: deque[ex.Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    # Commands on their way to the lock: an execution is not parked under them.
    commands: int = 0


class Runner:
    def __init__(
        self,
        store: ExecutionStore,
        hub: EventHub,
        settings: RunnerSettings,
        take_elsewhere: TakeElsewhere | None = None,
    ) -> None:
        self.store = store
        self._take_elsewhere = take_elsewhere
        self.hub = hub
        self.queue = StepQueue()
        self._settings = settings
        # runner_id -> when its record was last written, and what it said then.
        self._runners_recorded: dict[str, tuple[float, frozenset[str]]] = {}
        self._actors: dict[str, _Actor] = {}
        self._load_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lease_task: asyncio.Task[None] | None = None
        self._reletting: asyncio.Future[None] | None = None
        self._address = ""
        self.durations = StepDurations(store)
        self._workflows: dict[tuple[str, str], Workflow] = {}
        # runner_id -> told the token of each attempt it took once that attempt ends here
        # (an in-process runner, such as the webhook pusher, counts its attempts in flight).
        self._end_listeners: dict[str, Callable[[str], None]] = {}
        self._holders: OrderedDict[str, _Holder] = OrderedDict()

    # --- life cycle ------------------------------------------------------------------

    async def open(self, address: str = "") -> None:
        """Takes a lease, and with it every unfinished execution an earlier process with this
        engine id held, and every one whose engine is gone. `address`: where the other
        engines reach this one, to send it the calls for the executions it holds."""
        self._address = address
        await self.store.acquire_lease(
            self._settings.engine_id,
            address,
            self._settings.lease_seconds,
            fence_namesakes=True,
        )
        await self.store.fence_expired_leases(utc_now())
        await self._claim()
        self._lease_task = asyncio.create_task(self._lease_loop(), name="lease-loop")

    def stop_polls(self) -> None:
        """Answers every waiting poll now, and every later one at once: the engine stops."""
        self.queue.close()

    async def close(self) -> None:
        self.queue.close()
        if self._lease_task is not None:
            self._lease_task.cancel()
        for actor in self._actors.values():
            if actor.timer is not None:
                actor.timer.cancel()
        tasks = [*self._tasks, *([self._lease_task] if self._lease_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.durations.flush()
        self._actors.clear()
        try:
            # Another replica may take them over now rather than after the lease runs out.
            await self.store.release_lease()
        except DiscoveryError as exc:
            log.warning("lease not released: %s", exc)

    @property
    def held(self) -> int:
        return len(self._actors)

    async def _lease_loop(self) -> None:
        period = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            try:
                try:
                    await self.store.renew_lease()
                except Fenced:
                    await self._relet()
                await self.store.fence_expired_leases(utc_now())
                await self._claim()
                for actor in list(self._actors.values()):
                    if actor.state.status == ex.WAITING:
                        self._spawn(self._park(actor))
            except DiscoveryError as exc:
                log.warning("lease renewal failed: %s", exc)
            except Exception:  # the loop that keeps the lease must outlive any one failure
                log.exception("lease renewal failed")
            await self.durations.flush()

    async def _relet(self) -> None:
        """Another engine fenced this one's lease (it went too long without renewing it):
        everything held under it is that engine's to take over now. Lets go of it all, takes
        a new lease, and claims what is left to claim. Callers that meet the fence together
        wait for one new lease."""
        if self._reletting is None:
            self._drop_all()
            self._reletting = asyncio.ensure_future(self._take_new_lease())
        await asyncio.shield(self._reletting)

    async def _take_new_lease(self) -> None:
        try:
            delay = 0.5
            while True:
                try:
                    await self.store.acquire_lease(
                        self._settings.engine_id,
                        self._address,
                        self._settings.lease_seconds,
                        fence_namesakes=False,
                    )
                    break
                except DiscoveryError as exc:
                    log.warning("new lease not taken: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._settings.lease_seconds / 3)
            log.warning("new lease taken after a fence")
        finally:
            self._reletting = None
        # Not awaited by the callers that met the fence: they need a lease, not the reload of
        # every execution, which takes a commit each and under load took longer than a
        # client's deadline (a start waited for it and failed a fault test once).
        self._spawn(self._claim_or_log())

    def _drop_all(self) -> None:
        if self._actors:
            log.error(
                "this engine's lease was fenced: letting go of its executions",
                extra={"held": len(self._actors)},
            )
        for execution_id in list(self._actors):
            self._drop(execution_id)

    async def _claim(self) -> None:
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

    async def _claim_or_log(self) -> None:
        try:
            await self._claim()
        except DiscoveryError as exc:
            log.warning("claim after a new lease failed (the lease loop tries again): %s", exc)

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
            state.last_heartbeat = utc_now()
            actor = _Actor(state, lease)
            self._actors[execution_id] = actor
        log.info("execution recovered", extra={"execution_id": execution_id})
        current = state.current_attempt()
        if current is not None and current.status == ex.ATTEMPT_QUEUED:
            self._enqueue(state, current)
        # A running attempt needs nothing: its runner goes on reporting with its token, and
        # if the runner is gone too the heartbeat timeout retries the step.
        await self._change(actor, lambda s, n: [])

    def _drop(self, execution_id: str) -> None:
        # Only the engine that holds an execution hands its attempts out.
        self.queue.discard_execution(execution_id)
        actor = self._actors.pop(execution_id, None)
        if actor is not None and actor.timer is not None:
            actor.timer.cancel()

    # --- the core: change, log, act --------------------------------------------------

    async def _actor(self, execution_id: str, tenant_id: str) -> _Actor:
        actor = self._actors.get(execution_id)
        if actor is not None:
            return actor
        claim = await self._recover_if_ours(execution_id)
        actor = self._actors.get(execution_id)
        if actor is not None:
            return actor
        if claim is not None and claim.owner_address is not None:
            if claim.owner_until is not None:
                self._holders[execution_id] = _Holder(
                    tenant_id, claim.owner_address, claim.owner_until
                )
                self._holders.move_to_end(execution_id)
                if len(self._holders) > MAX_KNOWN_HOLDERS:
                    self._holders.popitem(last=False)
            raise HeldElsewhere(execution_id, claim.owner_address)
        raise _Released(f"execution {execution_id} moved; look again")

    def _known_holder(self, execution_id: str) -> _Holder | None:
        """The engine that held the execution when last looked at, while its lease as read
        then holds: an execution it let go since is looked for again by that engine."""
        holder = self._holders.get(execution_id)
        if holder is not None and holder.until <= utc_now():
            del self._holders[execution_id]
            return None
        return holder

    def forget_holder(self, execution_id: str) -> None:
        """The engine that held it did not answer: the next call looks in the database."""
        self._holders.pop(execution_id, None)

    def _heard(self, execution_id: str, token: str) -> None:
        """A report of a running attempt is its runner's sign of life from the moment it
        arrives, not from when it gets its turn after the changes before it: an engine slow
        to write (its database busy) must not time out a runner that reported in time."""
        actor = self._actors.get(execution_id)
        attempt = actor.state.current_attempt() if actor is not None else None
        if (
            actor is None
            or attempt is None
            or attempt.status != ex.ATTEMPT_RUNNING
            or actor.state.attempt_by_token(token) is not attempt
        ):
            return
        now = utc_now()
        if actor.state.last_heartbeat is None or actor.state.last_heartbeat < now:
            actor.state.last_heartbeat = now

    async def _recover_if_ours(self, execution_id: str) -> Claim:
        # One execution by its _id: a touch of a dropped actor must not cost a scan of
        # every execution this engine holds.
        lease = self.store.lease_id
        claim = await self.store.claim_execution(execution_id)
        if claim.held:
            await self._recover(execution_id, lease)
        return claim

    async def _command(
        self, execution_id: str, produce: Produce, tenant: str | None
    ) -> ex.ExecutionState:
        """Runs a command against an execution this engine holds or can take; one held by
        another engine raises HeldElsewhere. A caller of `tenant` (None: any) sees another
        tenant's execution as missing before anything says where it is held."""
        for _ in range(MAX_COMMAND_LOOKS):
            try:
                actor = self._actors.get(execution_id)
                if actor is None:
                    holder = self._known_holder(execution_id)
                    if holder is not None:
                        if tenant not in (None, holder.tenant_id):
                            raise ExecutionNotFound(execution_id)
                        raise HeldElsewhere(execution_id, holder.address)
                    state = await self.store.load_execution(execution_id)
                    if state is None or tenant not in (None, state.workflow.tenant_id):
                        raise ExecutionNotFound(execution_id)
                    if state.is_terminal:
                        # Nothing changes a terminal execution: a command can only verify or
                        # refuse.
                        if produce(state, utc_now()):
                            raise AlreadyTerminal(f"execution {execution_id} is {state.status}")
                        return state
                    actor = await self._actor(execution_id, state.workflow.tenant_id)
                actor.commands += 1
                try:
                    # Shielded: once a change has begun, a caller that gives up (deadline,
                    # disconnect) must not leave the actor half-way between memory and log.
                    return await _shielded(self._change(actor, produce))
                finally:
                    actor.commands -= 1
            except HeldElsewhere:
                raise
            except Fenced:
                await self._relet()
            except (_Released, NotOwner):
                continue  # it ended, or moved, while the command waited: look again
        raise Unavailable(f"execution {execution_id} is moving between engines; retry")

    async def _change(self, actor: _Actor, produce: Produce) -> ex.ExecutionState:
        async with actor.lock:
            state = actor.state
            if self._actors.get(state.execution_id) is not actor:
                raise _Released(f"execution {state.execution_id} was let go; retry")
            if actor.lease != self.store.lease_id:
                self._drop(state.execution_id)
                raise _Released(f"execution {state.execution_id} was held under a fenced lease")
            now = utc_now()
            appended: list[ex.Event] = []
            for new in produce(state, now):
                appended.append(self._apply(state, new, now))
            decision = self._decide(state, appended, now)
            # A step queued now goes straight to a runner whose poll waits for it: its take
            # is logged in this same commit.
            matched = []
            for event in list(appended):
                if event.type == ex.STEP_QUEUED:
                    attempt = state.attempt(event.data["order"], event.data["attempt"])
                    poll = self._match(state, attempt)
                    if poll is not None:
                        started = ex.step_started(state, attempt, poll.runner_id, now)
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
                        self._drop_all()
                    raise
                actor.recent.extend(appended)
                self.hub.publish(appended)
                self._after(actor, appended)
                for poll, attempt in matched:
                    poll.deliver(self._assignment(state, attempt, poll.runner_id))
            self._schedule(actor, decision.wake_at, now)
            if state.status == ex.WAITING:
                self._spawn(self._park(actor))
            return state

    async def _park(self, actor: _Actor) -> None:
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
        self, state: ex.ExecutionState, appended: list[ex.Event], now: datetime
    ) -> ex.Decision:
        """Applies what the execution's rules add after a change, until they add nothing."""
        decision = ex.decide(state, now)
        while decision.event is not None:
            appended.append(self._apply(state, decision.event, now))
            decision = ex.decide(state, now)
        return decision

    def _match(self, state: ex.ExecutionState, attempt: ex.Attempt) -> Poll | None:
        if attempt.status != ex.ATTEMPT_QUEUED or attempt is not state.current_attempt():
            return None
        handler = state.workflow.steps[attempt.order - 1].handler
        return self.queue.match(handler, state.workflow.tenant_id)

    def _apply(self, state: ex.ExecutionState, new: ex.NewEvent, now: datetime) -> ex.Event:
        event = state.numbered(new, now)
        state.apply(event)
        return event

    def _after(self, actor: _Actor, events: list[ex.Event]) -> None:
        state = actor.state
        for event in events:
            level = _log_level(event)
            if log.isEnabledFor(level):
                extra = {"execution_id": state.execution_id, "seq": event.seq, "event": event.type}
                log.log(level, event.type, extra=extra)
            if event.type == ex.STEP_QUEUED:
                attempt = state.attempt(event.data["order"], event.data["attempt"])
                if attempt.status == ex.ATTEMPT_QUEUED:
                    self._enqueue(state, attempt)
            elif event.type == ex.STEP_STARTED:
                # Taken, maybe by a runner of another engine: no poll here may take it again.
                attempt = state.attempt(event.data["order"], event.data["attempt"])
                self.queue.discard(attempt.token)
            elif event.type == ex.STEP_FINISHED:
                # A runner running the attempt learns that it ended from its next report.
                attempt = state.attempt(event.data["order"], event.data["attempt"])
                self.queue.discard(attempt.token)
                listener = self._end_listeners.get(attempt.runner_id or "")
                if listener is not None:
                    listener(attempt.token)
                if attempt.status == ex.ATTEMPT_SUCCESS and attempt.finished_at is not None:
                    # From the queue on: estimates count the wait for a runner too.
                    self.durations.record(
                        state.workflow.workflow_id,
                        attempt.step_name,
                        (attempt.finished_at - attempt.queued_at).total_seconds(),
                    )
        if state.is_terminal:
            self._drop(state.execution_id)

    def _schedule(self, actor: _Actor, wake_at: datetime | None, now: datetime) -> None:
        if actor.timer is not None:
            actor.timer.cancel()
            actor.timer = None
        if wake_at is None or actor.state.is_terminal:
            return
        delay = max((wake_at - now).total_seconds(), 0.0) + 0.005
        loop = asyncio.get_running_loop()
        actor.timer = loop.call_later(delay, lambda: self._spawn(self._on_timer(actor)))

    async def _on_timer(self, actor: _Actor) -> None:
        try:
            await self._change(actor, lambda s, n: [])
        except DiscoveryError as exc:
            log.warning("timer for %s: %s", actor.state.execution_id, exc)
            self._spawn(self._retry_later(actor.state.execution_id))

    async def _retry_later(self, execution_id: str) -> None:
        """After a failed write the actor is dropped; bring it back once the store answers."""
        for delay in (0.5, 1, 2, 4, 8):
            await asyncio.sleep(delay)
            try:
                await self._recover_if_ours(execution_id)
                return
            except DiscoveryError as exc:
                log.warning("recovering %s: %s", execution_id, exc)
        # The lease loop keeps trying after this.

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the step queue ---------------------------------------------------------------

    def _enqueue(self, state: ex.ExecutionState, attempt: ex.Attempt) -> None:
        self.queue.put(
            ReadyAttempt(
                execution_id=state.execution_id,
                token=attempt.token,
                handler=state.workflow.steps[attempt.order - 1].handler,
                tenant=state.workflow.tenant_id,
                priority=state.priority,
                queued_at=attempt.queued_at,
            )
        )

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
        while not self.queue.closed:
            ready: list[ReadyAttempt] = []
            while (
                len(ready) < max_attempts and (item := self.queue.pop(handlers, tenant)) is not None
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
            handed = await self.queue.wait(runner_id, handlers, max_attempts, remaining, tenant)
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

        def produce(state: ex.ExecutionState, now: datetime) -> list[ex.NewEvent]:
            attempt = state.attempt_by_token(token)
            if (
                attempt is None
                or attempt.status != ex.ATTEMPT_QUEUED
                or attempt is not state.current_attempt()
            ):
                raise _NotQueued(token)
            return [ex.step_started(state, attempt, runner_id, now)]

        try:
            state = await self._command(execution_id, produce, None)
        except HeldElsewhere:
            raise
        except (_NotQueued, ExecutionNotFound, AlreadyTerminal, NotOwner):
            return None
        attempt = state.attempt_by_token(token)
        assert attempt is not None
        return self._assignment(state, attempt, runner_id)

    def _assignment(
        self, state: ex.ExecutionState, attempt: ex.Attempt, runner_id: str
    ) -> Assignment:
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
        )

    def on_attempt_end(self, runner_id: str, listener: Callable[[str], None] | None) -> None:
        """Calls `listener(attempt_token)` whenever an attempt `runner_id` took ends here,
        however it ends (finished, failed, timed out, cancelled); None stops it."""
        if listener is None:
            self._end_listeners.pop(runner_id, None)
        else:
            self._end_listeners[runner_id] = listener

    def running_attempts(self, runner_id: str) -> list[Assignment]:
        """The attempts `runner_id` took that are running in the executions held here: what
        an in-process runner still has in flight after the engine restarted."""
        running = []
        for actor in self._actors.values():
            attempt = actor.state.current_attempt()
            if (
                attempt is not None
                and attempt.status == ex.ATTEMPT_RUNNING
                and attempt.runner_id == runner_id
            ):
                running.append(self._assignment(actor.state, attempt, runner_id))
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

    # --- side effects ----------------------------------------------------------------

    async def typical_step_seconds(self, workflow_id: str) -> dict[str, float]:
        return await self.durations.typical_seconds(workflow_id)

    # --- workflows -------------------------------------------------------------------

    async def create_workflow(
        self,
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        *,
        tenant: str,
        input_schema: dict[str, Any] | None = None,
    ) -> Workflow:
        workflow = new_workflow(
            name, description, steps, utc_now(), tenant_id=tenant, input_schema=input_schema
        )
        offered = {h for runner in await self.runners() for h in runner.handlers}
        for i, step in enumerate(workflow.steps):
            if step.handler not in offered:
                raise InvalidArgument(
                    f"steps[{i}].handler",
                    f"no step runner offers a handler named {step.handler!r}"
                    f" (offered: {', '.join(sorted(offered)) or 'none: no runner has polled'})",
                )
        await self.store.create_workflow(workflow)
        return workflow

    async def list_workflows(
        self, *, tenant: str, page_size: int, page_token: str, name: str
    ) -> Page[Workflow]:
        """Oldest first; `name`, when given, only those named so."""
        return await self.store.list_workflows(tenant, page_size, page_token, name)

    async def get_workflow(self, workflow_id: str, *, tenant: str) -> Workflow:
        # Definitions never change once created: a start need not read its workflow again.
        workflow = self._workflows.pop((tenant, workflow_id), None)
        if workflow is None and workflow_id:
            workflow = await self.store.get_workflow(tenant, workflow_id)
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        if len(self._workflows) >= MAX_CACHED_WORKFLOWS:
            del self._workflows[next(iter(self._workflows))]
        self._workflows[(tenant, workflow_id)] = workflow  # the most recently used last
        return workflow

    # --- executions: commands from clients -------------------------------------------

    async def start(
        self,
        workflow_id: str,
        document: dict[str, Any],
        manual: bool,
        request_id: str,
        *,
        tenant: str,
        priority: int = ex.DEFAULT_PRIORITY,
    ) -> ex.ExecutionState:
        if len(request_id) > 128:
            raise InvalidArgument("request_id", "at most 128 characters")
        if priority not in ex.PRIORITIES:
            raise InvalidArgument(
                "priority", f"must be {ex.PRIORITIES[0]} to {ex.PRIORITIES[-1]} (0: the default)"
            )
        fingerprint = request_hash(workflow_id, manual, document) if request_id else None
        if request_id:
            existing = await self.store.find_by_request_id(tenant, request_id)
            if existing is not None:
                return self._same_request(existing, fingerprint)
        workflow = await self.get_workflow(workflow_id, tenant=tenant)
        if workflow.input_schema is not None:
            # The document as the client sent it, before any value is set apart as a blob:
            # a refused start stores nothing.
            workflow.input_schema.check(document)
        threshold = self._settings.blob_threshold_bytes
        check_input(document, threshold, self._settings.max_input_bytes)
        execution_id = str(uuid.uuid4())
        try:
            kept = await set_large_values_apart(self.store, execution_id, document, threshold)
            now = utc_now()
            state = ex.ExecutionState(
                execution_id=execution_id,
                workflow=workflow,
                mode=ex.MANUAL if manual else ex.AUTOMATIC,
                input=kept,
                created_at=now,
                updated_at=now,
                request_id=request_id or None,
                request_hash=fingerprint,
                priority=priority,
            )
            if self.store.lease_id is None:
                await self._relet()
            lease = self.store.lease_id
            await self.store.create_execution(state)
        except RequestIdTaken:
            await self.store.delete_blobs(execution_id)
            existing = await self.store.find_by_request_id(tenant, request_id)
            if existing is None:  # pragma: no cover - the index says it exists
                raise StoreUnavailable("request_id is taken but not readable") from None
            return self._same_request(existing, fingerprint)
        except BaseException:
            # What was set apart must not stay without its execution; a task of its own, as
            # the caller may be gone (deadline, disconnect).
            self._spawn(self._delete_blobs_of_refused(execution_id))
            raise
        actor = _Actor(state, lease or "")
        self._actors[execution_id] = actor
        try:
            return await _shielded(self._change(actor, lambda s, n: []))
        except DiscoveryError:
            # The execution exists and is leased to us; the lease loop will start it.
            self._spawn(self._retry_later(execution_id))
            return state

    async def _delete_blobs_of_refused(self, execution_id: str) -> None:
        try:
            # A write that failed on the network may have gone in all the same.
            if await self.store.load_execution(execution_id) is None:
                await self.store.delete_blobs(execution_id)
        except DiscoveryError as exc:
            log.warning("blobs of refused start %s not deleted: %s", execution_id, exc)

    @staticmethod
    def _same_request(existing: ex.ExecutionState, fingerprint: str | None) -> ex.ExecutionState:
        if existing.request_hash != fingerprint:
            raise IdempotencyConflict(
                f"request_id {existing.request_id!r} was used for another request",
                metadata={"execution_id": existing.execution_id},
            )
        return existing

    async def list_executions(
        self, *, tenant: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[ex.ExecutionState]:
        """Newest first, as summaries (no payloads); `workflow_id`, when given, its only."""
        return await self.store.list_executions(tenant, page_size, page_token, workflow_id)

    async def started_before(self, request_id: str, *, tenant: str) -> bool:
        """Whether a start with this idempotency key was accepted already."""
        return await self.store.find_by_request_id(tenant, request_id) is not None

    async def tenant_of(self, execution_id: str) -> str | None:
        """The tenant an execution belongs to (what its blobs count against); None for one
        that does not exist."""
        state = await self.store.load_execution(execution_id)
        return state.workflow.tenant_id if state is not None else None

    async def get(self, execution_id: str, *, tenant: str) -> ex.ExecutionState:
        # From the store even when held here: a read says what the database holds, and
        # while it is down the caller is told so rather than shown this engine's view alone.
        state = await self.store.load_execution(execution_id) if execution_id else None
        if state is None or not visible(state, tenant):
            raise ExecutionNotFound(execution_id)
        return state

    async def cancel(self, execution_id: str, reason: str, *, tenant: str) -> ex.ExecutionState:
        def produce(state: ex.ExecutionState, now: datetime) -> list[ex.NewEvent]:
            if not visible(state, tenant):
                raise ExecutionNotFound(execution_id)
            if state.is_terminal:
                raise AlreadyTerminal(f"execution {execution_id} is already {state.status}")
            events: list[ex.NewEvent] = []
            current = state.current_attempt()
            if current is not None and current.is_live:
                events.append(
                    ex.step_finished(
                        current,
                        ex.ATTEMPT_CANCELLED,
                        error={"reason": "cancelled", "message": reason or "cancelled"},
                        now=now,
                    )
                )
            events.append(ex.NewEvent(ex.WORKFLOW_CANCELLED, {"reason": reason or "cancelled"}))
            return events

        return await self._command(execution_id, produce, tenant)

    async def advance(
        self, execution_id: str, data: dict[str, Any], *, tenant: str
    ) -> ex.ExecutionState:
        check_payload(data, "data", self._settings.max_result_bytes)

        def produce(state: ex.ExecutionState, now: datetime) -> list[ex.NewEvent]:
            if not visible(state, tenant):
                raise ExecutionNotFound(execution_id)
            if state.status != ex.WAITING:
                raise NotWaiting(f"execution {execution_id} is {state.status}, not waiting")
            return [ex.NewEvent(ex.WORKFLOW_ADVANCED, {"data": data})]

        return await self._command(execution_id, produce, tenant)

    async def wait_for_end(
        self, execution_id: str, after_seq: int, seconds: float, *, tenant: str
    ) -> bool:
        """Whether the execution reached a terminal state within `seconds`."""
        seconds = min(seconds, self._settings.max_wait_seconds)
        try:
            async with asyncio.timeout(seconds):
                async for item in self.watch(execution_id, after_seq, tenant=tenant):
                    if isinstance(item, ex.Event) and item.is_terminal:
                        return True
        except TimeoutError:
            return False
        return True

    def watch(
        self, execution_id: str, after_seq: int | None, *, tenant: str
    ) -> AsyncGenerator[Any]:
        return watch(self.store, self.hub, execution_id, after_seq, tenant=tenant, held=self)

    def holds(self, execution_id: str) -> bool:
        return execution_id in self._actors

    async def snapshot(
        self, execution_id: str, after_seq: int | None
    ) -> tuple[ex.ExecutionState, list[ex.Event] | None] | None:
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

    # --- executions: reports from steps ----------------------------------------------

    async def report_progress(
        self,
        execution_id: str,
        step_name: str,
        token: str,
        reports: list[dict[str, Any]],
        *,
        tenant: str | None = None,
    ) -> bool:
        """Logs the progress reports, in order (none: only notes the heartbeat); True when
        the step should stop. A runner of one `tenant` reports only that tenant's steps."""
        self._heard(execution_id, token)
        for report in reports:
            check_progress(report, self._settings.max_custom_data_bytes)
        cancelled = False

        def produce(state: ex.ExecutionState, now: datetime) -> list[ex.NewEvent]:
            nonlocal cancelled
            attempt = _reporting_attempt(state, step_name, token, tenant)
            if attempt.status == ex.ATTEMPT_CANCELLED:
                cancelled = True
                return []
            if attempt.status != ex.ATTEMPT_RUNNING or attempt is not state.current_attempt():
                raise StaleAttempt(
                    f"attempt {attempt.attempt} of {step_name!r} is {attempt.status}",
                    metadata={"execution_id": execution_id, "step": step_name},
                )
            state.last_heartbeat = now  # a refused report is still a sign of life
            events = _progress_events(attempt, reports)
            limit = self._settings.max_progress_events
            if events and state.progress_events + len(events) > limit:
                raise EventLimitReached(
                    f"execution {execution_id} has logged {state.progress_events} progress"
                    f" reports, the most one execution may ({limit}); its steps go on,"
                    " their further progress is not logged",
                    metadata={"execution_id": execution_id, "limit": str(limit)},
                )
            return events

        await self._command(execution_id, produce, tenant)
        return cancelled

    async def complete_step(
        self,
        execution_id: str,
        step_name: str,
        token: str,
        success: bool,
        result: dict[str, Any],
        error: dict[str, Any] | None,
        *,
        progress: list[dict[str, Any]] | None = None,
        tenant: str | None = None,
    ) -> None:
        """Logs the attempt's end, after the progress it reported last (in the same commit)."""
        self._heard(execution_id, token)
        check_payload(result, "result", self._settings.max_result_bytes)
        for report in progress or ():
            check_progress(report, self._settings.max_custom_data_bytes)

        def produce(state: ex.ExecutionState, now: datetime) -> list[ex.NewEvent]:
            attempt = _reporting_attempt(state, step_name, token, tenant)
            if attempt.status != ex.ATTEMPT_RUNNING:
                if attempt.same_outcome(success, result):
                    return []  # a retried report of what is already logged
                raise StaleAttempt(
                    f"attempt {attempt.attempt} of {step_name!r} already ended {attempt.status}",
                    metadata={"execution_id": execution_id, "step": step_name},
                )
            if attempt is not state.current_attempt():
                raise StaleAttempt(f"attempt {attempt.attempt} of {step_name!r} is not current")
            # A completion is never refused: what its progress would log past the limit goes.
            room = max(self._settings.max_progress_events - state.progress_events, 0)
            events = _progress_events(attempt, progress or [])[:room]
            if success:
                end = ex.step_finished(attempt, ex.ATTEMPT_SUCCESS, output=result, now=now)
                return [*events, end]
            failure = {"reason": "step_failed", "type": "", "message": "", **(error or {})}
            # A runner that enforced the step's timeout itself says so; it is the same outcome
            # as the engine's own timeout.
            status = ex.ATTEMPT_TIMED_OUT if failure["reason"] == "timeout" else ex.ATTEMPT_FAILED
            end = ex.step_finished(attempt, status, output=result, error=failure, now=now)
            return [*events, end]

        await self._command(execution_id, produce, tenant)

    async def _running_attempt(self, execution_id: str, token: str, tenant: str | None) -> None:
        # The attempt token is what binds the runner to this execution.
        state = await self.store.load_execution(execution_id) if execution_id else None
        if state is None or tenant not in (None, state.workflow.tenant_id):
            raise ExecutionNotFound(execution_id)
        attempt = state.attempt_by_token(token) if token else None
        if attempt is None or attempt.status != ex.ATTEMPT_RUNNING:
            raise StaleAttempt("the attempt token is not a running attempt's")

    async def read_blob(
        self, execution_id: str, token: str, blob_id: str, *, tenant: str | None = None
    ) -> AsyncIterator[bytes]:
        await self._running_attempt(execution_id, token, tenant)
        return await self.store.read_blob(execution_id, blob_id)

    async def write_blob(
        self,
        execution_id: str,
        token: str,
        chunks: AsyncIterator[bytes],
        *,
        tenant: str | None = None,
    ) -> BlobRef:
        await self._running_attempt(execution_id, token, tenant)
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._settings.max_blob_bytes:
                raise InvalidArgument(
                    "chunk", f"a blob may hold at most {self._settings.max_blob_bytes} bytes"
                )
            parts.append(chunk)
        return await self.store.put_blob(execution_id, b"".join(parts))


async def _shielded(change: Coroutine[Any, Any, ex.ExecutionState]) -> ex.ExecutionState:
    """The change, carried to its end even when the caller stops waiting for it; how it
    ended is then nobody's to hear, and is dropped here (not left as an unretrieved task
    exception: a refusal such as _Released is expected)."""
    task = asyncio.ensure_future(change)
    task.add_done_callback(_forget)
    return await asyncio.shield(task)


def _forget(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def visible(state: ex.ExecutionState, tenant: str) -> bool:
    """Whether a caller of `tenant` may see the execution: another tenant's execution must
    look exactly like a missing one."""
    return state.workflow.tenant_id == tenant


def _log_level(event: ex.Event) -> int:
    """How executions begin and end, and steps that did not succeed, are logged at info; the
    rest is in the event log, and at debug here (a line per event was a tenth of the
    engine's time under load)."""
    if event.type.startswith("workflow_"):
        return logging.INFO
    if event.type == ex.STEP_FINISHED and event.data.get("status") != ex.ATTEMPT_SUCCESS:
        return logging.INFO
    return logging.DEBUG


def _progress_events(attempt: ex.Attempt, reports: list[dict[str, Any]]) -> list[ex.NewEvent]:
    """The reports as events of the attempt, leaving out any that would take its percentage
    back (reports can arrive out of order when retried, and progress never goes back) and
    any that repeats the one before it (a retried report says nothing new)."""
    events = []
    previous = attempt.last_progress
    latest = (previous or {}).get("percentage", 0.0)
    for report in reports:
        percentage = report.get("percentage", 0.0)
        if percentage < latest or report == previous:
            continue
        latest = percentage
        previous = report
        data = {
            "step_name": attempt.step_name,
            "order": attempt.order,
            "attempt": attempt.attempt,
            "progress": report,
        }
        events.append(ex.NewEvent(ex.STEP_PROGRESS, data))
    return events


def _reporting_attempt(
    state: ex.ExecutionState, step_name: str, token: str, tenant: str | None
) -> ex.Attempt:
    if tenant not in (None, state.workflow.tenant_id):
        # A runner of another tenant: the execution is as missing as to its clients.
        raise ExecutionNotFound(state.execution_id)
    if state.workflow.step_named(step_name) is None:
        raise NotFound(
            f"execution {state.execution_id} has no step {step_name!r}",
            metadata={"step": step_name},
        )
    attempt = state.attempt_by_token(token) if token else None
    if attempt is None or attempt.step_name != step_name:
        raise StaleAttempt(
            f"the token is not an attempt of {step_name!r}",
            metadata={"execution_id": state.execution_id, "step": step_name},
        )
    return attempt
