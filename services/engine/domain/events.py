"""The kinds of event in an execution's log: their type names, `Event` (an entry of the log)
and `NewEvent` (one decided but not yet numbered), and the functions that build each kind's
payload.

This is the only place in the domain where event payload keys are written. They are the legacy
WebSocket shapes (step_started and step_finished carry `step`, step_progress carries
`step_name`), so they stay exactly as they are; `ExecutionState.apply` reads them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

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


def workflow_started(mode: str) -> NewEvent:
    return NewEvent(WORKFLOW_STARTED, {"mode": mode})


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


def step_progress(attempt: Attempt, report: dict[str, Any]) -> NewEvent:
    data = {
        "step_name": attempt.step_name,
        "order": attempt.order,
        "attempt": attempt.attempt,
        "progress": report,
    }
    return NewEvent(STEP_PROGRESS, data)


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


def workflow_waiting(step: StepDefinition, order: int) -> NewEvent:
    return NewEvent(WORKFLOW_WAITING, {"step": step.name, "step_id": step.step_id, "order": order})


def workflow_advanced(data: dict[str, Any]) -> NewEvent:
    return NewEvent(WORKFLOW_ADVANCED, {"data": data})


def workflow_completed(dynamic_properties: dict[str, Any]) -> NewEvent:
    return NewEvent(WORKFLOW_COMPLETED, {"dynamic_properties": dynamic_properties})


def workflow_failed(error: dict[str, Any]) -> NewEvent:
    return NewEvent(WORKFLOW_FAILED, {"error": error})


def workflow_cancelled(reason: str) -> NewEvent:
    return NewEvent(WORKFLOW_CANCELLED, {"reason": reason})
