"""The kinds of event in an execution's log: their type names, `Event` (an entry of the log)
and `NewEvent` (one decided but not yet numbered), and the functions that build each kind's
payload.

Each kind's payload is a TypedDict here (`StepQueuedData`, …), and this is the only place its
keys are written; readers see the same names through `data_of` (mypy checks both sides). They
are the legacy WebSocket shapes (step_started and step_finished carry `step`, step_progress
carries `step_name`), so they stay exactly as they are. Fields marked NotRequired are missing
from logs written by earlier versions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, TypeVar, cast

if TYPE_CHECKING:  # execution.py imports this module
    from services.engine.domain.execution import Attempt, ExecutionState
    from services.engine.domain.workflow import StepDefinition

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
WORKFLOW_RETRIED = "workflow_retried"
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
    WORKFLOW_RETRIED,
)
TERMINAL_EVENTS = frozenset({WORKFLOW_COMPLETED, WORKFLOW_FAILED, WORKFLOW_CANCELLED})


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


class WorkflowStartedData(TypedDict):
    mode: str  # automatic or manual


class StepQueuedData(TypedDict):
    step: str
    step_id: str
    order: int  # 1-based
    attempt: int  # 1-based
    handler: str
    priority: NotRequired[int]


class StepStartedData(TypedDict):
    step: str
    step_id: str
    order: int
    attempt: int
    input_payload: NotRequired[dict[str, Any]]
    runner_id: NotRequired[str]
    queued_seconds: NotRequired[float]


class StepProgressData(TypedDict):
    step_name: str
    order: int
    attempt: int
    progress: dict[str, Any]


class StepFinishedData(TypedDict):
    step: str
    order: int
    attempt: int
    status: str  # an ATTEMPT_* status of execution.py
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    duration_seconds: float


class WorkflowWaitingData(TypedDict):
    step: str
    step_id: str
    order: int


class WorkflowAdvancedData(TypedDict):
    data: dict[str, Any]


class WorkflowCompletedData(TypedDict):
    dynamic_properties: dict[str, Any]


class WorkflowFailedData(TypedDict):
    error: dict[str, Any]


class WorkflowCancelledData(TypedDict):
    reason: str


class WorkflowRetriedData(TypedDict):
    from_step: str
    steps: list[str]  # the names of the steps that run again
    request_id: str | None


D = TypeVar("D")


def data_of(event: Event | NewEvent, kind: type[D]) -> D:
    """`event`'s payload as the TypedDict of its kind (the caller has checked its type)."""
    return cast(D, event.data)


def _new(kind: str, data: Any, attempt_token: str | None = None) -> NewEvent:
    # A TypedDict is a dict with known keys: stored, it is the plain dict it is.
    return NewEvent(kind, dict(data), attempt_token)


def workflow_started(mode: str) -> NewEvent:
    data: WorkflowStartedData = {"mode": mode}
    return _new(WORKFLOW_STARTED, data)


def step_queued(state: ExecutionState, index: int, attempt: int) -> NewEvent:
    step = state.workflow.steps[index]
    data: StepQueuedData = {
        "step": step.name,
        "step_id": step.step_id,
        "order": index + 1,
        "attempt": attempt,
        "handler": step.handler,
        "priority": state.priority,
    }
    return _new(STEP_QUEUED, data, attempt_token=secrets.token_urlsafe(24))


def step_started(
    state: ExecutionState, attempt: Attempt, runner_id: str, now: datetime
) -> NewEvent:
    """A runner took a queued attempt. The legacy step_started keys come first; the input is
    the context as it is now, which nothing changes while a step waits in the queue."""
    step = state.workflow.steps[attempt.order - 1]
    data: StepStartedData = {
        "step": step.name,
        "step_id": step.step_id,
        "order": attempt.order,
        "attempt": attempt.attempt,
        "input_payload": state.step_input(),
        "runner_id": runner_id,
        "queued_seconds": (now - attempt.queued_at).total_seconds(),
    }
    return _new(STEP_STARTED, data)


def step_progress(attempt: Attempt, report: dict[str, Any]) -> NewEvent:
    data: StepProgressData = {
        "step_name": attempt.step_name,
        "order": attempt.order,
        "attempt": attempt.attempt,
        "progress": report,
    }
    return _new(STEP_PROGRESS, data)


def step_finished(
    attempt: Attempt,
    status: str,
    *,
    output: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    now: datetime,
) -> NewEvent:
    data: StepFinishedData = {
        "step": attempt.step_name,
        "order": attempt.order,
        "attempt": attempt.attempt,
        "status": status,
        "output": output,
        "error": error,
        "duration_seconds": (
            (now - attempt.started_at).total_seconds() if attempt.started_at else 0.0
        ),
    }
    return _new(STEP_FINISHED, data)


def workflow_waiting(step: StepDefinition, order: int) -> NewEvent:
    data: WorkflowWaitingData = {"step": step.name, "step_id": step.step_id, "order": order}
    return _new(WORKFLOW_WAITING, data)


def workflow_advanced(data: dict[str, Any]) -> NewEvent:
    payload: WorkflowAdvancedData = {"data": data}
    return _new(WORKFLOW_ADVANCED, payload)


def workflow_completed(dynamic_properties: dict[str, Any]) -> NewEvent:
    data: WorkflowCompletedData = {"dynamic_properties": dynamic_properties}
    return _new(WORKFLOW_COMPLETED, data)


def workflow_failed(error: dict[str, Any]) -> NewEvent:
    data: WorkflowFailedData = {"error": error}
    return _new(WORKFLOW_FAILED, data)


def workflow_cancelled(reason: str) -> NewEvent:
    data: WorkflowCancelledData = {"reason": reason}
    return _new(WORKFLOW_CANCELLED, data)


def workflow_retried(from_step: str, steps: list[str], request_id: str | None) -> NewEvent:
    data: WorkflowRetriedData = {"from_step": from_step, "steps": steps, "request_id": request_id}
    return _new(WORKFLOW_RETRIED, data)
