"""The execution state machine.

An execution is the fold of its event log: `ExecutionState.apply(event)` is the only way
state changes, so the status a client reads, the state the engine recovers after a crash and
the history a watcher replays are one and the same thing. The events and their payloads are
in events.py, what comes next (`decide`) in decisions.py, the progress figures in progress.py.

An attempt lives in two phases. `step_queued` puts it in the step queue, where it waits,
without a deadline unless its step sets a schedule-to-start timeout, for a runner to ask for
work; `step_started` records that a runner took it, and from then on its timeout and
heartbeat timeout run.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.engine.domain.events import (
    STEP_FINISHED,
    STEP_PROGRESS,
    STEP_QUEUED,
    STEP_STARTED,
    WORKFLOW_ADVANCED,
    WORKFLOW_CANCELLED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    WORKFLOW_STARTED,
    WORKFLOW_WAITING,
    Event,
    NewEvent,
    StepFinishedData,
    StepProgressData,
    StepQueuedData,
    StepStartedData,
    WorkflowAdvancedData,
    WorkflowCancelledData,
    WorkflowFailedData,
    WorkflowWaitingData,
    data_of,
)
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

# Place in the step queue within a tenant: 1 runs first.
PRIORITIES = range(1, 6)
DEFAULT_PRIORITY = 3


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
    # The span of its start when that was traced (a W3C traceparent, services/tracing.py):
    # its attempts' spans go under it, whichever engine holds it then.
    traceparent: str | None = None
    # What its start added to its tenant's stored bytes (the input as sent, quotas.py), taken
    # off again when retention deletes it; 0 when nothing was.
    input_bytes: int = 0
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
        kind = event.type
        if kind == WORKFLOW_STARTED:
            self.status = RUNNING
        elif kind == WORKFLOW_WAITING:
            self.status = WAITING
            self.step_index = int(data_of(event, WorkflowWaitingData)["order"]) - 1
        elif kind == WORKFLOW_ADVANCED:
            self.status = RUNNING
            self.dynamic_properties.update(data_of(event, WorkflowAdvancedData)["data"] or {})
        elif kind == STEP_QUEUED:
            self.status = RUNNING
            self.step_index = int(data_of(event, StepQueuedData)["order"]) - 1
            self.history.append(_queued_attempt(event))
        elif kind == STEP_STARTED:
            started = data_of(event, StepStartedData)
            self.status = RUNNING
            self.step_index = int(started["order"]) - 1
            taken = self._find_attempt(int(started["order"]), int(started["attempt"]))
            if taken is None:
                # Logged before the step queue existed: the attempt began with its start.
                taken = _queued_attempt(event)
                self.history.append(taken)
            taken.status = ATTEMPT_RUNNING
            taken.started_at = event.time
            taken.input_payload = started.get("input_payload") or {}
            taken.started_seq = event.seq
            taken._payload_bytes = None
            taken.runner_id = started.get("runner_id")
            self.last_heartbeat = event.time
        elif kind == STEP_PROGRESS:
            progress = data_of(event, StepProgressData)
            attempt = self.attempt(int(progress["order"]), int(progress["attempt"]))
            attempt.last_progress = progress["progress"]
            self.progress_events += 1
        elif kind == STEP_FINISHED:
            finished = data_of(event, StepFinishedData)
            attempt = self.attempt(int(finished["order"]), int(finished["attempt"]))
            attempt.status = finished["status"]
            attempt.finished_at = event.time
            attempt.output_payload = finished.get("output")
            attempt.finished_seq = event.seq
            attempt._payload_bytes = None
            attempt.error = finished.get("error")
            if attempt.status == ATTEMPT_SUCCESS:
                self.dynamic_properties.update(attempt.output_payload or {})
        elif kind == WORKFLOW_COMPLETED:
            self.status = COMPLETED
        elif kind == WORKFLOW_FAILED:
            self.status = FAILED
            self.error = data_of(event, WorkflowFailedData).get("error")
        elif kind == WORKFLOW_CANCELLED:
            self.status = CANCELLED
            reason = data_of(event, WorkflowCancelledData).get("reason") or "cancelled"
            self.error = {"reason": "cancelled", "message": reason}
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
    data = data_of(event, StepQueuedData)
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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
