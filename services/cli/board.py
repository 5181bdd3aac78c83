"""The state `watch` draws from, folded from the execution's events (each step's line: its
status, attempt, progress and wait in the queue), and the lines both human views print.
The views themselves are in watch_view.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from google.protobuf import json_format
from rich.text import Text

from discovery_client import Resumed
from services.cli.render import (
    QUEUED_MARK,
    attempt_status,
    enum_word,
    error_text,
    execution_status,
    message_json,
    queued_text,
    seconds,
)

MARKS = {
    "pending": ("·", "dim"),
    "waiting": ("⏸", "yellow"),
    "queued": (QUEUED_MARK, "yellow"),
    "running": ("▶", "cyan"),
    "retrying": ("↻", "yellow"),
    "success": ("✓", "green"),
    "failed": ("✗", "red"),
    "timed_out": ("✗", "red"),
    "cancelled": ("■", "magenta"),
}


@dataclass(frozen=True)
class Outcome:
    """How the execution ended, for the last line and the exit code."""

    status: str  # completed, failed or cancelled
    error: Mapping[str, Any] | None = None
    duration_seconds: float | None = None


def event_data(event: ex_pb.ExecutionEvent) -> dict[str, Any]:
    return json_format.MessageToDict(event.data)


def event_name(event: ex_pb.ExecutionEvent) -> str:
    return enum_word(ex_pb.EventType.Name(event.type))


def event_time(event: ex_pb.ExecutionEvent) -> datetime | None:
    if not event.time.seconds and not event.time.nanos:
        return None
    return event.time.ToDatetime(tzinfo=UTC)


# A start after a shorter wait in the step queue than this does not mention the wait.
NOTABLE_QUEUE_SECONDS = 1.0


@dataclass
class StepLine:
    order: int
    name: str
    state: str = "pending"
    attempt: int = 0
    percentage: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    # Set while the step's attempt waits in the step queue: since when.
    queued_at: datetime | None = None

    def waiting_text(self, now: datetime | None = None) -> str:
        """ "queued 3.2 s, waiting for a runner", counted to `now`."""
        waited = None
        if self.queued_at is not None:
            waited = max(((now or datetime.now(UTC)) - self.queued_at).total_seconds(), 0.0)
        return queued_text(waited, mark=False) + ", waiting for a runner"


class Board:
    """Every step's latest state, kept from the events."""

    def __init__(self, steps: Iterable[es.ExecutionStep]) -> None:
        self.steps = {s.order: StepLine(s.order, s.name) for s in steps}

    def step(self, order: int, name: str) -> StepLine:
        if order not in self.steps:  # never expected: the workflow's steps do not change
            self.steps[order] = StepLine(order, name)
        return self.steps[order]

    def load(self, history: Iterable[ex_pb.StepAttempt], execution: ex_pb.Execution) -> None:
        """The state a snapshot shows: each step's latest attempt."""
        for attempt in history:
            line = self.step(attempt.order, attempt.step_name)
            line.attempt = attempt.attempt
            line.state = attempt_status(attempt)
            line.progress = message_json(attempt.last_progress)
            line.percentage = 100.0 if line.state == "success" else attempt.last_progress.percentage
            line.detail = error_text(attempt.error) if attempt.HasField("error") else ""
            queued = line.state == "queued" and attempt.HasField("queue_time")
            line.queued_at = attempt.queue_time.ToDatetime(tzinfo=UTC) if queued else None
        if execution_status(execution) == "waiting" and execution.HasField("current_step"):
            step = execution.current_step
            self.step(step.order, step.name).state = "waiting"

    def apply(
        self, kind: str, data: Mapping[str, Any], at: datetime | None = None
    ) -> StepLine | None:
        """Updates the board with an event logged `at`; returns the step it is about."""
        if kind == "step_queued":
            line = self.step(int(data["order"]), str(data["step"]))
            line.attempt = int(data["attempt"])
            line.state = "queued"
            line.percentage = 0.0
            line.progress = {}
            line.queued_at = at
            line.detail = f"attempt {line.attempt}" if line.attempt > 1 else ""
            return line
        if kind == "step_started":
            line = self.step(int(data["order"]), str(data["step"]))
            line.attempt = int(data["attempt"])
            line.state = "running"
            line.percentage = 0.0
            line.progress = {}
            line.queued_at = None
            line.detail = f"attempt {line.attempt}" if line.attempt > 1 else ""
            return line
        if kind == "step_progress":
            line = self.step(int(data["order"]), str(data["step_name"]))
            if line.state in ("pending", "waiting", "queued"):  # replay begun after its start
                line.queued_at = None
                line.state = "running"
                line.attempt = int(data["attempt"])
            line.progress = dict(data.get("progress") or {})
            line.percentage = float(line.progress.get("percentage") or 0.0)
            line.detail = ""
            return line
        if kind == "step_finished":
            line = self.step(int(data["order"]), str(data["step"]))
            line.state = str(data["status"])
            line.queued_at = None
            if line.state == "success":
                line.percentage = 100.0
                line.detail = ""
            elif data.get("error"):
                line.detail = error_text(data["error"])
            return line
        if kind == "workflow_waiting":
            line = self.step(int(data["order"]), str(data["step"]))
            line.state = "waiting"
            return line
        if kind in ("workflow_failed", "workflow_cancelled"):
            for line in self.steps.values():
                if line.state in ("running", "waiting", "queued"):
                    line.state = "cancelled" if kind == "workflow_cancelled" else "failed"
                    line.queued_at = None
        return None

    @property
    def percentage(self) -> float:
        if not self.steps:
            return 0.0
        done = sum(
            100.0 if s.state == "success" else s.percentage if s.state == "running" else 0.0
            for s in self.steps.values()
        )
        return done / len(self.steps)


def describe(
    kind: str, data: Mapping[str, Any], line: StepLine | None, execution_id: str
) -> Text | None:
    """The one line a human reads for an event; None for progress (drawn separately)."""
    if kind == "workflow_started":
        return Text(f"▶ workflow started ({data.get('mode', 'automatic')})", style="bold")
    if kind == "step_queued" and line is not None:
        again = f" (attempt {line.attempt})" if line.attempt > 1 else ""
        handler = data.get("handler")
        runner = f" for a {handler} runner" if handler else " for a runner"
        return Text.assemble(
            (f"{QUEUED_MARK} ", "yellow"), (line.name, "bold"), f" queued{again}{runner}"
        )
    if kind == "step_started" and line is not None:
        again = f" (attempt {line.attempt})" if line.attempt > 1 else ""
        waited = float(data.get("queued_seconds") or 0.0)
        wait = f" after {seconds(waited)} in the queue" if waited >= NOTABLE_QUEUE_SECONDS else ""
        return Text.assemble(("▶ ", "cyan"), (line.name, "bold"), f" started{again}{wait}")
    if kind == "step_finished" and line is not None:
        took = seconds(float(data.get("duration_seconds") or 0.0))
        if line.state == "success":
            return Text.assemble(("✓ ", "green"), (line.name, "bold"), f" done in {took}")
        mark, style = MARKS.get(line.state, ("✗", "red"))
        detail = f": {line.detail}" if line.detail else ""
        return Text.assemble(
            (f"{mark} ", style), (line.name, "bold"), f" {line.state} after {took}{detail}"
        )
    if kind == "workflow_waiting" and line is not None:
        return Text.assemble(
            ("⏸ ", "yellow"),
            f"waiting before step {line.order} ",
            (line.name, "bold"),
            f": discovery advance {execution_id}",
        )
    if kind == "workflow_advanced":
        keys = ", ".join(sorted((data.get("data") or {}).keys()))
        return Text("▶ advanced" + (f" with {keys}" if keys else ""), style="cyan")
    return None  # progress, and the end (finish() says it)


def outcome_line(outcome: Outcome) -> Text:
    took = f" in {seconds(outcome.duration_seconds)}" if outcome.duration_seconds else ""
    if outcome.status == "completed":
        return Text(f"✓ workflow completed{took}", style="bold green")
    if outcome.status == "cancelled":
        reason = (outcome.error or {}).get("message") or "cancelled"
        return Text(f"■ workflow cancelled{took}: {reason}", style="bold magenta")
    detail = error_text(outcome.error) if outcome.error else "no reason given"
    attempts = (outcome.error or {}).get("attempts")
    tries = f" after {int(attempts)} attempt{'s' if int(attempts) != 1 else ''}" if attempts else ""
    return Text(f"✗ workflow {outcome.status}{tries}: {detail}", style="bold red")


def resumed_line(resumed: Resumed) -> Text:
    where = f"after seq {resumed.after_seq}" if resumed.after_seq is not None else "from a snapshot"
    pause = f" in {resumed.delay_seconds:g} s" if resumed.delay_seconds else ""
    return Text(f"… {resumed.why}; resuming {where}{pause}", style="dim")


def header_line(execution: ex_pb.Execution) -> Text:
    mode = enum_word(ex_pb.ExecutionMode.Name(execution.mode))
    return Text.assemble(
        ("execution ", "dim"),
        (execution.execution_id, "bold"),
        ("  workflow ", "dim"),
        (execution.workflow_name, "bold"),
        f"  ({mode}, {execution.progress.total_steps} steps, {execution_status(execution)})",
    )


def clock(event: ex_pb.ExecutionEvent) -> str:
    return event.time.ToDatetime(tzinfo=UTC).astimezone().strftime("%H:%M:%S ")
