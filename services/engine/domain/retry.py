"""Running an ended execution again from one of its steps (RetryExecution).

A retry goes on in the same execution: its log continues with `workflow_retried`, which names
the steps that run again. Those are the step asked for (by default the one that failed) and
every step that waits for it, directly or not, and every step that had not succeeded; the
others keep their outputs and do not run again. Their earlier attempts stay in the history,
superseded (execution.py).
"""

from __future__ import annotations

from services.engine.domain import events as ev
from services.engine.domain.errors import InvalidArgument, NotRetryable
from services.engine.domain.execution import (
    ATTEMPT_SUCCESS,
    CANCELLED,
    FAILED,
    ExecutionState,
)

# Retries of one execution: each keeps its request id in the status document.
MAX_RETRIES = 100


def retried(state: ExecutionState, from_step: str, request_id: str | None) -> ev.NewEvent:
    """The event that takes a failed or cancelled execution back to running."""
    if state.status not in (FAILED, CANCELLED):
        raise NotRetryable(
            f"execution {state.execution_id} is {state.status}: only a failed or cancelled"
            " execution can be retried",
            metadata={"execution_id": state.execution_id, "status": state.status},
        )
    if state.retries >= MAX_RETRIES:
        raise NotRetryable(
            f"execution {state.execution_id} was retried {state.retries} times, the most one"
            " execution may be; start a new one",
            metadata={"execution_id": state.execution_id},
        )
    workflow = state.workflow
    current = state.step_attempts()
    not_done = [
        i
        for i in range(len(workflow.steps))
        if (a := current.get(i + 1)) is None or a.status != ATTEMPT_SUCCESS
    ]
    if from_step:
        found = workflow.step_named(from_step)
        if found is None:
            raise InvalidArgument(
                "from_step", f"workflow {workflow.name!r} has no step {from_step!r}"
            )
        start = found[0]
    else:
        start = _failed_step(state, not_done)
    again = {start, *workflow.dependents[start], *not_done}
    names = [workflow.steps[i].name for i in sorted(again)]
    return ev.workflow_retried(workflow.steps[start].name, names, request_id)


def _failed_step(state: ExecutionState, not_done: list[int]) -> int:
    """The step the execution failed at; for a cancelled one (or a failure no step caused)
    the first step in order that had not succeeded."""
    failed = (state.error or {}).get("step_name")
    found = state.workflow.step_named(failed) if failed else None
    if found is not None:
        return found[0]
    return min(not_done, default=0)
