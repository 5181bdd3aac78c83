"""Steps for pioneer's tests only, on a copy of the default registry (built-ins included)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import services.pioneer.steps  # noqa: F401  # registers the built-in steps
from services.pioneer import sdk
from services.pioneer.context import StepContext
from services.pioneer.registry import registry as default_registry
from services.pioneer.steps import documents
from tests.pioneer import hostile

registry = default_registry.copy()


@registry.step("burst", description="Reports `count` progress reports as fast as it can.")
async def burst(ctx: StepContext) -> dict[str, Any]:
    longest = 0.0
    for i in range(1, int(ctx.input["count"]) + 1):
        began = time.monotonic()
        await sdk.report_progress(ctx.execution_id, ctx.step_name, {"percentage": i})
        longest = max(longest, time.monotonic() - began)
    return {"longest_report_seconds": longest}


@registry.step("steady", description="Reports progress every 50 ms for `seconds`.")
async def steady(ctx: StepContext) -> dict[str, Any]:
    end = time.monotonic() + float(ctx.input["seconds"])
    reports = 0
    while time.monotonic() < end:
        reports += 1
        await sdk.report_progress(ctx.execution_id, ctx.step_name, {"percentage": reports})
        await asyncio.sleep(0.05)
    return {"reports": reports}


@registry.step("fetch_user", description="The seed's example step, written as in the seed.")
async def fetch_user(ctx: StepContext) -> None:
    execution_id = sdk.info().execution_id
    await sdk.report_progress(
        execution_id,
        "fetch_user",
        {
            "percentage": 50,
            "message": "Procesando documento...",
            "current_task": "Extrayendo texto",
            "estimated_remaining_seconds": 120,
            "custom_data": {"pages_processed": 5, "total_pages": 10},
        },
    )
    await sdk.report_completion(
        execution_id,
        "fetch_user",
        {"success": True, "document_processed": True, "sections_found": 8, "pdf_uploaded": True},
    )


BAD_PROGRESS_BODIES: dict[str, dict[str, Any]] = {
    "percentage": {"percentage": "50"},
    "custom_data": {"percentage": 10, "custom_data": ["pages", 5]},
    "estimated_remaining_seconds": {"percentage": 10, "estimated_remaining_seconds": -1},
    "message": {"percentage": 10, "message": 5},
}


@registry.step("bad_progress", description="Sends malformed progress bodies; returns the errors.")
async def bad_progress(ctx: StepContext) -> dict[str, Any]:
    errors: dict[str, str] = {}
    for name, body in BAD_PROGRESS_BODIES.items():
        try:
            await sdk.report_progress(ctx.execution_id, ctx.step_name, body)
        except ValueError as exc:
            errors[name] = str(exc)
    return {"errors": errors}


@registry.step("report_for_other_step", description="Reports progress under another step's name.")
async def report_for_other_step(ctx: StepContext) -> None:
    await sdk.report_progress(ctx.execution_id, "not_me", {"percentage": 1})


@registry.step("quiet", description="Waits `seconds` without reporting anything.")
async def quiet(ctx: StepContext) -> dict[str, Any]:
    await asyncio.sleep(float(ctx.input.get("seconds", 30)))
    return {"quiet": True}


@registry.step("raise_key_error", description="Raises a plain KeyError.")
async def raise_key_error(ctx: StepContext) -> None:
    raise KeyError("missing")


@registry.step("return_number", description="Returns something that is not a dict.")
async def return_number(ctx: StepContext) -> Any:
    return 42


@registry.step("read_blob", description="Reads the blob named in `blob_id`.")
async def read_blob(ctx: StepContext) -> dict[str, Any]:
    data = await sdk.read_blob(str(ctx.input["blob_id"]))
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@registry.step(
    "hostile_work",
    description="Runs `function` of tests/pioneer/hostile.py as document work within `seconds`.",
)
async def hostile_work(ctx: StepContext) -> None:
    function = getattr(hostile, str(ctx.input["function"]))
    seconds = float(ctx.input.get("seconds", 30))
    pool = ctx.resource(documents.DocumentTools).pool
    await documents.bounded_in_worker(
        pool, seconds, "read it", function, str(ctx.input["pid_file"])
    )
