"""Static output: workflow tables, a workflow's steps, an execution's status, and JSON.

Human output goes through rich, which draws colours and box tables on a terminal and falls
back to plain text when stdout is a file or a pipe. `--json` output bypasses rich: one JSON
document (or one per line for streams) on stdout, nothing else there.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import workflow_pb2 as wf_pb
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "pending": "dim",
    "queued": "yellow",
    "running": "cyan",
    "waiting": "yellow",
    "completed": "green",
    "success": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "magenta",
    "retrying": "yellow",
}


# An attempt waiting in the step queue for a runner.
QUEUED_MARK = "⧗"

# Rich lays out for 80 columns when it cannot ask a terminal; tables with ids are wider.
PLAIN_WIDTH = 120


def make_console(stderr: bool = False) -> Console:
    # highlight=False: rich would otherwise colour numbers and quotes inside ids and messages.
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PLAIN_WIDTH
    return console


# --- JSON --------------------------------------------------------------------------------


def message_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping with the proto's own (snake_case) field names, every field
    present, enums by name and int64 as numbers (last_seq, seq)."""
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )


def whole_numbers(value: Any) -> Any:
    """Struct numbers are all doubles; 2.0 -> 2, so an event's order, attempt and seq-like
    values read as the integers they are."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# --- words and numbers -------------------------------------------------------------------


def enum_word(name: str) -> str:
    """EXECUTION_STATUS_RUNNING -> running; EVENT_TYPE_STEP_PROGRESS -> step_progress."""
    for prefix in ("EXECUTION_STATUS_", "EXECUTION_MODE_", "ATTEMPT_STATUS_", "EVENT_TYPE_"):
        if name.startswith(prefix):
            return name[len(prefix) :].lower()
    return name.lower()


def execution_status(execution: ex_pb.Execution) -> str:
    return enum_word(ex_pb.ExecutionStatus.Name(execution.status))


def attempt_status(attempt: ex_pb.StepAttempt) -> str:
    return enum_word(ex_pb.AttemptStatus.Name(attempt.status))


def styled(word: str) -> Text:
    return Text(word, style=STATUS_STYLE.get(word, ""))


def seconds(value: float | None) -> str:
    """1.25 -> "1.2 s"; 125 -> "2 min 5 s"; 7300 -> "2 h 1 min"."""
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def when(stamp: timestamp_pb2.Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "—"
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def is_set(stamp: timestamp_pb2.Timestamp) -> bool:
    return bool(stamp.seconds or stamp.nanos)


def since(stamp: timestamp_pb2.Timestamp, now: datetime | None = None) -> float | None:
    """Seconds from `stamp` to `now` (never negative: clocks differ a little); None unset."""
    if not is_set(stamp):
        return None
    now = now or datetime.now(UTC)
    return max((now - stamp.ToDatetime(tzinfo=UTC)).total_seconds(), 0.0)


def queued_text(waited: float | None, *, mark: bool = True) -> str:
    """ "⧗ queued 3.2 s": an attempt that waits for a runner, and for how long."""
    text = f"{QUEUED_MARK} queued" if mark else "queued"
    return text + (f" {seconds(waited)}" if waited is not None else "")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def percent(value: float) -> str:
    return f"{value:.0f}%"


# --- workflows ---------------------------------------------------------------------------


def workflows_table(workflows: Iterable[wf_pb.Workflow]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("Name")
    table.add_column("Steps")
    table.add_column("Version", justify="right")
    table.add_column("Created", no_wrap=True)
    for workflow in workflows:
        table.add_row(
            workflow.workflow_id,
            workflow.name,
            " → ".join(s.name for s in workflow.steps),
            str(workflow.version),
            when(workflow.create_time),
        )
    return table


def versions_table(versions: Iterable[wf_pb.Workflow]) -> Table:
    """One workflow's versions, as `discovery workflows versions` lists them."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("Version", justify="right")
    table.add_column("Steps")
    table.add_column("Made", no_wrap=True)
    for version in versions:
        table.add_row(
            str(version.version),
            " → ".join(s.name for s in version.steps),
            when(version.update_time),
        )
    return table


def show_workflow(console: Console, workflow: wf_pb.Workflow) -> None:
    console.print(Text.assemble(("Workflow  ", "bold"), workflow.name))
    console.print(f"ID        {workflow.workflow_id}", markup=False)
    if workflow.description:
        console.print(f"About     {workflow.description}", markup=False)
    console.print(f"Created   {when(workflow.create_time)}", markup=False)
    console.print(f"Version   {workflow.version}, made {when(workflow.update_time)}", markup=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("#", "Step", "Handler", "Timeout", "Heartbeat", "Queue limit", "Retry"):
        table.add_column(column)
    for order, step in enumerate(workflow.steps, 1):
        retry = step.retry
        table.add_row(
            str(order),
            step.name,
            step.handler,
            seconds(step.timeout_seconds),
            seconds(step.heartbeat_timeout_seconds),
            # How long an attempt may wait for a runner; 0: as long as it takes.
            seconds(step.schedule_to_start_timeout_seconds)
            if step.schedule_to_start_timeout_seconds
            else "none",
            plural(retry.max_attempts, "attempt")
            + f", backoff {seconds(retry.initial_backoff_seconds)} x"
            f" {retry.backoff_multiplier:g} up to {seconds(retry.max_backoff_seconds)}",
        )
    console.print(table)


# --- executions --------------------------------------------------------------------------


def show_status(
    console: Console, execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]
) -> None:
    progress = execution.progress
    status = execution_status(execution)
    mode = enum_word(ex_pb.ExecutionMode.Name(execution.mode))
    console.print(Text.assemble(("Execution  ", "bold"), execution.execution_id))
    console.print(Text(f"Workflow   {execution.workflow_name} ({execution.workflow_id})"))
    priority = f", priority {execution.priority}" if execution.priority else ""
    console.print(Text.assemble("Status     ", styled(status), f"  ({mode}{priority})"))
    if execution.HasField("current_step"):
        step = execution.current_step
        at = Text(f"Step       {step.order} of {progress.total_steps}: {step.name}")
        waiting = [
            a
            for a in execution.steps_history
            if a.order == step.order and a.status == ex_pb.ATTEMPT_STATUS_QUEUED
        ]
        if waiting:
            at.append(f"  {queued_text(since(waiting[-1].queue_time))}", style="yellow")
            at.append(" for a runner")
        console.print(at)
    eta = (
        progress.estimated_remaining_seconds
        if progress.HasField("estimated_remaining_seconds")
        else None
    )
    line = (
        f"Progress   {progress.percentage:.1f}%  ({progress.completed_steps} of "
        f"{progress.total_steps} steps done)"
    )
    if progress.is_running:
        line += f"  ETA {seconds(eta)}"
    console.print(Text(line))
    console.print(
        Text(f"Created    {when(execution.create_time)}   updated {when(execution.update_time)}")
    )
    if execution.HasField("error") and (execution.error.message or execution.error.reason):
        console.print(Text.assemble(("Error      ", "red"), error_text(execution.error)))
    console.print(history_table(execution, steps))


def error_text(error: ex_pb.StepError | Mapping[str, Any]) -> str:
    if isinstance(error, Mapping):
        step = str(error.get("step_name") or "")
        message = str(error.get("message") or error.get("reason") or "failed")
        reason = str(error.get("reason") or "")
    else:
        step, message, reason = error.step_name, error.message or error.reason, error.reason
    where = f"step {step}: " if step else ""
    tag = f" ({reason})" if reason and reason not in message else ""
    return f"{where}{message}{tag}"


def history_table(execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]) -> Table:
    """Every step in order with each of its attempts; steps not yet run show their state."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    for column in ("#", "Step", "Attempt", "Status", "Started", "Duration", "Detail"):
        table.add_column(column, no_wrap=column != "Detail")
    now = datetime.now(UTC)
    for step in steps:
        if not step.attempts:
            table.add_row(str(step.order), step.name, "", styled(step.state), "", "", "")
        for attempt in step.attempts:
            word = attempt_status(attempt)
            if word == "queued":
                # Nobody runs it yet: how long it has waited, and for which runners.
                table.add_row(
                    str(step.order),
                    step.name,
                    str(attempt.attempt),
                    Text(queued_text(since(attempt.queue_time, now)), style="yellow"),
                    "—",
                    "",
                    f"waiting for a runner of {step.handler}" if step.handler else "",
                )
                continue
            if word == "running":
                duration = "running"
                detail = progress_text(message_json(attempt.last_progress))
            else:
                duration = seconds(attempt.duration_seconds)
                detail = error_text(attempt.error) if attempt.HasField("error") else ""
            table.add_row(
                str(step.order),
                step.name,
                str(attempt.attempt),
                styled(word),
                when(attempt.start_time),
                duration,
                detail,
            )
    return table


def progress_text(progress: Mapping[str, Any]) -> str:
    """ "40% · extracting · page 3 of 10 · ETA 12.0 s" from a StepProgress as JSON."""
    parts = [percent(float(progress.get("percentage") or 0.0))]
    for key in ("current_task", "message"):
        if progress.get(key):
            parts.append(str(progress[key]))
    eta = progress.get("estimated_remaining_seconds")
    if eta is not None:
        parts.append(f"ETA {seconds(float(eta))}")
    return " · ".join(parts)


# --- the step queue ----------------------------------------------------------------------


def depth_table(depths: Iterable[sq.QueueDepth], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("Handler", no_wrap=True)
    table.add_column("Ready", justify="right")
    table.add_column("Oldest wait", justify="right", no_wrap=True)
    table.add_column("Queued since", no_wrap=True)
    for depth in depths:
        table.add_row(
            depth.handler,
            str(depth.ready),
            seconds(since(depth.oldest_queue_time, now)),
            when(depth.oldest_queue_time),
        )
    return table


def runners_table(runners: Iterable[sq.QueueRunner], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("Runner", no_wrap=True)
    table.add_column("Handlers")
    table.add_column("Free slots", justify="right")
    table.add_column("Last poll", justify="right", no_wrap=True)
    for runner in runners:
        last = since(runner.last_poll_time, now)
        table.add_row(
            runner.runner_id,
            ", ".join(sorted(runner.handlers)),
            str(runner.free_slots),
            "—" if last is None else f"{seconds(last)} ago",
        )
    return table


def show_queue(
    console: Console, queue: sq.GetStepQueueResponse, now: datetime | None = None
) -> None:
    """What waits for a runner, by handler: the caller's tenant, then every tenant; then
    the runners that polled lately."""
    now = now or datetime.now(UTC)
    waiting = sum(d.ready for d in queue.tenant)
    console.print(
        Text.assemble(("Your tenant", "bold"), f"  {plural(waiting, 'step')} waiting for a runner")
    )
    if queue.tenant:
        console.print(depth_table(queue.tenant, now))
    console.print()
    everyone = sum(d.ready for d in queue.total)
    console.print(Text.assemble(("All tenants", "bold"), f"  {plural(everyone, 'step')} waiting"))
    if queue.total:
        console.print(depth_table(queue.total, now))
    console.print()
    console.print(
        Text.assemble(
            ("Runners", "bold"), f"  {plural(len(queue.runners), 'runner')} polled lately"
        )
    )
    if queue.runners:
        console.print(runners_table(queue.runners, now))
    else:
        console.print(Text("  none: a queued step waits until a runner offering its handler polls"))
