"""Built-in steps for trying workflows out and for tests: `sleep`, `fail` and `echo`."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

from services.pioneer.context import StepContext
from services.pioneer.errors import StepFailure
from services.pioneer.registry import step

PROGRESS_INTERVAL_SECONDS = 0.25
# Values above this size are left out of `echo`'s result: a base64 document would otherwise
# be copied into the context of every step that follows.
ECHO_MAX_VALUE_CHARS = 4096


@step(
    "sleep",
    description="Waits `seconds` (default 1), reporting progress a few times a second.",
    input_keys=("seconds",),
)
async def sleep(ctx: StepContext) -> dict[str, Any]:
    seconds = ctx.input.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"seconds: expected a number, got {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds: {seconds!r} is not a number of seconds")
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds
    while (now := loop.time()) < end:
        await asyncio.sleep(min(PROGRESS_INTERVAL_SECONDS, end - now))
        remaining = max(end - loop.time(), 0.0)
        await ctx.report_progress(
            {
                "percentage": 100.0 * (1 - remaining / seconds),
                "message": f"sleeping, {remaining:.1f} s to go",
                "current_task": "sleep",
                "estimated_remaining_seconds": remaining,
            }
        )
    return {"slept_seconds": seconds}


@step("fail", description="Always fails with the input's `message`.", input_keys=("message",))
async def fail(ctx: StepContext) -> None:
    raise StepFailure(str(ctx.input.get("message", "the fail step always fails")))


@step(
    "echo",
    description="Returns the input's `echo` value, or the input without its large values.",
    input_keys=("echo",),
)
async def echo(ctx: StepContext) -> Mapping[str, Any]:
    if "echo" in ctx.input:
        value = ctx.input["echo"]
        return value if isinstance(value, Mapping) else {"echo": value}
    return {key: value for key, value in ctx.input.items() if not _is_large(value)}


def _is_large(value: object) -> bool:
    if isinstance(value, str):
        return len(value) > ECHO_MAX_VALUE_CHARS
    return len(json.dumps(value)) > ECHO_MAX_VALUE_CHARS
