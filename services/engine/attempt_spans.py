"""Each attempt of a step as a span of its execution's trace, recorded when the attempt ends.

An attempt can outlive the engine that queued it (a restart, a takeover), so its span is not
held open anywhere: its id is derived from the attempt (services/tracing.py), its runner was
handed it with the attempt, and the engine that logs the attempt's end records it whole, from
the attempt's queueing (its wait for a runner is part of it; an event marks the take) to its
end, under the span of the execution's start kept with the execution.
"""

from __future__ import annotations

from services import tracing
from services.engine.domain import events as ev
from services.engine.domain import execution as ex


def after(state: ex.ExecutionState, events: list[ev.Event]) -> None:
    """Records the span of every attempt whose end is among `events`, just logged."""
    if state.traceparent is None or tracing.provider("engine") is None:
        return
    for event in events:
        if event.type != ev.STEP_FINISHED:
            continue
        finished = ev.data_of(event, ev.StepFinishedData)
        attempt = state.attempt(finished["order"], finished["attempt"])
        step = state.workflow.steps[attempt.order - 1]
        tracing.record_attempt(
            "engine",
            state.traceparent,
            execution_id=state.execution_id,
            step=attempt.step_name,
            order=attempt.order,
            attempt=attempt.attempt,
            outcome=finished["status"],
            queued_at=attempt.queued_at,
            started_at=attempt.started_at,
            finished_at=event.time,
            attributes={
                "discovery.handler": step.handler,
                "discovery.runner_id": attempt.runner_id or "",
                "discovery.error_reason": str((attempt.error or {}).get("reason") or ""),
            },
        )
