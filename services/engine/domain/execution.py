"""The execution state machine.

An execution is the fold of its event log: `ExecutionState.apply(event)` is the only way
state changes, so the status a client reads, the state the engine recovers after a crash and
the history a watcher replays are one and the same thing.

`decide(state, now)` is level-triggered: given the state and the time it says which event
comes next (queue the next step, retry, time out, finish) or when to look again. The runner
calls it after every change and on every timer, and after a crash it simply calls it again.

An attempt lives in two phases. `step_queued` puts it in the step queue, where it waits,
without a deadline unless its step sets a schedule-to-start timeout, for a runner to ask for
work; `step_started` records that a runner took it, and from then on its timeout and
heartbeat timeout run.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.engine.domain.workflow import StepDefinition, Workflow

# Execution status values, as the legacy contract spells them.
PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

AUTOMATIC = "automatic"
MANUAL = "manual"

# Attempt status values.
ATTEMPT_QUEUED = "queued"
ATTEMPT_RUNNING = "running"
ATTEMPT_SUCCESS = "success"
ATTEMPT_FAILED = "failed"
ATTEMPT_TIMED_OUT = "timed_out"
ATTEMPT_CANCELLED = "cancelled"

# Event types; the legacy WebSocket event names.
WORKFLOW_STARTED = "workflow_started"
STEP_QUEUED = "step_queued"
STEP_STARTED = "step_started"
STEP_PROGRESS = "step_progress"
STEP_FINISHED = "step_finished"
WORKFLOW_WAITING = "workflow_waiting"
WORKFLOW_ADVANCED = "workflow_advanced"
WORKFLOW_COMPLETED = "workflow_completed"
WORKFLOW_FAILED = "workflow_failed"
WORKFLOW_CANCELLED = "workflow_cancelled"
EVENT_TYPES = (
    WORKFLOW_STARTED,
    STEP_QUEUED,
    STEP_STARTED,
    STEP_PROGRESS,
    STEP_FINISHED,
    WORKFLOW_WAITING,
    WORKFLOW_ADVANCED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    WORKFLOW_CANCELLED,
)
TERMINAL_EVENTS = frozenset({WORKFLOW_COMPLETED, WORKFLOW_FAILED, WORKFLOW_CANCELLED})
# A step that failed for one of these reasons would fail the same way again: no retry. A
# step that waited past its schedule-to-start timeout found no runner; another attempt
# would wait in the same queue.
NON_RETRYABLE_REASONS = frozenset({"invalid_input", "schedule_to_start_timeout"})
# Place in the step queue within a tenant: 1 runs first.
PRIORITIES = range(1, 6)
DEFAULT_PRIORITY = 3


@dataclass(frozen=True)
class Event:
    """One entry of an execution's log."""

    execution_id: str
    seq: int
    type: str
    time: datetime
    data: dict[str, Any]
    # Only on step_queued (step_started in logs written before the step queue): the
    # capability a step runner must present. Never shown to watchers or in the status.
    attempt_token: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


@dataclass(frozen=True)
class NewEvent:
    """An event decided but not yet numbered."""

    type: str
    data: dict[str, Any]
    attempt_token: str | None = None


@dataclass
class Attempt:
    step_name: str
    order: int
    attempt: int
    token: str
    queued_at: datetime
    # When a runner took it; None while it is queued (and for one cancelled in the queue).
    started_at: datetime | None
    input_payload: dict[str, Any]
    status: str = ATTEMPT_RUNNING
    finished_at: datetime | None = None
    output_payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    last_progress: dict[str, Any] | None = None
    runner_id: str | None = None
    # The events that carry its input (step_started) and output (step_finished): where a
    # status document that leaves its payloads out finds them.
    started_seq: int | None = None
    finished_seq: int | None = None
    _payload_bytes: int | None = field(default=None, repr=False, compare=False)

    @property
    def payload_bytes(self) -> int:
        """The size of its input and output as JSON (computed once)."""
        if self._payload_bytes is None:
            self._payload_bytes = len(_json(self.input_payload)) + len(_json(self.output_payload))
        return self._payload_bytes

    @property
    def duration_seconds(self) -> float | None:
        """How long it ran, from its start (not its time in the queue) to its end."""
        if self.finished_at is None or self.started_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def is_live(self) -> bool:
        """Queued or running: the attempt has not ended."""
        return self.status in (ATTEMPT_QUEUED, ATTEMPT_RUNNING)

    def same_outcome(self, success: bool, output: dict[str, Any]) -> bool:
        """Whether a completion report repeats the one already recorded."""
        if success:
            return self.status == ATTEMPT_SUCCESS and self.output_payload == output
        ended = (ATTEMPT_FAILED, ATTEMPT_TIMED_OUT)
        return self.status in ended and (self.output_payload or {}) == output


@dataclass
class ExecutionState:
    execution_id: str
    workflow: Workflow
    mode: str
    input: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    request_id: str | None = None
    request_hash: str | None = None
    priority: int = DEFAULT_PRIORITY
    status: str = PENDING
    dynamic_properties: dict[str, Any] = field(default_factory=dict)
    step_index: int | None = None
    history: list[Attempt] = field(default_factory=list)
    last_seq: int = 0
    error: dict[str, Any] | None = None
    # Progress events logged: each execution may log at most so many (RunnerSettings).
    progress_events: int = 0
    # Volatile: heartbeats are not logged. After a restart the clock starts again, which
    # gives a live step runner one heartbeat period to show itself.
    last_heartbeat: datetime | None = None

    # --- reading -------------------------------------------------------------------

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def current_step(self) -> StepDefinition | None:
        if self.step_index is None or self.is_terminal:
            return None
        return self.workflow.steps[self.step_index]

    def current_attempt(self) -> Attempt | None:
        """The latest attempt of the current step, if it has one."""
        if self.step_index is None or not self.history:
            return None
        last = self.history[-1]
        return last if last.order == self.step_index + 1 else None

    def attempt_by_token(self, token: str) -> Attempt | None:
        for attempt in reversed(self.history):
            if secrets.compare_digest(attempt.token, token):
                return attempt
        return None

    def step_input(self) -> dict[str, Any]:
        """What a step receives: the execution's input, then the context on top."""
        return {**self.input, **self.dynamic_properties}

    # --- the fold ------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        if event.seq != self.last_seq + 1:
            raise ValueError(
                f"event {event.seq} applied to {self.execution_id} at seq {self.last_seq}"
            )
        data = event.data
        kind = event.type
        if kind == WORKFLOW_STARTED:
            self.status = RUNNING
        elif kind == WORKFLOW_WAITING:
            self.status = WAITING
            self.step_index = int(data["order"]) - 1
        elif kind == WORKFLOW_ADVANCED:
            self.status = RUNNING
            self.dynamic_properties.update(data.get("data") or {})
        elif kind == STEP_QUEUED:
            self.status = RUNNING
            self.step_index = int(data["order"]) - 1
            self.history.append(_queued_attempt(event))
        elif kind == STEP_STARTED:
            self.status = RUNNING
            self.step_index = int(data["order"]) - 1
            taken = self._find_attempt(int(data["order"]), int(data["attempt"]))
            if taken is None:
                # Logged before the step queue existed: the attempt began with its start.
                taken = _queued_attempt(event)
                self.history.append(taken)
            taken.status = ATTEMPT_RUNNING
            taken.started_at = event.time
            taken.input_payload = data.get("input_payload") or {}
            taken.started_seq = event.seq
            taken._payload_bytes = None
            taken.runner_id = data.get("runner_id")
            self.last_heartbeat = event.time
        elif kind == STEP_PROGRESS:
            attempt = self.attempt(int(data["order"]), int(data["attempt"]))
            attempt.last_progress = data["progress"]
            self.progress_events += 1
        elif kind == STEP_FINISHED:
            attempt = self.attempt(int(data["order"]), int(data["attempt"]))
            attempt.status = data["status"]
            attempt.finished_at = event.time
            attempt.output_payload = data.get("output")
            attempt.finished_seq = event.seq
            attempt._payload_bytes = None
            attempt.error = data.get("error")
            if attempt.status == ATTEMPT_SUCCESS:
                self.dynamic_properties.update(attempt.output_payload or {})
        elif kind == WORKFLOW_COMPLETED:
            self.status = COMPLETED
        elif kind == WORKFLOW_FAILED:
            self.status = FAILED
            self.error = data.get("error")
        elif kind == WORKFLOW_CANCELLED:
            self.status = CANCELLED
            self.error = {"reason": "cancelled", "message": data.get("reason") or "cancelled"}
        else:
            raise ValueError(f"unknown event type {kind!r}")
        self.last_seq = event.seq
        self.updated_at = event.time

    def attempt(self, order: int, number: int) -> Attempt:
        """Attempt `number` of the step at `order` (both 1-based)."""
        found = self._find_attempt(order, number)
        if found is None:
            raise ValueError(f"{self.execution_id}: no attempt {number} of step {order}")
        return found

    def _find_attempt(self, order: int, number: int) -> Attempt | None:
        for attempt in reversed(self.history):
            if attempt.order == order and attempt.attempt == number:
                return attempt
        return None

    def numbered(self, new: NewEvent, time: datetime) -> Event:
        return Event(
            execution_id=self.execution_id,
            seq=self.last_seq + 1,
            type=new.type,
            time=time,
            data=new.data,
            attempt_token=new.attempt_token,
        )


def _queued_attempt(event: Event) -> Attempt:
    data = event.data
    return Attempt(
        step_name=data["step"],
        order=int(data["order"]),
        attempt=int(data["attempt"]),
        token=event.attempt_token or "",
        queued_at=event.time,
        started_at=None,
        input_payload={},
        status=ATTEMPT_QUEUED,
    )


# --- deciding what comes next ----------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    event: NewEvent | None = None
    wake_at: datetime | None = None


def step_queued(state: ExecutionState, index: int, attempt: int) -> NewEvent:
    step = state.workflow.steps[index]
    return NewEvent(
        STEP_QUEUED,
        {
            "step": step.name,
            "step_id": step.step_id,
            "order": index + 1,
            "attempt": attempt,
            "handler": step.handler,
            "priority": state.priority,
        },
        attempt_token=secrets.token_urlsafe(24),
    )


def step_started(
    state: ExecutionState, attempt: Attempt, runner_id: str, now: datetime
) -> NewEvent:
    """A runner took a queued attempt. The legacy step_started keys come first; the input is
    the context as it is now, which nothing changes while a step waits in the queue."""
    step = state.workflow.steps[attempt.order - 1]
    return NewEvent(
        STEP_STARTED,
        {
            "step": step.name,
            "step_id": step.step_id,
            "order": attempt.order,
            "attempt": attempt.attempt,
            "input_payload": state.step_input(),
            "runner_id": runner_id,
            "queued_seconds": (now - attempt.queued_at).total_seconds(),
        },
    )


def step_finished(
    attempt: Attempt,
    status: str,
    *,
    output: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    now: datetime,
) -> NewEvent:
    return NewEvent(
        STEP_FINISHED,
        {
            "step": attempt.step_name,
            "order": attempt.order,
            "attempt": attempt.attempt,
            "status": status,
            "output": output,
            "error": error,
            "duration_seconds": (
                (now - attempt.started_at).total_seconds() if attempt.started_at else 0.0
            ),
        },
    )


def decide(state: ExecutionState, now: datetime) -> Decision:
    """The next event the execution needs, or when to look again."""
    if state.is_terminal or state.status == WAITING:
        return Decision()
    if state.status == PENDING:
        return Decision(NewEvent(WORKFLOW_STARTED, {"mode": state.mode}))

    steps = state.workflow.steps
    current = state.current_attempt()
    if state.step_index is None or (current is not None and current.status == ATTEMPT_SUCCESS):
        following = 0 if state.step_index is None else state.step_index + 1
        if following == len(steps):
            return Decision(
                NewEvent(WORKFLOW_COMPLETED, {"dynamic_properties": state.dynamic_properties})
            )
        if state.mode == MANUAL:
            step = steps[following]
            return Decision(
                NewEvent(
                    WORKFLOW_WAITING,
                    {"step": step.name, "step_id": step.step_id, "order": following + 1},
                )
            )
        return Decision(step_queued(state, following, 1))

    if current is None:  # advanced past a manual wait; the step has not run yet
        return Decision(step_queued(state, state.step_index, 1))

    step = steps[state.step_index]
    if current.status == ATTEMPT_QUEUED:
        # Waiting for a runner is the normal state of a busy system, not an error: only the
        # step's own schedule-to-start timeout ends it.
        if step.schedule_to_start_timeout_seconds is None:
            return Decision()
        expires = current.queued_at + timedelta(seconds=step.schedule_to_start_timeout_seconds)
        if now >= expires:
            return Decision(
                step_finished(
                    current,
                    ATTEMPT_TIMED_OUT,
                    error={
                        "reason": "schedule_to_start_timeout",
                        "message": "no runner took the step within"
                        f" {step.schedule_to_start_timeout_seconds:g} s",
                    },
                    now=now,
                )
            )
        return Decision(wake_at=expires)
    if current.status == ATTEMPT_RUNNING:
        assert current.started_at is not None
        hard = current.started_at + timedelta(seconds=step.timeout_seconds)
        heartbeat = _last_heartbeat(current, state) + timedelta(
            seconds=step.heartbeat_timeout_seconds
        )
        if now >= hard:
            return Decision(
                step_finished(
                    current,
                    ATTEMPT_TIMED_OUT,
                    error={
                        "reason": "timeout",
                        "message": f"step took longer than {step.timeout_seconds:g} s",
                    },
                    now=now,
                )
            )
        if now >= heartbeat:
            return Decision(
                step_finished(
                    current,
                    ATTEMPT_TIMED_OUT,
                    error={
                        "reason": "heartbeat_timeout",
                        "message": f"no heartbeat for {step.heartbeat_timeout_seconds:g} s",
                    },
                    now=now,
                )
            )
        return Decision(wake_at=min(hard, heartbeat))

    # The attempt failed or timed out: retry after the backoff, or fail the execution.
    retryable = (current.error or {}).get("reason") not in NON_RETRYABLE_REASONS
    if retryable and current.attempt < step.retry.max_attempts:
        assert current.finished_at is not None
        retry_at = current.finished_at + timedelta(seconds=step.retry.backoff(current.attempt))
        if now >= retry_at:
            return Decision(step_queued(state, state.step_index, current.attempt + 1))
        return Decision(wake_at=retry_at)
    error = dict(current.error or {"reason": "step_failed", "message": "step failed"})
    error["step_name"] = current.step_name
    error["attempts"] = current.attempt
    return Decision(NewEvent(WORKFLOW_FAILED, {"error": error}))


def _last_heartbeat(attempt: Attempt, state: ExecutionState) -> datetime:
    assert attempt.started_at is not None
    if state.last_heartbeat is None or state.last_heartbeat < attempt.started_at:
        return attempt.started_at
    return state.last_heartbeat


# --- progress of the whole execution ---------------------------------------------------


@dataclass(frozen=True)
class Progress:
    total_steps: int
    completed_steps: int
    failed_steps: int
    percentage: float
    estimated_remaining_seconds: float | None
    is_completed: bool
    is_failed: bool
    is_running: bool


def progress(
    state: ExecutionState, typical_seconds: Mapping[str, float], now: datetime
) -> Progress:
    """Whole-execution progress; `typical_seconds` maps step names to past mean durations."""
    steps = state.workflow.steps
    done = {a.order for a in state.history if a.status == ATTEMPT_SUCCESS}
    failed = 1 if state.status == FAILED and state.error and state.error.get("step_name") else 0
    current = state.current_attempt()
    fraction = 0.0
    if current is not None and current.status == ATTEMPT_RUNNING and current.last_progress:
        fraction = float(current.last_progress.get("percentage") or 0.0) / 100.0
    if state.status == COMPLETED:
        percentage = 100.0
    else:
        percentage = round((len(done) + fraction) / len(steps) * 100.0, 2)
    return Progress(
        total_steps=len(steps),
        completed_steps=len(done),
        failed_steps=failed,
        percentage=percentage,
        estimated_remaining_seconds=estimate_remaining(state, typical_seconds, now),
        is_completed=state.status == COMPLETED,
        is_failed=state.status in (FAILED, CANCELLED),
        is_running=state.status in (PENDING, RUNNING, WAITING),
    )


def estimate_remaining(
    state: ExecutionState, typical_seconds: Mapping[str, float], now: datetime
) -> float | None:
    """The running step's own ETA, or its typical time less the time it has had, plus the
    typical times of the steps after it. None when any part is unknown.

    `typical_seconds` counts a step from the time it was queued to its end, so a queued
    step's wait for a runner, and the waits to come, are in the estimate."""
    if state.status == COMPLETED:
        return 0.0
    if state.is_terminal:
        return None
    steps = state.workflow.steps
    start = 0 if state.step_index is None else state.step_index
    remaining = 0.0
    current = state.current_attempt()
    if current is not None and current.is_live:
        reported = (current.last_progress or {}).get("estimated_remaining_seconds")
        if reported is not None:
            remaining += float(reported)
        elif steps[start].name in typical_seconds:
            elapsed = (now - current.queued_at).total_seconds()
            remaining += max(typical_seconds[steps[start].name] - elapsed, 0.0)
        else:
            return None
        start += 1
    elif current is not None and current.status == ATTEMPT_SUCCESS:
        start += 1
    for step in steps[start:]:
        if step.name not in typical_seconds:
            return None
        remaining += typical_seconds[step.name]
    return round(remaining, 1)


def step_state(state: ExecutionState, index: int) -> str:
    """The state of one step as ListExecutionSteps shows it."""
    attempts = [a for a in state.history if a.order == index + 1]
    if not attempts:
        if state.status == WAITING and state.step_index == index:
            return "waiting"
        return "pending"
    last = attempts[-1]
    if last.status in (ATTEMPT_FAILED, ATTEMPT_TIMED_OUT) and not state.is_terminal:
        return "retrying"
    return last.status


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
