"""Deciding what comes next.

`decide(state, now)` is level-triggered: given the state and the time it says which event
comes next (queue the next step, retry, time out, finish) or when to look again. The runner
calls it after every change and on every timer, and after a crash it simply calls it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.engine.domain.events import (
    NewEvent,
    step_finished,
    step_queued,
    workflow_completed,
    workflow_failed,
    workflow_started,
    workflow_waiting,
)
from services.engine.domain.execution import (
    ATTEMPT_QUEUED,
    ATTEMPT_RUNNING,
    ATTEMPT_SUCCESS,
    ATTEMPT_TIMED_OUT,
    MANUAL,
    PENDING,
    WAITING,
    Attempt,
    ExecutionState,
)

# A step that failed for one of these reasons would fail the same way again: no retry. A
# step that waited past its schedule-to-start timeout found no runner; another attempt
# would wait in the same queue.
NON_RETRYABLE_REASONS = frozenset({"invalid_input", "schedule_to_start_timeout"})


@dataclass(frozen=True)
class Decision:
    event: NewEvent | None = None
    wake_at: datetime | None = None


def decide(state: ExecutionState, now: datetime) -> Decision:
    """The next event the execution needs, or when to look again."""
    if state.is_terminal or state.status == WAITING:
        return Decision()
    if state.status == PENDING:
        return Decision(workflow_started(state.mode))

    steps = state.workflow.steps
    current = state.current_attempt()
    if state.step_index is None or (current is not None and current.status == ATTEMPT_SUCCESS):
        following = 0 if state.step_index is None else state.step_index + 1
        if following == len(steps):
            return Decision(workflow_completed(state.dynamic_properties))
        if state.mode == MANUAL:
            step = steps[following]
            return Decision(workflow_waiting(step, following + 1))
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
    return Decision(workflow_failed(error))


def _last_heartbeat(attempt: Attempt, state: ExecutionState) -> datetime:
    assert attempt.started_at is not None
    if state.last_heartbeat is None or state.last_heartbeat < attempt.started_at:
        return attempt.started_at
    return state.last_heartbeat
