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
    ATTEMPT_CANCELLED,
    ATTEMPT_FAILED,
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
from services.engine.domain.workflow import StepDefinition

# A step that failed for one of these reasons would fail the same way again: no retry. A
# step that waited past its schedule-to-start timeout found no runner; another attempt
# would wait in the same queue.
NON_RETRYABLE_REASONS = frozenset({"invalid_input", "schedule_to_start_timeout"})


@dataclass(frozen=True)
class Decision:
    event: NewEvent | None = None
    wake_at: datetime | None = None


def decide(state: ExecutionState, now: datetime) -> Decision:
    """The next event the execution needs, or when to look again.

    In this order: an attempt's timeouts and a failed step's retry (or, out of retries, the
    execution's failure: its other live attempts are cancelled first); the end, once every
    step succeeded; then the steps whose dependencies are done: queued (the lowest in order
    first, at most `max_parallel_steps` live at once), or, in manual mode, waited for one at
    a time."""
    if state.is_terminal or state.status == WAITING:
        return Decision()
    if state.status == PENDING:
        return Decision(workflow_started(state.mode))

    workflow = state.workflow
    current = state.step_attempts()
    wake_at: datetime | None = None
    out_of_retries: Attempt | None = None
    for order, attempt in sorted(current.items()):
        step = workflow.steps[order - 1]
        due: Decision | None
        if attempt.is_live:
            due = _deadline(state, step, attempt, now)
        elif attempt.status in (ATTEMPT_FAILED, ATTEMPT_TIMED_OUT):
            due = _retry(state, step, attempt, now)
            if due is None:
                out_of_retries = out_of_retries or attempt
                continue
        else:
            continue
        if due.event is not None:
            return due
        wake_at = _earliest(wake_at, due.wake_at)

    live = [a for a in current.values() if a.is_live]
    if out_of_retries is not None:
        return Decision(_fail(out_of_retries, live, now))
    succeeded = {o for o, a in current.items() if a.status == ATTEMPT_SUCCESS}
    if len(succeeded) == len(workflow.steps):
        return Decision(workflow_completed(state.dynamic_properties))
    ready = [
        i
        for i in range(len(workflow.steps))
        if i + 1 not in current and all(n + 1 in succeeded for n in workflow.needs[i])
    ]
    if state.mode == MANUAL:
        # One step at a time, each after AdvanceExecution: the advance names it (step_index).
        if live or wake_at is not None or not ready:
            return Decision(wake_at=wake_at)
        following = ready[0]
        if state.step_index == following:
            return Decision(step_queued(state, following, state.next_attempt_number(following + 1)))
        return Decision(workflow_waiting(workflow.steps[following], following + 1))
    if ready and len(live) < workflow.max_parallel_steps:
        following = ready[0]
        return Decision(step_queued(state, following, state.next_attempt_number(following + 1)))
    return Decision(wake_at=wake_at)


def _deadline(
    state: ExecutionState, step: StepDefinition, attempt: Attempt, now: datetime
) -> Decision:
    """A live attempt's timeout, when it is due, or when it will be."""
    if attempt.status == ATTEMPT_QUEUED:
        # Waiting for a runner is the normal state of a busy system, not an error: only the
        # step's own schedule-to-start timeout ends it.
        if step.schedule_to_start_timeout_seconds is None:
            return Decision()
        expires = attempt.queued_at + timedelta(seconds=step.schedule_to_start_timeout_seconds)
        if now >= expires:
            return Decision(
                step_finished(
                    attempt,
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
    assert attempt.status == ATTEMPT_RUNNING and attempt.started_at is not None
    hard = attempt.started_at + timedelta(seconds=step.timeout_seconds)
    heartbeat = _last_heartbeat(attempt) + timedelta(seconds=step.heartbeat_timeout_seconds)
    if now >= hard:
        return Decision(
            step_finished(
                attempt,
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
                attempt,
                ATTEMPT_TIMED_OUT,
                error={
                    "reason": "heartbeat_timeout",
                    "message": f"no heartbeat for {step.heartbeat_timeout_seconds:g} s",
                },
                now=now,
            )
        )
    return Decision(wake_at=min(hard, heartbeat))


def _retry(
    state: ExecutionState, step: StepDefinition, attempt: Attempt, now: datetime
) -> Decision | None:
    """The next attempt of a failed or timed-out step once its backoff is over (or when it
    will be); None when the step is out of attempts, or its failure would only repeat."""
    retryable = (attempt.error or {}).get("reason") not in NON_RETRYABLE_REASONS
    if not retryable or state.tries(attempt.order) >= step.retry.max_attempts:
        return None
    assert attempt.finished_at is not None
    tries = state.tries(attempt.order)
    retry_at = attempt.finished_at + timedelta(seconds=step.retry.backoff(tries))
    if now >= retry_at:
        return Decision(step_queued(state, attempt.order - 1, attempt.attempt + 1))
    return Decision(wake_at=retry_at)


def _fail(failed: Attempt, live: list[Attempt], now: datetime) -> NewEvent:
    """The execution fails with its step: the steps running beside it are cancelled first,
    one event each (their runners learn it from their next report)."""
    if live:
        other = min(live, key=lambda a: a.order)
        return step_finished(
            other,
            ATTEMPT_CANCELLED,
            error={
                "reason": "cancelled",
                "message": f"step {failed.step_name!r} failed: the execution stops",
            },
            now=now,
        )
    error = dict(failed.error or {"reason": "step_failed", "message": "step failed"})
    error["step_name"] = failed.step_name
    error["attempts"] = failed.attempt
    return workflow_failed(error)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return b if b is not None and b < a else a


def _last_heartbeat(attempt: Attempt) -> datetime:
    assert attempt.started_at is not None
    if attempt.heartbeat_at is None or attempt.heartbeat_at < attempt.started_at:
        return attempt.started_at
    return attempt.heartbeat_at
