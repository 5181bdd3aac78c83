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

from collections.abc import Iterable
from typing import Protocol

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

from discovery_client import Resumed
from services.cli.board import (
    MARKS,
    Board,
    Outcome,
    StepLine,
    clock,
    describe,
    event_data,
    event_name,
    event_time,
    header_line,
    outcome_line,
    resumed_line,
)
from services.cli.render import (
    execution_status,
    message_json,
    print_json,
    progress_text,
    seconds,
    whole_numbers,
)


class WatchView(Protocol):
    def begin(self, execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]) -> None: ...

    def snapshot(self, execution: ex_pb.Execution) -> None: ...

    def event(self, event: ex_pb.ExecutionEvent) -> None: ...

    def resumed(self, resumed: Resumed) -> None: ...

    def finish(self, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


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
            self.print(Text(clock(event), style="dim") + text)
        elif kind == "step_progress" and line is not None and self._worth_showing(line):
            self.print(Text(clock(event), style="dim") + self._step_text(line))

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
            self.progress.console.print(Text(clock(event), style="dim") + text, soft_wrap=True)
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
