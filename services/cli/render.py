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
from datetime import UTC
from typing import Any

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import workflow_pb2 as wf_pb
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "waiting": "yellow",
    "completed": "green",
    "success": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "magenta",
    "retrying": "yellow",
}


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
    table.add_column("Created", no_wrap=True)
    for workflow in workflows:
        table.add_row(
            workflow.workflow_id,
            workflow.name,
            " → ".join(s.name for s in workflow.steps),
            when(workflow.create_time),
        )
    return table


def show_workflow(console: Console, workflow: wf_pb.Workflow) -> None:
    console.print(Text.assemble(("Workflow  ", "bold"), workflow.name))
    console.print(f"ID        {workflow.workflow_id}", markup=False)
    if workflow.description:
        console.print(f"About     {workflow.description}", markup=False)
    console.print(f"Created   {when(workflow.create_time)}", markup=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("#", "Step", "Handler", "Timeout", "Heartbeat", "Retry"):
        table.add_column(column)
    for order, step in enumerate(workflow.steps, 1):
        retry = step.retry
        table.add_row(
            str(order),
            step.name,
            step.handler,
            seconds(step.timeout_seconds),
            seconds(step.heartbeat_timeout_seconds),
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
    console.print(Text.assemble("Status     ", styled(status), f"  ({mode})"))
    if execution.HasField("current_step"):
        step = execution.current_step
        console.print(Text(f"Step       {step.order} of {progress.total_steps}: {step.name}"))
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
    for step in steps:
        if not step.attempts:
            table.add_row(str(step.order), step.name, "", styled(step.state), "", "", "")
        for attempt in step.attempts:
            word = attempt_status(attempt)
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
