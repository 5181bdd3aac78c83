"""The step-side API: plain functions that act on the attempt running in the calling task.

```python
from services.pioneer.sdk import info, report_progress, report_completion, step

@step("fetch_user", input_keys=("user_id",))
async def fetch_user(ctx):
    await report_progress(info().execution_id, "fetch_user", {"percentage": 50, "message": "…"})
    await report_completion(info().execution_id, "fetch_user", {"success": True, "user": {…}})
```

The seed's `report_progress` / `report_completion` keep their signature; the attempt token they
need comes from the running attempt, and naming another execution or step is refused. A step
may also just return its result dict: pioneer then reports the completion itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.pioneer.context import StepContext, StepInfo, current
from services.pioneer.errors import (
    EngineUnavailable,
    NotInStep,
    ReportRejected,
    StaleAttempt,
    StepCancelled,
    StepFailure,
)
from services.pioneer.registry import step

__all__ = [
    "EngineUnavailable",
    "NotInStep",
    "ReportRejected",
    "StaleAttempt",
    "StepCancelled",
    "StepContext",
    "StepFailure",
    "StepInfo",
    "heartbeat",
    "info",
    "is_cancelled",
    "read_blob",
    "report_completion",
    "report_progress",
    "step",
    "write_blob",
]


def info() -> StepInfo:
    """The running attempt: execution_id, step_name, handler, attempt, input, timeouts."""
    return current().info


def is_cancelled() -> bool:
    return current().is_cancelled()


async def heartbeat() -> None:
    """Tells the engine the step is alive now (pioneer also does so on its own).

    Raises StepCancelled when the engine has cancelled the attempt."""
    await current().heartbeat()


async def report_progress(execution_id: str, step_name: str, progress: Mapping[str, Any]) -> None:
    """The seed's call: `{"percentage", "message", "current_task",
    "estimated_remaining_seconds", "custom_data"}`; a bad field raises ValueError naming it."""
    await _own_step(execution_id, step_name).report_progress(progress)


async def report_completion(execution_id: str, step_name: str, result: Mapping[str, Any]) -> None:
    """The seed's call: `{"success": bool, …result fields…}`. Pioneer reports nothing more
    for the attempt, whatever the handler returns afterwards."""
    await _own_step(execution_id, step_name).report_completion(result)


async def read_blob(blob_id: str) -> bytes:
    """The bytes of a blob of this execution: a large input value the engine replaced by
    `{"blob_id", …}`, or one an earlier step stored with `write_blob`."""
    return await current().read_blob(blob_id)


async def write_blob(data: bytes) -> dict[str, Any]:
    """Stores `data` (a decoded document, an extracted text…) with the engine, apart from the
    execution's events, and returns its reference `{"blob_id", "size_bytes", "sha256"}`: put
    the reference in the step's result, and a later step of the execution reads the bytes back
    with `read_blob(reference["blob_id"])`."""
    return await current().write_blob(data)


def _own_step(execution_id: str, step_name: str) -> StepContext:
    ctx = current()
    if (execution_id, step_name) != (ctx.execution_id, ctx.step_name):
        raise NotInStep(
            f"this task runs step {ctx.step_name!r} of execution {ctx.execution_id!r}; "
            f"it cannot report for step {step_name!r} of execution {execution_id!r}"
        )
    return ctx
