"""The execution state machine.

An execution is the fold of its event log: `ExecutionState.apply(event)` is the only way
state changes, so the status a client reads, the state the engine recovers after a crash and
the history a watcher replays are one and the same thing. The events and their payloads are
in events.py, what comes next (`decide`) in decisions.py, the progress figures in progress.py.

Steps run one after another, or side by side as their workflow's dependencies allow: each
step has its own current attempt (`step_attempts`), and several may be live at once. A retry
of an ended execution (`workflow_retried`) supersedes the attempts of the steps it runs again:
they stay in the history, and the step's next attempt is its current one.

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
    WORKFLOW_RETRIED,
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
    WorkflowRetriedData,
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
    # A retry of the execution ran its step again: kept as history, no longer its step's.
    superseded: bool = False
    # Volatile, like every heartbeat: its runner's last sign of life (not logged). After a
    # restart the clock starts again, which gives a live runner one heartbeat period.
    heartbeat_at: datetime | None = field(default=None, repr=False, compare=False)
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
    # The step (index) logged last as waited for or queued: the one a manual execution waits
    # for, and, once advanced, the one it may queue next (decisions.py).
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
    # Times RetryExecution took it back to running, and the request ids they came with
    # (a repeated one is answered without a second retry).
    retries: int = 0
    retry_request_ids: list[str] = field(default_factory=list)

    # --- reading -------------------------------------------------------------------

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def step_attempts(self) -> dict[int, Attempt]:
        """Each step's current attempt by the step's order (1-based): its latest, unless a
        retry superseded it. A step without one has not run (since the retry)."""
        return {a.order: a for a in self.history if not a.superseded}

    def is_current(self, attempt: Attempt) -> bool:
        return not attempt.superseded and self.step_attempts().get(attempt.order) is attempt

    def live_attempts(self) -> list[Attempt]:
        """The attempts queued or running now, by step order."""
        live = [a for a in self.step_attempts().values() if a.is_live]
        return sorted(live, key=lambda a: a.order)

    def tries(self, order: int) -> int:
        """Attempts of the step at `order` since the execution's last retry ran it again."""
        return sum(1 for a in self.history if a.order == order and not a.superseded)

    def next_attempt_number(self, order: int) -> int:
        """Attempt numbers go on across retries: (order, attempt) names one attempt."""
        return max((a.attempt for a in self.history if a.order == order), default=0) + 1

    @property
    def running_steps(self) -> list[StepDefinition]:
        """The steps queued or running now, by order."""
        return [self.workflow.steps[a.order - 1] for a in self.live_attempts()]

    @property
    def current_step(self) -> StepDefinition | None:
        """The step the execution stands at, as the legacy status names it: the one a manual
        execution waits for, else the lowest in order of those queued, running, or waiting
        to be retried."""
        if self.is_terminal or self.status == PENDING:
            return None
        if self.status == WAITING:
            return None if self.step_index is None else self.workflow.steps[self.step_index]
        active = [
            a.order
            for a in self.step_attempts().values()
            if a.is_live or a.status in (ATTEMPT_FAILED, ATTEMPT_TIMED_OUT)
        ]
        return self.workflow.steps[min(active) - 1] if active else None

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
            taken.heartbeat_at = event.time
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
        elif kind == WORKFLOW_RETRIED:
            retried = data_of(event, WorkflowRetriedData)
            again = set(retried["steps"])
            for attempt in self.history:
                if attempt.step_name in again:
                    attempt.superseded = True
            self.status = RUNNING
            self.error = None
            self.step_index = None
            self.retries += 1
            if retried.get("request_id"):
                self.retry_request_ids.append(str(retried["request_id"]))
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
