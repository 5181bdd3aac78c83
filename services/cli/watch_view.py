"""What `watch` shows while it follows an execution.

Three views of the same stream (discovery_client's `watch`):

- `LiveView` (stdout is a terminal): one rich progress bar per step with its percentage,
  current task, message and ETA, an overall bar on top, and a line above the bars for every
  step that is queued, starts, finishes or fails. A step queued for a runner shows
  "⧗ queued" and how long it has waited, counting live.
- `PlainView` (stdout is a file or pipe): the same lines, plus a progress line per step each
  time it passes another tenth, so a log stays readable.
- `JsonView` (`--json`): one JSON object per event line, with its seq; the snapshot, when one
  is asked for, as `{"event": "snapshot", "seq", "status"}` (the legacy WebSocket shape).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

from discovery_client import Resumed
from services.cli.render import (
    QUEUED_MARK,
    attempt_status,
    enum_word,
    error_text,
    execution_status,
    message_json,
    print_json,
    progress_text,
    queued_text,
    seconds,
    whole_numbers,
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


class WatchView(Protocol):
    def begin(self, execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]) -> None: ...

    def snapshot(self, execution: ex_pb.Execution) -> None: ...

    def event(self, event: ex_pb.ExecutionEvent) -> None: ...

    def resumed(self, resumed: Resumed) -> None: ...

    def finish(self, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


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


# --- the state both human views draw from ----------------------------------------------


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


def _clock(event: ex_pb.ExecutionEvent) -> str:
    return event.time.ToDatetime(tzinfo=UTC).astimezone().strftime("%H:%M:%S ")


# --- the views ---------------------------------------------------------------------------


class PlainView:
    """Lines only: for files, pipes and CI logs."""

    PROGRESS_STEP = 10.0

    def __init__(self, console: Console, errors: Console) -> None:
        self.console = console
        self.errors = errors
        self.execution_id = ""
        self.board = Board(())
        self._shown: dict[tuple[int, int], float] = {}

    def begin(self, execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]) -> None:
        self.execution_id = execution.execution_id
        self.board = Board(steps)
        self.print(header_line(execution))

    def snapshot(self, execution: ex_pb.Execution) -> None:
        self.board.load(execution.steps_history, execution)
        self.print(
            Text(
                f"snapshot at seq {execution.last_seq}: {execution_status(execution)}, "
                f"{execution.progress.percentage:.0f}%"
            )
        )
        for line in self.board.steps.values():
            if line.state != "pending":
                self.print(self._step_text(line))

    def event(self, event: ex_pb.ExecutionEvent) -> None:
        kind = event_name(event)
        data = event_data(event)
        line = self.board.apply(kind, data, event_time(event))
        text = describe(kind, data, line, self.execution_id)
        if text is not None:
            self.print(Text(_clock(event), style="dim") + text)
        elif kind == "step_progress" and line is not None and self._worth_showing(line):
            self.print(Text(_clock(event), style="dim") + self._step_text(line))

    def _worth_showing(self, line: StepLine) -> bool:
        key = (line.order, line.attempt)
        shown = self._shown.get(key)
        bucket = line.percentage // self.PROGRESS_STEP
        if shown is not None and bucket <= shown // self.PROGRESS_STEP:
            return False
        self._shown[key] = line.percentage
        return True

    def _step_text(self, line: StepLine) -> Text:
        mark, style = MARKS.get(line.state, ("·", ""))
        if line.state == "running" and line.progress:
            detail = progress_text(line.progress)
        elif line.state == "queued":
            detail = line.waiting_text()
        else:
            detail = f"{line.percentage:.0f}% {line.state}"
        if line.detail:
            detail += f" · {line.detail}"
        return Text.assemble(("  " + mark + " ", style), (line.name, "bold"), f"  {detail}")

    def resumed(self, resumed: Resumed) -> None:
        if not resumed.routine:
            self.errors.print(resumed_line(resumed), soft_wrap=True)

    def finish(self, outcome: Outcome) -> None:
        self.print(outcome_line(outcome))

    def close(self) -> None:
        pass

    def print(self, text: Text) -> None:
        self.console.print(text, soft_wrap=True)


class DetailColumn(ProgressColumn):
    """A step's detail; for a queued step, its wait in the queue, counting at every refresh
    rather than only when an event comes."""

    def render(self, task: Task) -> Text:
        line = task.fields.get("line")
        if isinstance(line, StepLine) and line.state == "queued":
            return Text(line.waiting_text() + (f" · {line.detail}" if line.detail else ""))
        return Text(str(task.fields.get("detail", "")))


class LiveView(PlainView):
    """Progress bars on a terminal; lines for the events above them."""

    def __init__(self, console: Console, errors: Console) -> None:
        super().__init__(console, errors)
        self.progress = Progress(
            TextColumn("{task.fields[mark]}"),
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(bar_width=28),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[eta]}", style="cyan"),
            DetailColumn(table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=console,
            refresh_per_second=8,
            expand=True,
        )
        self._tasks: dict[int, TaskID] = {}
        self._overall: TaskID | None = None

    def begin(self, execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]) -> None:
        super().begin(execution, steps)
        self._overall = self.progress.add_task(
            execution.workflow_name, total=100, mark="[bold]◆[/]", eta="", detail=""
        )
        for line in self.board.steps.values():
            self._tasks[line.order] = self.progress.add_task(
                line.name, total=100, mark="", eta="", detail="", line=None
            )
            self._draw(line)
        self.progress.start()

    def snapshot(self, execution: ex_pb.Execution) -> None:
        self.board.load(execution.steps_history, execution)
        for line in self.board.steps.values():
            self._draw(line)

    def event(self, event: ex_pb.ExecutionEvent) -> None:
        kind = event_name(event)
        data = event_data(event)
        line = self.board.apply(kind, data, event_time(event))
        text = describe(kind, data, line, self.execution_id)
        if text is not None:
            self.progress.console.print(Text(_clock(event), style="dim") + text, soft_wrap=True)
        for each in self.board.steps.values() if line is None else (line,):
            self._draw(each)

    def _draw(self, line: StepLine) -> None:
        if line.order not in self._tasks:
            self._tasks[line.order] = self.progress.add_task(
                line.name, total=100, mark="", eta="", detail="", line=None
            )
        mark, style = MARKS.get(line.state, ("·", ""))
        eta = line.progress.get("estimated_remaining_seconds")
        running = line.state == "running"
        if running:
            detail = " · ".join(
                str(line.progress[k]) for k in ("current_task", "message") if line.progress.get(k)
            )
        else:
            detail = line.detail or ("" if line.state in ("pending", "success") else line.state)
        self.progress.update(
            self._tasks[line.order],
            completed=line.percentage,
            mark=f"[{style}]{mark}[/]" if style else mark,
            eta=f"ETA {seconds(float(eta))}" if running and eta is not None else "",
            detail=detail,
            # A queued step's wait is drawn from its line at every refresh (DetailColumn).
            line=line if line.state == "queued" else None,
        )
        if self._overall is not None:
            self.progress.update(self._overall, completed=self.board.percentage)

    def resumed(self, resumed: Resumed) -> None:
        if not resumed.routine:
            self.progress.console.print(resumed_line(resumed), soft_wrap=True)

    def finish(self, outcome: Outcome) -> None:
        if outcome.status == "completed" and self._overall is not None:
            self.progress.update(self._overall, completed=100)
        self.progress.stop()
        self.print(outcome_line(outcome))

    def close(self) -> None:
        self.progress.stop()


class JsonView:
    """One JSON object per line on stdout; notices on stderr."""

    def __init__(self, errors: Console) -> None:
        self.errors = errors

    def begin(self, execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]) -> None:
        pass

    def snapshot(self, execution: ex_pb.Execution) -> None:
        print_json(
            {
                "event": "snapshot",
                "execution_id": execution.execution_id,
                "seq": execution.last_seq,
                "status": message_json(execution),
            }
        )

    def event(self, event: ex_pb.ExecutionEvent) -> None:
        print_json(
            {
                "event": event_name(event),
                "execution_id": event.execution_id,
                "seq": event.seq,
                "timestamp": event.time.ToJsonString(),
                "data": whole_numbers(event_data(event)),
            }
        )

    def resumed(self, resumed: Resumed) -> None:
        if not resumed.routine:
            self.errors.print(resumed_line(resumed), soft_wrap=True)

    def finish(self, outcome: Outcome) -> None:
        pass

    def close(self) -> None:
        pass


def make_view(json_lines: bool, console: Console, errors: Console) -> WatchView:
    if json_lines:
        return JsonView(errors)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveView(console, errors)
    return PlainView(console, errors)
