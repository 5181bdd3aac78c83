"""The bench's steps, loaded into pioneer with PIONEER_STEP_MODULES=bench.steps.

Both put their send time (`time.time()`) in the progress's custom_data: every process of the
bench runs on one machine and shares the clock, so a watcher measures delivery directly.
"""

from __future__ import annotations

import asyncio
import time

from services.pioneer.sdk import StepContext, info, report_progress, step

PROGRESS_REPORTS = 3


@step("progress3", description="Reports progress 3 times (send time in custom_data), then ends.")
async def progress3(_ctx: StepContext) -> dict[str, int]:
    attempt = info()
    for n in range(1, PROGRESS_REPORTS + 1):
        await report_progress(
            attempt.execution_id,
            attempt.step_name,
            {
                "percentage": 100.0 * n / PROGRESS_REPORTS,
                "message": f"report {n} of {PROGRESS_REPORTS}",
                "custom_data": {"sent": time.time(), "n": n},
            },
        )
    return {"reports": PROGRESS_REPORTS}


@step(
    "fanout",
    description="Reports progress every `interval` seconds (send time in custom_data) until "
    "cancelled or `seconds` have passed.",
    input_keys=("interval", "seconds"),
)
async def fanout(_ctx: StepContext) -> dict[str, int]:
    attempt = info()
    interval = float(attempt.input.get("interval", 0.2))
    end = time.monotonic() + float(attempt.input.get("seconds", 120))
    n = 0
    # A cancellation reaches the step as StepCancelled from its next report.
    while time.monotonic() < end:
        n += 1
        await report_progress(
            attempt.execution_id,
            attempt.step_name,
            {"percentage": 0, "message": "fan-out", "custom_data": {"sent": time.time(), "n": n}},
        )
        await asyncio.sleep(interval)
    return {"reports": n}
