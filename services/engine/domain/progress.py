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
    """Whole-execution progress; `typical_seconds` maps step names to past mean durations.
    Steps count alike: each running one adds its own percentage pro rata."""
    steps = state.workflow.steps
    current = state.step_attempts()
    done = {o for o, a in current.items() if a.status == ATTEMPT_SUCCESS}
    failed = 1 if state.status == FAILED and state.error and state.error.get("step_name") else 0
    fraction = sum(
        float(a.last_progress.get("percentage") or 0.0) / 100.0
        for a in current.values()
        if a.status == ATTEMPT_RUNNING and a.last_progress
    )
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
    """The time to the end along the longest chain of steps still to run: for a live step its
    own ETA, or its typical time less the time it has had; for one to come its typical time.
    Steps side by side overlap; steps in line add up. None when any part is unknown.

    `typical_seconds` counts a step from the time it was queued to its end, so a queued
    step's wait for a runner, and the waits to come, are in the estimate."""
    if state.status == COMPLETED:
        return 0.0
    if state.is_terminal:
        return None
    workflow = state.workflow
    current = state.step_attempts()
    # For each step, the time until it ends, counted from now.
    ends: dict[int, float] = {}
    for index in workflow.topological_order:
        step = workflow.steps[index]
        attempt = current.get(index + 1)
        if attempt is not None and attempt.status == ATTEMPT_SUCCESS:
            ends[index] = 0.0
            continue
        if attempt is not None and attempt.is_live:
            reported = (attempt.last_progress or {}).get("estimated_remaining_seconds")
            if reported is not None:
                own = float(reported)
            elif step.name in typical_seconds:
                elapsed = (now - attempt.queued_at).total_seconds()
                own = max(typical_seconds[step.name] - elapsed, 0.0)
            else:
                return None
        elif step.name in typical_seconds:
            own = typical_seconds[step.name]
        else:
            return None
        ends[index] = own + max((ends[n] for n in workflow.needs[index]), default=0.0)
    return round(max(ends.values(), default=0.0), 1)


def step_state(state: ExecutionState, index: int) -> str:
    """The state of one step as ListExecutionSteps shows it."""
    attempt = state.step_attempts().get(index + 1)
    if attempt is None:
        if state.status == WAITING and state.step_index == index:
            return "waiting"
        return "pending"
    if attempt.status in (ATTEMPT_FAILED, ATTEMPT_TIMED_OUT) and not state.is_terminal:
        return "retrying"
    return attempt.status
