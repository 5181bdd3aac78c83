"""Progress figures of a whole execution: how far it is, how long it may still take, and
the state of each of its steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.engine.domain.execution import (
    ATTEMPT_FAILED,
    ATTEMPT_RUNNING,
    ATTEMPT_SUCCESS,
    ATTEMPT_TIMED_OUT,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    WAITING,
    ExecutionState,
)


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
