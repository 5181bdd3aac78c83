"""`discovery schedules`: list, create, pause, resume and delete the cron schedules of
workflows (ScheduleService)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from discovery.engine.v1 import schedule_service_pb2 as ss
from rich import box
from rich.table import Table
from rich.text import Text

from discovery_client import EngineError
from services.cli import render
from services.cli.commands import Context, all_workflows, resolve_workflow
from services.cli.documents import json_object
from services.cli.errors import EXIT_OK, CliError

OVERLAPS = ("skip", "allow")
MAX_CATCHUP = 100


@dataclass(frozen=True)
class NewSchedule:
    workflow: str
    cron: str
    timezone: str = ""
    input: str | None = None
    overlap: str = ""
    catchup: int | None = None
    priority: int | None = None


def schedules_list(ctx: Context, workflow: str) -> int:
    workflow_id = resolve_workflow(ctx, workflow).workflow_id if workflow else ""
    found: list[ss.Schedule] = []
    token = ""
    while True:
        page = ctx.client.list_schedules(workflow_id=workflow_id, page_size=1000, page_token=token)
        found.extend(page.schedules)
        token = page.next_page_token
        if not token:
            break
    if ctx.json:
        render.print_json({"schedules": [render.message_json(s) for s in found]})
    elif not found:
        ctx.err.print(
            "no schedules: create one with `discovery schedules create WORKFLOW --cron '0 3 * * *'`"
        )
    else:
        names = {w.workflow_id: w.name for w in all_workflows(ctx.client)}
        ctx.out.print(schedules_table(found, names))
    return EXIT_OK


def schedules_create(ctx: Context, asked: NewSchedule) -> int:
    workflow = resolve_workflow(ctx, asked.workflow)
    document = json_object(asked.input, "--input") if asked.input is not None else None
    try:
        created = ctx.client.create_schedule(
            workflow.workflow_id,
            asked.cron,
            timezone=asked.timezone,
            input=document,
            overlap=asked.overlap,
            catchup_limit=asked.catchup,
            priority=asked.priority or 0,
        )
    except EngineError as exc:
        if exc.code is grpc.StatusCode.INVALID_ARGUMENT:
            raise CliError(f"invalid schedule: {exc.describe()}") from None
        raise
    if ctx.json:
        render.print_json(render.message_json(created))
    else:
        ctx.out.print(created.schedule_id, markup=False)
        ctx.err.print(
            Text(
                f"scheduled {workflow.name!r} at {created.cron!r} ({created.timezone or 'UTC'}); "
                f"next run {render.when(created.next_run_time)}"
            )
        )
    return EXIT_OK


def schedules_pause(ctx: Context, schedule_id: str) -> int:
    return _show(ctx, ctx.client.pause_schedule(schedule_id))


def schedules_resume(ctx: Context, schedule_id: str) -> int:
    return _show(ctx, ctx.client.resume_schedule(schedule_id))


def schedules_delete(ctx: Context, schedule_id: str) -> int:
    ctx.client.delete_schedule(schedule_id)
    if not ctx.json:
        ctx.err.print(Text(f"deleted schedule {schedule_id}; the runs it started are kept"))
    return EXIT_OK


def _show(ctx: Context, schedule: ss.Schedule) -> int:
    if ctx.json:
        render.print_json(render.message_json(schedule))
    else:
        ctx.out.print(schedules_table([schedule], {}))
    return EXIT_OK


def schedules_table(schedules: Iterable[ss.Schedule], names: dict[str, str]) -> Table:
    """`names`: workflow names by id, shown instead of the id where known."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    # Ids and times whole; names and expressions wrap when the terminal is narrow.
    table.add_column("ID", no_wrap=True)
    table.add_column("Workflow")
    table.add_column("When")
    table.add_column("Next run", no_wrap=True)
    table.add_column("Runs", justify="right")
    for schedule in schedules:
        runs = str(schedule.runs)
        if schedule.skipped_runs:
            runs += f", {schedule.skipped_runs} skipped"
        table.add_row(
            schedule.schedule_id,
            names.get(schedule.workflow_id, schedule.workflow_id),
            Text.assemble(schedule.cron, " ", (schedule.timezone or "UTC", "dim")),
            Text("paused", style="yellow")
            if schedule.paused
            else Text(render.when(schedule.next_run_time)),
            runs,
        )
    return table
