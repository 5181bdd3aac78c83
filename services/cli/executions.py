"""`discovery executions list`: the caller's executions, newest first, narrowed by status,
workflow, creation time and workflow name (ListExecutions' filters)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from discovery.engine.v1 import execution_pb2 as ex_pb
from rich import box
from rich.table import Table

from discovery_client.requests import EXECUTION_STATUSES
from services.cli import render
from services.cli.commands import Context, resolve_workflow
from services.cli.errors import EXIT_OK, UsageError

STATUSES = tuple(EXECUTION_STATUSES)
# How far back `--since 2h`: a number and a unit.
AGO = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Listing:
    statuses: Sequence[str] = ()
    workflow: str = ""
    since: str = ""
    until: str = ""
    name: str = ""
    limit: int = 20


def executions_list(ctx: Context, listing: Listing) -> int:
    now = datetime.now(UTC)
    workflow_id = resolve_workflow(ctx, listing.workflow).workflow_id if listing.workflow else ""
    response = ctx.client.list_executions(
        workflow_id=workflow_id,
        statuses=[EXECUTION_STATUSES[s] for s in listing.statuses],
        created_after=point_in_time(listing.since, "--since", now),
        created_before=point_in_time(listing.until, "--until", now),
        workflow_name_contains=listing.name,
        page_size=listing.limit,
    )
    executions = list(response.executions)
    if ctx.json:
        render.print_json({"executions": [render.message_json(e) for e in executions]})
    elif not executions:
        ctx.err.print("no executions match")
    else:
        ctx.out.print(executions_table(executions))
    return EXIT_OK


def point_in_time(value: str, option: str, now: datetime) -> datetime | None:
    """`30m`, `2h`, `7d` ago, or an ISO 8601 time (UTC when it names no zone)."""
    if not value:
        return None
    ago = AGO.match(value)
    if ago:
        return now - timedelta(**{UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: a duration ago (30m, 2h, 7d) or an ISO 8601 time, not {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def executions_table(executions: Iterable[ex_pb.Execution]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("Workflow")
    table.add_column("Status")
    table.add_column("Progress", justify="right")
    table.add_column("Created", no_wrap=True)
    for execution in executions:
        table.add_row(
            execution.execution_id,
            execution.workflow_name,
            render.styled(render.execution_status(execution)),
            render.percent(execution.progress.percentage),
            render.when(execution.create_time),
        )
    return table
